"""Reshape-like ops (Reshape, Flatten, Squeeze, Unsqueeze), Transpose, and pass-through ops.

Reshapes keep the channels-last layout whenever the reshape only splits/merges dims that already
sit together in TF order (e.g. Flatten after a global pool, channel splits of a shuffle); Transpose
costs nothing: it only relabels the layout of its input, and the transpose (if any) happens where a
consumer needs another layout.
"""
from __future__ import annotations

from math import prod
from typing import Sequence

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs
from edgenet.converters.onnx_to_tf.values import Value


def reshape_value(ctx: NodeContext, value: Value, out_shape: Sequence[int | None]) -> Value:
    """Reshape ``value`` to the ONNX shape ``out_shape`` (None only as dim 0 = the input's batch dim;
    -1 = inferred), choosing layouts that avoid transposes."""
    tf = ctx.tf
    out_shape = tuple(out_shape)
    if value.is_const:
        return Value.constant(value.const.reshape([-1 if d is None else d for d in out_shape]))
    in_shape = value.onnx_shape
    rank = len(out_shape)
    preferred = [layout.NHWC, layout.identity(4)] if rank == 4 else [layout.identity(rank)]
    in_layout, out_layout = layout.plan_reshape(in_shape, value.perm, out_shape, preferred)
    tensor = ctx.in_layout(value, in_layout)
    target = [-1 if d is None or d < 0 else d for d in layout.permute_shape(out_shape, out_layout)]
    if tuple(layout.permute_shape(in_shape, in_layout)) == tuple(layout.permute_shape(out_shape, out_layout)):
        return Value(tensor, out_layout)
    if target.count(-1) > 1:
        raise ctx.unsupported(f"reshape {in_shape} -> {out_shape} with more than one unknown dim")
    return Value(tf.reshape(tensor, target), out_layout)


def _is_batched(ctx: NodeContext, shape: Sequence[int | None]) -> bool:
    """True when dim 0 of a value is the graph's dynamic batch (so shape constants computed from it
    hold the placeholder ``model_batch`` and must be adapted)."""
    return bool(shape) and shape[0] is None


def _resolve(shape: Sequence[int], in_shape: Sequence[int], allow_zero: bool) -> list[int]:
    """ONNX Reshape semantics: 0 copies the input dim, -1 is inferred (static shapes)."""
    out = [int(in_shape[i]) if d == 0 and not allow_zero else int(d) for i, d in enumerate(shape)]
    if -1 in out:
        known = prod(d for d in out if d != -1)
        out[out.index(-1)] = prod(in_shape) // known if known else 0
    return out


@handler("Reshape")
def reshape(ctx: NodeContext):
    x = ctx.required(0)
    shape = ctx.const_input(1, "target shape")
    if shape is None:
        raise ctx.unsupported("no target shape")
    shape = [int(d) for d in shape.reshape(-1)]
    allow_zero = bool(ctx.attr("allowzero", 0))
    in_shape = x.onnx_shape
    if not _is_batched(ctx, in_shape):
        return [reshape_value(ctx, x, _resolve(shape, in_shape, allow_zero))]
    # a dynamic batch: shape constants hold the placeholder batch; resolve against it, then put it back
    exported = (ctx.state.model_batch, *in_shape[1:])
    resolved = _resolve(shape, exported, allow_zero)
    if resolved and resolved[0] == ctx.state.model_batch and prod(resolved[1:]) == prod(exported[1:]):
        return [reshape_value(ctx, x, [in_shape[0], *resolved[1:]])]
    if -1 in shape and in_shape[0] is None:
        kept = [in_shape[i] if d == 0 and not allow_zero else d for i, d in enumerate(shape)]
        if None not in kept:
            return [reshape_value(ctx, x, kept)]
    raise ctx.unsupported(f"fixed target shape {tuple(shape)} mixes the batch dimension into other dims; "
                          "it cannot run with a dynamic batch")


@handler("Flatten")
def flatten(ctx: NodeContext):
    x = ctx.required(0)
    in_shape = x.onnx_shape
    axis = int(ctx.attr("axis", 1))
    axis = axis + len(in_shape) if axis < 0 else axis
    inner = prod(in_shape[axis:])
    if axis == 0:
        out = [1, -1 if None in in_shape else inner]
    elif axis == 1:
        out = [in_shape[0], inner]
    else:
        out = [-1 if None in in_shape else prod(in_shape[:axis]), inner]
    return [reshape_value(ctx, x, out)]


