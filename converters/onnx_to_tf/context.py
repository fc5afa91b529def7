"""Per-conversion state (values, materialised layouts) and the per-node view handlers work with."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.values import Value
from edgenet.converters.onnx_to_tf.registry import unsupported_error
from edgenet.errors import UnsupportedOpError


class ConversionState:
    """Everything shared by the handlers while one ONNX graph is traced into one tf.function."""

    def __init__(self, tf: Any, onnx: Any, opset: int, dynamic: bool = False):
        self.tf = tf
        self.onnx = onnx
        self.opset = opset
        self.dynamic = dynamic  # the TF graph has a dynamic batch (dim 0 of its inputs is None)
        self.model_batch = 1  # what Shape reports for a dynamic batch (Reshape maps it back, see shape_ops)
        self.values: dict[str, Value] = {}
        self._layouts: dict[tuple[int, tuple[int, ...]], tuple[Value, Any]] = {}
        self.readers: dict[str, int] = {}  # ONNX value name -> nodes (and graph outputs) that read it

    def in_layout(self, value: Value, perm: Sequence[int]) -> Any:
        """``value`` as a TF tensor in layout ``perm``; transposes (or reshapes, when only unit dims
        move) at most once per value and layout."""
        perm = tuple(perm)
        if len(perm) != value.rank:
            raise ValueError(f"layout {perm} for a rank-{value.rank} value")
        key = (id(value), perm)
        hit = self._layouts.get(key)
        if hit is not None:
            return hit[1]
        tf = self.tf
        if value.is_const:
            array = np.transpose(value.const, perm)
            tensor = tf.constant(np.ascontiguousarray(array).reshape(array.shape))  # (keeps 0-d arrays 0-d)
        elif value.perm == perm:
            tensor = value.tensor
        else:
            onnx_shape = value.onnx_shape
            rel = layout.relative(value.perm, perm)
            if layout.moves_only_unit_dims(layout.permute_shape(onnx_shape, value.perm), rel):
                target = [-1 if d is None else d for d in layout.permute_shape(onnx_shape, perm)]
                tensor = tf.reshape(value.tensor, target)
            else:
                tensor = tf.transpose(value.tensor, rel)
        self._layouts[key] = (value, tensor)
        return tensor


class NodeContext:
    """What a handler sees: the node, its attributes, its input values and layout helpers."""

    def __init__(self, node: Any, state: ConversionState):
        self.node = node
        self.state = state
        self.tf = state.tf
        self.opset = state.opset
        self.op_type: str = node.op_type
        self.name: str = node.name or (node.output[0] if node.output else node.op_type)
        self._attrs = {a.name: a for a in node.attribute}

    # ---- attributes -------------------------------------------------------------------------
    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute value as a Python value (str for strings, list for repeated, ndarray for tensors)."""
        if name not in self._attrs:
            return default
        value = self.state.onnx.helper.get_attribute_value(self._attrs[name])
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, self.state.onnx.TensorProto):
            return self.state.onnx.numpy_helper.to_array(value)
        if isinstance(value, (list, tuple)):
            return [v.decode() if isinstance(v, bytes) else v for v in value]
        return value

    # ---- inputs -----------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.node.input)

    def input(self, index: int) -> Value | None:
        """Input ``index``, or None when it is absent (past the end, or an empty name)."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.state.values[self.node.input[index]]

    def required(self, index: int) -> Value:
        value = self.input(index)
        if value is None:
            raise self.unsupported(f"missing input {index}")
        return value

    def const_input(self, index: int, what: str) -> np.ndarray | None:
        """Input ``index`` as a numpy constant, None when absent; raises if it is computed at run time."""
        value = self.input(index)
        if value is None:
            return None
        if not value.is_const:
            raise self.unsupported(f"non-constant {what}")
        return value.const

    # ---- layouts ----------------------------------------------------------------------------
    def in_layout(self, value: Value, perm: Sequence[int]) -> Any:
        return self.state.in_layout(value, perm)

    def onnx_order(self, value: Value) -> Any:
        """The TF tensor in ONNX order (identity layout)."""
        return self.state.in_layout(value, layout.identity(value.rank))

    def nhwc(self, value: Value) -> Any:
        """A rank-4 value as an NHWC TF tensor."""
        if value.rank != 4:
            raise self.unsupported(f"rank-{value.rank} input (only 2-D/NCHW is supported)")
        return self.state.in_layout(value, layout.NHWC)

    def tensor(self, value: Value) -> Any:
        """The TF tensor in whatever layout the value already has (constants: ONNX order)."""
        return self.state.in_layout(value, value.perm)

    # ---- results ----------------------------------------------------------------------------
    @staticmethod
    def out(tensor: Any, perm: Sequence[int] | None = None) -> Value:
        """Wrap a TF result; ``perm`` defaults to identity (ONNX order)."""
        rank = len(tensor.shape)
        return Value(tensor, tuple(perm) if perm is not None else layout.identity(rank))

    @staticmethod
    def out_nhwc(tensor: Any) -> Value:
        return Value(tensor, layout.NHWC)

    def unsupported(self, reason: str) -> UnsupportedOpError:
        """An error for an op variant this converter cannot handle (the caller raises it)."""
        return unsupported_error([f"unsupported ONNX {self.op_type} (node {self.name!r}): {reason}"])
