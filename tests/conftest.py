"""Shared fixtures. Heavy models are built once per session into a temp folder."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

HAS_TF = importlib.util.find_spec("tensorflow") is not None


def _tiny_tf_cnn(tf, num_classes: int = 10):
    """A MobileNet-like CNN as a tf.function (conv s2, depthwise, pointwise, pool, fc), seeded."""
    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
    b1 = tf.constant(rng.normal(0, 0.1, 8).astype(np.float32))
    wd = tf.constant(rng.normal(0, 0.3, (3, 3, 8, 1)).astype(np.float32))
    wp = tf.constant(rng.normal(0, 0.3, (1, 1, 8, 16)).astype(np.float32))
    wf = tf.constant(rng.normal(0, 0.3, (16, num_classes)).astype(np.float32))
    bf = tf.constant(rng.normal(0, 0.1, num_classes).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    def model(x):
        x = tf.nn.relu6(tf.nn.conv2d(x, w1, 2, "SAME") + b1)
        x = tf.nn.relu6(tf.nn.depthwise_conv2d(x, wd, [1, 1, 1, 1], "SAME"))
        x = tf.nn.relu6(tf.nn.conv2d(x, wp, 1, "SAME"))
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.matmul(x, wf) + bf

    return model


@pytest.fixture(scope="session")
def tiny_convert_out(tmp_path_factory) -> Path:
    """A folder shaped like `edgenet convert` output, for bench/target tests:
    model_float.tflite, model_int8.tflite (int8 I/O, input 1x32x32x3, 10 classes), preprocess.json, labels.txt."""
    if not HAS_TF:
        pytest.skip("tensorflow is not installed (pip install 'edgenet[tf]')")
    import tensorflow as tf

    from edgenet.data.preprocess import Preprocess

    out = tmp_path_factory.mktemp("tiny_convert_out")
    fn = _tiny_tf_cnn(tf)
    cf = fn.get_concrete_function()
    float_model = tf.lite.TFLiteConverter.from_concrete_functions([cf], fn).convert()
    (out / "model_float.tflite").write_bytes(float_model)

    rng = np.random.default_rng(1)

    def rep():
        for _ in range(32):
            yield [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out / "model_int8.tflite").write_bytes(conv.convert())
    (out / "preprocess.json").write_text(Preprocess.default(32, 3).to_json())
    (out / "labels.txt").write_text("\n".join(f"class_{i}" for i in range(10)) + "\n")
    (out / "report.json").write_text(json.dumps({"model": "tiny"}) + "\n")
    return out
