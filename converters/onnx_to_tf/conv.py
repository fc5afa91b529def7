"""Conv (1-D and 2-D): NHWC tf.nn.conv2d / depthwise_conv2d / grouped (split-conv-concat), explicit
tf.pad when ONNX's padding is not TF's 'SAME' or 'VALID'. A 1-D conv is a 2-D conv over a height of 1.
"""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.padding import AUTO_PADS, window_pads
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs


def pad_spatial(ctx: NodeContext, x, begin, end, value: float = 0.0):
    """tf.pad of the H, W dims of an NHWC tensor."""
    paddings = [[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]]
    return ctx.tf.pad(x, paddings, constant_values=value)


def check_conv_attrs(node, opset: int) -> str | None:
    """A ``check`` for Conv/ConvTranspose: 1-D or 2-D windows with a known auto_pad mode."""
    attrs = node_attrs(node)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        return f"auto_pad={auto_pad!r}"
    kernel = attrs.get("kernel_shape")
    if kernel is not None and len(kernel) not in (1, 2):
        return f"{len(kernel)}-D window (1-D and 2-D are supported)"
    return None


def as_2d(ctx: NodeContext, x, weights: np.ndarray):
    """(NHWC tensor, 4-D weights, spatial rank, output layout) for a 1-D or 2-D conv input."""
    if x.rank == 4 and weights.ndim == 4:
        return ctx.nhwc(x), weights, 2
    if x.rank == 3 and weights.ndim == 3:  # (N, C, L) -> (N, 1, L, C)
        t = ctx.in_layout(x, layout.channels_last(3))
        n, length, channels = [-1 if d is None else d for d in t.shape.as_list()]
        return ctx.tf.reshape(t, [n, 1, length, channels]), weights[:, :, None, :], 1
    raise ctx.unsupported(f"rank-{x.rank} input with rank-{weights.ndim} weights (1-D and 2-D convolutions "
                          "are supported)")


def from_2d(ctx: NodeContext, y, spatial: int):
    """The Value of a conv result computed as 2-D (see :func:`as_2d`)."""
    if spatial == 2:
        return ctx.out_nhwc(y)
    n, _, length, channels = [-1 if d is None else d for d in y.shape.as_list()]
    return ctx.out(ctx.tf.reshape(y, [n, length, channels]), layout.channels_last(3))


def attrs_2d(ctx: NodeContext, spatial: int):
    """Window attributes as 2-D lists: a 1-D conv gets a unit first axis (no padding there)."""
    def get(name, default=None):
        value = ctx.attr(name, default)
        if spatial == 1 and value is not None and name in ("strides", "dilations", "kernel_shape", "output_shape"):
            value = [1, *value]
        if spatial == 1 and value is not None and name == "output_padding":
            value = [0, *value]
        if spatial == 1 and value is not None and name == "pads":
            value = [0, value[0], 0, value[1]]
        return value

    return get


def conv2d(ctx: NodeContext, xt, weights: np.ndarray, bias: np.ndarray | None, strides, dilations, group: int,
           padding: str):
    """An ONNX-semantics 2-D conv of an (already padded, if needed) NHWC tensor: weights (O, I/g, kh, kw)."""
    tf = ctx.tf
    out_ch, in_per_group, kh, kw = weights.shape
    channels = xt.shape[-1]
    if channels != in_per_group * group or out_ch % group:
        raise ctx.unsupported(f"weights {weights.shape} do not match {channels} input channels, group={group}")
    tf_strides = [1, strides[0], strides[1], 1]
    if group == 1:
        kernel = np.ascontiguousarray(weights.transpose(2, 3, 1, 0))  # (kh, kw, in, out)
        y = tf.nn.conv2d(xt, kernel, tf_strides, padding, dilations=[1, dilations[0], dilations[1], 1])
    elif group == channels and in_per_group == 1:
        multiplier = out_ch // channels  # output channel c*m + k reads input channel c
        kernel = np.ascontiguousarray(weights.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1))
        y = tf.nn.depthwise_conv2d(xt, kernel, tf_strides, padding, dilations=dilations)
    else:  # 1 < group < channels: one conv (+ its share of the bias) per group, concatenated
        out_per_group = out_ch // group
        outs = []
        for g, part in enumerate(tf.split(xt, group, axis=3)):
            w = weights[g * out_per_group:(g + 1) * out_per_group]
            kernel = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
            out = tf.nn.conv2d(part, kernel, tf_strides, padding, dilations=[1, dilations[0], dilations[1], 1])
            if bias is not None:  # inside the group, so TFLite fuses it into the CONV_2D
                out = tf.nn.bias_add(out, bias[g * out_per_group:(g + 1) * out_per_group].astype(weights.dtype))
            outs.append(out)
        return tf.concat(outs, axis=3)
    if bias is not None:
        y = tf.nn.bias_add(y, bias.astype(weights.dtype))
    return y


def conv_operands(ctx: NodeContext):
    """(input as a 2-D NHWC tensor, weights, bias, attribute getter, group, spatial rank) of a
    Conv or ConvTranspose node (1-D ones are run as 2-D with a unit height)."""
    x = ctx.required(0)
    weights = ctx.const_input(1, "weights")
    bias = ctx.const_input(2, "bias")
    if weights is None:
        raise ctx.unsupported("no weights")
    xt, weights, spatial = as_2d(ctx, x, weights)
    return xt, weights, bias, attrs_2d(ctx, spatial), int(ctx.attr("group", 1)), spatial


@handler("Conv", check=check_conv_attrs)
def conv(ctx: NodeContext):
    xt, weights, bias, get, group, spatial = conv_operands(ctx)
    _, _, kh, kw = weights.shape
    strides = list(get("strides", None) or [1, 1])
    dilations = list(get("dilations", None) or [1, 1])
    _, height, width, _ = xt.shape.as_list()
    pads = window_pads(get, (height, width), (kh, kw), strides, dilations)
    # TensorFlow's depthwise conv implements dilation by space-to-batch, which needs stride 1 (with a
    # stride it computes other values, silently): such a conv runs at stride 1 on the explicitly
    # padded input and keeps every stride-th output, which is the ONNX definition
    subsample = (group == xt.shape[-1] and weights.shape[1] == 1 and max(dilations) > 1 and max(strides) > 1)
    padding = None if subsample else pads.tf_padding((height, width), (kh, kw), strides, dilations)
    if padding is None:
        xt = pad_spatial(ctx, xt, pads.begin, pads.end)
        padding = "VALID"
    if subsample:
        y = conv2d(ctx, xt, weights, bias, [1, 1], dilations, group, padding)[:, ::strides[0], ::strides[1], :]
    else:
        y = conv2d(ctx, xt, weights, bias, strides, dilations, group, padding)
    return [from_2d(ctx, y, spatial)]
