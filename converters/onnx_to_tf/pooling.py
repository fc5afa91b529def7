"""MaxPool, AveragePool (count_include_pad, ceil_mode, dilations; 1-D, 2-D, 3-D), GlobalAveragePool,
GlobalMaxPool, all channels-last.

2-D windows without dilation run as TFLite's MAX_POOL_2D / AVERAGE_POOL_2D. A 1-D pool is a 2-D pool
over a height of 1. A 3-D pool is two 2-D pools, over (H, W) with the depth folded into the batch,
then over D: a max or average over a box is the max or average over one axis of those over the
others (the number of valid positions in a box is the product of the per-axis counts, so averages
with padding split exactly too). Dilated windows become one strided slice per window tap and axis,
combined with MAXIMUM or ADD (exact).
"""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.padding import AUTO_PADS, window_pads
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs

_LOWEST = float(np.finfo(np.float32).min)


def _check_pool(node, opset: int) -> str | None:
    attrs = node_attrs(node)
    if attrs.get("auto_pad", "NOTSET") not in AUTO_PADS:
        return f"auto_pad={attrs['auto_pad']!r}"
    kernel = attrs.get("kernel_shape")
    if kernel is None:
        return "no kernel_shape"
    if not 1 <= len(kernel) <= 3:
        return f"{len(kernel)}-D window (1-D to 3-D are supported)"
    if len(node.output) > 1 and node.output[1]:
        return "the Indices output"
    return None


def _window_counts(kernel: int, stride: int, dilation: int, out: int, lo: int, hi: int) -> np.ndarray:
    """How many taps of each output window (in padded coordinates) fall inside [lo, hi)."""
    taps = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation
    return np.sum((taps >= lo) & (taps < hi), axis=1)


def _edge_pad(tf, xt, begin, end):
    """Repeat the first/last row and column of an NHWC tensor ``begin``/``end`` times (slices + concat;
    strided slices, which XNNPACK delegates in float and int8)."""
    for axis, (b, e) in enumerate(zip(begin, end), start=1):
        if not (b or e):
            continue
        size = xt.shape[axis]
        index = [slice(None)] * 4
        index[axis] = slice(0, 1)
        first = [xt[tuple(index)]] if b else []
        index[axis] = slice(size - 1, size)
        last = [xt[tuple(index)]] if e else []
        xt = tf.concat(first * b + [xt] + last * e, axis=axis)
    return xt


def _pad_hw(tf, xt, begin, end, value: float):
    paddings = [[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]]
    return tf.pad(xt, paddings, constant_values=value)


def _dilated(tf, xt, kernel, strides, dilations, outs, kind: str):
    """Pool an already padded NHWC tensor with VALID windows, one axis at a time, one slice per tap."""
    for axis in (1, 2):
        k, s, d, out = kernel[axis - 1], strides[axis - 1], dilations[axis - 1], outs[axis - 1]
        taps = []
        for j in range(k):
            index = [slice(None)] * 4
            index[axis] = slice(j * d, j * d + (out - 1) * s + 1, s)
            taps.append(xt[tuple(index)])
        combined = taps[0]
        for tap in taps[1:]:
            combined = tf.maximum(combined, tap) if kind == "max" else combined + tap
        xt = combined
    return xt


def _pool_2d(ctx: NodeContext, xt, kernel, strides, dilations, pad_attrs, kind: str):
    """One 2-D max/average pool of an NHWC tensor with ONNX semantics (``pad_attrs(name, default)``
    reads auto_pad / pads / ceil_mode / count_include_pad for these two axes)."""
    tf = ctx.tf
    _, height, width, _ = xt.shape.as_list()
    sizes = (height, width)
    pads = window_pads(pad_attrs, sizes, kernel, strides, dilations, bool(pad_attrs("ceil_mode", 0)))
    dilated = any(d != 1 for d in dilations)
    if kind == "max":
        padding = None if dilated else pads.tf_padding(sizes, kernel, strides, dilations)
        if padding is not None:
            return tf.nn.max_pool2d(xt, kernel, strides, padding)
        if not dilated and all(b < k and e < k for b, e, k in zip(pads.begin, pads.end, kernel)):
            # every window reaching into the padding also holds the edge element the padding repeats:
            # exact, and the padded tensor keeps the input's range, which int8 calibration shares
            xt = _edge_pad(tf, xt, pads.begin, pads.end)
        else:
            xt = _pad_hw(tf, xt, pads.begin, pads.end, _LOWEST)
        if dilated:
            return _dilated(tf, xt, kernel, strides, dilations, pads.out, "max")
        return tf.nn.max_pool2d(xt, kernel, strides, "VALID")
    include_pad = bool(pad_attrs("count_include_pad", 0))
    padding = None if dilated else pads.tf_padding(sizes, kernel, strides, dilations)
    if padding == "VALID" or (padding == "SAME" and not include_pad):
        return tf.nn.avg_pool2d(xt, kernel, strides, padding)
    # explicit: zero-pad, average over full windows, then rescale by the true divisor of each window
    xt = _pad_hw(tf, xt, pads.begin, pads.end, 0.0)
    if dilated:
        y = _dilated(tf, xt, kernel, strides, dilations, pads.out, "sum") * (1.0 / (kernel[0] * kernel[1]))
    else:
        y = tf.nn.avg_pool2d(xt, kernel, strides, "VALID")
    counts = []
    for axis, size in enumerate(sizes):
        b, e = pads.begin[axis], pads.declared_end[axis]
        lo, hi = (0, b + size + e) if include_pad else (b, b + size)
        counts.append(_window_counts(kernel[axis], strides[axis], dilations[axis], pads.out[axis], lo, hi))
    divisor = np.outer(counts[0], counts[1]).astype(np.float32)
    if np.any(divisor != kernel[0] * kernel[1]):
        scale = (kernel[0] * kernel[1] / np.maximum(divisor, 1)).astype(np.float32)
        y = y * scale[None, :, :, None]
    return y


