"""ONNX -> TensorFlow, channels-last (NHWC) end to end, through a registry of op handlers.

    from edgenet.converters.onnx_to_tf import onnx_to_tf
    graph = onnx_to_tf(onnx_model)                    # static input dims (batch_size= fills a dynamic batch)
    tflite = tf.lite.TFLiteConverter.from_concrete_functions([graph.concrete_function], graph.module)
    graph.onnx_node("conv_1/BiasAdd;conv_1/Conv2D")   # TF / TFLite name -> ONNX node name

Rank-4 inputs/outputs are NHWC in the TF graph (``TensorInfo.channels_last``); every other value is
tracked with the layout it is held in, and transposed only where an op needs ONNX order. Only TF ops
that lower to TFLite builtins are emitted (anything else is refused naming the ONNX node, see
``scopes``). ``evaluate_values`` runs the TF graph and returns every ONNX value in ONNX layout.
Importing this package does not import TensorFlow or onnx.
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
from edgenet.converters.onnx_to_tf.evaluate import evaluate_values
from edgenet.converters.onnx_to_tf.graph import onnx_to_tf
from edgenet.converters.onnx_to_tf.registry import supported_ops
from edgenet.converters.onnx_to_tf.scopes import TFLITE_BUILTIN_TF_OPS
from edgenet.converters.onnx_to_tf.values import TensorInfo, TFGraph

__all__ = ["onnx_to_tf", "evaluate_values", "supported_ops", "TensorInfo", "TFGraph", "TFLITE_BUILTIN_TF_OPS"]
