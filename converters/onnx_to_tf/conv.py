"""Conv: NHWC tf.nn.conv2d / depthwise_conv2d / grouped (split-conv-concat), explicit tf.pad when needed."""
from __future__ import annotations

import numpy as np

from converters.onnx_to_tf.context import NodeContext
from converters.onnx_to_tf.padding import check_window_attrs, window_pads
from converters.onnx_to_tf.registry import handler


def pad_spatial(ctx: NodeContext, x, begin, end, value: float = 0.0):
    """tf.pad of the H, W dims of an NHWC tensor."""
    paddings = [[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]]
    return ctx.tf.pad(x, paddings, constant_values=value)


@handler("Conv", check=lambda node, opset: check_window_attrs(node))
def conv(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    weights = ctx.const_input(1, "weights")
    bias = ctx.const_input(2, "bias")
    if weights is None or weights.ndim != 4 or x.rank != 4:
        raise ctx.unsupported("only 2-D convolutions (rank-4 input and weights) are supported")
    group = int(ctx.attr("group", 1))
    out_ch, in_per_group, kh, kw = weights.shape
    strides = list(ctx.attr("strides", [1, 1]))
    dilations = list(ctx.attr("dilations", [1, 1]))
    xt = ctx.nhwc(x)
    _, height, width, channels = xt.shape.as_list()
    if channels != in_per_group * group or out_ch % group:
        raise ctx.unsupported(f"weights {weights.shape} do not match {channels} input channels, group={group}")
    pads = window_pads(ctx.attr, (height, width), (kh, kw), strides, dilations)
    padding = pads.tf_padding((height, width), (kh, kw), strides, dilations)
    if padding is None:
        xt = pad_spatial(ctx, xt, pads.begin, pads.end)
        padding = "VALID"
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
        parts = tf.split(xt, group, axis=3)
        outs = []
        for g, part in enumerate(parts):
            w = weights[g * out_per_group:(g + 1) * out_per_group]
            kernel = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
            out = tf.nn.conv2d(part, kernel, tf_strides, padding, dilations=[1, dilations[0], dilations[1], 1])
            if bias is not None:  # inside the group, so TFLite fuses it into the CONV_2D
                out = tf.nn.bias_add(out, bias[g * out_per_group:(g + 1) * out_per_group].astype(weights.dtype))
            outs.append(out)
        y = tf.concat(outs, axis=3)
        bias = None
    if bias is not None:
        y = tf.nn.bias_add(y, bias.astype(weights.dtype))
    return [ctx.out_nhwc(y)]
