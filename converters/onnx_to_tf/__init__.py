"""ONNX -> TFLite lowering, channels-last (NHWC) end to end, through a registry of op handlers.

    from edgenet.converters.tflite_writer import native_tflite
    graph = native_tflite(onnx_model)                 # static input dims (batch_size= fills a dynamic batch)
    graph.model                                       # float32 .tflite bytes
    graph.onnx_node("conv_1/pad")                     # TFLite tensor name -> ONNX node name

Each handler lowers one ONNX op family by calling ``ctx.tf`` with TensorFlow's function names; the
backend behind it is the TFLite writer's recorder (:mod:`edgenet.converters.tflite_writer`), which
records TFLite builtin operators. TensorFlow itself is never imported here (issue #20). Rank-4
inputs/outputs are NHWC in the model (``TensorInfo.channels_last``); every other value is tracked with
the layout it is held in, and transposed only where an op needs ONNX order.
Importing this package does not import onnx.
"""
from __future__ import annotations

# handler modules register themselves on import
from edgenet.converters.onnx_to_tf import (  # noqa: F401
    activations,
    conv,
    conv_transpose,
    einsum,
    elementwise,
    linear,
    logic,
    normalization,
    pooling,
    rearrange,
    recurrent,
    reduce,
    resize,
    shape_ops,
    slicing,
)
from edgenet.converters.onnx_to_tf.registry import supported_ops
from edgenet.converters.onnx_to_tf.values import TensorInfo

__all__ = ["supported_ops", "TensorInfo"]
