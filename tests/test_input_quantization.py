"""The int8 model's input quantization fixed from the preprocessing: a uint8 input takes camera pixels."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import _tiny_tf_cnn
from edgenet.converters.calibration import pixel_input_range
from edgenet.converters.quantize import quantize_calibrated
from edgenet.config import IOType
from edgenet.data.preprocess import Preprocess
from edgenet.inference import TFLiteModel
from edgenet.targets.tflite_graph import read_tflite

PIXELS = np.arange(256, dtype=np.float32)
GRID = PIXELS.reshape(16, 16, 1).repeat(3, -1)      # every pixel value, as a 16x16 RGB image


@pytest.fixture(scope="module")
def float_model():
    fn = _tiny_tf_cnn(tf)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()


def _images(pre: Preprocess, n: int = 12) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def _int8(float_model, pre: Preprocess, io: IOType, data: np.ndarray | None = None):
    # calibration images deliberately cover only mid-grey pixels: the input range must not come from them
    calib = data if data is not None else np.stack([pre.normalize(np.full((32, 32, 3), v, np.uint8))
                                                    for v in range(100, 140, 4)])
    return quantize_calibrated(float_model, [calib], io_type=io, num_threads=2, preprocess=pre).model


@pytest.mark.parametrize("mean, std, scale, zero", [(0.5, 0.5, 2 / 255, 128), (0.0, 1.0, 1 / 255, 0),
                                                    (0.25, 0.3, 1 / 76.5, 64)])
def test_uint8_input_scale_and_zero_point_come_from_the_normalization(float_model, mean, std, scale, zero):
    pre = Preprocess(32, 32, mean=(mean,) * 3, std=(std,) * 3)
    lo, hi = pixel_input_range(pre.mean, pre.std)
    assert lo == pytest.approx(-zero * scale) and hi == pytest.approx((255 - zero) * scale)
    # q = pixel: input value q stands for (q - zero) * scale, within half a step of the normalized pixel
    assert np.abs((PIXELS - zero) * scale - pre.normalize(GRID)[..., 0].reshape(-1)).max() <= 0.5 * scale + 1e-7
    inp = read_tflite(_int8(float_model, pre, IOType.UINT8)).input_tensors[0]
    assert inp.dtype == "uint8" and inp.zero_points == (zero,)
    assert inp.scales[0] == pytest.approx(scale, rel=1e-6)
    # int8 input: the same scale, zero point shifted by 128 (q = pixel - 128)
    inp8 = read_tflite(_int8(float_model, pre, IOType.INT8)).input_tensors[0]
    assert inp8.zero_points == (zero - 128,) and inp8.scales[0] == pytest.approx(scale, rel=1e-6)


def test_raw_pixels_in_give_what_normalized_pixels_give(float_model):
    """With mean 0 and std 1 (x = pixel / 255) the mapping is exact: quantizing the normalized pixel
    gives the pixel back, so feeding raw pixels is the same as feeding the normalized image."""
    pre = Preprocess(32, 32, mean=(0.0,) * 3, std=(1.0,) * 3)
    model = TFLiteModel(_int8(float_model, pre, IOType.UINT8))
    np.testing.assert_array_equal(model.quantize(pre.normalize(GRID)),
                                  GRID.astype(np.uint8))


def test_uint8_model_fed_pixels_tracks_the_float_model(float_model):
    pre = Preprocess(32, 32)                        # mean = std = 0.5: zero point 127.5 rounds to 128
    images = _images(pre)
    x = np.stack([pre.normalize(im) for im in images])
    q = TFLiteModel(_int8(float_model, pre, IOType.UINT8, x))
    interp, inp = q.interpreter, q.input
    out = q.outputs[0]
    scale, zp = out["quantization"]
    fed = []
    for im in images:                               # what an app does: the camera's bytes, unchanged
        interp.set_tensor(inp["index"], im[None])
        interp.invoke()
        fed.append((interp.get_tensor(out["index"])[0].astype(np.float32) - zp) * scale)
    reference = TFLiteModel(float_model).predict(x)
    err = np.abs(np.stack(fed) - reference).max()
    assert err < 0.05 * np.abs(reference).max()      # half a pixel step of bias plus int8 noise
    assert np.mean(np.argmax(fed, 1) == np.argmax(reference, 1)) >= 0.9


def test_per_channel_normalization_covers_every_channel(float_model):
    pre = Preprocess(32, 32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    lo, hi = pixel_input_range(pre.mean, pre.std)
    assert lo == pytest.approx(min(-m / s for m, s in zip(pre.mean, pre.std)))
    assert hi == pytest.approx(max((1 - m) / s for m, s in zip(pre.mean, pre.std)))
    model = TFLiteModel(_int8(float_model, pre, IOType.UINT8))
    q = model.quantize(pre.normalize(GRID)).astype(int)
    # every channel's 0..255 lands inside 0..255 with no clipping: monotonic, distinct ends, within range
    assert q.min() >= 0 and q.max() <= 255
    for c in range(3):
        assert np.all(np.diff(q[..., c].reshape(-1)) >= 0)
    assert q[..., 0].max() == 255 or q[..., 2].max() == 255   # the widest channel reaches the top
