"""BatchNormalization (constant statistics -> one multiply-add per channel), InstanceNormalization,
LayerNormalization, Softmax and LogSoftmax (with the pre-opset-13 flattening semantics)."""
from __future__ import annotations

from math import prod

import numpy as np

from converters.onnx_to_tf import layout
from converters.onnx_to_tf.context import NodeContext
from converters.onnx_to_tf.registry import handler, node_attrs
from converters.onnx_to_tf.values import Value


def _check_batch_norm(node, opset: int) -> str | None:
    attrs = node_attrs(node)
    if attrs.get("training_mode", 0):
        return "training_mode=1"
    if len([o for o in node.output if o]) > 1 and opset >= 9:
        return "running statistics outputs (training mode)"
    return None


def channel_scale_shift(ctx: NodeContext, x: Value, scale: np.ndarray, shift: np.ndarray) -> Value:
    """x * scale + shift with per-channel (ONNX dim 1) vectors, in x's own layout (no transpose)."""
    perm = x.perm
    t = ctx.tensor(x)
    shape = [1] * x.rank
    shape[layout.tf_axis(perm, 1)] = -1
    dtype = np.dtype(t.dtype.as_numpy_dtype)
    scale = scale.astype(dtype).reshape(shape)
    shift = shift.astype(dtype).reshape(shape)
    while scale.ndim and scale.shape[0] == 1:  # leading unit dims are implied by broadcasting
        scale, shift = scale[0], shift[0]
    return ctx.out(t * scale + shift, perm)


@handler("BatchNormalization", check=_check_batch_norm)
def batch_norm(ctx: NodeContext):
    x = ctx.required(0)
    gamma = ctx.const_input(1, "scale")
    beta = ctx.const_input(2, "bias")
    mean = ctx.const_input(3, "mean")
    var = ctx.const_input(4, "variance")
    eps = float(ctx.attr("epsilon", 1e-5))
    if x.rank < 2:
        raise ctx.unsupported(f"rank-{x.rank} input")
    a = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    b = beta.astype(np.float64) - mean.astype(np.float64) * a
    return [channel_scale_shift(ctx, x, a, b)]


@handler("InstanceNormalization")
def instance_norm(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    gamma, beta = ctx.const_input(1, "scale"), ctx.const_input(2, "bias")
    eps = float(ctx.attr("epsilon", 1e-5))
    perm = x.perm
    t = ctx.tensor(x)
    axes = [layout.tf_axis(perm, a) for a in range(2, x.rank)]
    mean, var = tf.nn.moments(t, axes=axes, keepdims=True)
    normed = ctx.out((t - mean) * tf.math.rsqrt(var + eps), perm)
    return [channel_scale_shift(ctx, normed, gamma, beta)]


@handler("LayerNormalization")
def layer_norm(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    gamma, beta = ctx.const_input(1, "scale"), ctx.const_input(2, "bias")
    axis = int(ctx.attr("axis", -1)) % x.rank
    eps = float(ctx.attr("epsilon", 1e-5))
    if len([o for o in ctx.node.output if o]) > 1:
        raise ctx.unsupported("Mean/InvStdDev outputs")
    t = ctx.onnx_order(x)
    axes = list(range(axis, x.rank))
    mean, var = tf.nn.moments(t, axes=axes, keepdims=True)
    y = (t - mean) * tf.math.rsqrt(var + eps) * gamma
    if beta is not None:
        y = y + beta
    return [ctx.out(y)]


def last_axis(ctx: NodeContext, fn, t, axis: int):
    """``fn(t, axis=-1)`` applied along TF axis ``axis``: with a static transpose when it is not the
    last one (TF's own axis handling builds the permutation with Range/Pack at run time, which TFLite's
    builtins do not cover)."""
    rank = len(t.shape)
    if axis % rank == rank - 1:
        return fn(t, axis=-1)
    perm = [d for d in range(rank) if d != axis % rank] + [axis % rank]
    y = fn(ctx.tf.transpose(t, perm), axis=-1)
    return ctx.tf.transpose(y, layout.invert(perm))


def _softmax(ctx: NodeContext, fn):
    tf = ctx.tf
    x = ctx.required(0)
    default = -1 if ctx.opset >= 13 else 1
    axis = int(ctx.attr("axis", default)) % x.rank
    if ctx.opset >= 13 or axis == x.rank - 1:
        return [ctx.out(last_axis(ctx, fn, ctx.tensor(x), layout.tf_axis(x.perm, axis)), x.perm)]
    # before opset 13: softmax over all dims from `axis` on, as one flattened row
    shape = x.onnx_shape
    t = ctx.onnx_order(x)
    inner = prod(shape[axis:])
    y = fn(tf.reshape(t, [-1, inner]), axis=-1)
    return [ctx.out(tf.reshape(y, [-1 if d is None else d for d in shape]))]


@handler("Softmax")
def softmax(ctx: NodeContext):
    return _softmax(ctx, ctx.tf.nn.softmax)


@handler("LogSoftmax")
def log_softmax(ctx: NodeContext):
    return _softmax(ctx, ctx.tf.nn.log_softmax)
