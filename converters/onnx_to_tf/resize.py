"""Resize (opsets 10..19+) and Upsample (7, 9): every mode, coordinate_transformation_mode and
nearest_mode of the spec, scales or sizes, axes, keep_aspect_ratio_policy, any rank.

The per-axis sampling is computed in numpy (:mod:`~edgenet.converters.onnx_to_tf.resize_math`), then the
cheapest exact TFLite form is chosen:

* an H/W resize of an NHWC tensor that TFLite's own kernel reproduces exactly (checked against
  RESIZE_NEAREST_NEIGHBOR's index formula, or RESIZE_BILINEAR's weights, for every combination of
  align_corners / half_pixel_centers) runs as that kernel;
* any other nearest resize is one GATHER per resized axis with constant int32 indices (exact for any
  nearest mapping);
* any other linear or cubic resize (other coordinate modes, antialias, exclude_outside, crop and
  resize, other ranks or axes) multiplies each resized axis by its constant (out, in) weight matrix
  (BATCH_MATMUL / FULLY_CONNECTED); tf_crop_and_resize's positions outside the input then take
  extrapolation_value (SELECT_V2 with a constant mask).
"""
from __future__ import annotations

from math import prod

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs
from edgenet.converters.onnx_to_tf.resize_math import (AxisResize, ResizeMode, axis_weights, nearest_indices,
                                               tf_bilinear_weights, tf_nearest_indices)

_TF_VARIANTS = ((False, False), (False, True), (True, False))  # (align_corners, half_pixel_centers)
_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
                "half_pixel_symmetric", "tf_crop_and_resize")
_MODES = ("nearest", "linear", "bilinear", "cubic")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _check_resize(node, opset: int) -> str | None:
    attrs = node_attrs(node)
    mode = attrs.get("mode", "nearest")
    if mode not in _MODES:
        return f"mode={mode!r}"
    if node.op_type == "Upsample" and ("height_scale" in attrs or "width_scale" in attrs):
        return "opset-1 Upsample (height_scale/width_scale attributes)"
    if attrs.get("antialias", 0) and mode == "nearest":
        return "antialias=1 with mode='nearest' (undefined by the spec)"
    coord_mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    if coord_mode not in _COORD_MODES:
        return f"coordinate_transformation_mode={coord_mode!r}"
    if attrs.get("nearest_mode", "round_prefer_floor") not in _NEAREST_MODES:
        return f"nearest_mode={attrs['nearest_mode']!r}"
    if attrs.get("keep_aspect_ratio_policy", "stretch") not in ("stretch", "not_larger", "not_smaller"):
        return f"keep_aspect_ratio_policy={attrs['keep_aspect_ratio_policy']!r}"
    return None


def _given(array) -> np.ndarray | None:
    """A scales/sizes/roi input as a flat array, None when absent or empty."""
    if array is None or np.size(array) == 0:
        return None
    return np.asarray(array).reshape(-1)


