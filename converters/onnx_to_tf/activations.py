"""Unary activations; all keep the layout of their input. Forms chosen so TFLite fuses them
(Clip(0, 6) -> relu6, Clip(0, inf) -> relu, HardSwish -> x * relu6(x + 3) / 6)."""
from __future__ import annotations

import math

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler


def _unary(ctx: NodeContext, fn):
    x = ctx.required(0)
    return [ctx.out(fn(ctx.tensor(x)), x.perm)]


@handler("Relu")
def relu(ctx: NodeContext):
    """A ReLU whose input is also read elsewhere (e.g. a residual sum feeding both the shortcut and a
    pre-activation, as in Xception) cannot fuse into the op before it, and XNNPACK runs no standalone
    int8 RELU: such a ReLU becomes an identity 1x1 depthwise conv with the ReLU fused (exact in
    float, and in int8 where a weight of 1 is exact), which XNNPACK runs in float and int8 alike."""
    x = ctx.required(0)
    tf = ctx.tf
    shared = ctx.state.readers.get(ctx.node.input[0], 0) > 1
    if shared and not x.is_const and x.perm == layout.NHWC and x.tensor.dtype == tf.float32:
        channels = x.tensor.shape[-1]
        if channels is not None:
            ones = np.ones((1, 1, channels, 1), np.float32)
            y = tf.nn.depthwise_conv2d(ctx.nhwc(x), ones, [1, 1, 1, 1], "VALID")
            return [ctx.out_nhwc(tf.nn.relu(y))]
    return _unary(ctx, tf.nn.relu)


@handler("LeakyRelu")
def leaky_relu(ctx: NodeContext):
    alpha = float(ctx.attr("alpha", 0.01))
    return _unary(ctx, lambda t: ctx.tf.nn.leaky_relu(t, alpha=alpha))


@handler("Sigmoid")
def sigmoid(ctx: NodeContext):
    return _unary(ctx, ctx.tf.sigmoid)


@handler("Tanh")
def tanh(ctx: NodeContext):
    return _unary(ctx, ctx.tf.tanh)


@handler("Elu")
def elu(ctx: NodeContext):
    alpha = float(ctx.attr("alpha", 1.0))
    if alpha == 1.0:
        return _unary(ctx, ctx.tf.nn.elu)
    return _unary(ctx, lambda t: ctx.tf.where(t > 0, t, alpha * (ctx.tf.exp(t) - 1.0)))


def softplus_tensor(tf, t):
    """log(1 + exp(t)) from TFLite builtins (TFLite has no SOFTPLUS): max(t, 0) + log(1 + exp(-|t|)),
    which neither overflows for large t nor loses small values for very negative t."""
    return tf.maximum(t, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(t)))


@handler("Softplus")
def softplus(ctx: NodeContext):
    return _unary(ctx, lambda t: softplus_tensor(ctx.tf, t))


@handler("HardSigmoid")
def hard_sigmoid(ctx: NodeContext):
    tf = ctx.tf
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return _unary(ctx, lambda t: tf.nn.relu6(t + 3.0) * (1.0 / 6.0))
    # clip(a t + b, 0, 1) as relu6(6a t + 6b) / 6: MUL, ADD with RELU6 fused, MUL -- ops the LiteRT
    # Quantizer quantizes, where a MINIMUM would stay in float in an int8 model
    return _unary(ctx, lambda t: tf.nn.relu6(t * (6.0 * alpha) + 6.0 * beta) * (1.0 / 6.0))


def _hard_swish(tf, t):
    return t * tf.nn.relu6(t + 3.0) * (1.0 / 6.0)


@handler("HardSwish")
def hard_swish(ctx: NodeContext):
    return _unary(ctx, lambda t: _hard_swish(ctx.tf, t))


@handler("Swish")
def swish(ctx: NodeContext):
    alpha = float(ctx.attr("alpha", 1.0))
    return _unary(ctx, lambda t: t * ctx.tf.sigmoid(t * alpha if alpha != 1.0 else t))


@handler("Mish")
def mish(ctx: NodeContext):
    return _unary(ctx, lambda t: t * ctx.tf.tanh(softplus_tensor(ctx.tf, t)))


@handler("Gelu")
def gelu(ctx: NodeContext):
    approximate = ctx.attr("approximate", "none") == "tanh"
    return _unary(ctx, lambda t: ctx.tf.nn.gelu(t, approximate=approximate))


