"""BatchNormalization (constant statistics -> one multiply-add per channel), InstanceNormalization,
LayerNormalization, LpNormalization, LRN, Softmax and LogSoftmax (with the pre-opset-13 flattening semantics)."""
from __future__ import annotations

from math import prod

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.elementwise import broadcast_operands
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs
from edgenet.converters.onnx_to_tf.values import Value


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
    """Normalized over the ONNX dims from ``axis`` on, in the input's own layout; the optional Mean and
    InvStdDev outputs keep those dims as 1."""
    tf = ctx.tf
    x = ctx.required(0)
    gamma, beta = ctx.input(1), ctx.input(2)
    axis = int(ctx.attr("axis", -1)) % x.rank
    eps = float(ctx.attr("epsilon", 1e-5))
    t, perm = ctx.tensor(x), x.perm
    axes = [layout.tf_axis(perm, a) for a in range(axis, x.rank)]
    mean, var = tf.nn.moments(t, axes=axes, keepdims=True)
    inv_std = tf.math.rsqrt(var + eps)
    normed = Value((t - mean) * inv_std, perm)
    operands = [normed] + [v for v in (gamma, beta) if v is not None]
    tensors, out_perm = broadcast_operands(ctx, operands)
    y = tensors[0] * tensors[1]
    if beta is not None:
        y = y + tensors[2]
    return [ctx.out(y, out_perm), ctx.out(mean, perm), ctx.out(inv_std, perm)]


def _check_lp(node, opset: int) -> str | None:
    p = node_attrs(node).get("p", 2)
    return None if p in (1, 2) else f"p={p} (ONNX allows 1 or 2)"


@handler("LpNormalization", check=_check_lp)
def lp_normalization(ctx: NodeContext):
    """x / ||x||_p along ``axis`` (p = 1 or 2); a zero vector stays zero, as in ONNX's reference."""
    tf = ctx.tf
    x = ctx.required(0)
    axis = layout.tf_axis(x.perm, int(ctx.attr("axis", -1)))
    t = ctx.tensor(x)
    if int(ctx.attr("p", 2)) == 1:
        norm = tf.math.reduce_sum(tf.abs(t), axis=axis, keepdims=True)
    else:
        norm = tf.sqrt(tf.math.reduce_sum(t * t, axis=axis, keepdims=True))
    norm = tf.where(norm > 0, norm, tf.constant(1, t.dtype))
    return [ctx.out(t / norm, x.perm)]


def _check_lrn(node, opset: int) -> str | None:
    size = int(node_attrs(node).get("size", 0))
    return None if size >= 1 and size % 2 == 1 else \
        f"size={size} (an even window is not centred; TFLite's LOCAL_RESPONSE_NORMALIZATION is)"


@handler("LRN", check=_check_lrn)
def lrn(ctx: NodeContext):
    """Local response normalization across channels (AlexNet, GoogLeNet): ONNX's x / (bias + alpha /
    size * sum of x^2 over the size channels centred on c) ** beta is TFLite's with radius (size - 1) / 2
    and alpha / size."""
    x = ctx.required(0)
    size = int(ctx.attr("size"))
    alpha, beta, bias = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75)), float(ctx.attr("bias", 1.0))

    def fn(t, axis=-1):
        return ctx.tf.nn.local_response_normalization(t, depth_radius=(size - 1) // 2, bias=bias,
                                                      alpha=alpha / size, beta=beta)

    return [ctx.out(last_axis(ctx, fn, ctx.tensor(x), layout.tf_axis(x.perm, 1)), x.perm)]


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
