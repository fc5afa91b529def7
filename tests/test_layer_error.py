import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgenet.converters.layer_error import layer_sqnr


def test_layer_sqnr_on_tiny_pair(tiny_convert_out):
    f = (tiny_convert_out / "model_float.tflite").read_bytes()
    q = (tiny_convert_out / "model_int8.tflite").read_bytes()
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    layers = layer_sqnr(f, q, x)
    ops = [layer.op for layer in layers]
    assert ops[:3] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"] and "FULLY_CONNECTED" in ops
    assert [layer.index for layer in layers] == sorted(layer.index for layer in layers)
    assert all(layer.sqnr_db is not None and 10 < layer.sqnr_db < 80 for layer in layers)


def test_layer_sqnr_is_infinite_for_identical_models(tiny_convert_out):
    f = (tiny_convert_out / "model_float.tflite").read_bytes()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    # a float model against itself: no error anywhere (reported as None: no finite SQNR)
    assert all(layer.sqnr_db is None for layer in layer_sqnr(f, f, x))
