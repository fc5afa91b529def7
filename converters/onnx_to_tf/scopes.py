"""ONNX node <-> name scopes: every handler records its operators inside a scope made from its ONNX
node's name, so each TFLite tensor inside a node's lowering (``<scope>/<op>``) says which node made it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
