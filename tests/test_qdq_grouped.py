"""Quantized ONNX (QDQ and QOperator) with grouped Convs and non-zero weight zero points: the int8
.tflite against onnxruntime running the quantized file itself.

A grouped Conv (1 < group < channels) is written as SPLIT + one CONV_2D per group + CONCATENATION
(converters/onnx_to_tf/conv.py); its Relu goes into each group's CONV_2D and the pieces take the
QDQ range of the value they are part of (converters/tflite_writer/fuse.py,
converters/qdq_quantize.py), a per-tensor weight's slices go back on the producer's scale
(converters/qdq_weights.py). The files are made by onnxruntime's quantize_static, as users make them."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ort_quantized import quantize_static_file  # noqa: E402
from edgenet.converters.qdq import strip_qdq  # noqa: E402

SHAPE = (1, 6, 9, 9)


def _grouped(group: int):
    """x [1,6,9,9] -> Conv 6 (group, stride 2) + Relu -> depthwise Conv x2 (multiplier 2) + Clip(0, 6)
    -> Conv 6 (group, no activation) -> GlobalAveragePool -> Flatten -> Gemm 5."""
    rng = np.random.default_rng(group)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(0, 0.4, (6, 6 // group, 3, 3))), ("b1", rng.normal(0, 0.1, 6)),
        ("w2", rng.normal(0, 0.4, (12, 1, 3, 3))), ("b2", rng.normal(0, 0.1, 12)),
        ("w3", rng.normal(0, 0.4, (6, 12 // group, 1, 1))), ("b3", rng.normal(0, 0.1, 6)),
        ("wf", rng.normal(0, 0.6, (5, 6))), ("bf", rng.normal(0, 0.1, 5)),
        ("lo", np.array(0.0)), ("hi", np.array(6.0)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="gconv", pads=[1, 1, 1, 1], strides=[2, 2],
                              group=group),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw_x2", pads=[1, 1, 1, 1], group=6),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="gconv_pw", group=group),
             helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, f"g{group}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])


def _data(folder):
    """16 inputs uniform in [-1, 1] (6 channels: not an image, given as data)."""
    path = folder / "data.npz"
    np.savez(path, x=np.random.default_rng(3).uniform(-1, 1, (16, *SHAPE[1:])).astype(np.float32))
    return str(path)


def _convert(path, out):
    import edgenet

    res = edgenet.convert(str(path), int8=True, out=str(out), calib=_data(out.parent), io_type="float32",
                          layer_report=False, eval_samples=8, allow_degraded=True, output_kinds=("y=generic",))
    return res, json.loads((out / "report.json").read_text())


def _against_onnxruntime(path, int8_path):
    """(share of output values within one output step of onnxruntime on the quantized file, largest
    difference in steps), on 16 fresh inputs."""
    from edgenet.inference import TFLiteModel

    x = np.random.default_rng(5).uniform(-1, 1, (16, *SHAPE[1:])).astype(np.float32)
    ref = _run(path, x)
    got = TFLiteModel(int8_path).predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    _, ranges, _ = strip_qdq(onnx.load(str(path)))
    step = (ranges["y"][1] - ranges["y"][0]) / 255
    diff = np.abs(ref - got) / step
    return float(np.mean(diff <= 1.0001)), float(diff.max())


@pytest.mark.parametrize("group,per_channel,fmt,activation", [
    (2, True, "QDQ", "QUInt8"), (2, False, "QDQ", "QInt8"), (3, True, "QDQ", "QInt8"), (3, False, "QDQ", "QUInt8"),
    (2, True, "QOperator", "QInt8"), (2, False, "QOperator", "QUInt8"), (3, True, "QOperator", "QUInt8"),
    (3, False, "QOperator", "QInt8")])
def test_grouped_conv_converts_to_int8_matching_onnxruntime(tmp_path, group, per_channel, fmt, activation):
    """Group 2 and 3 (odd channels per group), per channel and per tensor, QDQ and QOperator: a valid
    int8 .tflite on the producer's ranges and stored weights, its outputs those of onnxruntime on the
    quantized file (before the fix: 13 dB per channel, an invalid .tflite per tensor)."""
    path = quantize_static_file(_grouped(group), tmp_path, f"g{group}", per_channel=per_channel,
                                activation=activation, fmt=fmt, seed=1, shape=SHAPE)
    res, report = _convert(path, tmp_path / "out")
    found = report["calibration"]["qdq"]
    assert found["tensors_calibrated"] == 0, "a grouped conv's pieces must take the QDQ range of their value"
    assert found["weights_as_stored"]["share"] == 1.0 and found["per_channel"] is per_channel
    assert min(found["outputs_within_one_step"].values()) >= 0.99
    within, worst = _against_onnxruntime(path, res.int8_path)
    assert within >= 0.99 and worst <= 1.0001
    # the Relu after the group convs' concatenation is each CONV_2D's fused activation
    from edgenet.runtime import make_interpreter

    ops = [op["op_name"] for op in make_interpreter(res.int8_path.read_bytes())._get_ops_details()]
    assert ops.count("CONV_2D") == 2 * group and "RELU" not in ops and "DEPTHWISE_CONV_2D" in ops


def test_float_grouped_conv_and_relu_fuse_and_stay_exact(tmp_path):
    """The float .tflite of a grouped Conv + Relu: no RELU op left, outputs those of onnxruntime."""
    import edgenet
    from edgenet.inference import TFLiteModel
    from edgenet.runtime import make_interpreter

    path = tmp_path / "g3.onnx"
    onnx.save(_grouped(3), str(path))
    res = edgenet.convert(str(path), out=str(tmp_path / "out"), calib=_data(tmp_path), layer_report=False,
                          eval_samples=4)
    ops = [op["op_name"] for op in make_interpreter(res.float_path.read_bytes())._get_ops_details()]
    assert "RELU" not in ops and ops.count("CONCATENATION") == 2
    x = np.random.default_rng(2).uniform(-1, 1, (4, *SHAPE[1:])).astype(np.float32)
    got = TFLiteModel(res.float_path).predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, _run(path, x), atol=1e-4)


def test_weights_with_a_nonzero_zero_point_are_recentred_and_said(tmp_path):
    """int8 weights stored with zero points other than 0 (TFLite stores zero point 0): channels whose
    q - z fit [-127, 127] keep the producer's scale and every value; one that does not is rescaled
    (its values move by at most half a step); the notes and report.json say which."""
    path = quantize_static_file(_grouped(2), tmp_path, "g2", per_channel=True, activation="QUInt8", fmt="QDQ",
                                seed=1, shape=SHAPE)
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0].startswith("w1"))
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int64).reshape(6, -1)
    # a zero point per channel that keeps q - z within [-127, 127] (the middle of the channel's values,
    # never 0), but channel 0 gets one that pushes its largest |q| 3 past 127
    hi, lo = q.max(1), q.min(1)
    zp = np.where((hi + lo) // 2 != 0, (hi + lo) // 2, np.where(hi < 127, 1, -1)).astype(np.int8)
    zp[0] = hi[0] - 130 if hi[0] >= -lo[0] else lo[0] + 130
    assert all(np.abs(q[c] - zp[c]).max() <= 127 for c in range(1, 6)) and np.abs(q[0] - zp[0]).max() == 130
    inits[dq.input[2]].CopyFrom(numpy_helper.from_array(zp, dq.input[2]))
    onnx.save(model, str(path))
    _, _, info = strip_qdq(model)
    assert [(r.node, r.exact, r.channels) for r in info.recentred] == [("gconv", 5, 6)]
    res, report = _convert(path, tmp_path / "out")
    found = report["calibration"]["qdq"]
    assert found["weights_recentred"] == [{"node": "gconv", "type": "int8",
                                           "zero_points": [int(zp.min()), int(zp.max())],
                                           "exact_channels": 5, "channels": 6}]
    # every weight value but those of the rescaled channel 0 (3 x 3 x 3 values) as stored
    weights = found["weights_as_stored"]
    assert 0 < weights["total"] - weights["equal"] <= 27
    assert any("differ from the QDQ model's stored int8 values" in n for n in res.report.notes)
    assert any("zero point other than 0" in n and "'gconv' (int8, zero point" in n and "5 of 6 channel(s)" in n
               for n in res.report.notes)
    within, worst = _against_onnxruntime(path, res.int8_path)
    assert within >= 0.9 and worst <= 2.0001


def test_an_invalid_tflite_edgenet_wrote_is_a_conversion_error_not_the_users_model(tmp_path):
    """An int8 .tflite with a bias of 1 zero point and several scales (what the grouped per-tensor
    case wrote): a ConversionError saying it is the conversion's fault, not a ModelError."""
    from edgenet.config import Precision
    from edgenet.converters import _flatbuffer
    from edgenet.converters.build import check_written
    from edgenet.errors import ConversionError

    path = quantize_static_file(_grouped(2), tmp_path, "g2", per_channel=False, activation="QInt8", fmt="QDQ",
                                seed=1, shape=SHAPE)
    res, _ = _convert(path, tmp_path / "out")
    check_written(res.int8_path.read_bytes(), Precision.INT8)     # the model written is valid
    obj = _flatbuffer.read(res.int8_path.read_bytes())
    bias = next(t for t in obj.subgraphs[0].tensors if t.type == 2 and t.quantization is not None
                and t.quantization.scale is not None and len(t.quantization.scale) == 1)
    bias.quantization.scale = [float(bias.quantization.scale[0])] * 3
    with pytest.raises(ConversionError, match="not valid.*a fault of the conversion, not of your model"):
        check_written(_flatbuffer.write(obj), Precision.INT8)


