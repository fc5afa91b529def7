"""Quantized ONNX (QDQ) in, full-integer TFLite out: converters/qdq.py and converters/qdq_quantize.py.

The QDQ models are made by onnxruntime's quantize_static from a small float graph (Conv, ReLU,
depthwise Conv, ReLU6, global pooling, Gemm), as users make them."""
from __future__ import annotations


import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.cli import main  # noqa: E402
from ort_quantized import convert_on_the_producers_grid, quantize_static_file  # noqa: E402
from edgenet.converters.qdq import QDQSource, is_qdq, strip_qdq  # noqa: E402
from edgenet.errors import ModelError  # noqa: E402


def _float_model(seed: int = 0):
    """x [1,3,16,16] -> Conv 8 + Relu -> depthwise Conv + Clip(0, 6) -> GlobalAveragePool -> Flatten -> Gemm 5."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(0, 0.4, (8, 3, 3, 3))), ("b1", rng.normal(0, 0.1, 8)),
        ("w2", rng.normal(0, 0.4, (8, 1, 3, 3))), ("b2", rng.normal(0, 0.1, 8)),
        ("wf", rng.normal(0, 0.4, (5, 8))), ("bf", rng.normal(0, 0.1, 5)),
        ("lo", np.array(0.0)), ("hi", np.array(6.0)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=8),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _quantized(tmp_path, per_channel: bool, activation: str, fmt: str = "QDQ"):
    return quantize_static_file(_float_model(), tmp_path, "float", per_channel=per_channel, activation=activation,
                                fmt=fmt, seed=1)


@pytest.fixture(scope="module")
def qdq_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdq")
    return {(pc, act): _quantized(folder, pc, act) for pc in (True, False) for act in ("QUInt8", "QInt8")}


def _run(model, x):
    from edgenet.converters.validate import onnx_session

    return onnx_session(model).run(None, {"x": x})[0]


# -- reading the pairs ------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel,activation", [(True, "QUInt8"), (False, "QInt8")])
def test_strip_gives_the_float_graph_and_the_producers_ranges(qdq_files, per_channel, activation):
    qdq = onnx.load(str(qdq_files[(per_channel, activation)]))
    assert is_qdq(qdq)
    float_model, ranges, info = strip_qdq(qdq)
    onnx.checker.check_model(float_model)
    assert not is_qdq(float_model)
    assert info.weight_granularity == ("per-channel" if per_channel else "per-tensor")
    assert info.activation_types == (("uint8",) if activation == "QUInt8" else ("int8",))
    assert info.weights_symmetric and info.weights == 3
    # onnxruntime removed the Relu and the Clip(0, 6) into ranges starting at 0: both come back
    assert info.relu_restored == 2
    # every range is the pair's interval: (qmin - zp) * scale .. (qmax - zp) * scale
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    scale, zp = float(inits["y_scale"]), int(inits["y_zero_point"])
    qmin, qmax = (0, 255) if activation == "QUInt8" else (-128, 127)
    assert ranges["y"] == pytest.approx(((qmin - zp) * scale, (qmax - zp) * scale), rel=1e-12)
    assert ranges["x"][0] < 0 < ranges["x"][1]
    # the float graph computes what the QDQ graph does, up to the QDQ model's rounding (a few steps)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    step = (ranges["y"][1] - ranges["y"][0]) / 255
    assert np.abs(_run(float_model, x) - _run(qdq, x)).max() < 4 * step
    assert [n.op_type for n in float_model.graph.node].count("Relu") == 2


def test_weights_behind_dequantize_linear_are_the_stored_values_dequantized(qdq_files):
    qdq = onnx.load(str(qdq_files[(True, "QInt8")]))
    float_model, _, _ = strip_qdq(qdq)
    stored = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    floats = {t.name: numpy_helper.to_array(t) for t in float_model.graph.initializer}
    dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "w1_quantized")
    q, s = stored["w1_quantized"], stored[dq.input[1]]
    want = q.astype(np.float32) * s.reshape(-1, 1, 1, 1).astype(np.float32)
    np.testing.assert_array_equal(floats[dq.output[0]], want)


@pytest.mark.parametrize("opset,computed", [(10, False), (13, False), (21, False), (13, True)])
def test_pairs_on_float_weights_fold_into_their_dequantized_values(opset, computed):
    """PyTorch's QAT export quantizes float weights in the graph: Q(w) -> DQ -> Conv, per channel
    (opset 10 has no axis: per tensor there)."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (4, 2, 3, 3)).astype(np.float32)
    s = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    zw = np.zeros(4, np.int8)
    axis = {"axis": 0} if opset > 10 else {}
    if opset == 10:
        s, zw = np.float32(np.abs(w).max() / 127), np.int8(0)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.asarray(s), "ws"),
             numpy_helper.from_array(np.asarray(zw), "wz"),
             numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(3, np.uint8), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="qw", **axis),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", **axis),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv")]
    if computed:   # as PyTorch's ConvBn QAT export: the weight scaled in the graph, the zero point via Identity
        inits[0] = numpy_helper.from_array(w / 2, "w_half")
        inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
        nodes[2:2] = [helper.make_node("Mul", ["w_half", "two"], ["w"], name="scale_w"),
                      helper.make_node("Identity", ["wz0"], ["wz"], name="zp_identity")]
        inits[2] = numpy_helper.from_array(np.asarray(zw), "wz0")
    graph = helper.make_graph(nodes, "pt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    qdq = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                            ir_version=10 if opset == 21 else 8)
    onnx.checker.check_model(qdq)
    float_model, ranges, info = strip_qdq(qdq)
    assert [n.op_type for n in float_model.graph.node] == ["Conv"]
    assert info.weights == 1 and info.weights_symmetric
    assert info.weight_granularity == ("per-tensor" if opset == 10 else "per-channel")
    assert ranges["x"] == pytest.approx(((0 - 3) * 0.02, (255 - 3) * 0.02), rel=1e-6)
    x = np.clip(rng.normal(0, 1, (1, 2, 8, 8)), -0.06, 5.0).astype(np.float32)
    x = (np.round(x / np.float32(0.02)) * np.float32(0.02)).astype(np.float32)   # on the input's grid
    np.testing.assert_allclose(_run(float_model, x), _run(qdq, x), rtol=1e-5, atol=1e-5)


def test_pairs_in_a_row_stand_for_the_first_value():
    """Requantization (DQ -> Q -> DQ with another scale): the float graph reads the first value."""
    inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in (
        ("s1", 0.01, np.float32), ("z1", 0, np.int8), ("s2", 0.02, np.float32), ("z2", -128, np.int8))]
    nodes = [helper.make_node("Neg", ["x"], ["a"], name="neg"),
             helper.make_node("QuantizeLinear", ["a", "s1", "z1"], ["aq"], name="q1"),
             helper.make_node("DequantizeLinear", ["aq", "s1", "z1"], ["ad"], name="dq1"),
             helper.make_node("QuantizeLinear", ["ad", "s2", "z2"], ["bq"], name="q2"),
             helper.make_node("DequantizeLinear", ["bq", "s2", "z2"], ["bd"], name="dq2"),
             helper.make_node("Sigmoid", ["bd"], ["y"], name="sig")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    float_model, ranges, info = strip_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                                            ir_version=8))
    onnx.checker.check_model(float_model)
    sigmoid = next(n for n in float_model.graph.node if n.op_type == "Sigmoid")
    assert list(sigmoid.input) == ["a"]
    assert ranges == {"a": pytest.approx((-1.28, 1.27))} and info.conflicting == 1
    # the second pair (on [0, 5.1]) is a conflict, said in a note; the first range is the one used
    assert info.relu_restored == 0
    assert any("quantized twice" in n for n in QDQSource(None, float_model, ranges, info).notes(True))