def _mode(ctx: NodeContext, legacy: bool) -> ResizeMode:
    mode = ctx.attr("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    if legacy:
        return ResizeMode(mode, "asymmetric", "legacy")
    return ResizeMode(mode, ctx.attr("coordinate_transformation_mode", "half_pixel"),
                      ctx.attr("nearest_mode", "round_prefer_floor"), float(ctx.attr("cubic_coeff_a", -0.75)),
                      bool(ctx.attr("exclude_outside", 0)), bool(ctx.attr("antialias", 0)))


def plan_axes(ctx: NodeContext, shape: tuple) -> list[AxisResize]:
    """How every ONNX axis of the input is resized (the spec's output sizes and scales)."""
    rank = len(shape)
    roi = None
    if ctx.op_type == "Upsample":
        scales, sizes = _given(ctx.attr("scales") if ctx.opset < 9 else ctx.const_input(1, "scales")), None
    elif ctx.opset < 11:
        scales, sizes = _given(ctx.const_input(1, "scales")), None
    else:
        if ctx.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
            roi = _given(ctx.const_input(1, "roi"))
        scales, sizes = _given(ctx.const_input(2, "scales")), _given(ctx.const_input(3, "sizes"))
    if scales is None and sizes is None:
        raise ctx.unsupported("neither scales nor sizes")
    axes = [int(a) % rank for a in ctx.attr("axes", None) or range(rank)]
    full_scales, full_sizes, full_roi = [1.0] * rank, list(shape), [(0.0, 1.0)] * rank
    for k, a in enumerate(axes):
        if scales is not None:
            full_scales[a] = float(scales[k])
        if sizes is not None:
            full_sizes[a] = int(sizes[k])
        if roi is not None and len(roi) == 2 * len(axes):
            full_roi[a] = (float(roi[k]), float(roi[len(axes) + k]))
    if shape[0] is None and sizes is None and full_scales[0] != 1.0:
        raise ctx.unsupported("resizing the dynamic batch dim")
    if sizes is None:  # the output size is floor(in * scale) (scale as float32, computed in float64)
        out = [d if d is None else int(d * s) for d, s in zip(shape, full_scales)]
        return [AxisResize(d, o, s, r) if d is not None else AxisResize(1, 1, 1.0)
                for d, o, s, r in zip(shape, out, full_scales, full_roi)]
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    ratios = [o / d if d else 1.0 for o, d in zip(full_sizes, shape)]
    if policy != "stretch":
        chosen = [ratios[a] for a in axes]
        scale = min(chosen) if policy == "not_larger" else max(chosen)
        return [AxisResize(d, int(scale * d + 0.5), scale, r) if a in axes else AxisResize(d, d, 1.0, r)
                for a, (d, r) in enumerate(zip(shape, full_roi))]
    return [AxisResize(d, o, s, r) if d is not None else AxisResize(1, 1, 1.0)
            for d, o, s, r in zip(shape, full_sizes, ratios, full_roi)]


def _tf_kernel(ctx: NodeContext, x, plans: list[AxisResize], mode: ResizeMode, outside: bool):
    """TFLite's RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR when it reproduces this resize exactly, else None."""
    tf = ctx.tf
    if x.rank != 4 or any(not plans[a].is_identity for a in (0, 1)) or outside or mode.mode == "cubic":
        return None
    h, w = plans[2], plans[3]
    size = [h.out_size, w.out_size]
    for align, half in _TF_VARIANTS:
        if mode.mode == "nearest":
            want = [nearest_indices(p, mode) for p in (h, w)]
            have = [tf_nearest_indices(p.in_size, p.out_size, align, half) for p in (h, w)]
            if all(v is not None and np.array_equal(u, v) for u, v in zip(want, have)):
                return tf.raw_ops.ResizeNearestNeighbor(images=ctx.nhwc(x), size=size, align_corners=align,
                                                        half_pixel_centers=half)
        else:
            want = [axis_weights(p, mode)[0] for p in (h, w)]
            have = [tf_bilinear_weights(p.in_size, p.out_size, align, half) for p in (h, w)]
            if all(np.allclose(u, v, atol=1e-6) for u, v in zip(want, have)):
                return tf.raw_ops.ResizeBilinear(images=ctx.nhwc(x), size=size, align_corners=align,
                                                 half_pixel_centers=half)
    return None


def _along_axis(tf, t, matrix: np.ndarray, axis: int):
    """``matrix`` (out, in) applied along TF axis ``axis`` of ``t``: one (batched) matmul."""
    shape = [-1 if d is None else d for d in t.shape.as_list()]
    before, after = shape[:axis], shape[axis + 1:]
    weights = matrix.astype(t.dtype.as_numpy_dtype)
    if prod(after) == 1:  # the last non-unit axis: a plain matmul with the transposed weights
        y = tf.linalg.matmul(tf.reshape(t, [-1, shape[axis]]), np.ascontiguousarray(weights.T))
    else:
        lead = -1 if -1 in before else prod(before)
        y = tf.linalg.matmul(weights, tf.reshape(t, [lead, shape[axis], prod(after)]))
    return tf.reshape(y, before + [matrix.shape[0]] + after)


@handler("Resize", "Upsample", check=_check_resize)
def resize(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    plans = plan_axes(ctx, tuple(x.onnx_shape))
    for a, p in enumerate(plans):  # floor(size * scale) can be 0: an empty output TFLite cannot hold
        if p.out_size < 1:
            raise ctx.unsupported(f"output size {p.out_size} along axis {a} (size {p.in_size}, scale {p.scale:g})")
    mode = _mode(ctx, ctx.op_type == "Upsample" or ctx.opset < 11)
    resized = [a for a, p in enumerate(plans) if not p.is_identity]
    if not resized:
        return [x]
    weights = {a: axis_weights(plans[a], mode) for a in resized}
    outside = {a: m for a, (_, m) in weights.items() if m.any()}
    y = _tf_kernel(ctx, x, plans, mode, bool(outside))
    if y is not None:
        return [ctx.out_nhwc(y)]
    t, perm = ctx.tensor(x), x.perm
    for a in resized:
        if mode.mode == "nearest":
            t = tf.gather(t, nearest_indices(plans[a], mode).astype(np.int32), axis=layout.tf_axis(perm, a))
        else:
            t = _along_axis(tf, t, weights[a][0], layout.tf_axis(perm, a))
    if outside:
        value = float(ctx.attr("extrapolation_value", 0.0))
        mask = np.zeros([1] * x.rank, bool)
        for a, m in outside.items():
            shape = [1] * x.rank
            shape[a] = m.size
            mask = mask | m.reshape(shape)
        mask = np.transpose(mask, perm)
        t = tf.where(mask, tf.constant(value, t.dtype), t)
    return [ctx.out(t, perm)]
