"""What each op of a .tflite computes in, and what a model is, from its tensors (no TensorFlow needed)."""
import subprocess
import sys

import numpy as np
import pytest

from edgenet.converters.op_precision import describe, model_precision, op_precisions, ops_not_in
from edgenet.config import IOType, Precision
from edgenet.errors import ModelError
from edgenet.targets.tflite_graph import OpInfo, TensorInfo, TfliteGraph

F32, F16, DYN, I8, I16 = (Precision.FLOAT32, Precision.FLOAT16, Precision.DYNAMIC, Precision.INT8,
                          Precision.INT16X8)


def _synthetic(tensors, ops, inputs=(0,), outputs=None) -> TfliteGraph:
    """A graph from ``tensors`` [(dtype, is_constant)] and ``ops`` [(name, inputs, outputs)]."""
    infos = tuple(TensorInfo(i, f"t{i}", (1, 4), (1, 4), dtype, const) for i, (dtype, const) in enumerate(tensors))
    opinfos = tuple(OpInfo(k, name, 0, 1, tuple(ins), tuple(outs)) for k, (name, ins, outs) in enumerate(ops))
    return TfliteGraph(0, 1, infos, opinfos, tuple(inputs), tuple(outputs or (len(tensors) - 1,)))


def _precisions(graph):
    return [(e.op, e.precision) for e in op_precisions(graph)]


def test_rules_on_hand_made_graphs():
    # hybrid FULLY_CONNECTED: float activations, int8 weights; an int8 constant passed through
    # DEQUANTIZE into a float CONV_2D is int8-stored weights too
    g = _synthetic([("float32", False), ("int8", True), ("float32", False), ("int8", True), ("float32", False),
                    ("float32", False)],
                   [("FULLY_CONNECTED", [0, 1, -1], [2]), ("DEQUANTIZE", [3], [4]), ("CONV_2D", [2, 4], [5])])
    assert _precisions(g) == [("FULLY_CONNECTED", DYN), ("DEQUANTIZE", DYN), ("CONV_2D", DYN)]
    assert model_precision(g) is DYN
    # shape arithmetic on int32 only: no numeric precision, never listed
    g = _synthetic([("float32", False), ("int32", False), ("int32", True), ("int32", False)],
                   [("SHAPE", [0], [1]), ("ADD", [1, 2], [3])])
    assert _precisions(g) == [("SHAPE", F32), ("ADD", None)]
    assert ops_not_in(g, I8) == [op_precisions(g)[0]]
    # float16 activations (no constant involved)
    g = _synthetic([("float16", False), ("float16", False)], [("RELU", [0], [1])])
    assert _precisions(g) == [("RELU", F16)] and model_precision(g) is F16
    # int8 -> int16 via DEQUANTIZE/QUANTIZE, then two int16 ops and one int8 op: more ops in int16
    g = _synthetic([("int8", False), ("int8", False), ("float32", False), ("int16", False), ("int16", False),
                    ("int16", False)],
                   [("RELU", [0], [1]), ("DEQUANTIZE", [1], [2]), ("QUANTIZE", [2], [3]), ("ADD", [3, 3], [4]),
                    ("LOGISTIC", [4], [5])])
    assert _precisions(g) == [("RELU", I8), ("DEQUANTIZE", I8), ("QUANTIZE", I16), ("ADD", I16),
                              ("LOGISTIC", I16)]
    assert model_precision(g) is I16
    assert [(e.op, e.precision) for e in ops_not_in(g, I16)] == [("RELU", I8), ("DEQUANTIZE", I8)]
    # a model of conversions only is what it converts to
    g = _synthetic([("float32", False), ("int8", False)], [("QUANTIZE", [0], [1])])
    assert model_precision(g) is I8


def test_describe_names_ops_and_precisions():
    g = _synthetic([("int8", False), ("float32", False), ("float32", False)],
                   [("DEQUANTIZE", [0], [1]), ("MIRROR_PAD", [1], [2])])
    assert describe(ops_not_in(g, I8)) == "MIRROR_PAD 't2' (float32)"
    entries = op_precisions(g) * 4
    assert describe(entries, limit=2).endswith("and 6 more")


