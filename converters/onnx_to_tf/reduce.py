"""Reductions over axes (ReduceMean/Max/Min/Sum/Prod, ReduceL1/L2/SumSquare/LogSum/LogSumExp,
ArgMax/ArgMin, TopK, CumSum), in the input's layout, from TFLite builtins only (ReduceL2 =
sqrt(sum(x * x)), not TF's EuclideanNorm, which TFLite has no builtin for).

With ``keepdims=0`` the remaining dims keep their TF order, so e.g. ReduceMean over H, W of an NHWC
tensor gives (N, C) in ONNX order with no transpose.
"""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler
from edgenet.converters.onnx_to_tf.values import Value
from edgenet.errors import ModelError

# op -> first opset where axes is an input (ReduceSum: 13, the others: 18)
_AXES_INPUT_SINCE = {"ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceSum": 13, "ReduceProd": 18,
                     "ReduceL1": 18, "ReduceL2": 18, "ReduceSumSquare": 18, "ReduceLogSum": 18,
                     "ReduceLogSumExp": 18}


def _reduce_fn(tf, op: str):
    """(t, axis, keepdims) -> reduced tensor, for one ONNX reduction. An empty ``axis`` (the
    noop_with_empty_axes case) reduces nothing but keeps the elementwise part, as ONNX's reference
    does (ReduceSumSquare -> x * x, ReduceL1 -> |x|)."""

    def over(fn):
        return lambda t, axis, keepdims: fn(t, axis=axis, keepdims=keepdims) if axis else t

    total = over(tf.math.reduce_sum)
    plain = {"ReduceMean": over(tf.math.reduce_mean), "ReduceMax": over(tf.math.reduce_max),
             "ReduceMin": over(tf.math.reduce_min), "ReduceSum": total, "ReduceProd": over(tf.math.reduce_prod)}
    if op in plain:
        return plain[op]
    if op == "ReduceL1":
        return lambda t, axis, keepdims: total(tf.abs(t), axis, keepdims)
    if op == "ReduceL2":
        return lambda t, axis, keepdims: tf.sqrt(total(t * t, axis, keepdims))
    if op == "ReduceSumSquare":
        return lambda t, axis, keepdims: total(t * t, axis, keepdims)
    if op == "ReduceLogSum":
        return lambda t, axis, keepdims: tf.math.log(total(t, axis, keepdims))

    def log_sum_exp(t, axis, keepdims):  # max + log(sum(exp(x - max))): no overflow for large x
        if not axis:
            return t
        top = tf.stop_gradient(tf.math.reduce_max(t, axis=axis, keepdims=True))
        y = tf.math.log(tf.math.reduce_sum(tf.exp(t - top), axis=axis, keepdims=True)) + top
        return y if keepdims else tf.squeeze(y, axis=axis)

    return log_sum_exp


def _reduced(ctx: NodeContext, x: Value, tensor, axes: list[int], keepdims: bool) -> Value:
    """Wrap a reduction result: same layout with keepdims, else the kept dims in their TF order."""
    if keepdims:
        return ctx.out(tensor, x.perm)
    kept = [d for d in range(x.rank) if d not in axes]
    return ctx.out(tensor, [kept.index(d) for d in x.perm if d in kept])


