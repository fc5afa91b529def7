"""Calibration methods: the MSE-optimal range search, and minmax / percentile / mse in the converter."""
import numpy as np
import pytest

from edgenet.converters.calibration import HIST_BINS, mse_range
from edgenet.config import CalibMethod


def _hist(values):
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    counts, _ = np.histogram(values, bins=HIST_BINS, range=(lo, hi))
    return counts.astype(np.float64), lo, hi


def _roundtrip_mse(values, lo, hi):
    """The real int8 (asymmetric, 256 levels) round-trip error of ``values`` with range [lo, hi]."""
    scale = (hi - lo) / 255
    zp = np.round(-128 - lo / scale)
    q = np.clip(np.round(values / scale + zp), -128, 127)
    return float(np.mean(((q - zp) * scale - values) ** 2))


def test_gaussian_is_clipped_near_four_sigma():
    x = np.random.default_rng(0).standard_normal(500_000)
    lo, hi = mse_range(*_hist(x))
    assert 3.3 < hi < 4.7 and -4.7 < lo < -3.3          # ACIQ's 8-bit optimum for a Gaussian is ~4 sigma
    assert hi < x.max() - 0.3


def test_uniform_values_keep_their_range():
    x = np.random.default_rng(0).uniform(0, 6, 200_000)
    lo, hi = mse_range(*_hist(x))
    assert lo == 0.0 and hi > 0.97 * x.max()


def test_chosen_range_has_lower_real_error_than_minmax_and_neighbours():
    """The histogram model (noise scale^2/12 inside, clipping error outside) must pick a range whose
    true round-trip error beats min/max and the ranges 20% narrower or wider."""
    rng = np.random.default_rng(1)
    x = np.maximum(rng.laplace(0.2, 1.0, 300_000), 0.0)   # a post-ReLU, heavy-tailed activation
    lo, hi = mse_range(*_hist(x))
    best = _roundtrip_mse(x, lo, hi)
    assert lo == 0.0 and hi < 0.9 * x.max()
    assert best < 0.9 * _roundtrip_mse(x, 0.0, float(x.max()))
    assert best <= _roundtrip_mse(x, lo, 0.8 * hi) and best <= _roundtrip_mse(x, lo, 1.2 * hi)


def test_isolated_outliers_are_kept_when_clipping_them_costs_more():
    """MSE weighs a clipped value by its squared error: three values at 30 among 100k normals
    cost more clipped to 4 than the coarser step of the full range -- unlike percentile."""
    x = np.random.default_rng(2).standard_normal(100_000)
    x[:3] = 30.0
    lo, hi = mse_range(*_hist(x))
    assert hi > 27


def test_mse_is_a_calib_method():
    assert CalibMethod("mse") is CalibMethod.MSE


# -- through the TFLite converter ------------------------------------------------------------
tf_needed = pytest.mark.skipif(__import__("importlib").util.find_spec("tensorflow") is None,
                               reason="tensorflow is not installed")


def _convert(fn, data, method):
    import tensorflow as tf

    from edgenet.converters.quantize import quantize_calibrated

    float_model = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()
    result = quantize_calibrated(float_model, [data], method=method, batch_size=8, num_threads=2)
    return result.model, result.calibration


def _scales(model):
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    obj = fbu.convert_bytearray_to_object(model)
    g = obj.subgraphs[0]
    return {t.name: float(t.quantization.scale[0]) for t in g.tensors
            if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale) == 1}, \
        g.tensors[g.outputs[0]].name


@tf_needed
def test_methods_through_the_converter():
    import tensorflow as tf

    from conftest import _tiny_tf_cnn

    fn = _tiny_tf_cnn(tf)
    data = np.random.default_rng(0).laplace(0, 1, (40, 32, 32, 3)).astype(np.float32)   # heavy tails
    minmax, s_mm = _convert(fn, data, CalibMethod.MINMAX)
    mse, s_mse = _convert(fn, data, CalibMethod.MSE)
    pct, _ = _convert(fn, data, CalibMethod.PERCENTILE)
    a, out_name = _scales(minmax)
    b, _ = _scales(mse)
    c, _ = _scales(pct)
    assert s_mse.method is CalibMethod.MSE and s_mse.tensors == s_mm.tensors
    assert b[b"x"] < 0.9 * a[b"x"] and c[b"x"] < 0.9 * a[b"x"]   # the tails do not set the input scale
    assert b[out_name] == pytest.approx(a[out_name], rel=1e-6)   # outputs keep their full range
    clipped = [k for k in a if k in b and b[k] < 0.99 * a[k]]
    assert b"x" in clipped and len(clipped) >= 2                 # a hidden activation too (ReLU6 ones
    #                                                              saturate at 6: nothing to clip there)
    assert all(b[k] <= a[k] * 1.0001 for k in a if k in b)       # never wider than min/max


