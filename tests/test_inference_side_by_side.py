"""predict_side_by_side (edgenet/inference.py): invocations shared among single-threaded interpreters
give the arrays one interpreter gives, whatever the inputs' batches (2, rank-1 without a batch axis),
the number of invocations (odd, fewer than the workers) and the outputs (a scalar one included)."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from edgenet.errors import DataError  # noqa: E402
from edgenet.inference import TFLiteModel, predict_side_by_side  # noqa: E402


@pytest.fixture(scope="module")
def two_input_model() -> bytes:
    w = np.random.default_rng(0).normal(0, 1, (3, 3, 3, 5)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([2, 6, 6, 3], tf.float32), tf.TensorSpec([4], tf.float32)])
    def model(x, v):
        y = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        return tf.reduce_mean(y, axis=[1, 2]) * tf.reduce_sum(v), tf.reduce_max(v)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    return bytes(conv.convert())


@pytest.mark.parametrize("invocations,workers", [(7, 2), (7, 3), (1, 2), (2, 8)])
def test_side_by_side_outputs_equal_one_interpreters(two_input_model, invocations, workers):
    rng = np.random.default_rng(invocations)
    x = rng.normal(0, 1, (2 * invocations + 1, 6, 6, 3)).astype(np.float32)   # a partial batch left over
    v = rng.normal(0, 1, (invocations, 4)).astype(np.float32)
    one = TFLiteModel(two_input_model, 2).predict_all([x, v])
    side = predict_side_by_side(two_input_model, [x, v], workers)
    assert [a.shape for a in side] == [a.shape for a in one]
    assert one[0].shape[0] == 2 * invocations and one[1].shape == (invocations,)
    assert all(np.array_equal(a, b) for a, b in zip(side, one))


def test_side_by_side_refuses_what_one_interpreter_refuses(two_input_model):
    with pytest.raises(DataError, match="do not fill one batch"):
        predict_side_by_side(two_input_model, [np.zeros((1, 6, 6, 3), np.float32), np.zeros((3, 4), np.float32)])
