"""Graph inputs and outputs: their TF shapes, dtypes and layouts.

Static dims are kept as the model states them (a static batch of 2 stays 2; a rank-2 input is not
a batch). A dynamic dim is an error naming the input and axis, except dim 0 when the caller says
what it is (``batch_size``) or asks for a dynamic batch. Rank-4 inputs and outputs are NHWC in TF
unless named in ``keep_layout`` or already channels-last in the ONNX graph (an input whose every
reader is Transpose(0, 3, 1, 2), an output made by Transpose(0, 2, 3, 1)); other ranks keep the ONNX
order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.registry import node_attrs
from edgenet.converters.onnx_to_tf.values import TensorInfo
from edgenet.errors import ModelError, UsageError

MAX_INPUT_RANK = 5
_NHWC_TO_NCHW = [0, 3, 1, 2]  # the Transpose perm that makes NHWC data NCHW


def tf_name(name: str, fallback: str) -> str:
    """A valid TF op name from an ONNX value name."""
    clean = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).lstrip("_-/") or fallback
    return clean if re.match(r"[A-Za-z0-9.]", clean) else f"t{clean}"


def declared_dims(value_info: Any, role: str) -> list[int | str | None]:
    """Dims of a graph input/output as declared: int when static, the dim_param (or None) when not."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        raise ModelError(f"ONNX {role} {value_info.name!r} has no shape; export with a static input size")
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in t.shape.dim]


def _nhwc_inputs_in_onnx(model: Any) -> set[str]:
    """Rank-4 inputs whose every consumer is Transpose(0, 3, 1, 2): NHWC data already."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return {vi.name for vi in model.graph.input if consumers.get(vi.name) and all(
        n.op_type == "Transpose" and list(node_attrs(n).get("perm", [])) == _NHWC_TO_NCHW
        for n in consumers[vi.name])}


def nhwc_outputs_in_onnx(model: Any) -> set[str]:
    """Outputs the graph itself transposes to channels-last (Transpose(0, 2, 3, 1))."""
    outputs = {o.name for o in model.graph.output}
    return {n.output[0] for n in model.graph.node
            if n.op_type == "Transpose" and n.output and n.output[0] in outputs
            and tuple(node_attrs(n).get("perm", ())) == layout.NHWC}


@dataclass(frozen=True)
class InputPlan:
    name: str
    perm: tuple[int, ...]  # TF layout of the input (tf = transpose(onnx, perm))
    spec: Any  # tf.TensorSpec
    info: TensorInfo


def check_keep_layout(model: Any, keep_layout: Collection[str], initializers: Collection[str]) -> frozenset[str]:
    names = frozenset(keep_layout)
    known = {i.name for i in model.graph.input if i.name not in initializers} | {o.name for o in model.graph.output}
    unknown = sorted(names - known)
    if unknown:
        raise UsageError(f"keep_layout names {', '.join(map(repr, unknown))}, which is no input or output of the "
                         f"model (inputs and outputs: {', '.join(sorted(known))})")
    return names


def plan_inputs(onnx: Any, tf: Any, model: Any, initializers: Collection[str], batch_size: int | None,
                dynamic_batch: bool, keep_layout: frozenset[str]) -> list[InputPlan]:
    """One plan per graph input (initializers listed as inputs excluded), in the graph's order."""
    auto_kept = _nhwc_inputs_in_onnx(model)
    plans = []
    for vi in (i for i in model.graph.input if i.name not in initializers):
        dims = declared_dims(vi, "input")
        if not 1 <= len(dims) <= MAX_INPUT_RANK:
            raise ModelError(f"ONNX input {vi.name!r} has rank {len(dims)}; inputs of rank 1 to {MAX_INPUT_RANK} "
                             "are supported")
        for axis, d in enumerate(dims):
            if isinstance(d, int):
                continue
            if axis == 0 and dynamic_batch:
                dims[0] = None
            elif axis == 0 and batch_size is not None:
                dims[0] = batch_size
            else:
                raise ModelError(f"ONNX input {vi.name!r} has a dynamic dimension {axis} ({d or '?'}); give it a "
                                 "static size (e.g. --input-shape) or export the model with one")
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"ONNX input {vi.name!r} has no usable element type") from exc
        keep = vi.name in keep_layout or vi.name in auto_kept
        perm = layout.NHWC if len(dims) == 4 and not keep else layout.identity(len(dims))
        tf_shape = layout.permute_shape(dims, perm)
        spec = tf.TensorSpec(tf_shape, tf.as_dtype(dtype), name=tf_name(vi.name, "input"))
        info = TensorInfo(vi.name, tuple(-1 if d is None else d for d in dims), tuple(tf_shape), dtype.name,
                          perm == layout.NHWC)
        plans.append(InputPlan(vi.name, perm, spec, info))
    return plans