@pytest.mark.parametrize("per_channel", [True, False])
def test_1d_grouped_conv_matches_onnxruntime(tmp_path, per_channel):
    """A 1-D grouped Conv (run as 2-D, reshaped back after the concatenation) + Relu: the Relu still goes
    into each group's CONV_2D and the pieces take the Conv's range: no calibrated tensor."""
    import edgenet
    from edgenet.inference import TFLiteModel

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(0, 0.4, (6, 2, 3))), ("b1", rng.normal(0, 0.1, 6)), ("wf", rng.normal(0, 0.5, (6, 5))))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="gconv1d", pads=[1, 1], group=3),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("GlobalAveragePool", ["r1"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "g1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = quantize_static_file(model, tmp_path, "g1d", per_channel=per_channel, activation="QUInt8", fmt="QDQ",
                                seed=1, shape=(1, 6, 11))
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(3).uniform(-1, 1, (16, 6, 11)).astype(np.float32))
    res = edgenet.convert(str(path), int8=True, out=str(tmp_path / "out"), calib=str(data), io_type="float32",
                          layer_report=False, eval_samples=8, allow_degraded=True, output_kinds=("y=generic",))
    assert res.report.calibration["qdq"]["tensors_calibrated"] == 0
    x = np.random.default_rng(5).uniform(-1, 1, (16, 6, 11)).astype(np.float32)
    ref = _run(path, x)
    got = TFLiteModel(res.int8_path).predict(x)    # rank-3 inputs keep their ONNX layout
    _, ranges, _ = strip_qdq(onnx.load(str(path)))
    step = (ranges["y"][1] - ranges["y"][0]) / 255
    assert np.mean(np.abs(ref - got) <= step * 1.0001) >= 0.99
