"""Our batched calibrator against TensorFlow's own, on a small model."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import _tiny_tf_cnn
from edgenet.converters.calibration import RangeCalibrator
from edgenet.converters.tflite import to_int8_tflite, without_conversion_metadata
from edgenet.config import CalibMethod, IOType
from edgenet.inference import TFLiteModel


def _float(fn) -> bytes:
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()


def _stock_int8(fn, data, io=None, per_channel: bool = True) -> bytes:
    """TensorFlow's own int8 conversion: its calibrator, one sample at a time."""
    io = io or tf.int8
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([d[None]] for d in data)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = io
    conv.inference_output_type = io
    if not per_channel:
        conv._experimental_disable_per_channel = True
    return conv.convert()


def _convert(fn, data, ours: RangeCalibrator | None):
    if ours is None:
        return _stock_int8(fn, data)
    return to_int8_tflite(_float(fn), ours.inputs, method=ours.method, batch_size=ours.batch_size,
                          num_threads=ours.num_threads).model


def _quant_params(model: bytes):
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    out = {}
    for t in fbu.convert_bytearray_to_object(model).subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.scale is not None:
            out[t.name] = (np.asarray(q.scale), np.asarray(q.zeroPoint))
    return out


@pytest.fixture(scope="module")
def setup():
    fn = _tiny_tf_cnn(tf)
    data = np.random.default_rng(0).uniform(-1, 1, (40, 32, 32, 3)).astype(np.float32)
    return fn, data


def test_minmax_matches_tflite_calibrator(setup):
    fn, data = setup
    stock = _convert(fn, data, None)
    result = to_int8_tflite(_float(fn), [data], method=CalibMethod.MINMAX, batch_size=16, num_threads=2)
    mine = result.model
    assert result.calibration.samples == 40 and result.calibration.batch_size == 16
    assert result.calibration.tensors >= 5
    a, b = _quant_params(stock), _quant_params(mine)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name][0], b[name][0], rtol=1e-5, err_msg=name)
        np.testing.assert_array_equal(a[name][1], b[name][1], err_msg=name)


@pytest.mark.parametrize("io_type, per_channel", [(IOType.INT8, True), (IOType.UINT8, False),
                                                  (IOType.FLOAT32, True)])
def test_int8_is_the_converters_own_model_byte_for_byte(setup, monkeypatch, io_type, per_channel):
    """Given the same ranges, skipping the converter's second conversion and calling its quantizer
    directly gives the converter's own int8 model, less its metadata."""
    from tensorflow.lite.python.optimize import calibrator

    fn, data = setup
    monkeypatch.setattr(calibrator.Calibrator, "calibrate",
                        lambda self, gen: RangeCalibrator([data]).annotate(self._model_content))
    io = {IOType.INT8: tf.int8, IOType.UINT8: tf.uint8, IOType.FLOAT32: tf.float32}[io_type]
    stock = without_conversion_metadata(bytes(_stock_int8(fn, data, io, per_channel)))
    monkeypatch.undo()
    mine = to_int8_tflite(_float(fn), [data], io_type=io_type, per_channel=per_channel, num_threads=2).model
    assert mine == stock


def test_remainder_batches_and_batch_size_do_not_change_ranges(setup):
    fn, data = setup
    m1 = _convert(fn, data[:37], RangeCalibrator([data[:37]], batch_size=8))
    m2 = _convert(fn, data[:37], RangeCalibrator([data[:37]], batch_size=1))
    for (n1, (s1, z1)), (n2, (s2, z2)) in zip(_quant_params(m1).items(), _quant_params(m2).items()):
        np.testing.assert_allclose(s1, s2, rtol=1e-5)


def test_percentile_clips_an_outlier(setup):
    fn, data = setup
    spiky = data.copy()
    spiky[0, 0, 0, :] = 50.0                        # one extreme pixel in one sample
    minmax = _quant_params(_convert(fn, spiky, RangeCalibrator([spiky], CalibMethod.MINMAX)))
    pct = _quant_params(_convert(fn, spiky, RangeCalibrator([spiky], CalibMethod.PERCENTILE)))
    # the input scale follows the outlier under minmax, not under percentile clipping
    assert pct[b"x"][0][0] < minmax[b"x"][0][0] / 5


def test_int8_model_runs_and_tracks_the_float_model(setup):
    fn, data = setup
    f = TFLiteModel(_float(fn))
    q = TFLiteModel(_convert(fn, data, RangeCalibrator([data])))
    agree = np.mean(np.argmax(f.predict(data), 1) == np.argmax(q.predict(data), 1))
    assert agree >= 0.9