def _roundtrip_mse_int16(values, m):
    """The real int16 (symmetric, zero point 0, scale m / 32767) round-trip error with range [-m, m]."""
    scale = m / 32767
    q = np.clip(np.round(values / scale), -32767, 32767)
    return float(np.mean((q * scale - values) ** 2))


def test_int16_symmetric_range_beats_minmax_and_stays_inside_what_was_seen():
    """int16x8's grid: [-m, m] in 65,535 steps. A heavy tail is clipped far less than for int8 (the
    rounding noise is 65,000x smaller), and the range never grows past the values seen."""
    rng = np.random.default_rng(2)
    x = np.maximum(rng.laplace(0.2, 1.0, 300_000), 0.0)
    x[:3] = 60.0                                           # three outliers
    hist, lo, hi = _hist(x)
    lo16, hi16 = mse_range(hist, lo, hi, levels=(1 << 16) - 1, symmetric=True)
    lo8, hi8 = mse_range(hist, lo, hi)
    assert lo16 == lo == 0.0 and hi8 < hi16 <= hi
    assert _roundtrip_mse_int16(x, hi16) <= _roundtrip_mse_int16(x, hi)
    g = rng.normal(0.5, 1.0, 200_000)                      # a signed range keeps its lower end
    glo, ghi = mse_range(*_hist(g), levels=(1 << 16) - 1, symmetric=True)
    assert g.min() <= glo < 0 < ghi <= g.max()


# -- MSE never clips what goes straight to an output --------------------------------------------
def _tiny_tf_detector(tf):
    """conv 1x1 + ReLU -> conv 1x1 (the head) -> boxes * 16 (pixels) and sigmoid(score logit),
    concatenated. The score logit is the ReLU of the input's first channel: fed heavy-tailed
    data, a detection is one of the rare large values of that tail."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (1, 1, 3, 8))
    w1[..., 0] = [1.0, 0.0, 0.0]
    b1 = rng.normal(0, 0.1, 8)
    b1[0] = 0.0
    w2 = rng.normal(0, 0.3, (1, 1, 8, 5))
    w2[..., 4] = np.eye(8)[0]
    b2 = np.zeros(5)
    w1, b1, w2, b2 = (tf.constant(v.astype(np.float32)) for v in (w1, b1, w2, b2))

    def logits(x):
        return tf.nn.conv2d(tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME") + b1), w2, 1, "SAME") + b2

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    def model(x):
        y = logits(x)
        return tf.concat([y[..., :4] * 16.0, tf.sigmoid(y[..., 4:])], axis=-1)

    return model, logits


def _annotated(model, data, method):
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    from edgenet.converters.calibration import RangeCalibrator

    obj = fbu.convert_bytearray_to_object(RangeCalibrator([data], method, batch_size=8, num_threads=2).annotate(model))
    g = obj.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in obj.operatorCodes]
    ranges = {i: (float(t.quantization.min[0]), float(t.quantization.max[0])) for i, t in enumerate(g.tensors)
              if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)}
    return obj, ranges, [(codes[op.opcodeIndex], list(op.inputs), list(op.outputs)) for op in g.operators]


@tf_needed
def test_mse_keeps_the_head_of_a_detector_whole():
    """The rare detections are the large score logits: MSE (every value weighed the same) would clip
    them, and every value after the last conv is an output value. The head keeps min/max; a hidden
    activation before a conv is still clipped."""
    import tensorflow as tf

    from edgenet.converters.calibration import full_range_tensors

    fn, logit_fn = _tiny_tf_detector(tf)
    model = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()
    rng = np.random.default_rng(0)
    data = rng.laplace(0.2, 1.0, (128, 32, 32, 3)).astype(np.float32)   # heavy tails, 131,072 values a channel
    obj, minmax, ops = _annotated(model, data, CalibMethod.MINMAX)
    _, mse, _ = _annotated(model, data, CalibMethod.MSE)
    logistic = next(op for op in ops if op[0] == 14)          # LOGISTIC
    convs = [op for op in ops if op[0] == 3]                  # CONV_2D
    logits, hidden = logistic[1][0], convs[-1][1][0]          # sigmoid input; the head conv's input
    head = full_range_tensors(obj)
    assert logits in head and logistic[2][0] in head and convs[-1][2][0] in head and hidden not in head

    # the score logits' histogram really is one MSE would clip: its rare large values, the detections
    scores = logit_fn(tf.constant(data)).numpy()[..., 4].reshape(-1)
    lo, hi = mse_range(*_hist(scores))
    assert hi < 0.92 * scores.max() and np.sum(scores > hi) < 10
    for i in head & set(minmax):   # (both ends widened to hold 0, as TFLite's quantizer does anyway)
        lo, hi = minmax[i]
        assert mse[i] == pytest.approx((min(lo, 0.0), max(hi, 0.0)), rel=1e-6), i
    assert mse[hidden][1] < 0.92 * minmax[hidden][1]        # before a conv, MSE still trims the tail
