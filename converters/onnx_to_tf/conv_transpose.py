"""ConvTranspose (1-D and 2-D; strides, pads, output_padding, output_shape, auto_pad, dilations, groups).

Output size and padding follow the ONNX spec and its reference implementation: the full result
``stride * (in - 1) + (kernel - 1) * dilation + 1`` (plus output_padding at the end) cropped by
``pads``; given ``output_shape``, ``pads`` come from the total padding it implies (SAME_UPPER puts the
smaller half first, NOTSET and SAME_LOWER the larger).

group 1 runs as TFLite's TRANSPOSE_CONV: with 'SAME' padding when ONNX's padding is TF's, else
'VALID' and a crop (a dilated kernel is expanded with zeros, exact). Other groups (depthwise
included) are the equivalent stride-1 conv of the zero-upsampled input with the flipped kernel
(DEPTHWISE_CONV_2D, or one CONV_2D per group): zeros are inserted between input pixels by a pad and
a reshape per axis, so no compute is spent on the groups' missing channels.
"""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.conv import check_conv_attrs, conv2d, conv_operands, from_2d
from edgenet.converters.onnx_to_tf.registry import handler


def transpose_geometry(in_size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int] | None,
                       output_padding: int, output_size: int | None, auto_pad: str) -> tuple[int, int, int]:
    """(pad_begin, pad_end, output size) of one spatial axis, per the ONNX spec."""
    effective = (kernel - 1) * dilation + 1
    full = stride * (in_size - 1) + output_padding + effective
    if pads is None or output_size is not None:
        if output_size is None:  # SAME_UPPER / SAME_LOWER without output_shape
            output_size = in_size * stride
        total = full - output_size
        if auto_pad == "SAME_UPPER":
            begin, end = total // 2, total - total // 2
        else:
            begin, end = total - total // 2, total // 2
        return begin, end, output_size
    begin, end = pads
    return begin, end, full - begin - end