# -- malformed pairs: one line naming the node ------------------------------------------------------
def _with_initializer(model, name: str, array: np.ndarray):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for k, t in enumerate(out.graph.initializer):
        if t.name == name:
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(array, name))
    return out


def _node_reading(model, name: str):
    return next(n for n in model.graph.node if name in n.input)


@pytest.mark.parametrize("case", ["zero scale", "nan scale", "scale length", "axis", "activation per axis",
                                  "zero point range", "zero point type"])
def test_malformed_qdq_is_a_model_error_naming_the_node(qdq_files, case):
    qdq = onnx.load(str(qdq_files[(True, "QInt8")]))
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "w1_quantized")
    w_scale = dq.input[1]
    if case == "zero scale":
        bad, want = _with_initializer(qdq, "y_scale", np.array(0.0, np.float32)), "scale 0 is not a positive"
        node = _node_reading(qdq, "y_scale")
    elif case == "nan scale":
        s = inits[w_scale].copy()
        s[3] = np.nan
        bad, want, node = _with_initializer(qdq, w_scale, s), "scale nan is not a positive", dq
    elif case == "scale length":
        bad, want, node = _with_initializer(qdq, w_scale, inits[w_scale][:5]), "5 scales for axis 0 of size 8", dq
    elif case == "axis":
        bad = onnx.ModelProto()
        bad.CopyFrom(qdq)
        node = next(n for n in bad.graph.node if n.name == dq.name)
        next(a for a in node.attribute if a.name == "axis").i = 1
        want = "scales for axis 1 of size 3"
    elif case == "activation per axis":
        bad = _with_initializer(qdq, "y_scale", np.full(5, 0.01, np.float32))
        bad = _with_initializer(bad, "y_zero_point", np.zeros(5, np.int8))
        node = _node_reading(qdq, "y_scale")
        for n in bad.graph.node:
            if "y_scale" in n.input:
                n.attribute.append(helper.make_attribute("axis", 1))
        want = "quantized per axis 1; TFLite quantizes activations per tensor"
    elif case == "zero point range":
        bad = onnx.ModelProto()
        bad.CopyFrom(qdq)
        t = next(t for t in bad.graph.initializer if t.name == "y_zero_point")
        t.ClearField("raw_data")
        t.ClearField("int32_data")
        t.int32_data.append(300)
        node, want = _node_reading(qdq, "y_zero_point"), "zero point 300 is outside int8's range [-128, 127]"
    else:
        bad = _with_initializer(qdq, "y_zero_point", np.array(0, np.int16))
        node, want = _node_reading(qdq, "y_zero_point"), "zero point of type int16"
    with pytest.raises(ModelError) as err:
        QDQSource.read(bad)
    assert want in str(err.value) and repr(node.name) in str(err.value) and "\n" not in str(err.value)


