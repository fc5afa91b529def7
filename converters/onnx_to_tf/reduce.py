"""Reductions over axes (ReduceMean/Max/Min/Sum/Prod/L2, ArgMax/ArgMin), in the input's layout.

With ``keepdims=0`` the remaining dims keep their TF order, so e.g. ReduceMean over H, W of an NHWC
tensor gives (N, C) in ONNX order with no transpose.
"""
from __future__ import annotations

from converters.onnx_to_tf import layout
from converters.onnx_to_tf.context import NodeContext
from converters.onnx_to_tf.registry import handler
from converters.onnx_to_tf.values import Value

# op -> (tf reduce function name, first opset where axes is an input)
_REDUCTIONS = {
    "ReduceMean": ("reduce_mean", 18),
    "ReduceMax": ("reduce_max", 18),
    "ReduceMin": ("reduce_min", 18),
    "ReduceSum": ("reduce_sum", 13),
    "ReduceProd": ("reduce_prod", 18),
    "ReduceL2": ("reduce_euclidean_norm", 18),
}


def _reduced(ctx: NodeContext, x: Value, tensor, axes: list[int], keepdims: bool) -> Value:
    """Wrap a reduction result: same layout with keepdims, else the kept dims in their TF order."""
    if keepdims:
        return ctx.out(tensor, x.perm)
    kept = [d for d in range(x.rank) if d not in axes]
    return ctx.out(tensor, [kept.index(d) for d in x.perm if d in kept])


def _reduce(ctx: NodeContext):
    tf = ctx.tf
    fn_name, axes_input_since = _REDUCTIONS[ctx.op_type]
    x = ctx.required(0)
    keepdims = bool(ctx.attr("keepdims", 1))
    if ctx.opset < axes_input_since:
        axes = ctx.attr("axes")
    else:
        array = ctx.const_input(1, "axes")
        axes = None if array is None or array.size == 0 else array.reshape(-1).tolist()
        if axes is None and ctx.attr("noop_with_empty_axes", 0):
            return [x]
    axes = list(range(x.rank)) if axes is None else sorted({int(a) % x.rank for a in axes})
    fn = getattr(tf.math, fn_name)
    y = fn(ctx.tensor(x), axis=[layout.tf_axis(x.perm, a) for a in axes], keepdims=keepdims)
    return [_reduced(ctx, x, y, axes, keepdims)]


for _op in _REDUCTIONS:
    handler(_op)(_reduce)


def _arg(ctx: NodeContext, fn):
    x = ctx.required(0)
    if ctx.attr("select_last_index", 0):
        raise ctx.unsupported("select_last_index=1")
    axis = int(ctx.attr("axis", 0)) % x.rank
    keepdims = bool(ctx.attr("keepdims", 1))
    y = fn(ctx.tensor(x), axis=layout.tf_axis(x.perm, axis), output_type=ctx.tf.int64)
    if keepdims:
        y = ctx.tf.expand_dims(y, layout.tf_axis(x.perm, axis))
    return [_reduced(ctx, x, y, [axis], keepdims)]


@handler("ArgMax")
def arg_max(ctx: NodeContext):
    return _arg(ctx, ctx.tf.math.argmax)


@handler("ArgMin")
def arg_min(ctx: NodeContext):
    return _arg(ctx, ctx.tf.math.argmin)
