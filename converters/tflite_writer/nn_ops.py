"""Recording backend, neural-network family: convolutions, pools, matmuls, reductions, softmax,
resizes and block rearrangements, as the TFLite builtins TensorFlow's converter makes of them.

TFLite's layouts (schema.fbs): CONV_2D filter (O, kh, kw, I); DEPTHWISE_CONV_2D filter
(1, kh, kw, C*M), output channel c*M + m; FULLY_CONNECTED weights (N, K). Padding SAME / VALID
follow TensorFlow's rule (SAME: output ceil(n / stride), the extra padding at the end). CONV_2D and
DEPTHWISE_CONV_2D always get a bias (zeros when the model has none), as the TF-made models do.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgenet.converters.tflite_writer.tensors import NotNative, RTensor

PADDING = {"SAME": 0, "VALID": 1}


def _pair(values: Any) -> tuple[int, int]:
    """(H, W) of a TF window argument: one int, (h, w), or NHWC-style (1, h, w, 1)."""
    v = [int(x) for x in np.atleast_1d(values)]
    if len(v) == 1:
        return v[0], v[0]
    if len(v) == 4:
        return v[1], v[2]
    return v[0], v[1]


def _window_out(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "SAME":
        return -(-size // stride)
    return (size - (kernel - 1) * dilation - 1) // stride + 1


class NNOps:
    """Mixed into :class:`~edgenet.converters.tflite_writer.backend.Backend`."""

    rec: Any

    def _nhwc_out(self, x: RTensor, kernel, strides, dilations, padding: str, channels: int) -> list[int]:
        if padding not in PADDING:
            raise NotNative(f"padding {padding!r}")
        n, h, w, _ = x.shape_
        return [n, _window_out(h, kernel[0], strides[0], dilations[0], padding),
                _window_out(w, kernel[1], strides[1], dilations[1], padding), channels]

    def conv2d(self, x: Any, filters: Any, strides: Any, padding: str, dilations: Any = None, **_: Any) -> RTensor:
        x = self._t(x)
        kernel = np.asarray(filters.const if isinstance(filters, RTensor) else filters)  # (kh, kw, in, out)
        if x.const is not None or x.ndim != 4:
            raise NotNative("CONV_2D of a constant or non-4-D input")
        kh, kw, _, out = kernel.shape
        s, d = _pair(strides), _pair(1 if dilations is None else dilations)
        shape = self._nhwc_out(x, (kh, kw), s, d, padding, out)
        weights = self.rec.const(np.ascontiguousarray(kernel.transpose(3, 0, 1, 2)))
        bias = self.rec.const(np.zeros(out, x.dtype_))
        options = ("Conv2DOptions", {"padding": PADDING[padding], "strideH": s[0], "strideW": s[1],
                                     "dilationHFactor": d[0], "dilationWFactor": d[1], "fusedActivationFunction": 0})
        return self.rec.emit("CONV_2D", [x, weights, bias], [(shape, x.dtype_)], options)[0]

    def depthwise_conv2d(self, x: Any, filters: Any, strides: Any, padding: str, dilations: Any = None,
                         **_: Any) -> RTensor:
        x = self._t(x)
        kernel = np.asarray(filters.const if isinstance(filters, RTensor) else filters)  # (kh, kw, C, M)
        if x.const is not None or x.ndim != 4:
            raise NotNative("DEPTHWISE_CONV_2D of a constant or non-4-D input")
        kh, kw, channels, multiplier = kernel.shape
        s, d = _pair(strides), _pair(1 if dilations is None else dilations)
        if max(d) > 1 and max(s) > 1:
            raise NotNative("a dilated depthwise conv with a stride")
        shape = self._nhwc_out(x, (kh, kw), s, d, padding, channels * multiplier)
        weights = self.rec.const(np.ascontiguousarray(kernel.reshape(1, kh, kw, channels * multiplier)))
        bias = self.rec.const(np.zeros(channels * multiplier, x.dtype_))
        options = ("DepthwiseConv2DOptions", {"padding": PADDING[padding], "strideH": s[0], "strideW": s[1],
                                              "depthMultiplier": multiplier, "dilationHFactor": d[0],
                                              "dilationWFactor": d[1], "fusedActivationFunction": 0})
        return self.rec.emit("DEPTHWISE_CONV_2D", [x, weights, bias], [(shape, x.dtype_)], options)[0]

    def conv2d_transpose(self, x: Any, filters: Any, output_shape: Sequence[int], strides: Any, padding: str = "SAME",
                         **_: Any) -> RTensor:
        """TRANSPOSE_CONV: filter (O, kh, kw, I) from TF's (kh, kw, O, I); the output shape as given."""
        x = self._t(x)
        kernel = np.asarray(filters.const if isinstance(filters, RTensor) else filters)
        if x.const is not None or x.ndim != 4 or padding not in PADDING:
            raise NotNative("TRANSPOSE_CONV of a constant or non-4-D input")
        s, shape = _pair(strides), [int(d) for d in output_shape]
        weights = self.rec.const(np.ascontiguousarray(kernel.transpose(2, 0, 1, 3)))
        bias = self.rec.const(np.zeros(shape[3], x.dtype_))
        options = ("TransposeConvOptions", {"padding": PADDING[padding], "strideH": s[0], "strideW": s[1],
                                            "fusedActivationFunction": 0})
        return self.rec.emit("TRANSPOSE_CONV", [self._i32(shape), weights, x, bias], [(shape, x.dtype_)], options)[0]

    def bias_add(self, y: Any, bias: Any) -> RTensor:
        return self.add(y, self._t(bias, y))

    def _pool(self, code: str, x: Any, ksize: Any, strides: Any, padding: str) -> RTensor:
        x = self._t(x)
        if x.ndim != 4:
            raise NotNative(f"{code} of a rank-{x.ndim} input")
        k, s = _pair(ksize), _pair(strides)
        shape = self._nhwc_out(x, k, s, (1, 1), padding, x.shape_[3])
        options = ("Pool2DOptions", {"padding": PADDING[padding], "strideH": s[0], "strideW": s[1],
                                     "filterHeight": k[0], "filterWidth": k[1], "fusedActivationFunction": 0})
        return self.rec.emit(code, [x], [(shape, x.dtype_)], options)[0]

    def max_pool2d(self, x: Any, ksize: Any, strides: Any, padding: str, **_: Any) -> RTensor:
        return self._pool("MAX_POOL_2D", x, ksize, strides, padding)

    def avg_pool2d(self, x: Any, ksize: Any, strides: Any, padding: str, **_: Any) -> RTensor:
        return self._pool("AVERAGE_POOL_2D", x, ksize, strides, padding)

    # ---- matmul -------------------------------------------------------------------------------
    def matmul(self, a: Any, b: Any, transpose_a: bool = False, transpose_b: bool = False, **_: Any) -> RTensor:
        a, b = self._t(a), self._t(b)
        if a.dtype_.kind != "f":
            raise NotNative("integer matmul")
        if b.const is not None and b.ndim == 2 and a.const is None and not transpose_a and a.ndim >= 2:
            weights = b.const if transpose_b else b.const.T  # (N, K)
            shape = list(a.shape_[:-1]) + [weights.shape[0]]
            if a.shape_[-1] != weights.shape[1]:
                raise ValueError(f"matmul of {a.shape_} and {b.shape_}")
            options = ("FullyConnectedOptions", {"fusedActivationFunction": 0, "keepNumDims": a.ndim > 2})
            w = self.rec.const(np.ascontiguousarray(weights).astype(a.dtype_))
            return self.rec.emit("FULLY_CONNECTED", [a, w, None], [(shape, a.dtype_)], options)[0]
        sa, sb = list(a.shape_), list(b.shape_)
        if transpose_a:
            sa[-2], sa[-1] = sa[-1], sa[-2]
        if transpose_b:
            sb[-2], sb[-1] = sb[-1], sb[-2]
        shape = list(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))) + [sa[-2], sb[-1]]

        def fold(x, y):
            return np.matmul(np.swapaxes(x, -1, -2) if transpose_a else x, np.swapaxes(y, -1, -2) if transpose_b else y)

        return self.rec.emit("BATCH_MATMUL", [a, b], [(shape, a.dtype_)],
                             ("BatchMatMulOptions", {"adjX": bool(transpose_a), "adjY": bool(transpose_b)}), fold=fold)[0]

    # ---- reductions ---------------------------------------------------------------------------
    def _reduce(self, code: str, fn, t: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> RTensor:
        t = self._t(t)
        axes = list(range(t.ndim)) if axis is None else sorted({int(a) % t.ndim for a in np.atleast_1d(axis)})
        shape = [1 if i in axes else d for i, d in enumerate(t.shape_) if keepdims or i not in axes]
        if all(t.shape_[a] == 1 for a in axes):   # over unit dims: the values themselves (no op, as in TF's model)
            return self.reshape(t, shape)
        return self.rec.emit(code, [t, self._i32(axes)], [(shape, t.dtype_)], ("ReducerOptions", {"keepDims": bool(keepdims)}),
                             fold=lambda a, _: fn(a, axis=tuple(axes), keepdims=keepdims))[0]

    def reduce_mean(self, t, axis=None, keepdims=False, **kw):
        return self._reduce("MEAN", np.mean, t, axis, keepdims)

    def reduce_max(self, t, axis=None, keepdims=False, **kw):
        return self._reduce("REDUCE_MAX", np.max, t, axis, keepdims)

    def reduce_min(self, t, axis=None, keepdims=False, **kw):
        return self._reduce("REDUCE_MIN", np.min, t, axis, keepdims)

    def reduce_sum(self, t, axis=None, keepdims=False, **kw):
        return self._reduce("SUM", np.sum, t, axis, keepdims)

    def reduce_prod(self, t, axis=None, keepdims=False, **kw):
        return self._reduce("REDUCE_PROD", np.prod, t, axis, keepdims)

    def softmax(self, t: Any, axis: int = -1, **_: Any) -> RTensor:
        t = self._t(t)
        if int(axis) % t.ndim != t.ndim - 1:
            raise NotNative("softmax over another axis than the last")
        return self.rec.emit("SOFTMAX", [t], [(t.shape_, t.dtype_)], ("SoftmaxOptions", {"beta": 1.0}))[0]

    def local_response_normalization(self, t: Any, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0,
                                     beta: float = 0.5, **_: Any) -> RTensor:
        """LOCAL_RESPONSE_NORMALIZATION over the last axis: t / (bias + alpha * sum of t^2 over
        [c - depth_radius, c + depth_radius]) ** beta (TFLite's and TensorFlow's definition)."""
        t = self._t(t)
        return self.rec.emit("LOCAL_RESPONSE_NORMALIZATION", [t], [(t.shape_, t.dtype_)],
                             ("LocalResponseNormalizationOptions", {"radius": int(depth_radius), "bias": float(bias),
                                                                    "alpha": float(alpha), "beta": float(beta)}))[0]

    def log_softmax(self, t: Any, axis: int = -1, **_: Any) -> RTensor:
        t = self._t(t)
        if int(axis) % t.ndim != t.ndim - 1:
            raise NotNative("log_softmax over another axis than the last")
        return self.rec.emit("LOG_SOFTMAX", [t], [(t.shape_, t.dtype_)])[0]

    # ---- resize, blocks -----------------------------------------------------------------------
    def _resize(self, code: str, options: str, images: Any, size: Sequence[int], align_corners: bool,
                half_pixel_centers: bool) -> RTensor:
        x = self._t(images)
        h, w = [int(v) for v in np.asarray(size.const if isinstance(size, RTensor) else size).reshape(-1)]
        n, _, _, c = x.shape_
        return self.rec.emit(code, [x, self._i32([h, w])], [([n, h, w, c], x.dtype_)],
                             (options, {"alignCorners": bool(align_corners), "halfPixelCenters": bool(half_pixel_centers)}))[0]

    def ResizeNearestNeighbor(self, images, size, align_corners=False, half_pixel_centers=False, **_):  # noqa: N802
        return self._resize("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions", images, size, align_corners,
                            half_pixel_centers)

    def ResizeBilinear(self, images, size, align_corners=False, half_pixel_centers=False, **_):  # noqa: N802
        return self._resize("RESIZE_BILINEAR", "ResizeBilinearOptions", images, size, align_corners, half_pixel_centers)

    def depth_to_space(self, x: Any, block_size: int, **_: Any) -> RTensor:
        x, b = self._t(x), int(block_size)
        n, h, w, c = x.shape_
        return self.rec.emit("DEPTH_TO_SPACE", [x], [([n, h * b, w * b, c // (b * b)], x.dtype_)],
                             ("DepthToSpaceOptions", {"blockSize": b}))[0]

    def space_to_depth(self, x: Any, block_size: int, **_: Any) -> RTensor:
        x, b = self._t(x), int(block_size)
        n, h, w, c = x.shape_
        return self.rec.emit("SPACE_TO_DEPTH", [x], [([n, h // b, w // b, c * b * b], x.dtype_)],
                             ("SpaceToDepthOptions", {"blockSize": b}))[0]
