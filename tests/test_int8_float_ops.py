"""A target's ``int8_float_ops`` (rpi, android: HARD_SWISH, which XNNPACK has no int8 kernel for) are
computed in float between int8 tensors: the same values as the int8 kernel, one XNNPACK graph instead
of one cut at every such op; --strict-int8, other precisions and integer-only runtimes keep them int8.

The model: conv -> hard-swish -> conv -> sigmoid.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from edgenet.config import OpPrecision, Precision  # noqa: E402
from edgenet.converters.build import int8_float_ops  # noqa: E402
from edgenet.converters.op_precision import ops_not_in  # noqa: E402
from edgenet.converters.quantize import float_ops_of_types, quantize_calibrated  # noqa: E402
from edgenet.errors import TargetError  # noqa: E402
from edgenet.inference import TFLiteModel  # noqa: E402
from edgenet.targets.profile import load_target  # noqa: E402


@pytest.fixture(scope="module")
def model() -> bytes:
    from edgenet.converters.tflite import with_signature

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (1, 1, 8, 1)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def fn(x):
        y = tf.nn.conv2d(x, w1, 1, "SAME")
        y = y * tf.nn.relu6(y + 3.0) * (1.0 / 6.0)      # TFLite's converter makes it one HARD_SWISH
        return tf.sigmoid(tf.nn.conv2d(y, w2, 1, "SAME"))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    return with_signature(bytes(conv.convert()))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    return rng.normal(0, 1, (48, 16, 16, 3)).astype(np.float32), rng.normal(0, 1, (16, 16, 16, 3)).astype(np.float32)


def _op_names(blob: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob, num_threads=1)
    it.allocate_tensors()
    return [o["op_name"] for o in it._get_ops_details()]


def test_target_float_ops_are_float_between_int8_tensors_with_the_same_values(model, data):
    calib, x = data
    wanted = float_ops_of_types(model, ["HARD_SWISH"])
    assert len(wanted) == 1 and set(wanted.values()) == {OpPrecision.FLOAT}
    assert float_ops_of_types(model, []) == {} and float_ops_of_types(model, ["SOFTMAX"]) == {}
    plain = quantize_calibrated(model, [calib], precision=Precision.INT8, io_type="int8").model
    mixed = quantize_calibrated(model, [calib], precision=Precision.INT8, io_type="int8", op_precision=wanted).model
    assert [e.op for e in ops_not_in(mixed, Precision.INT8)] == ["HARD_SWISH"]
    assert not ops_not_in(plain, Precision.INT8)
    names = _op_names(mixed)
    assert "DEQUANTIZE" in names and "QUANTIZE" in names
    # XNNPACK takes the whole float-hard-swish model as one graph; the int8 hard swish cuts it
    assert names.count("DELEGATE") == 1 and _op_names(plain).count("DELEGATE") > 1
    f = TFLiteModel(model).predict_all([x])[0]
    p, m = TFLiteModel(plain).predict_all([x])[0], TFLiteModel(mixed).predict_all([x])[0]
    assert np.abs(m - p).mean() <= 1.0 / 256                     # the same values, to an output step
    assert np.abs(m - f).mean() <= np.abs(p - f).mean() * 1.1   # and no further from float


def test_profiles_say_which_ops_a_target_computes_in_float(model, tmp_path):
    rpi = load_target("rpi")
    assert rpi.int8_float_ops == ("HARD_SWISH",)
    assert load_target("android").int8_float_ops == ("HARD_SWISH",)
    for name in ("coral", "cortex-m", "ethos-u55"):
        assert load_target(name).int8_float_ops == ()
    opts = SimpleNamespace(strict_int8=False)
    assert list(int8_float_ops(model, Precision.INT8, opts, rpi).values()) == [OpPrecision.FLOAT]
    assert int8_float_ops(model, Precision.INT8, SimpleNamespace(strict_int8=True), rpi) == {}
    assert int8_float_ops(model, Precision.INT16X8, opts, rpi) == {}
    assert int8_float_ops(model, Precision.INT8, opts, load_target("coral")) == {}
    bad = tmp_path / "mcu.toml"
    bad.write_text('name = "mcu"\ndescription = "d"\ndevice = "d"\nruntime = "tflm"\nram_bytes = 100000\n'
                   'int8_float_ops = ["HARD_SWISH"]\n')
    with pytest.raises(TargetError, match="integer"):
        load_target(bad)
    bad.write_text('name = "x"\ndescription = "d"\ndevice = "d"\nint8_float_ops = ["hard swish"]\n')
    with pytest.raises(TargetError, match="op names"):
        load_target(bad)


@pytest.fixture(scope="module")
def negative_model() -> bytes:
    """conv (outputs down to about -75, biases -60 .. 0) -> hard-swish: most of the conv's range is
    where hard-swish is 0."""
    from edgenet.converters.tflite import with_signature

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1, (3, 3, 3, 8)).astype(np.float32)
    b1 = np.linspace(-60, 0, 8).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def fn(x):
        y = tf.nn.conv2d(x, w1, 1, "SAME") + b1
        return y * tf.nn.relu6(y + 3.0) * (1.0 / 6.0)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    return with_signature(bytes(conv.convert()))


def test_a_hard_swish_input_keeps_the_range_where_hard_swish_moves(negative_model, data):
    from edgenet.config import CalibMethod
    from edgenet.converters import _flatbuffer
    from edgenet.converters.calibration import MAX_NARROWING, RangeCalibrator, flat_below, floored
    from edgenet.converters.quantize import quantize

    calib, x = data
    obj = _flatbuffer.read(negative_model)
    floors = flat_below(obj)
    assert list(floors.values()) == [-3.0]                        # the conv output, read by the hard-swish only
    name = _flatbuffer.tensor_name(obj.subgraphs[0].tensors[next(iter(floors))])
    ranges = RangeCalibrator([calib], CalibMethod.MINMAX, 16, 2).ranges(negative_model)
    lo, hi = ranges[name]
    assert lo == -3.0 and hi > 5
    assert floored(-87.0, 112.0, -3.0) == -3.0
    assert floored(-1.0, 5.0, -3.0) == -1.0 and floored(-10.0, -4.0, -3.0) == -10.0   # nothing to raise
    assert floored(-400.0, 4.0, -3.0) == pytest.approx(4.0 - 404.0 / MAX_NARROWING)    # narrowed 4x at most
    wide = dict(ranges)
    wide[name] = (-75.0, hi)                                      # the range min/max gave before
    f = TFLiteModel(negative_model).predict_all([x])[0]
    narrow_q = TFLiteModel(quantize(negative_model, ranges, precision=Precision.INT8,
                                    io_type="float32")).predict_all([x])[0]
    wide_q = TFLiteModel(quantize(negative_model, wide, precision=Precision.INT8,
                                  io_type="float32")).predict_all([x])[0]
    err_narrow, err_wide = np.abs(narrow_q - f).mean(), np.abs(wide_q - f).mean()
    assert err_narrow < 0.7 * err_wide
    assert np.abs(narrow_q - f).max() < np.abs(wide_q - f).max()   # saturated, not wrong


def test_the_repair_does_not_blame_a_hard_swish_input_for_values_hard_swish_ignores(negative_model, data):
    """The repair ranks ops by their own int8 error: the values below -3 the range no longer holds
    give hard-swish's output exactly, so they are no error of the conv."""
    from edgenet.converters.repair.graph import ops
    from edgenet.converters.repair.sensitivity import own_errors

    calib, x = data
    int8 = quantize_calibrated(negative_model, [calib], precision=Precision.INT8).model
    conv = next(op.name for op in ops(negative_model) if op.op == "CONV_2D")
    own = own_errors(negative_model, int8, x[:8], [conv])[conv]
    assert own.sqnr_db > 30          # rounding only (the clipped values taken as error: about 1 dB)