def _axes(ctx: NodeContext, since_opset: int, rank: int) -> list[int] | None:
    """``axes`` from the attribute (before ``since_opset``) or the second input (from it on)."""
    if ctx.opset < since_opset:
        axes = ctx.attr("axes")
    else:
        array = ctx.const_input(1, "axes")
        axes = None if array is None else array.reshape(-1).tolist()
    if axes is None:
        return None
    return sorted(int(a) % rank for a in axes)


@handler("Squeeze")
def squeeze(ctx: NodeContext):
    x = ctx.required(0)
    in_shape = x.onnx_shape
    axes = _axes(ctx, 13, x.rank)
    if axes is None:
        axes = [i for i, d in enumerate(in_shape) if d == 1]
    if any(in_shape[a] != 1 for a in axes):
        raise ctx.unsupported(f"squeeze of non-unit dims {axes} of shape {in_shape}")
    return [reshape_value(ctx, x, [d for i, d in enumerate(in_shape) if i not in axes])]


@handler("Unsqueeze")
def unsqueeze(ctx: NodeContext):
    x = ctx.required(0)
    if ctx.opset < 13:
        raw = list(ctx.attr("axes", []))
    else:
        array = ctx.const_input(1, "axes")
        raw = [] if array is None else array.reshape(-1).tolist()
    out_rank = x.rank + len(raw)
    axes = {int(a) % out_rank for a in raw}
    source = iter(x.onnx_shape)
    return [reshape_value(ctx, x, [1 if i in axes else next(source) for i in range(out_rank)])]


def _check_transpose(node, opset: int) -> str | None:
    perm = node_attrs(node).get("perm")
    if perm is not None and sorted(perm) != list(range(len(perm))):
        return f"perm {list(perm)} is not a permutation"
    return None


@handler("Transpose", check=_check_transpose)
def transpose(ctx: NodeContext):
    """No TF op: the output is the same tensor, relabelled. TF dim i holds input dim q[i], which is
    output dim inverse(perm)[q[i]]."""
    x = ctx.required(0)
    perm = ctx.attr("perm") or list(reversed(range(x.rank)))
    inverse = layout.invert(perm)
    new_layout = tuple(inverse[q] for q in x.perm)
    return [Value(ctx.tensor(x), new_layout)]


@handler("Identity", "Dropout")
def identity(ctx: NodeContext):
    x = ctx.required(0)
    outputs = [x]
    if ctx.op_type == "Dropout" and len(ctx.node.output) > 1 and ctx.node.output[1]:
        mask = ctx.tf.ones_like(ctx.tensor(x), dtype=ctx.tf.bool)
        outputs.append(ctx.out(mask, x.perm))
    return outputs


@handler("Shape")
def shape(ctx: NodeContext):
    """A constant. A dynamic (or changed) batch dim reads as the batch the model was exported with,
    as the exporter's own constant folding would have it; Reshape maps such shapes back to the
    real batch (see ``reshape``)."""
    x = ctx.required(0)
    dims = list(x.onnx_shape)
    if dims and _is_batched(ctx, dims):
        dims[0] = ctx.state.model_batch
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    return [Value.constant(np.array(dims, np.int64)[start:end])]


@handler("Size")
def size(ctx: NodeContext):
    """A constant, like Shape (a dynamic batch counts as the placeholder batch)."""
    dims = list(ctx.required(0).onnx_shape)
    if dims and dims[0] is None:
        dims[0] = ctx.state.model_batch
    return [Value.constant(np.array(prod(dims), np.int64))]


@handler("Cast")
def cast(ctx: NodeContext):
    x = ctx.required(0)
    dtype = np.dtype(ctx.state.onnx.helper.tensor_dtype_to_np_dtype(int(ctx.attr("to"))))
    return [ctx.out(ctx.tf.cast(ctx.tensor(x), ctx.tf.as_dtype(dtype)), x.perm)]


@handler("Constant")
def constant(ctx: NodeContext):
    """Normally folded by the walker before reaching here; kept for completeness."""
    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if ctx.has_attr(name):
            value = ctx.attr(name)
            dtype = np.float32 if "float" in name else (np.int64 if "int" in name else None)
            return [Value.constant(np.asarray(value, dtype=dtype))]
    raise ctx.unsupported("Constant without a numeric value")
