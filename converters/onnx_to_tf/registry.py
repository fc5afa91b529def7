"""The op-handler registry: ``@handler("Conv")`` registers a function that converts one ONNX node.

A handler takes a :class:`~edgenet.converters.onnx_to_tf.context.NodeContext` and returns the node's output
values (a list of :class:`~edgenet.converters.onnx_to_tf.values.Value`, one per ONNX output it produces).
An optional ``check(node, opset)`` runs on every node before anything is built and returns a reason
string when the node uses a variant the handler cannot convert (or None when it is fine).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from edgenet.errors import UnsupportedOpError

if TYPE_CHECKING:
    import onnx

    from edgenet.converters.onnx_to_tf.context import NodeContext
    from edgenet.converters.onnx_to_tf.values import Value

ConvertFn = Callable[["NodeContext"], Sequence["Value"]]
CheckFn = Callable[["onnx.NodeProto", int], "str | None"]


@dataclass(frozen=True)
class OpHandler:
    op_type: str
    convert: ConvertFn
    check: CheckFn | None = None


_REGISTRY: dict[str, OpHandler] = {}


def handler(*op_types: str, check: CheckFn | None = None) -> Callable[[ConvertFn], ConvertFn]:
    """Register the decorated function as the converter of the given ONNX op types."""

    def register(fn: ConvertFn) -> ConvertFn:
        for op_type in op_types:
            if op_type in _REGISTRY:
                raise RuntimeError(f"two handlers for ONNX op {op_type!r}")
            _REGISTRY[op_type] = OpHandler(op_type, fn, check)
        return fn

    return register


def get_handler(op_type: str) -> OpHandler | None:
    return _REGISTRY.get(op_type)


def supported_ops() -> list[str]:
    """Sorted ONNX op types the converter has a handler for."""
    return sorted(_REGISTRY)


_MAX_LISTED_PROBLEMS = 8


def unsupported_error(problems: list[str]) -> UnsupportedOpError:
    """One line: every problem found (up to a few), then where the supported ops are listed (the
    list itself, 100 names, would bury the problem)."""
    shown = problems[:_MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    text = "; ".join(shown) + (f"; and {more} more" if more else "")
    return UnsupportedOpError(f"{text}; edgenet converts {len(supported_ops())} ONNX op types "
                              "(`edgenet info --ops` lists them)")


def node_attrs(node: "onnx.NodeProto") -> dict:
    """A node's attributes as Python values (strings decoded), for ``check`` functions."""
    from edgenet._deps import require

    helper = require("onnx").helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out
