"""float16 and dynamic-range models without TensorFlow (converters/float_weights.py): the LiteRT
Quantizer's weight-only recipes on the native writer's float32 model, run in LiteRT. Nothing here
imports TensorFlow (the comparison with TensorFlow's models is in tests/test_precisions.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.config import Precision
from edgenet.converters.float_weights import DYNAMIC_MIN_WEIGHT_ELEMENTS, weight_model
from edgenet.converters.op_precision import model_precision, ops_not_in
from edgenet.converters.tflite_writer import native_tflite
from edgenet.inference import TFLiteModel
from edgenet.targets.tflite_graph import read_tflite


def make_model(nodes, inputs: dict, outputs, initializers: dict) -> "onnx.ModelProto":
    """An opset-17 model of ``nodes`` (no TensorFlow needed, unlike tests/test_onnx_to_tf_helpers)."""
    graph = helper.make_graph(nodes, "test",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
                              [helper.make_empty_tensor_value_info(n) for n in outputs],
                              [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def _conv_net(stem_out: int = 16):
    """Conv 3x3 (3 -> stem_out, stride 2) + Relu + Conv 3x3 (stem_out -> 32) + Relu + global pool +
    Gemm (32 -> 40). With stem_out=16 the stem holds 432 weight values (under 1,024), the others over."""
    rng = np.random.default_rng(5)
    inits = {"w1": rng.normal(0, 0.3, (stem_out, 3, 3, 3)), "w2": rng.normal(0, 0.1, (32, stem_out, 3, 3)),
             "wf": rng.normal(0, 0.2, (40, 32)), "bf": rng.normal(0, 0.1, (40,))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    return make_model(nodes, {"x": (1, 3, 16, 16)}, ["y"], {k: v.astype(np.float32) for k, v in inits.items()})


@pytest.fixture(scope="module")
def float_model():
    return native_tflite(_conv_net()).model


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32)


def _sqnr_db(ref, test) -> float:
    noise = np.sum((ref.astype(np.float64) - test) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(noise, 1e-30)))


def _weight_feeds(model: bytes) -> list[tuple[str, str, str]]:
    """(op, how its weight arrives: "const" or "dequantize", the stored weight's dtype) for each
    CONV_2D / FULLY_CONNECTED."""
    graph = read_tflite(model)
    made_by = {o: op for op in graph.operators for o in op.outputs}
    rows = []
    for op in graph.operators:
        if op.name not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        w = graph.tensors[op.inputs[1]]
        if w.is_constant:
            rows.append((op.name, "const", w.dtype))
        else:
            src = made_by[op.inputs[1]]
            rows.append((op.name, src.name.lower(), graph.tensors[src.inputs[0]].dtype))
    return rows


def test_float16_is_dequantize_of_float16_weights_close_to_float32(float_model, data):
    model = weight_model(float_model, Precision.FLOAT16)
    assert model == weight_model(float_model, Precision.FLOAT16)                 # byte-identical rerun
    assert _weight_feeds(model) == [("CONV_2D", "dequantize", "float16")] * 2 + \
        [("FULLY_CONNECTED", "dequantize", "float16")]
    graph = read_tflite(model)
    assert graph.input_tensors[0].dtype == graph.output_tensors[0].dtype == "float32"
    assert {t.name for t in graph.input_tensors + graph.output_tensors} == {"x", "y"}
    assert model_precision(model) is Precision.FLOAT16 and ops_not_in(model, Precision.FLOAT16) == []
    ref = TFLiteModel(float_model).predict(data)
    assert _sqnr_db(ref, TFLiteModel(model).predict(data)) > 55    # float16 rounding of weights only


def test_dynamic_is_hybrid_int8_weights_from_1024_values(float_model, data):
    """int8 weights straight into the ops (hybrid kernels, no DEQUANTIZE); the 432-value stem stays
    float32, TensorFlow's rule; closer to float32 than float16 is not, but well above int8 noise."""
    model = weight_model(float_model, Precision.DYNAMIC)
    assert model == weight_model(float_model, Precision.DYNAMIC)
    assert DYNAMIC_MIN_WEIGHT_ELEMENTS == 1024
    assert _weight_feeds(model) == [("CONV_2D", "const", "float32"), ("CONV_2D", "const", "int8"),
                                    ("FULLY_CONNECTED", "const", "int8")]
    assert "DEQUANTIZE" not in Counter(op.name for op in read_tflite(model).operators)
    assert model_precision(model) is Precision.DYNAMIC
    assert [e.op for e in ops_not_in(model, Precision.DYNAMIC)] == ["CONV_2D"]      # the stem, named
    ref = TFLiteModel(float_model).predict(data)
    assert 20 < _sqnr_db(ref, TFLiteModel(model).predict(data)) < 55


def test_dynamic_of_small_weights_is_the_float32_model(data):
    small = native_tflite(_conv_net(stem_out=2)).model    # 54, 576, 1,280 values: FC only
    model = weight_model(small, Precision.DYNAMIC)
    assert [f[2] for f in _weight_feeds(model)] == ["float32", "float32", "int8"]
    tiny = make_model([helper.make_node("Conv", ["x", "w"], ["y"])], {"x": (1, 3, 8, 8)}, ["y"],
                      {"w": np.ones((4, 3, 3, 3), np.float32)})
    plain = native_tflite(tiny).model
    assert model_precision(weight_model(plain, Precision.DYNAMIC)) is Precision.FLOAT32


def test_sizes_are_half_and_a_quarter():
    rng = np.random.default_rng(2)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"])], {"x": (1, 64, 6, 6)}, ["y"],
                       {"w": rng.normal(size=(128, 64, 3, 3)).astype(np.float32)})
    f32 = native_tflite(model).model
    f16, dyn = weight_model(f32, Precision.FLOAT16), weight_model(f32, Precision.DYNAMIC)
    assert 0.45 < len(f16) / len(f32) < 0.55 and 0.2 < len(dyn) / len(f32) < 0.3


def test_another_precision_is_refused(float_model):
    with pytest.raises(ValueError, match="not a weight-only precision: int8"):
        weight_model(float_model, Precision.INT8)


def test_convert_of_an_onnx_file_to_float16_and_dynamic_imports_no_tensorflow(tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(_conv_net(), str(path))
    out = tmp_path / "out"
    code = ("import sys, json, edgenet\n"
            f"r = edgenet.convert({str(path)!r}, precisions=['float32', 'float16', 'dynamic'], out={str(out)!r}, "
            "eval_samples=4, layer_report=False)\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules if sys.modules[m] is not None} & {'tensorflow', 'keras'})\n"
            "print(json.dumps({'heavy': heavy, 'notes': list(r.report.notes)}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [], got
    assert not [n for n in got["notes"] if "TensorFlow" in n], got["notes"]
    for name, precision in (("model_float16.tflite", Precision.FLOAT16), ("model_dynamic.tflite", Precision.DYNAMIC)):
        assert model_precision((out / name).read_bytes()) is precision
