"""Resize (opsets 10..21) and Upsample (opset 9): nearest and bilinear over H, W in NHWC.

The ONNX sampling positions are computed in numpy and matched against what TF's resize kernels do
(align_corners / half_pixel_centers variants); a nearest resize no TF kernel reproduces becomes a
pair of constant-index gathers, which is exact.
"""
from __future__ import annotations

import numpy as np

from converters.onnx_to_tf.context import NodeContext
from converters.onnx_to_tf.registry import handler, node_attrs

_TF_VARIANTS = ((False, False), (False, True), (True, False))  # (align_corners, half_pixel_centers)
_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
                "half_pixel_symmetric")


def _check_resize(node, opset: int) -> str | None:
    attrs = node_attrs(node)
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        return f"mode={mode!r}"
    if attrs.get("antialias", 0):
        return "antialias=1"
    coord_mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    if coord_mode not in _COORD_MODES:
        return f"coordinate_transformation_mode={coord_mode!r}"
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        return f"keep_aspect_ratio_policy={attrs['keep_aspect_ratio_policy']!r}"
    return None


def onnx_source_coords(size: int, out: int, scale: float, mode: str) -> np.ndarray:
    """ONNX coordinate_transformation_mode: input coordinate sampled by each output position."""
    x = np.arange(out, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    if mode == "align_corners":
        return x * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        offset = size / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    raise ValueError(mode)


def onnx_nearest_indices(size: int, out: int, scale: float, coord_mode: str, nearest_mode: str) -> np.ndarray:
    coords = onnx_source_coords(size, out, scale, coord_mode)
    if nearest_mode == "floor":
        idx = np.floor(coords)
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    else:
        frac = coords - np.floor(coords)
        half_down = np.floor(coords) if nearest_mode == "round_prefer_floor" else np.ceil(coords)
        idx = np.where(np.isclose(frac, 0.5), half_down, np.round(coords))
    return np.clip(idx, 0, size - 1).astype(np.int64)


def tf_nearest_indices(size: int, out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """What TF's ResizeNearestNeighbor reads for each output position."""
    x = np.arange(out, dtype=np.float64)
    scale = (size - 1) / (out - 1) if align_corners and out > 1 else size / out
    if half_pixel:
        idx = np.floor((x + 0.5) * scale)
    elif align_corners:
        idx = np.floor(x * scale + 0.5)
    else:
        idx = np.floor(x * scale)
    return np.clip(idx, 0, size - 1).astype(np.int64)


def tf_linear_coords(size: int, out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    x = np.arange(out, dtype=np.float64)
    scale = (size - 1) / (out - 1) if align_corners and out > 1 else size / out
    return (x + 0.5) * scale - 0.5 if half_pixel else x * scale


def _sizes_and_scales(ctx: NodeContext, in_hw: tuple[int, int]):
    x = ctx.required(0)
    shape = x.onnx_shape
    scales = sizes = None
    if ctx.op_type == "Upsample":
        scales = ctx.attr("scales") if ctx.opset < 9 else ctx.const_input(1, "scales")
    elif ctx.opset < 11:
        scales = ctx.const_input(1, "scales")
    else:
        scales = ctx.const_input(2, "scales")
        sizes = ctx.const_input(3, "sizes")
    axes = ctx.attr("axes")
    if axes is not None:  # opset 18: scales/sizes given for these axes only
        full_scales, full_sizes = [1.0] * x.rank, list(shape)
        for k, a in enumerate(int(a) % x.rank for a in axes):
            if scales is not None and np.size(scales):
                full_scales[a] = float(np.reshape(scales, -1)[k])
            if sizes is not None and np.size(sizes):
                full_sizes[a] = int(np.reshape(sizes, -1)[k])
        scales = full_scales if scales is not None and np.size(scales) else None
        sizes = full_sizes if sizes is not None and np.size(sizes) else None
    if sizes is not None and np.size(sizes):
        sizes = [int(s) for s in np.reshape(sizes, -1)]
        if shape[1] != sizes[1] or (shape[0] is not None and sizes[0] != shape[0]):
            raise ctx.unsupported("resizing the batch or channel dim")
        out_hw = (sizes[2], sizes[3])
        return out_hw, (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    scales = [float(s) for s in np.reshape(scales, -1)]
    if scales[0] != 1.0 or scales[1] != 1.0:
        raise ctx.unsupported("resizing the batch or channel dim")
    out_hw = (int(np.floor(in_hw[0] * scales[2])), int(np.floor(in_hw[1] * scales[3])))
    return out_hw, (scales[2], scales[3])


@handler("Resize", "Upsample", check=_check_resize)
def resize(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    if x.rank != 4:
        raise ctx.unsupported(f"rank-{x.rank} input (only NCHW images)")
    t = ctx.nhwc(x)
    in_hw = tuple(t.shape.as_list()[1:3])
    out_hw, scales = _sizes_and_scales(ctx, in_hw)
    mode = ctx.attr("mode", "nearest")
    legacy = ctx.op_type == "Upsample" or ctx.opset < 11
    coord_mode = "asymmetric" if legacy else ctx.attr("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        nearest_mode = "floor" if legacy else ctx.attr("nearest_mode", "round_prefer_floor")
        wanted = [onnx_nearest_indices(n, o, s, coord_mode, nearest_mode) for n, o, s in zip(in_hw, out_hw, scales)]
        for align, half in _TF_VARIANTS:
            if all(np.array_equal(w, tf_nearest_indices(n, o, align, half))
                   for w, n, o in zip(wanted, in_hw, out_hw)):
                y = tf.raw_ops.ResizeNearestNeighbor(images=t, size=list(out_hw), align_corners=align,
                                                     half_pixel_centers=half)
                return [ctx.out_nhwc(y)]
        y = tf.gather(tf.gather(t, wanted[0], axis=1), wanted[1], axis=2)
        return [ctx.out_nhwc(y)]
    wanted = [np.clip(onnx_source_coords(n, o, s, coord_mode), 0, n - 1) for n, o, s in zip(in_hw, out_hw, scales)]
    for align, half in _TF_VARIANTS:
        if all(np.allclose(w, np.clip(tf_linear_coords(n, o, align, half), 0, n - 1), atol=1e-5)
               for w, n, o in zip(wanted, in_hw, out_hw)):
            y = tf.raw_ops.ResizeBilinear(images=t, size=list(out_hw), align_corners=align, half_pixel_centers=half)
            return [ctx.out_nhwc(y)]
    raise ctx.unsupported(f"linear resize with coordinate_transformation_mode={coord_mode!r} "
                          f"{in_hw} -> {out_hw}")
