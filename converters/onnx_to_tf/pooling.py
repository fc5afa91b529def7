"""MaxPool, AveragePool (count_include_pad, ceil_mode), GlobalAveragePool, GlobalMaxPool in NHWC."""
from __future__ import annotations

import numpy as np

from converters.onnx_to_tf import layout
from converters.onnx_to_tf.context import NodeContext
from converters.onnx_to_tf.conv import pad_spatial
from converters.onnx_to_tf.padding import check_window_attrs, window_pads
from converters.onnx_to_tf.registry import handler, node_attrs


def _check_pool(node, opset: int) -> str | None:
    reason = check_window_attrs(node)
    if reason:
        return reason
    attrs = node_attrs(node)
    if "kernel_shape" not in attrs:
        return "no kernel_shape"
    if any(d != 1 for d in attrs.get("dilations", [1])):
        return "dilated pooling"
    if len(node.output) > 1 and node.output[1]:
        return "the Indices output"
    return None


def _pool_setup(ctx: NodeContext):
    x = ctx.required(0)
    if x.rank != 4:
        raise ctx.unsupported(f"rank-{x.rank} input (only 2-D pooling)")
    kernel = list(ctx.attr("kernel_shape"))
    strides = list(ctx.attr("strides", [1, 1]))
    xt = ctx.nhwc(x)
    _, height, width, _ = xt.shape.as_list()
    pads = window_pads(ctx.attr, (height, width), kernel, strides, [1, 1], bool(ctx.attr("ceil_mode", 0)))
    return xt, (height, width), kernel, strides, pads


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


@handler("MaxPool", check=_check_pool)
def max_pool(ctx: NodeContext):
    """Explicit padding repeats the edge rows/columns: every window that reaches into the padding
    also holds the edge element it repeats, so the max is exact -- and, unlike padding with the
    lowest float, the padded tensor keeps the input's range, which int8 calibration shares."""
    tf = ctx.tf
    xt, sizes, kernel, strides, pads = _pool_setup(ctx)
    padding = pads.tf_padding(sizes, kernel, strides, [1, 1])
    if padding is None:
        if all(b < k and e < k for b, e, k in zip(pads.begin, pads.end, kernel)):
            xt = _edge_pad(tf, xt, pads.begin, pads.end)
        else:  # a window may lie entirely in the padding: pad with the lowest value (float-exact)
            xt = pad_spatial(ctx, xt, pads.begin, pads.end, float(np.finfo(np.float32).min))
        padding = "VALID"
    y = tf.nn.max_pool2d(xt, kernel, strides, padding)
    return [ctx.out_nhwc(y)]


def _window_counts(size: int, kernel: int, stride: int, out: int, lo: int, hi: int) -> np.ndarray:
    """How many positions of each output window (in padded coordinates) fall inside [lo, hi)."""
    starts = np.arange(out) * stride
    return np.clip(np.minimum(starts + kernel, hi) - np.maximum(starts, lo), 0, None)


@handler("AveragePool", check=_check_pool)
def average_pool(ctx: NodeContext):
    tf = ctx.tf
    xt, (height, width), kernel, strides, pads = _pool_setup(ctx)
    include_pad = bool(ctx.attr("count_include_pad", 0))
    padding = pads.tf_padding((height, width), kernel, strides, [1, 1])
    if padding == "VALID" or (padding == "SAME" and not include_pad):
        return [ctx.out_nhwc(tf.nn.avg_pool2d(xt, kernel, strides, padding))]
    # explicit: zero-pad, average over full windows, then rescale by the true divisor of each window
    xt = pad_spatial(ctx, xt, pads.begin, pads.end)
    y = tf.nn.avg_pool2d(xt, kernel, strides, "VALID")
    counts = []
    for axis, size in enumerate((height, width)):
        b, e = pads.begin[axis], pads.declared_end[axis]
        lo, hi = (0, b + size + e) if include_pad else (b, b + size)
        counts.append(_window_counts(size, kernel[axis], strides[axis], pads.out[axis], lo, hi))
    divisor = np.outer(counts[0], counts[1]).astype(np.float32)
    if np.any(divisor != kernel[0] * kernel[1]):
        scale = (kernel[0] * kernel[1] / np.maximum(divisor, 1)).astype(np.float32)
        y = y * scale[None, :, :, None]
    return [ctx.out_nhwc(y)]


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
