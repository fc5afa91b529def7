"""QOperator-format quantized ONNX in: converters/qoperator.py and converters/qoperator_dynamic.py.

Tiny float models are quantized here by onnxruntime itself (quantize_static with
QuantFormat.QOperator, quantize_dynamic), as users make them; the rewrite is checked against
onnxruntime running the QOperator model (integer kernels), and the int8 .tflite against the
producer's scales."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.cli import main  # noqa: E402
from ort_quantized import convert_on_the_producers_grid, quantize_static_file  # noqa: E402
from edgenet.converters.qdq import is_qdq, strip_qdq  # noqa: E402
from edgenet.converters.qoperator import rewrite_qoperator  # noqa: E402


def _init(rng, name, shape, sd=0.4):
    return numpy_helper.from_array(rng.normal(0, sd, shape).astype(np.float32), name)


def _cnn():
    """x [1,3,16,16] -> Conv 8 + Relu -> MaxPool -> Conv 1x1 -> Add (residual) -> AveragePool -> Flatten
    -> Gemm 5 (QLinearConv, direct MaxPool / Flatten, QLinearAdd, QLinearAveragePool, QGemm)."""
    rng = np.random.default_rng(0)
    inits = [_init(rng, "w1", (8, 3, 3, 3)), _init(rng, "b1", (8,), 0.1), _init(rng, "w2", (8, 8, 1, 1)),
             _init(rng, "b2", (8,), 0.1), _init(rng, "wf", (5, 128)), _init(rng, "bf", (5,), 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"]),
             helper.make_node("Add", ["c2", "p1"], ["a2"]),
             helper.make_node("AveragePool", ["a2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p2"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _heads():
    """x [1,3,16,16] -> Conv -> GlobalAveragePool -> Reshape [1,8] -> MatMul -> Sigmoid, LeakyRelu -> Concat
    -> MatMul -> Mul -> Softmax (QLinearMatMul, QLinearGlobalAveragePool, QLinearSigmoid,
    QLinearLeakyRelu, QLinearConcat, QLinearMul, QLinearSoftmax)."""
    rng = np.random.default_rng(1)
    inits = [_init(rng, "w1", (8, 3, 3, 3), 1.0), _init(rng, "wm", (8, 6), 1.0), _init(rng, "wn", (12, 6), 1.5),
             numpy_helper.from_array(np.array([1, 8], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c1"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["s"]),
             helper.make_node("LeakyRelu", ["m"], ["lr"], alpha=0.1),
             helper.make_node("Concat", ["s", "lr"], ["cc"], axis=1),
             helper.make_node("MatMul", ["cc", "wn"], ["n"]),
             helper.make_node("Mul", ["n", "m"], ["mu"]),
             helper.make_node("Softmax", ["mu"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _lstm():
    """x [T=6, 1, 8] -> bidirectional LSTM 16 -> Transpose/Reshape -> MatMul 5 (DynamicQuantizeLSTM, MatMulInteger)."""
    rng = np.random.default_rng(2)
    inits = [_init(rng, "W", (2, 64, 8), 0.3), _init(rng, "R", (2, 64, 16), 0.3), _init(rng, "B", (2, 128), 0.1),
             _init(rng, "wo", (32, 5)), numpy_helper.from_array(np.array([6, 32], np.int64), "shape")]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["h"], hidden_size=16, direction="bidirectional"),
             helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["ht", "shape"], ["hr"]),
             helper.make_node("MatMul", ["hr", "wo"], ["y"])]
    graph = helper.make_graph(nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _static(folder, make, name, per_channel, activation):
    return quantize_static_file(make(), folder, name, per_channel=per_channel, activation=activation,
                                fmt="QOperator", seed=3)


def _dynamic(folder, make, name, **kw):
    from onnxruntime.quantization import quantize_dynamic

    src, dst = folder / f"{name}.onnx", folder / f"{name}_dynamic.onnx"
    onnx.save(make(), str(src))
    quantize_dynamic(str(src), str(dst), **kw)
    return dst


VARIANTS = [(True, "QUInt8"), (False, "QInt8"), (True, "QInt8"), (False, "QUInt8")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qop")
    out = {("cnn", pc, act): _static(folder, _cnn, "cnn", pc, act) for pc, act in VARIANTS}
    out.update({("heads", pc, act): _static(folder, _heads, "heads", pc, act) for pc, act in VARIANTS[:2]})
    out["cnn_dynamic"] = _dynamic(folder, _cnn, "cnn")
    out["lstm_dynamic"] = _dynamic(folder, _lstm, "lstm", op_types_to_quantize=["LSTM", "MatMul"])
    return out


def _run(model, x, optimize=True):
    options = ort.SessionOptions()
    if not optimize:   # a QDQ graph as written (onnxruntime would fuse it into integer kernels)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _step(ranges, name):
    lo, hi = ranges[name]
    return (hi - lo) / 255


# -- the rewrite: the same model as the QOperator one ---------------------------------------------
@pytest.mark.parametrize("model,per_channel,activation",
                         [("cnn", *v) for v in VARIANTS] + [("heads", *v) for v in VARIANTS[:2]])
def test_rewritten_graph_computes_what_the_qoperator_model_computes(files, model, per_channel, activation):
    qop = onnx.load(str(files[(model, per_channel, activation)]))
    rewritten, info = rewrite_qoperator(qop)
    assert info is not None and info.static and is_qdq(rewritten)
    assert not any(n.domain == "com.microsoft" for n in rewritten.graph.node)
    float_model, ranges, qinfo = strip_qdq(rewritten)
    onnx.checker.check_model(float_model)
    assert qinfo.weight_granularity == ("per-channel" if per_channel else "per-tensor")
    assert qinfo.activation_types == ("uint8" if activation == "QUInt8" else "int8",)
    x = np.random.default_rng(7).uniform(-1, 1, (32, 3, 16, 16)).astype(np.float32)
    ref = _run(qop, x)
    step = _step(ranges, "y")
    # the QDQ graph, run as written: onnxruntime's integer kernels round the same values (<= 1 step)
    assert np.abs(_run(rewritten, x, optimize=False) - ref).max() <= step * 1.0001
    # the float graph: what the quantized model approximates (measured: 0.7-2.2 steps on average; the largest
    # differences, 16-48 steps, are values the quantized model clamps at its calibrated range), the same top-1
    got = _run(float_model, x)
    assert np.abs(got - ref).mean() <= 3 * step
    top2 = np.sort(ref, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 4 * step
    assert clear.sum() >= 16 and (got.argmax(-1) == ref.argmax(-1))[clear].all()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_the_rewrite_reads_every_integer_op_the_quantizer_wrote(files):
    qop = onnx.load(str(files[("cnn", True, "QUInt8")]))
    _, info = rewrite_qoperator(qop)
    assert info.static == {"QLinearConv": 2, "QLinearAdd": 1, "QLinearAveragePool": 1, "QGemm": 1}
    assert info.direct == 2     # MaxPool and Flatten ran on the uint8 tensors
    heads = onnx.load(str(files[("heads", True, "QUInt8")]))
    _, info = rewrite_qoperator(heads)
    assert {"QLinearMatMul", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
            "QLinearMul", "QLinearSoftmax"} <= set(info.static)


def test_float_and_qdq_graphs_are_left_alone():
    model = _cnn()
    same, info = rewrite_qoperator(model)
    assert same is model and info is None


# -- conversion: the producer's scales in the int8 .tflite ----------------------------------------
@pytest.mark.parametrize("per_channel,activation", [(True, "QUInt8"), (False, "QInt8")])
def test_qoperator_model_converts_to_int8_with_the_producers_scales(files, tmp_path, per_channel, activation):
    from edgenet.runtime import make_interpreter

    path = files[("cnn", per_channel, activation)]
    res, report, verdict, found = convert_on_the_producers_grid(path, tmp_path / "out", per_channel)
    assert verdict["passed"] and min(found["outputs_within_one_step"].values()) >= 0.95
    assert any("QOperator format" in n for n in res.report.notes)
    # every integer op's output scale and zero point, as the producer wrote them, in the .tflite (not
    # AveragePool: TFLite's int8 AVERAGE_POOL_2D keeps its input's scale)
    qop = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in qop.graph.initializer}
    tensors = {t["name"]: t["quantization"] for t in make_interpreter(res.int8_path).get_tensor_details()}
    checked = 0
    for node in qop.graph.node:
        if node.op_type not in ("QLinearConv", "QLinearAdd", "QGemm"):
            continue
        ys, yz = node.input[{"QLinearConv": 6, "QGemm": 7, "QLinearAdd": 6}[node.op_type]:][:2]
        name = node.output[0][:-len("_quantized")]
        if name not in tensors:
            continue
        scale, zp = tensors[name]
        shift = 128 if consts[yz].dtype == np.uint8 else 0
        assert scale == pytest.approx(float(consts[ys]), rel=1e-6) and zp == int(consts[yz]) - shift, name
        checked += 1
    assert checked >= 3
    # fresh inputs: the int8 model against onnxruntime's integer kernels
    from edgenet.inference import TFLiteModel

    x = np.random.default_rng(5).uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32)
    ref = _run(qop, x)
    got = TFLiteModel(res.int8_path).predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    step = float(consts[next(n for n in qop.graph.node if n.op_type == "QGemm").input[7]])
    # (the AveragePool requantized on its input's scale adds a rounding: measured 90% within one step)
    assert np.mean(np.abs(ref - got) <= step * 1.0001) >= 0.85 and np.abs(ref - got).max() <= 2.0001 * step


def test_heads_model_converts_on_the_command_line(files, tmp_path, capsys):
    path = files[("heads", False, "QInt8")]
    code = main(["convert", str(path), "--int8", "--out", str(tmp_path / "out"), "--mean", "0.5", "--std", "0.5",
                 "--eval-samples", "16"])
    out = capsys.readouterr().out
    assert code in (0, None), out
    assert "QOperator format" in out and "int8 vs" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["calibration"]["qdq"]["tensors_with_qdq_range"] >= 8


# -- dynamic quantization ---------------------------------------------------------------------------
def test_dynamic_cnn_becomes_the_float_graph_on_dequantized_weights(files, tmp_path):
    import edgenet

    dyn = onnx.load(str(files["cnn_dynamic"]))
    assert any(n.op_type == "ConvInteger" for n in dyn.graph.node)
    rewritten, info = rewrite_qoperator(dyn)
    assert info.dynamic == {"ConvInteger": 2, "MatMulInteger": 1} and not is_qdq(rewritten)
    assert {n.op_type for n in rewritten.graph.node} >= {"Conv", "MatMul"}
    assert not {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "Cast"} & \
        {n.op_type for n in rewritten.graph.node}
    onnx.checker.check_model(rewritten)
    x = np.random.default_rng(8).uniform(-1, 1, (16, 3, 16, 16)).astype(np.float32)
    ref, got = _run(dyn, x), _run(rewritten, x)
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 0.03 * scale and (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    # and the float graph to stored weights: equal to the int8 values times their scale
    inits = {t.name: numpy_helper.to_array(t) for t in dyn.graph.initializer}
    w = next(numpy_helper.to_array(t) for t in rewritten.graph.initializer if t.name.startswith("w1"))
    q = inits["w1_quantized"].astype(np.float64)
    assert np.allclose(w, (q - inits["w1_zero_point"]) * inits["w1_scale"], atol=1e-7)
    res = edgenet.convert(str(files["cnn_dynamic"]), int8=True, out=str(tmp_path / "out"), mean=0.5, std=0.5,
                          layer_report=False, eval_samples=16)
    assert any("dynamically quantized" in n for n in res.report.notes)
    assert "qdq" not in res.report.calibration   # activations calibrated like any float model's


def test_dynamic_quantize_lstm_becomes_an_onnx_lstm(files):
    dyn = onnx.load(str(files["lstm_dynamic"]))
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in dyn.graph.node)
    rewritten, info = rewrite_qoperator(dyn)
    assert info.dynamic == {"DynamicQuantizeLSTM": 1, "MatMulInteger": 1}
    lstm = next(n for n in rewritten.graph.node if n.op_type == "LSTM")
    assert lstm.domain == "" and [o.domain for o in rewritten.opset_import] == [""]
    onnx.checker.check_model(rewritten)
    # the float LSTM on the dequantized weights against the float model it was quantized from
    x = np.random.default_rng(9).uniform(-1, 1, (6, 1, 8)).astype(np.float32)
    ref = ort.InferenceSession(_lstm().SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    dyn_out = ort.InferenceSession(dyn.SerializeToString()).run(None, {"x": x})[0]
    # the int8 weights move the float model by a little; the rewrite follows the dynamic model as closely
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    assert np.abs(got - dyn_out).max() <= 0.05 * np.abs(ref).max()
    assert (got.argmax(-1) == dyn_out.argmax(-1)).all()


# -- what is refused --------------------------------------------------------------------------------
def test_an_integer_op_without_a_rewrite_is_one_line_naming_it(files, tmp_path, capsys):
    model = onnx.load(str(files[("cnn", True, "QUInt8")]))
    node = next(n for n in model.graph.node if n.op_type == "QLinearConv")
    node.op_type, node.domain = "QLinearConvTranspose", "com.microsoft"
    path = tmp_path / "convtranspose.onnx"
    onnx.save(model, str(path))
    code = main(["convert", str(path), "--int8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code not in (0, None) and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "QLinearConvTranspose" in err and str(path) in err and "QDQ format" in err


def test_a_bad_scale_is_named_by_the_users_node(files, tmp_path, capsys):
    """A zero weight scale is found after the rewrite, by the QDQ reader: the line names the user's
    QLinearConv and its input, not a node the rewrite made."""
    model = onnx.load(str(files[("cnn", True, "QInt8")]))
    node = next(n for n in model.graph.node if n.op_type == "QLinearConv")
    scale = next(t for t in model.graph.initializer if t.name == node.input[4])
    scale.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(scale)), scale.name))
    path = tmp_path / "zero_scale.onnx"
    onnx.save(model, str(path))
    code = main(["convert", str(path), "--int8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code not in (0, None) and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"QLinearConv {node.name or node.output[0]}: input {node.input[3]}" in err and "scale 0" in err, err


def test_an_op_reading_an_integer_tensor_without_a_rewrite_is_named(files, tmp_path, capsys):
    model = onnx.load(str(files[("cnn", True, "QUInt8")]))
    node = next(n for n in model.graph.node if n.op_type == "MaxPool")
    node.op_type = "LpPool"
    path = tmp_path / "lppool.onnx"
    onnx.save(model, str(path))
    code = main(["convert", str(path), "--int8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code not in (0, None) and len(err.splitlines()) == 1
    assert "LpPool node" in err and "integer tensor" in err
