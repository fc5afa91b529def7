"""Our batched calibrator against TensorFlow's own, on a small model."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import _tiny_tf_cnn
from converters.calibration import RangeCalibrator, calibrated_by
from edgenet.config import CalibMethod
from edgenet.inference import TFLiteModel


def _convert(fn, data, ours: RangeCalibrator | None):
    cf = fn.get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([d[None]] for d in data)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if ours is None:
        return conv.convert()
    with calibrated_by(ours):
        return conv.convert()


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
    ours = RangeCalibrator([data], CalibMethod.MINMAX, batch_size=16, num_threads=2)
    mine = _convert(fn, data, ours)
    assert ours.last_stats.samples == 40 and ours.last_stats.batch_size == 16
    assert ours.last_stats.tensors >= 5
    a, b = _quant_params(stock), _quant_params(mine)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name][0], b[name][0], rtol=1e-5, err_msg=name)
        np.testing.assert_array_equal(a[name][1], b[name][1], err_msg=name)


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


def test_calibrator_is_restored(setup):
    from tensorflow.lite.python.optimize import calibrator

    before = calibrator.Calibrator.calibrate
    fn, data = setup
    _convert(fn, data[:4], RangeCalibrator([data[:4]]))
    assert calibrator.Calibrator.calibrate is before
    # and the int8 model really runs and tracks the float model
    f = TFLiteModel(tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert())
    q = TFLiteModel(_convert(fn, data, RangeCalibrator([data])))
    agree = np.mean(np.argmax(f.predict(data), 1) == np.argmax(q.predict(data), 1))
    assert agree >= 0.9
