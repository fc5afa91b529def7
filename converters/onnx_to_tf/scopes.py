"""ONNX node <-> TensorFlow name scopes, and the rule that only TFLite builtin ops come out.

Every handler builds its TF ops inside a name scope made from its ONNX node's name, so each TF op,
and each TFLite tensor TensorFlow's converter names after those ops, says which ONNX node made it.
After tracing, every TF op type of the graph must be in :data:`TFLITE_BUILTIN_TF_OPS`: TF op types
that TensorFlow's TFLite converter lowers to TFLite builtin ops (``TFLITE_BUILTINS``, no Flex, no
custom ops) in the forms our handlers emit them. Anything else is refused before the TFLite
converter is asked, naming the ONNX op and node. The list holds exactly the op types the handlers
emit; ``tests/test_onnx_to_tf_builtins.py`` converts a graph of every handler with
``TFLITE_BUILTINS`` only and checks that each listed type was seen and converted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

# TF op type -> the TFLite builtin it becomes (documentation; None: folded/removed by the converter)
TFLITE_BUILTIN_TF_OPS: Mapping[str, str | None] = {
    # graph plumbing
    "Placeholder": None, "Const": None, "Identity": None, "StopGradient": None,
    # convolution, pooling, matrix products
    "Conv2D": "CONV_2D", "DepthwiseConv2dNative": "DEPTHWISE_CONV_2D", "BiasAdd": "ADD",
    "Conv2DBackpropInput": "TRANSPOSE_CONV", "MaxPool": "MAX_POOL_2D", "AvgPool": "AVERAGE_POOL_2D",
    "MatMul": "FULLY_CONNECTED", "BatchMatMulV2": "BATCH_MATMUL",
    # elementwise arithmetic
    "AddV2": "ADD", "Sub": "SUB", "Mul": "MUL", "RealDiv": "DIV", "Maximum": "MAXIMUM",
    "Minimum": "MINIMUM", "Pow": "POW", "SquaredDifference": "SQUARED_DIFFERENCE", "Neg": "NEG", "Abs": "ABS",
    "Sign": "SIGN",
    "Exp": "EXP", "Log": "LOG", "Sqrt": "SQRT", "Rsqrt": "RSQRT", "Floor": "FLOOR", "Ceil": "CEIL",
    "Round": "ROUND", "Sin": "SIN", "Cos": "COS",
    # activations
    "Relu": "RELU", "Relu6": "RELU6", "LeakyRelu": "LEAKY_RELU", "Elu": "ELU", "Sigmoid": "LOGISTIC",
    "Tanh": "TANH", "Softmax": "SOFTMAX", "LogSoftmax": "LOG_SOFTMAX",
    # comparisons and logic
    "Equal": "EQUAL", "NotEqual": "NOT_EQUAL", "Greater": "GREATER", "GreaterEqual": "GREATER_EQUAL",
    "Less": "LESS", "LessEqual": "LESS_EQUAL", "LogicalNot": "LOGICAL_NOT", "LogicalAnd": "LOGICAL_AND",
    "LogicalOr": "LOGICAL_OR", "SelectV2": "SELECT_V2",
    # reductions
    "Mean": "MEAN", "Sum": "SUM", "Max": "REDUCE_MAX", "Min": "REDUCE_MIN", "Prod": "REDUCE_PROD",
    "ArgMax": "ARG_MAX", "ArgMin": "ARG_MIN",
    # data movement
    "Reshape": "RESHAPE", "Transpose": "TRANSPOSE", "ConcatV2": "CONCATENATION", "Split": "SPLIT",
    "StridedSlice": "STRIDED_SLICE", "Slice": "SLICE", "GatherV2": "GATHER", "GatherNd": "GATHER_ND",
    "ScatterNd": "SCATTER_ND", "Pad": "PAD", "PadV2": "PADV2", "MirrorPad": "MIRROR_PAD", "Tile": "TILE",
    "BroadcastTo": "BROADCAST_TO", "DepthToSpace": "DEPTH_TO_SPACE", "SpaceToDepth": "SPACE_TO_DEPTH",
    "ResizeNearestNeighbor": "RESIZE_NEAREST_NEIGHBOR", "ResizeBilinear": "RESIZE_BILINEAR",
    "SpaceToBatchND": "SPACE_TO_BATCH_ND", "BatchToSpaceND": "BATCH_TO_SPACE_ND",  # (dilated convs)
    "Cast": "CAST", "ReverseV2": "REVERSE_V2", "ExpandDims": "EXPAND_DIMS", "Squeeze": "SQUEEZE",
}

# TF ops allowed only inside the scope of a node converted as the given op: parts of a TF composite
# that TensorFlow's converter fuses into one builtin (tf.nn.gelu(approximate=False) -> GELU)
COMPOSITE_TF_OPS: Mapping[str, frozenset[str]] = {"Gelu": frozenset({"Erfc"})}

_SCOPE_START = re.compile(r"[A-Za-z0-9.]")


def scope_name(node: Any) -> str:
    """A valid TF name scope made from an ONNX node's name (or first output, or op type); TensorFlow
    makes it unique by appending ``_1``, ``_2`` ... when two nodes give the same one."""
    raw = node.name or (node.output[0] if node.output else "") or node.op_type
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", raw).strip("_") or node.op_type
    return clean if _SCOPE_START.match(clean) else f"n{clean}"


@dataclass(frozen=True)
class NodeOrigin:
    """The ONNX node a TF name scope belongs to."""

    name: str  # ONNX node name (its first output's name when the node has none)
    op_type: str


def origin_of(name: str, scopes: Mapping[str, NodeOrigin]) -> NodeOrigin | None:
    """The ONNX node that made a TF op or tensor, or a TFLite tensor, named ``name``.

    TF names look like ``<scope>/Conv2D`` (``:0`` for tensors). TFLite tensor names are the names of
    the TF ops TensorFlow's converter fused into the op that makes the tensor, joined by ``;``, the
    op whose result the tensor holds first (``relu_1/Relu;conv_1/BiasAdd;conv_1/Conv2D``): the first
    part that names a known scope wins. None when no part does (graph inputs, the outputs'
    identities).
    """
    for part in name.split(";"):
        components = part.split(":")[0].split("/")
        for component in components[:-1] or components:
            hit = scopes.get(component)
            if hit is not None:
                return hit
    return None


def foreign_ops(graph: Any, scopes: Mapping[str, NodeOrigin]) -> list[str]:
    """Problems, one per ONNX node: TF ops in ``graph`` (a tf.Graph) that TFLite has no builtin for."""
    found: dict[tuple[str, str], set[str]] = {}
    for op in graph.get_operations():
        if op.type in TFLITE_BUILTIN_TF_OPS:
            continue
        origin = origin_of(op.name, scopes)
        if origin is not None and op.type in COMPOSITE_TF_OPS.get(origin.op_type, ()):
            continue
        key = (origin.op_type, origin.name) if origin else ("?", op.name)
        found.setdefault(key, set()).add(op.type)
    return [f"ONNX {op_type} (node {name!r}) needs TensorFlow op(s) {', '.join(sorted(types))}, which "
            "TFLite has no builtin op for (it would need the Flex delegate or a custom op)"
            for (op_type, name), types in found.items()]