@handler("Selu")
def selu(ctx: NodeContext):
    """gamma * (max(x, 0) + alpha * (exp(min(x, 0)) - 1)) (Klambauer et al. 2017)."""
    tf = ctx.tf
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    return _unary(ctx, lambda t: gamma * (tf.maximum(t, 0.0) + alpha * (tf.exp(tf.minimum(t, 0.0)) - 1.0)))


@handler("Celu")
def celu(ctx: NodeContext):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)) (Barron 2017), exp taken of min(x, 0)."""
    tf = ctx.tf
    alpha = float(ctx.attr("alpha", 1.0))
    return _unary(ctx, lambda t: tf.maximum(t, 0.0) + alpha * (tf.exp(tf.minimum(t, 0.0) * (1.0 / alpha)) - 1.0))


@handler("ThresholdedRelu")
def thresholded_relu(ctx: NodeContext):
    tf = ctx.tf
    alpha = float(ctx.attr("alpha", 1.0))
    return _unary(ctx, lambda t: tf.where(t > alpha, t, tf.constant(0.0, t.dtype)))


@handler("Reciprocal")
def reciprocal(ctx: NodeContext):  # 1 / x: DIV (TF's Reciprocal op has no TFLite builtin)
    return _unary(ctx, lambda t: ctx.tf.constant(1, t.dtype) / t)


@handler("Softsign")
def softsign(ctx: NodeContext):
    return _unary(ctx, lambda t: t / (1.0 + ctx.tf.abs(t)))


def _check_erf(node, opset: int) -> str | None:
    return ("TFLite has no builtin Erf; only Erf inside the exact GELU pattern x * 0.5 * (1 + Erf(x / sqrt(2))) "
            "is converted (to TFLite's GELU)")


@handler("Erf", check=_check_erf)
def erf(ctx: NodeContext):  # pragma: no cover - refused by its check; kept so the refusal names the reason
    raise ctx.unsupported(_check_erf(ctx.node, ctx.opset))


def _clip_bounds(ctx: NodeContext) -> tuple[float | None, float | None, object, object]:
    """(min, max) as floats when constant (None = unbounded), plus the tensors when computed at run time."""
    if ctx.opset < 11:
        low, high = ctx.attr("min"), ctx.attr("max")
        return (None if low is None else float(low), None if high is None else float(high), None, None)
    bounds: list = []
    for index in (1, 2):
        v = ctx.input(index)
        if v is None:
            bounds.append((None, None))
        elif v.is_const:
            bounds.append((float(v.const.reshape(())), None))
        else:
            bounds.append((None, ctx.tensor(v)))
    (low, low_t), (high, high_t) = bounds
    return low, high, low_t, high_t


@handler("Clip")
def clip(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    t = ctx.tensor(x)
    low, high, low_t, high_t = _clip_bounds(ctx)
    low = None if low is not None and low <= float(np.finfo(np.float32).min) else low
    high = None if high is not None and high >= float(np.finfo(np.float32).max) else high
    if low_t is None and high_t is None:
        if low == 0.0 and high == 6.0:
            return [ctx.out(tf.nn.relu6(t), x.perm)]
        if low == 0.0 and high is None:
            return [ctx.out(tf.nn.relu(t), x.perm)]
    if low_t is None and low == 0.0:
        t = tf.nn.relu(t)                  # fuses into the op before it
    elif low_t is not None or low is not None:
        t = tf.maximum(t, tf.cast(low_t, t.dtype) if low_t is not None else tf.constant(low, t.dtype))
    if high_t is not None:
        t = tf.minimum(t, tf.cast(high_t, t.dtype))
    elif high is not None:
        # min(t, high) as t - relu(t - high) (equal; one float32 rounding of t apart above high): SUB with
        # a fused RELU and a SUB, which the LiteRT Quantizer makes int8 -- it has no int8 MINIMUM, and a
        # Hardtanh(0, 4) stayed float between int8 tensors (the Edge TPU and MCUs refused the model)
        t = t - tf.nn.relu(t - tf.constant(high, t.dtype))
    return [ctx.out(t, x.perm)]


# simple math, also keeping the layout
_MATH = {
    "Abs": "abs", "Neg": "negative", "Sign": "sign", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Floor": "floor", "Ceil": "ceil", "Sin": "sin", "Cos": "cos", "Round": "round",
}


def _make_math(tf_name: str):
    def convert(ctx: NodeContext):
        return _unary(ctx, getattr(ctx.tf.math, tf_name))

    return convert


for _op, _name in _MATH.items():
    handler(_op)(_make_math(_name))