def test_not_a_tflite_file_is_a_model_error(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a .tflite model"):
        model_precision(bad)


# -- on models TensorFlow made ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One .tflite of each precision of the tiny CNN (dynamic: of a CNN with larger weights)."""
    tf = pytest.importorskip("tensorflow")
    from conftest import _tiny_tf_cnn
    from edgenet.converters.quantize import quantize_calibrated as to_quantized_tflite
    from edgenet.converters.float_weights import weight_model
    from test_precisions import _wide_tf_cnn, to_float_tflite

    folder = tmp_path_factory.mktemp("precisions")
    fn, wide = _tiny_tf_cnn(tf), _wide_tf_cnn()
    data = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    float_model = to_float_tflite(fn)
    made = {
        "float32": float_model,
        "float16": weight_model(float_model, F16),
        "dynamic": weight_model(to_float_tflite(wide), DYN),
        "int8": to_quantized_tflite(float_model, [data]).model,
        "int8_floatio": to_quantized_tflite(float_model, [data], io_type=IOType.FLOAT32).model,
        "int8_uint8io": to_quantized_tflite(float_model, [data], io_type=IOType.UINT8).model,
        "int16x8": to_quantized_tflite(float_model, [data], precision=I16).model,
        "int16x8_floatio": to_quantized_tflite(float_model, [data], precision=I16, io_type=IOType.FLOAT32).model,
    }
    paths = {}
    for name, model in made.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(model)
    return paths


@pytest.mark.parametrize("name, precision", [
    ("float32", F32), ("float16", F16), ("dynamic", DYN), ("int8", I8), ("int8_floatio", I8),
    ("int8_uint8io", I8), ("int16x8", I16), ("int16x8_floatio", I16),
])
def test_each_precision_is_recognised_and_uniform(models, name, precision):
    assert model_precision(models[name]) is precision
    entries = op_precisions(models[name])
    if precision is DYN:    # the small stem keeps float32 weights (TF quantizes weights of >= 1,024 values)
        assert [(e.op, e.precision) for e in ops_not_in(models[name], precision)] == [("CONV_2D", F32)]
    else:
        assert ops_not_in(models[name], precision) == []
    if name.endswith("io"):   # the QUANTIZE / DEQUANTIZE at the edges belong to the integer model
        assert {e.precision for e in entries if e.op in ("QUANTIZE", "DEQUANTIZE")} == {precision}
    # seen as another precision, the model's own ops are listed
    other = F32 if precision is not F32 else I8
    listed = {e.precision for e in ops_not_in(models[name], other)}
    assert listed == {precision}, listed


def test_float16_weights_and_their_dequantize_ops(models):
    entries = op_precisions(models["float16"])
    dequantize = [e for e in entries if e.op == "DEQUANTIZE"]
    assert dequantize and {e.precision for e in dequantize} == {F16}
    assert {e.precision for e in entries if e.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")} == {F16}
    assert [e.op for e in entries if e.precision is F32] == ["MEAN"]    # no weights: float32, not listed
    assert ops_not_in(models["float16"], F16) == []


def test_an_int8_model_with_a_float_op_in_the_middle():
    """The converter keeps SIN (no int8 kernel) in float between DEQUANTIZE and QUANTIZE."""
    pytest.importorskip("tensorflow")
    from _tiny_tflite import with_op_in_the_middle

    path = with_op_in_the_middle("sin")
    assert model_precision(path) is I8
    listed = ops_not_in(path, I8)
    assert [(e.op, e.precision) for e in listed] == [("SIN", F32)]
    assert listed[0].index == [e.op for e in op_precisions(path)].index("SIN")


def test_works_without_tensorflow(models):
    """The device path: numpy + ai-edge-litert's schema only (TensorFlow made unimportable)."""
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "from edgenet.converters.op_precision import model_precision, ops_not_in\n"
            f"print(model_precision({str(models['int16x8_floatio'])!r}).value, "
            f"len(ops_not_in({str(models['int8'])!r}, 'float32')))\n"
            "assert 'tensorflow' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["int16x8", "5"]
