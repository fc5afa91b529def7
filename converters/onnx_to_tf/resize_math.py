"""Resize arithmetic in numpy (no TensorFlow): ONNX's per-axis sampling as a weight matrix.

Resize is separable: along each axis, output position ``o`` is a weighted sum of input positions.
:func:`axis_weights` gives that (out, in) matrix for every mode of the ONNX spec (Resize 10..19,
Upsample 7/9): nearest (every nearest_mode), linear and cubic (cubic_coeff_a, exclude_outside,
antialias), every coordinate_transformation_mode including tf_crop_and_resize (whose positions
outside the input are reported separately, they take extrapolation_value). It follows the spec's
formulas as its reference implementation evaluates them (float64 arithmetic on the float32 scales).

Opset-10 Resize and Upsample predate coordinate_transformation_mode and nearest_mode: they sample
``x_out / scale`` (asymmetric); their nearest pixel is rounded down when upsampling and up when
downsampling along the axis (scale < 1), which is what onnxruntime does and ONNX's own opset-10
tests expect (downsampling [1 2 3 4] by 0.6 gives [1 3]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisResize:
    """How one axis is resized."""

    in_size: int
    out_size: int
    scale: float  # as the spec uses it (given, or out / in for sizes, or the kept aspect ratio's)
    roi: tuple[float, float] = (0.0, 1.0)  # tf_crop_and_resize only

    @property
    def is_identity(self) -> bool:
        return math.isclose(self.scale, 1.0) and self.out_size == self.in_size and self.roi == (0.0, 1.0)


@dataclass(frozen=True)
class ResizeMode:
    mode: str  # nearest | linear | cubic
    coordinate_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"  # or "legacy" (opset-10 Resize, Upsample)
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False


def source_coords(axis: AxisResize, coordinate_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Input coordinate sampled by each output position, and which positions lie outside the input
    (tf_crop_and_resize only; False elsewhere)."""
    n, out, scale = axis.in_size, axis.out_size, axis.scale
    y = np.arange(out, dtype=np.float64)
    length = scale * n  # the output length as a real number
    outside = np.zeros(out, bool)
    if coordinate_mode == "align_corners":
        x = np.zeros(out) if length == 1 else y * (n - 1) / (length - 1)
    elif coordinate_mode == "asymmetric":
        x = y / scale
    elif coordinate_mode == "tf_crop_and_resize":
        start, end = axis.roi
        if length == 1:
            x = np.full(out, (end - start) * (n - 1) / 2)
        else:
            x = y * (end - start) * (n - 1) / (length - 1)
        x = x + start * (n - 1)
        outside = (x < 0) | (x > n - 1)
    elif coordinate_mode == "pytorch_half_pixel":
        x = np.full(out, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel_symmetric":
        adjustment = out / length
        x = n / 2 * (1 - adjustment) + (y + 0.5) / scale - 0.5
    elif coordinate_mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    else:
        raise ValueError(f"coordinate_transformation_mode {coordinate_mode!r}")
    return x, outside


def nearest_indices(axis: AxisResize, mode: ResizeMode) -> np.ndarray:
    """The input index each output position copies (nearest mode)."""
    if mode.nearest_mode == "legacy":
        x = np.arange(axis.out_size, dtype=np.float64) / axis.scale
        index = np.ceil(x) if axis.scale < 1 else np.floor(x)
        return np.clip(index, 0, axis.in_size - 1).astype(np.int64)
    x, _ = source_coords(axis, mode.coordinate_mode)
    # a coordinate that is exactly a whole or half pixel in exact arithmetic (e.g. 3 for
    # half_pixel_symmetric, 7 -> 5.25 pixels) can come out 1 ulp off in floating point, and floor/ceil/
    # round would then pick the neighbour; the spec's rounding applies to the exact value
    halves = np.round(x * 2) / 2
    x = np.where(np.abs(x - halves) < 1e-12 * np.maximum(1.0, np.abs(x)), halves, x)
    low = np.floor(x)
    frac = x - low
    if mode.nearest_mode == "round_prefer_floor":
        index = np.where(frac <= 0.5, low, low + 1)
    elif mode.nearest_mode == "round_prefer_ceil":
        index = np.where(frac < 0.5, low, low + 1)
    elif mode.nearest_mode == "floor":
        index = low
    elif mode.nearest_mode == "ceil":
        index = np.ceil(x)
    else:
        raise ValueError(f"nearest_mode {mode.nearest_mode!r}")
    return np.clip(index, 0, axis.in_size - 1).astype(np.int64)


def _coefficients(mode: ResizeMode, ratio: np.ndarray, scale: float) -> np.ndarray:
    """(out, taps) interpolation coefficients for ``ratio`` in (0, 1] (the distance of the sampled
    coordinate from the tap left of it; 1 when it falls on a pixel)."""
    r = ratio[:, None]
    if mode.mode == "linear" and not (mode.antialias and scale < 1):
        return np.concatenate([1 - r, r], axis=1)
    if mode.mode == "cubic" and not (mode.antialias and scale < 1):
        a = mode.cubic_a
        near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731  |d| <= 1
        far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731  1 < |d| < 2
        return np.concatenate([far(r + 1), near(r), near(1 - r), far(2 - r)], axis=1)
    # antialias (downsampling): the kernel stretched by 1 / scale, normalized
    support = 1.0 if mode.mode == "linear" else 2.0
    start = int(np.floor(-support / scale) + 1)
    taps = np.arange(start, 2 - start)
    d = np.abs((taps[None, :] - r) * scale)
    if mode.mode == "linear":
        weights = np.clip(1 - d, 0, 1)
    else:
        a = mode.cubic_a
        weights = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                           np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    return weights / weights.sum(axis=1, keepdims=True)


def axis_weights(axis: AxisResize, mode: ResizeMode) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float64 weights of one axis and the (out,) positions outside the input
    (tf_crop_and_resize: those rows are zero and take extrapolation_value)."""
    if mode.mode == "nearest":
        matrix = np.zeros((axis.out_size, axis.in_size))
        matrix[np.arange(axis.out_size), nearest_indices(axis, mode)] = 1.0
        _, outside = source_coords(axis, mode.coordinate_mode) if mode.nearest_mode != "legacy" else (
            None, np.zeros(axis.out_size, bool))
        matrix[outside] = 0.0
        return matrix, outside
    x, outside = source_coords(axis, mode.coordinate_mode)
    low = np.floor(x)
    ratio = np.where(x == low, 1.0, x - low)
    coeffs = _coefficients(mode, ratio, axis.scale)
    taps = coeffs.shape[1]
    # taps around x: the coefficient of ratio r belongs to position `left` (x - r), the others follow
    left = (x - ratio).round().astype(np.int64)
    index = left[:, None] + (1 - taps // 2) + np.arange(taps)[None, :]
    if mode.exclude_outside:
        coeffs = np.where((index < 0) | (index >= axis.in_size), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    matrix = np.zeros((axis.out_size, axis.in_size))
    rows = np.repeat(np.arange(axis.out_size), taps)
    np.add.at(matrix, (rows, np.clip(index, 0, axis.in_size - 1).ravel()), coeffs.ravel())
    matrix[outside] = 0.0
    return matrix, outside


def tf_nearest_indices(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray | None:
    """What TFLite's RESIZE_NEAREST_NEIGHBOR reads for each output position (its float32 formula:
    floor((x + offset) * scale), or round(x * scale) with align_corners), or None when a position is
    computed inexactly in float32 within 1e-4 of a rounding boundary (kernels might then disagree)."""
    x = np.arange(out_size)
    ratio = (in_size - 1) / (out_size - 1) if align_corners and out_size > 1 else in_size / out_size
    offset = 0.5 if half_pixel else 0.0
    exact = (x + offset) * ratio
    single = (x.astype(np.float32) + np.float32(offset)) * np.float32(ratio)
    boundary = exact + 0.5 if align_corners else exact
    if np.any(np.abs(boundary - np.round(boundary)) < 1e-4) and not np.array_equal(single.astype(np.float64), exact):
        return None
    index = np.floor(boundary)
    return np.clip(index, 0, in_size - 1).astype(np.int64)


def tf_bilinear_weights(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """(out, in) weights of TFLite's RESIZE_BILINEAR along one axis."""
    x = np.arange(out_size, dtype=np.float64)
    scale = (in_size - 1) / (out_size - 1) if align_corners and out_size > 1 else in_size / out_size
    pos = (x + 0.5) * scale - 0.5 if half_pixel else x * scale
    low = np.floor(pos)
    lo = np.clip(low, 0, in_size - 1).astype(np.int64)
    hi = np.clip(np.ceil(pos), 0, in_size - 1).astype(np.int64)
    frac = pos - low
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), lo), 1 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    return matrix