def test_malformed_qdq_on_the_command_line_is_one_line_and_exit_1(qdq_files, tmp_path, capsys):
    qdq = onnx.load(str(qdq_files[(False, "QUInt8")]))
    path = tmp_path / "bad.onnx"
    onnx.save(_with_initializer(qdq, "y_scale", np.array(-0.5, np.float32)), str(path))
    code = main(["convert", str(path), "--int8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "QuantizeLinear node" in err or "DequantizeLinear node" in err
    assert "scale -0.5 is not a positive finite number" in err and str(path) in err


def test_qoperator_graphs_are_read_as_their_qdq_equivalent(tmp_path, capsys):
    """QOperator files convert (converters/qoperator.py; tests/test_qoperator.py checks them in detail)."""
    path = _quantized(tmp_path, True, "QUInt8", fmt="QOperator")
    float_model, ranges, info = strip_qdq(onnx.load(str(path)))
    assert not is_qdq(float_model) and "y" in ranges and info.weight_granularity == "per-channel"
    assert main(["info", str(path)]) in (0, None)
    out = capsys.readouterr().out
    assert "quantized (QOperator format)" in out and "equivalent QDQ graph" in out and "no edgenet handler" not in out


def test_info_says_a_qdq_graph_is_read_not_unsupported(qdq_files, capsys):
    assert main(["info", str(qdq_files[(True, "QInt8")])]) in (0, None)
    out = capsys.readouterr().out
    assert "quantized (QDQ)" in out and "no edgenet handler" not in out


# -- conversion: the int8 model on the producer's grid ---------------------------------------------
@pytest.mark.parametrize("per_channel,activation", [(True, "QUInt8"), (False, "QInt8")])
def test_qdq_model_converts_to_int8_matching_onnxruntime_without_calibration(qdq_files, tmp_path, per_channel,
                                                                             activation):
    from edgenet.inference import TFLiteModel

    path = qdq_files[(per_channel, activation)]
    res, report, verdict, found = convert_on_the_producers_grid(path, tmp_path / "out", per_channel)
    assert verdict["reference"] == "the QDQ model (onnxruntime)" and verdict["passed"]
    assert min(found["outputs_within_one_step"].values()) >= 0.99
    assert any("QDQ" in n for n in res.report.notes)
    # on fresh inputs too: every output value within one output step of onnxruntime on the QDQ model
    x = np.random.default_rng(5).uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32)
    ref = np.concatenate([_run(onnx.load(str(path)), x[i:i + 1]) for i in range(8)])
    got = TFLiteModel(res.int8_path).predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    _, ranges, _ = strip_qdq(onnx.load(str(path)))
    step = (ranges["y"][1] - ranges["y"][0]) / 255
    assert np.mean(np.abs(ref - got) <= step * 1.0001) >= 0.99


def test_per_tensor_weights_quantized_per_channel_stay_on_the_stored_grid(qdq_files, tmp_path):
    """Per-tensor weights quantized per channel (--per-tensor not given, asked per channel): TFLite
    re-derives a scale per channel (max|w| / 127), which moves the values of every channel whose
    largest |q| is below 127; those channels are put back on the stored scale, and counted."""
    import edgenet

    res = edgenet.convert(str(qdq_files[(False, "QUInt8")]), int8=True, out=str(tmp_path / "out"), mean=0.5, std=0.5,
                          per_tensor=False, layer_report=False, eval_samples=8, allow_degraded=True)
    found = res.report.calibration["qdq"]
    assert found["per_channel"] is True and found["weights_as_stored"]["share"] == 1.0
    assert found["weights_as_stored"]["channels_regridded"] >= 8
    assert any("values equal the QDQ model's stored int8 values" in n
               and "channel(s) put back on the producer's grid" in n for n in res.report.notes)


# -- the done-when figure: MobileNetV1 trained on digits, quantized by onnxruntime ------------------
@pytest.mark.slow
def test_mobilenet_v1_digits_quantized_by_onnxruntime_matches_it_in_tflite(tmp_path):
    """MobileNetV1 (alpha 0.25, 32 px) trained on digits, quantized by onnxruntime's quantize_static
    (QDQ, per-channel and per-tensor), converted with no calibration data: the int8 TFLite outputs
    are within one output step of onnxruntime's on the QDQ model for >= 99% of values on the
    held-out digits (benchmarks/qdq_onnx.py measures them bit-identical with the full checkpoint)."""
    import sys
    from pathlib import Path

    import edgenet
    from edgenet.data.datasets import load_dataset
    from edgenet.inference import TFLiteModel
    from edgenet.train import train

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from qdq_onnx import float_onnx, quantize_qdq

    ckpt = tmp_path / "digits.pt"
    train("digits", alpha=0.25, resolution=32, epochs=1, out=ckpt)
    src, pre = float_onnx(ckpt, tmp_path / "float.onnx")
    calib = np.ascontiguousarray(load_dataset("digits", pre, "calib", limit=64).x.transpose(0, 3, 1, 2))
    test = load_dataset("digits", pre, "test")
    for per_channel in (True, False):
        path = quantize_qdq(src, tmp_path / f"qdq_{per_channel}.onnx", calib, per_channel, "QUInt8")
        res = edgenet.convert(str(path), int8=True, out=str(tmp_path / f"out_{per_channel}"), mean=pre.mean,
                              std=pre.std, io_type="float32", layer_report=False)
        found = res.report.calibration["qdq"]
        assert found["tensors_calibrated"] == 0 and found["weights_as_stored"]["share"] == 1.0
        qdq = onnx.load(str(path))
        x = np.ascontiguousarray(test.x.transpose(0, 3, 1, 2))
        from edgenet.converters.validate import onnx_session

        sess = onnx_session(qdq)
        ref = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
        got = TFLiteModel(res.int8_path).predict(test.x)
        _, ranges, _ = strip_qdq(qdq)
        lo, hi = ranges[qdq.graph.output[0].name]
        assert np.mean(np.abs(ref - got) <= (hi - lo) / 255 * 1.0001) >= 0.99


def test_batchnorm_left_after_a_quantized_conv_is_counted_and_said(tmp_path):
    """quantize_static without quant_pre_process quantizes a Conv's weights before its BatchNorm:
    folding then moves them off the stored grid, and the notes say to fold first."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w", rng.normal(0, 0.4, (4, 3, 3, 3))), ("g", rng.uniform(0.5, 2, 4)), ("b", rng.normal(0, 0.1, 4)),
        ("m", rng.normal(0, 0.1, 4)), ("v", rng.uniform(0.5, 2, 4)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn")]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              str(tmp_path / "f.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ)
    source = QDQSource.read(onnx.load(str(tmp_path / "q.onnx")))
    assert source.info.unfolded_bn == 1
    assert any("quant_pre_process before quantize_static" in n for n in source.notes(True))


def test_weights_on_a_wider_learned_grid_are_kept_on_it(tmp_path):
    """QAT weights whose learned scale is wider than they need (largest |q| 100, not 127): the
    quantizer's max|w| / 127 would move every value; they are put back on the stored grid, bias
    requantized, and every weight value of the int8 model equals the QDQ model's."""
    import edgenet

    rng = np.random.default_rng(6)
    w1 = rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32)
    wf = rng.normal(0, 0.3, (5, 16)).astype(np.float32)
    s1 = (np.abs(w1).reshape(16, -1).max(1) / 100).astype(np.float32)
    sf = (np.abs(wf).max(1) / 100).astype(np.float32)

    def arr(v, n, dt=np.float32):
        return numpy_helper.from_array(np.asarray(v, dt), n)

    inits = [arr(w1, "w1"), arr(s1, "s1"), arr(np.zeros(16), "z1", np.int8), arr(wf, "wf"), arr(sf, "sf"),
             arr(np.zeros(5), "zf", np.int8), arr(rng.normal(0, 0.1, 5), "bf"), arr(0.01, "xs"), arr(0, "xz", np.int8),
             arr(0.05, "as"), arr(-128, "az", np.int8), arr(0.1, "ys"), arr(0, "yz", np.int8)]
    pairs = {"x": ("xs", "xz"), "r": ("as", "az"), "g": ("ys", "yz")}
    nodes = []

    def pair(value, out, axis=None):
        s, z = pairs.get(value, (None, None)) if axis is None else axis
        extra = {} if axis is None else {"axis": 0}
        nodes.extend([helper.make_node("QuantizeLinear", [value, s, z], [value + "_q"], **extra),
                      helper.make_node("DequantizeLinear", [value + "_q", s, z], [out], **extra)])

    pair("x", "xd")
    pair("w1", "w1d", ("s1", "z1"))
    nodes += [helper.make_node("Conv", ["xd", "w1d"], ["c"], pads=[1, 1, 1, 1], name="conv"),
              helper.make_node("Relu", ["c"], ["r"], name="relu")]
    pair("r", "rd")
    pair("wf", "wfd", ("sf", "zf"))
    nodes += [helper.make_node("GlobalAveragePool", ["rd"], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "wfd", "bf"], ["g"], transB=1, name="fc")]
    pair("g", "y")
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    path = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    res = edgenet.convert(str(path), int8=True, out=str(tmp_path / "out"), mean=0.5, std=0.5, layer_report=False,
                          eval_samples=8, allow_degraded=True)
    weights = res.report.calibration["qdq"]["weights_as_stored"]
    assert weights["share"] == 1.0 and weights["channels_regridded"] == 16 + 5
    # the bias requantized on the new weight scales: its int32 values still mean the float bias
    from edgenet.runtime import make_interpreter

    interp = make_interpreter(res.int8_path.read_bytes(), use_xnnpack=False)
    bias = next(t for t in interp.get_tensor_details() if t["dtype"] == np.int32 and tuple(t["shape"]) == (5,))
    weight = next(t for t in interp.get_tensor_details() if t["dtype"] == np.int8 and tuple(t["shape"]) == (5, 16))
    scales = bias["quantization_parameters"]["scales"]
    fc = next(op for op in interp._get_ops_details() if op["op_name"] == "FULLY_CONNECTED")
    x_scale = interp.get_tensor_details()[int(fc["inputs"][0])]["quantization_parameters"]["scales"][0]
    # TFLite's bias scale is input scale x weight scale, channel by channel
    np.testing.assert_allclose(scales, x_scale * weight["quantization_parameters"]["scales"], rtol=1e-5)
    np.testing.assert_allclose(interp.get_tensor(bias["index"]) * scales, numpy_helper.to_array(inits[6]),
                               atol=float(scales.max()))
    assert min(res.report.calibration["qdq"]["outputs_within_one_step"].values()) >= 0.99
    assert any("all" in n and "values equal the QDQ model's stored int8 values" in n for n in res.report.notes)


def test_a_qdq_model_on_rpi_computes_hard_swish_in_float_like_any_source(tmp_path):
    """The target's int8_float_ops (XNNPACK has no int8 HARD_SWISH) apply to a QDQ model too."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import edgenet
    from edgenet.targets.tflite_graph import read_tflite

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("HardSwish", ["c"], ["h"]),
         helper.make_node("Conv", ["h", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], [w, w2])
    float_path, qdq_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(float_path))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"x": rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(16))

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(float_path), str(qdq_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    np.savez(tmp_path / "x.npz", x=rng.normal(0, 1, (40, 3, 16, 16)).astype(np.float32))
    r = edgenet.convert(str(qdq_path), int8=True, target="rpi", calib=str(tmp_path / "x.npz"),
                        out=str(tmp_path / "out"), allow_degraded=True, layer_report=False)
    graph = read_tflite(r.int8_path.read_bytes())
    ops = {(op.name, graph.tensors[op.outputs[0]].dtype) for op in graph.operators}
    assert ("HARD_SWISH", "float32") in ops and ("CONV_2D", "int8") in ops