def _reduce(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    keepdims = bool(ctx.attr("keepdims", 1))
    if ctx.opset < _AXES_INPUT_SINCE[ctx.op_type]:
        axes = ctx.attr("axes")
    else:
        array = ctx.const_input(1, "axes")
        axes = None if array is None or array.size == 0 else array.reshape(-1).tolist()
        if axes is None and ctx.attr("noop_with_empty_axes", 0):
            axes = []
    axes = list(range(x.rank)) if axes is None else sorted({int(a) % x.rank for a in axes})
    t = ctx.tensor(x)
    boolean = t.dtype == tf.bool  # ReduceMax/Min of bool: any/all, computed on 0/1
    if boolean:
        t = tf.cast(t, tf.int32)
    y = _reduce_fn(tf, ctx.op_type)(t, axis=[layout.tf_axis(x.perm, a) for a in axes], keepdims=keepdims)
    if boolean:
        y = tf.cast(y, tf.bool)
    return [_reduced(ctx, x, y, axes, keepdims)]


for _op in _AXES_INPUT_SINCE:
    handler(_op)(_reduce)


def _arg(ctx: NodeContext, fn):
    x = ctx.required(0)
    tf = ctx.tf
    axis = int(ctx.attr("axis", 0)) % x.rank
    keepdims = bool(ctx.attr("keepdims", 1))
    t, tf_axis = ctx.tensor(x), layout.tf_axis(x.perm, axis)
    if ctx.attr("select_last_index", 0):  # the first index in the reversed tensor, counted from the end
        size = x.onnx_shape[axis]
        y = (size - 1) - fn(tf.reverse(t, [tf_axis]), axis=tf_axis, output_type=tf.int32)
        y = tf.cast(y, tf.int64)
    else:
        y = fn(t, axis=tf_axis, output_type=tf.int64)
    if keepdims:
        y = ctx.tf.expand_dims(y, layout.tf_axis(x.perm, axis))
    return [_reduced(ctx, x, y, [axis], keepdims)]


@handler("ArgMax")
def arg_max(ctx: NodeContext):
    return _arg(ctx, ctx.tf.math.argmax)


@handler("ArgMin")
def arg_min(ctx: NodeContext):
    return _arg(ctx, ctx.tf.math.argmin)


def _check_top_k(node, opset: int) -> str | None:
    return None if opset >= 10 else "opset < 10 (K as an attribute)"


@handler("TopK", check=_check_top_k)
def top_k(ctx: NodeContext):
    """The K largest (``largest=1``) or smallest values along ``axis`` and their indices (int64, as
    ONNX's): TOPK_V2 over the last axis of the tensor as it is laid out, with a transpose around it for
    another axis; the smallest are the largest of the negated values. K must be a constant."""
    tf = ctx.tf
    x = ctx.required(0)
    k_value = ctx.const_input(1, "K")
    k = int(np.asarray(k_value).reshape(-1)[0])
    axis = int(ctx.attr("axis", -1)) % x.rank
    largest = bool(ctx.attr("largest", 1))
    t, tf_axis = ctx.tensor(x), layout.tf_axis(x.perm, axis)
    size = t.shape[tf_axis]
    if k < 0 or (size is not None and k > int(size)):
        # ONNX: 0 <= K <= the axis' size; onnxruntime refuses it at run time, LiteRT at prepare
        raise ModelError(f"ONNX TopK {ctx.name!r}: K={k} but axis {axis} has {int(size)} element(s) "
                         f"(the model is invalid: ONNX asks 0 <= K <= the axis' size)")
    rank = len(t.shape)
    perm = [d for d in range(rank) if d != tf_axis] + [tf_axis]
    moved = tf_axis != rank - 1
    if moved:
        t = tf.transpose(t, perm)
    values, indices = tf.math.top_k(t if largest else -t, k=k, sorted=True)
    if not largest:
        values = -values
    if moved:
        back = layout.invert(perm)
        values, indices = tf.transpose(values, back), tf.transpose(indices, back)
    return [ctx.out(values, x.perm), ctx.out(tf.cast(indices, tf.int64), x.perm)]


@handler("CumSum")
def cum_sum(ctx: NodeContext):
    """Running sums along ``axis`` (a constant input), ``exclusive`` (each element the sum of those
    before it) and ``reverse`` (from the end): CUMSUM in the input's layout (float32, int32 and
    int64 in LiteRT; other integers through int32)."""
    tf = ctx.tf
    x = ctx.required(0)
    axis = int(np.asarray(ctx.const_input(1, "axis")).reshape(-1)[0]) % x.rank
    dtype = np.dtype(x.dtype)
    if dtype not in (np.float32, np.int32, np.int64, np.int8, np.uint8, np.int16):
        raise ctx.unsupported(f"CumSum of {dtype.name}")
    t = ctx.tensor(x)
    narrowed = dtype in (np.int8, np.uint8, np.int16)     # a running sum overflows them: in int32, as ONNX
    if narrowed:
        t = tf.cast(t, tf.int32)
    y = tf.cumsum(t, axis=layout.tf_axis(x.perm, axis), exclusive=bool(ctx.attr("exclusive", 0)),
                  reverse=bool(ctx.attr("reverse", 0)))
    return [ctx.out(tf.cast(y, tf.as_dtype(dtype)) if narrowed else y, x.perm)]
