"""Small int8 .tflite models for the target tests, built once per session with TensorFlow.

``mobilenet_like(width, resolution)``: conv 3x3 s2 -> relu6 -> depthwise 3x3 -> relu6 -> conv 1x1
-> relu6 -> mean over H,W -> fully connected -> softmax, full-integer int8 (int8 in and out).
``with_op_in_the_middle("sin")``: the same stem, then a float SIN (an op with no int8 kernel, so
the converter keeps it in float between DEQUANTIZE/QUANTIZE), then more int8 ops; "atan2" puts
an op there that TFLite Micro has no kernel for.
Each function is cached and writes into one temporary folder per session.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@functools.lru_cache(maxsize=None)
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="edgenet_tiny_tflite_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _variables(tf, rng, width: int, channels: int, classes: int) -> dict:
    def var(*shape, scale=0.3):
        return tf.Variable(rng.normal(0.0, scale, size=shape).astype(np.float32))

    return {
        "stem_w": var(3, 3, channels, width), "stem_b": var(width, scale=0.1),
        "dw_w": var(3, 3, width, 1), "dw_b": var(width, scale=0.1),
        "pw_w": var(1, 1, width, 2 * width), "pw_b": var(2 * width, scale=0.1),
        "fc_w": var(2 * width, classes), "fc_b": var(classes, scale=0.1),
    }


def _convert(tf, module, fn, resolution: int, channels: int, allow_float_ops: bool, io_type) -> bytes:
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], trackable_obj=module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(1)

    def representative():
        for _ in range(16):
            yield [rng.uniform(-1, 1, size=(1, resolution, resolution, channels)).astype(np.float32)]

    conv.representative_dataset = representative
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if allow_float_ops:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    conv.target_spec.supported_ops = ops
    conv.inference_input_type = io_type
    conv.inference_output_type = io_type
    return conv.convert()


_MIDDLE_OPS = {
    "sin": lambda tf, y: tf.math.sin(y),
    "atan2": lambda tf, y: tf.math.atan2(y, y + 1.0),  # no TFLite Micro kernel
}


def _build(width: int, resolution: int, classes: int, middle: str | None = None, io: str = "int8") -> bytes:
    import tensorflow as tf

    channels = 3
    module = tf.Module()
    module.v = _variables(tf, np.random.default_rng(width * 1000 + resolution), width, channels, classes)
    v = module.v

    @tf.function(input_signature=[tf.TensorSpec([1, resolution, resolution, channels], tf.float32)])
    def forward(x):
        y = tf.nn.relu6(tf.nn.conv2d(x, v["stem_w"], 2, "SAME") + v["stem_b"])
        y = tf.nn.relu6(tf.nn.depthwise_conv2d(y, v["dw_w"], [1, 1, 1, 1], "SAME") + v["dw_b"])
        if middle:
            y = _MIDDLE_OPS[middle](tf, y)
        y = tf.nn.relu6(tf.nn.conv2d(y, v["pw_w"], 1, "SAME") + v["pw_b"])
        y = tf.reduce_mean(y, axis=[1, 2])
        return tf.nn.softmax(tf.matmul(y, v["fc_w"]) + v["fc_b"])

    module.forward = forward
    return _convert(tf, module, forward, resolution, channels, allow_float_ops=middle is not None,
                    io_type={"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io])


@functools.lru_cache(maxsize=None)
def mobilenet_like(width: int = 8, resolution: int = 32, classes: int = 10) -> Path:
    """A MobileNet-like int8 model (int8 I/O); its path in the session's temp folder."""
    path = _workdir() / f"mobilenet_like_w{width}_r{resolution}_c{classes}.tflite"
    path.write_bytes(_build(width, resolution, classes))
    return path


@functools.lru_cache(maxsize=None)
def with_op_in_the_middle(op: str = "sin", resolution: int = 32) -> Path:
    """Int8 model with a float ``op`` ("sin" or "atan2") between the depthwise and the pointwise
    convolution (kept in float between DEQUANTIZE and QUANTIZE)."""
    path = _workdir() / f"with_{op}_r{resolution}.tflite"
    path.write_bytes(_build(8, resolution, 10, middle=op))
    return path


@functools.lru_cache(maxsize=None)
def mobilenet_like_uint8_io(resolution: int = 32) -> Path:
    """The MobileNet-like model with uint8 input and output (what the Edge TPU prefers)."""
    path = _workdir() / f"mobilenet_like_uint8io_r{resolution}.tflite"
    path.write_bytes(_build(8, resolution, 10, io="uint8"))
    return path


@functools.lru_cache(maxsize=None)
def mobilenet_like_float_io(resolution: int = 32) -> Path:
    """The MobileNet-like int8 model with float32 input and output (QUANTIZE/DEQUANTIZE at the ends)."""
    path = _workdir() / f"mobilenet_like_floatio_r{resolution}.tflite"
    path.write_bytes(_build(8, resolution, 10, io="float32"))
    return path