def _axis_attrs(ctx: NodeContext, axes: list[int]):
    """An attribute reader that gives ``pads`` (and the other window attributes) for some axes only."""
    spatial = len(ctx.attr("kernel_shape"))

    def get(name, default=None):
        value = ctx.attr(name, default)
        if name == "pads" and value is not None:
            value = [value[a] for a in axes] + [value[spatial + a] for a in axes]
        return value

    return get


def _pool(ctx: NodeContext, kind: str):
    tf = ctx.tf
    x = ctx.required(0)
    kernel = list(ctx.attr("kernel_shape"))
    n = len(kernel)
    if x.rank != n + 2:
        raise ctx.unsupported(f"a {n}-D window on a rank-{x.rank} input")
    strides = list(ctx.attr("strides", None) or [1] * n)
    dilations = list(ctx.attr("dilations", None) or [1] * n)
    perm = layout.channels_last(x.rank)
    t = ctx.in_layout(x, perm)
    shape = [-1 if d is None else d for d in t.shape.as_list()]
    if n == 1:  # (N, L, C) -> (N, 1, L, C)
        t = tf.reshape(t, [shape[0], 1, shape[1], shape[2]])
        y = _pool_2d(ctx, t, [1, kernel[0]], [1, strides[0]], [1, dilations[0]], _unit_first(ctx), kind)
        return [ctx.out(tf.reshape(y, [shape[0], y.shape[2], shape[2]]), perm)]
    if n == 2:
        return [ctx.out(_pool_2d(ctx, t, kernel, strides, dilations, ctx.attr, kind), perm)]
    if None in shape[1:] or shape[0] == -1:
        raise ctx.unsupported("3-D pooling with a dynamic batch")
    batch, depth, height, width, channels = shape  # 3-D: over (H, W) with D in the batch, then over D
    y = tf.reshape(t, [batch * depth, height, width, channels])
    y = _pool_2d(ctx, y, kernel[1:], strides[1:], dilations[1:], _axis_attrs(ctx, [1, 2]), kind)
    out_h, out_w = y.shape[1], y.shape[2]
    y = tf.reshape(y, [batch, depth, out_h * out_w, channels])
    y = _pool_2d(ctx, y, [kernel[0], 1], [strides[0], 1], [dilations[0], 1], _depth_first(ctx), kind)
    return [ctx.out(tf.reshape(y, [batch, y.shape[1], out_h, out_w, channels]), perm)]


def _unit_first(ctx: NodeContext):
    """Window attributes of a 1-D pool seen as 2-D with a unit first axis (no padding there)."""
    def get(name, default=None):
        value = ctx.attr(name, default)
        if name == "pads" and value is not None:
            value = [0, value[0], 0, value[1]]
        return value

    return get


def _depth_first(ctx: NodeContext):
    """Window attributes of the depth pass of a 3-D pool: axis 0 is D, axis 1 a unit window."""
    def get(name, default=None):
        value = ctx.attr(name, default)
        if name == "pads" and value is not None:
            value = [value[0], 0, value[3], 0]
        return value

    return get


@handler("MaxPool", check=_check_pool)
def max_pool(ctx: NodeContext):
    return _pool(ctx, "max")


@handler("AveragePool", check=_check_pool)
def average_pool(ctx: NodeContext):
    return _pool(ctx, "avg")


def _global_pool(ctx: NodeContext, reduce_fn):
    x = ctx.required(0)
    if x.rank < 3:
        raise ctx.unsupported(f"rank-{x.rank} input")
    xt, perm = ctx.tensor(x), x.perm  # any layout: only the spatial axes are reduced
    axes = [layout.tf_axis(perm, a) for a in range(2, x.rank)]
    return [ctx.out(reduce_fn(xt, axis=axes, keepdims=True), perm)]


@handler("GlobalAveragePool")
def global_average_pool(ctx: NodeContext):
    return _global_pool(ctx, ctx.tf.reduce_mean)


@handler("GlobalMaxPool")
def global_max_pool(ctx: NodeContext):
    return _global_pool(ctx, ctx.tf.reduce_max)