def _dilate_kernel(weights: np.ndarray, dilations) -> np.ndarray:
    """The kernel with (dilation - 1) zeros between taps: a dilated kernel as a plain one."""
    if all(d == 1 for d in dilations):
        return weights
    o, i, kh, kw = weights.shape
    out = np.zeros((o, i, (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1), weights.dtype)
    out[:, :, ::dilations[0], ::dilations[1]] = weights
    return out


def _zero_upsample(tf, xt, strides):
    """Insert (stride - 1) zeros between the pixels of an NHWC tensor: (H - 1) * s + 1 rows out."""
    n, height, width, channels = [-1 if d is None else d for d in xt.shape.as_list()]
    sh, sw = strides
    if sw > 1:  # (N, H, W, C) -> (N, H, W, 1, C) -> pad -> (N, H, W * sw, C) -> crop
        y = tf.reshape(xt, [n, height, width, 1, channels])
        y = tf.pad(y, [[0, 0], [0, 0], [0, 0], [0, sw - 1], [0, 0]])
        xt = tf.reshape(y, [n, height, width * sw, channels])[:, :, :(width - 1) * sw + 1, :]
        width = (width - 1) * sw + 1
    if sh > 1:  # (N, H, W, C) -> (N, H, 1, W * C) -> pad -> (N, H * sh, W, C) -> crop
        y = tf.reshape(xt, [n, height, 1, width * channels])
        y = tf.pad(y, [[0, 0], [0, 0], [0, sh - 1], [0, 0]])
        xt = tf.reshape(y, [n, height * sh, width, channels])[:, :(height - 1) * sh + 1, :, :]
    return xt


def _pad_or_crop(tf, xt, begin, end):
    """Pad (positive) or crop (negative) the H, W dims of an NHWC tensor."""
    if any(p > 0 for p in (*begin, *end)):
        xt = tf.pad(xt, [[0, 0], [max(begin[0], 0), max(end[0], 0)], [max(begin[1], 0), max(end[1], 0)], [0, 0]])
    if any(p < 0 for p in (*begin, *end)):
        h, w = xt.shape[1], xt.shape[2]
        xt = xt[:, max(-begin[0], 0):h - max(-end[0], 0), max(-begin[1], 0):w - max(-end[1], 0), :]
    return xt


@handler("ConvTranspose", check=check_conv_attrs)
def conv_transpose(ctx: NodeContext):
    tf = ctx.tf
    xt, weights, bias, get, group, spatial = conv_operands(ctx)   # weights (C_in, C_out / group, kh, kw)
    c_in, out_per_group, kh, kw = weights.shape
    n, height, width, channels = [-1 if d is None else d for d in xt.shape.as_list()]
    if channels != c_in or c_in % group:
        raise ctx.unsupported(f"weights {weights.shape} do not match {channels} input channels, group={group}")
    strides = list(get("strides", None) or [1, 1])
    dilations = list(get("dilations", None) or [1, 1])
    output_padding = list(get("output_padding", None) or [0, 0])
    output_shape = get("output_shape", None)
    if output_shape is not None:
        output_shape = list(output_shape)[-2:]
    auto_pad = get("auto_pad", "NOTSET")
    pads = get("pads", None)
    if pads is None and auto_pad in ("NOTSET", "VALID"):
        pads = [0, 0, 0, 0]
    geometry = [transpose_geometry(size, k, s, d, None if pads is None else (pads[a], pads[a + 2]), op,
                                   None if output_shape is None else int(output_shape[a]), auto_pad)
                for a, (size, k, s, d, op) in enumerate(zip((height, width), (kh, kw), strides, dilations,
                                                            output_padding))]
    begin = [g[0] for g in geometry]
    end = [g[1] for g in geometry]
    out_hw = [g[2] for g in geometry]
    c_out = out_per_group * group
    if group == 1:
        kernel = _dilate_kernel(weights, dilations)  # (C_in, C_out, kh', kw')
        keff = kernel.shape[2:]
        tf_kernel = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))  # (kh, kw, out, in)
        same = [(keff[a] - strides[a]) for a in range(2)]
        if all(t >= 0 and begin[a] == t // 2 and end[a] == t - t // 2 and out_hw[a] == (height, width)[a] * strides[a]
               for a, t in enumerate(same)):
            y = tf.nn.conv2d_transpose(xt, tf_kernel, [n, out_hw[0], out_hw[1], c_out], [1, *strides, 1], "SAME")
        else:
            full = [strides[a] * ((height, width)[a] - 1) + keff[a] for a in range(2)]
            # VALID gives the full result; TF allows up to stride - 1 extra (zero) rows at the end
            extra = [max(0, begin[a] + out_hw[a] - full[a]) for a in range(2)]
            if any(e >= s for e, s in zip(extra, strides)):
                raise ctx.unsupported(f"output_padding/output_shape {out_hw} reaches past the stride")
            size = [full[a] + extra[a] for a in range(2)]
            y = tf.nn.conv2d_transpose(xt, tf_kernel, [n, size[0], size[1], c_out], [1, *strides, 1], "VALID")
            if begin != [0, 0] or size != out_hw:
                y = y[:, begin[0]:begin[0] + out_hw[0], begin[1]:begin[1] + out_hw[1], :]
        if bias is not None:
            y = tf.nn.bias_add(y, bias.astype(weights.dtype))
        return [from_2d(ctx, y, spatial)]
    # grouped: stride-1 conv of the zero-upsampled input with the flipped kernel, regrouped as a Conv's
    in_per_group = c_in // group
    conv_w = weights.reshape(group, in_per_group, out_per_group, kh, kw).transpose(0, 2, 1, 3, 4)
    conv_w = np.ascontiguousarray(conv_w.reshape(c_out, in_per_group, kh, kw)[:, :, ::-1, ::-1])
    up = _zero_upsample(tf, xt, strides)
    keff = [(kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1]
    lead = [keff[a] - 1 - begin[a] for a in range(2)]
    up_size = [(height - 1) * strides[0] + 1, (width - 1) * strides[1] + 1]
    trail = [out_hw[a] + keff[a] - 1 - lead[a] - up_size[a] for a in range(2)]
    up = _pad_or_crop(tf, up, lead, trail)
    y = conv2d(ctx, up, conv_w, bias, [1, 1], dilations, group, "VALID")
    return [from_2d(ctx, y, spatial)]
