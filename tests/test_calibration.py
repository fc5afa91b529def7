"""Our batched calibrator against TensorFlow's own (a reference for minmax ranges), and the int8
models the LiteRT Quantizer writes from its ranges."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import _tiny_tf_cnn
from edgenet.converters import _flatbuffer
from edgenet.converters.calibration import RangeCalibrator
from edgenet.converters.quantize import quantize_calibrated
from edgenet.config import CalibMethod
from edgenet.inference import TFLiteModel
from edgenet.targets.tflite_graph import read_tflite


def _float(fn) -> bytes:
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()


def _convert(fn, data, ours: RangeCalibrator):
    return quantize_calibrated(_float(fn), ours.inputs, method=ours.method, batch_size=ours.batch_size,
                               num_threads=ours.num_threads).model


def _quant_params(model: bytes):
    out = {}
    for t in _flatbuffer.read(model).subgraphs[0].tensors:
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
    """Our ranges, batched on all cores, are the min/max TFLite's own calibrator (one sample at a
    time) writes into the model, for every activation tensor."""
    from tensorflow.lite.python.optimize import calibrator

    fn, data = setup
    model = _float(fn)
    theirs = _flatbuffer.read(bytes(calibrator.Calibrator(model).calibrate(lambda: ([d[None]] for d in data))))
    stock = {_flatbuffer.tensor_name(t): (float(t.quantization.min[0]), float(t.quantization.max[0]))
             for t in theirs.subgraphs[0].tensors if t.quantization is not None and t.quantization.min is not None}
    ours = RangeCalibrator([data], CalibMethod.MINMAX, batch_size=16, num_threads=2)
    mine = ours.ranges(model)
    assert ours.last_stats.samples == 40 and ours.last_stats.batch_size == 16 and ours.last_stats.tensors >= 5
    assert mine.keys() == stock.keys()
    for name in mine:
        np.testing.assert_allclose(mine[name], stock[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_per_channel_by_default_per_tensor_on_request(setup, per_channel):
    fn, data = setup
    model = quantize_calibrated(_float(fn), [data], per_channel=per_channel, num_threads=2).model
    graph = read_tflite(model)
    for op in graph.operators:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = graph.tensors[op.inputs[1]]
            channels = w.shape[0] if op.name != "DEPTHWISE_CONV_2D" else w.shape[-1]
            assert len(w.scales) == (channels if per_channel else 1), op.name
            assert set(w.zero_points) == {0}                   # symmetric int8 weights


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
