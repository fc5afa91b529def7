"""The recording backend: stands in for the ``tf`` module onnx_to_tf's handlers call (``ctx.tf``).

Each function records the TFLite builtin operator TensorFlow's converter would make of the TF op
(``tf.add`` -> ADD, ``tf.reshape`` -> RESHAPE, ``tf.nn.conv2d`` -> CONV_2D ...), with the output's
static shape inferred; on constant inputs it computes the result in numpy instead (TFLite
constant folding). Fusions TFLite makes (bias and activations into CONV_2D, HARD_SWISH ...) are
done afterwards on the recorded graph (:mod:`~edgenet.converters.tflite_writer.fuse`). A function
this backend does not implement raises :class:`~edgenet.converters.tflite_writer.tensors.NotNative`
(the conversion fails naming the ONNX node). Elementwise, shape and slicing ops live here; convolutions,
pools, matmuls, reductions and resizes in :mod:`~edgenet.converters.tflite_writer.nn_ops`;
comparisons, selection and the rest in :mod:`~edgenet.converters.tflite_writer.logic_ops`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from edgenet.converters.tflite_writer.logic_ops import LogicOps
from edgenet.converters.tflite_writer.nn_ops import NNOps
from edgenet.converters.tflite_writer.tensors import DType, NotNative, Recorder, RTensor


class TensorSpec:
    def __init__(self, shape, dtype, name=None):
        self.shape, self.dtype, self.name = tuple(shape), dtype, name


class _Namespace:
    """``tf.nn``, ``tf.math``, ``tf.linalg``, ``tf.raw_ops``: the same backend, unknown names refused."""

    def __init__(self, backend: "Backend", prefix: str):
        self._backend, self._prefix = backend, prefix

    def __getattr__(self, name: str):
        fn = getattr(type(self._backend), name, None)
        if fn is None or name.startswith("_"):
            raise NotNative(f"its lowering needs {self._prefix}.{name}, which the TFLite writer does not implement")
        return getattr(self._backend, name)


_UNARY = {"negative": ("NEG", np.negative), "abs": ("ABS", np.abs), "exp": ("EXP", np.exp),
          "sqrt": ("SQRT", np.sqrt), "log": ("LOG", np.log), "rsqrt": ("RSQRT", lambda a: 1 / np.sqrt(a)),
          "sigmoid": ("LOGISTIC", lambda a: 1 / (1 + np.exp(-a))), "tanh": ("TANH", np.tanh),
          "relu": ("RELU", lambda a: np.maximum(a, 0)), "relu6": ("RELU6", lambda a: np.clip(a, 0, 6)),
          "floor": ("FLOOR", np.floor), "ceil": ("CEIL", np.ceil), "sin": ("SIN", np.sin), "cos": ("COS", np.cos),
          "round": ("ROUND", np.round), "sign": ("SIGN", np.sign)}
_BINARY = {"add": ("ADD", "AddOptions", np.add), "subtract": ("SUB", "SubOptions", np.subtract),
           "multiply": ("MUL", "MulOptions", np.multiply), "divide": ("DIV", "DivOptions", np.divide),
           "maximum": ("MAXIMUM", None, np.maximum), "minimum": ("MINIMUM", None, np.minimum)}
_WITH_ACTIVATION = ("AddOptions", "SubOptions", "MulOptions", "DivOptions")


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


class Backend(NNOps, LogicOps):
    """One conversion's stand-in for the ``tf`` module (see the module docstring)."""

    float32, float16, int32, int64, int8, uint8, bool = (DType(d) for d in (
        np.float32, np.float16, np.int32, np.int64, np.int8, np.uint8, np.bool_))
    Tensor = RTensor
    TensorSpec = TensorSpec

    def __init__(self, recorder: Recorder | None = None):
        self.rec = recorder or Recorder()
        self.rec.tf = self
        self.nn, self.math = _Namespace(self, "nn"), _Namespace(self, "math")
        self.linalg, self.raw_ops = _Namespace(self, "linalg"), _Namespace(self, "raw_ops")

    def __getattr__(self, name: str):
        raise NotNative(f"its lowering needs {name}, which the TFLite writer does not implement")

    # ---- plumbing -----------------------------------------------------------------------------
    @staticmethod
    def as_dtype(dtype: Any) -> DType:
        return dtype if isinstance(dtype, DType) else DType(dtype)

    @contextlib.contextmanager
    def name_scope(self, name: str):
        outer = self.rec.scope
        self.rec.scope = self.rec.unique(f"{outer}/{name}" if outer else name)
        try:
            yield self.rec.scope + "/"
        except NotNative as exc:   # the innermost scope: native_tflite names the ONNX node from it
            if exc.scope is None:
                exc.scope = self.rec.scope
            raise
        finally:
            self.rec.scope = outer

    def constant(self, value: Any, dtype: Any = None, **_: Any) -> RTensor:
        if isinstance(value, RTensor):
            if value.const is None:
                raise NotNative("tf.constant of a computed tensor")
            value = value.const
        np_dtype = None if dtype is None else self.as_dtype(dtype).np
        array = np.asarray(value, dtype=np_dtype)
        if np_dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)  # TensorFlow's default float
        return self.rec.const(array)

    def _t(self, value: Any, like: RTensor | None = None) -> RTensor:
        """A tensor of ``value`` (a Python number or array takes ``like``'s dtype, as in TF)."""
        if isinstance(value, RTensor):
            return value
        if isinstance(value, DType):
            raise TypeError("a dtype where a tensor was expected")
        array = np.asarray(value)
        if like is not None and array.dtype.kind in "biuf" and like.dtype_.kind in "iuf":
            array = array.astype(like.dtype_)
        elif array.dtype == np.float64:
            array = array.astype(np.float32)
        return self.rec.const(array)

    def _i32(self, values: Sequence[int]) -> RTensor:
        return self.rec.const(np.asarray(values, np.int32))

    def identity(self, t: Any, name: str | None = None) -> RTensor:
        return self._t(t)

    stop_gradient = identity

    # ---- elementwise --------------------------------------------------------------------------
    def _unary(self, kind: str, t: Any, **_: Any) -> RTensor:
        code, fn = _UNARY[kind]
        t = self._t(t)
        if t.dtype_.kind != "f" and kind not in ("negative", "abs", "sign"):
            raise NotNative(f"{code} of {t.dtype_.name}")
        return self.rec.emit(code, [t], [(t.shape_, t.dtype_)], fold=fn)[0]

    def _binary(self, kind: str, a: Any, b: Any, name: Any = None) -> RTensor:
        code, options, fn = _BINARY[kind]
        like = a if isinstance(a, RTensor) else b if isinstance(b, RTensor) else None
        a, b = self._t(a, like), self._t(b, like)
        if a.dtype_ != b.dtype_:
            raise NotNative(f"{code} of {a.dtype_.name} and {b.dtype_.name}")
        if kind == "divide" and a.dtype_.kind != "f":
            raise NotNative("integer division")
        shape = np.broadcast_shapes(a.shape_, b.shape_)
        opts = (options, {"fusedActivationFunction": 0}) if options in _WITH_ACTIVATION else None
        return self.rec.emit(code, [a, b], [(shape, a.dtype_)], opts, fold=lambda x, y: fn(x, y).astype(a.dtype_))[0]

    def leaky_relu(self, t: Any, alpha: float = 0.2) -> RTensor:
        t = self._t(t)
        return self.rec.emit("LEAKY_RELU", [t], [(t.shape_, t.dtype_)], ("LeakyReluOptions", {"alpha": float(alpha)}),
                             fold=lambda a: np.where(a > 0, a, a * alpha))[0]

    def elu(self, t: Any) -> RTensor:
        t = self._t(t)
        return self.rec.emit("ELU", [t], [(t.shape_, t.dtype_)], fold=lambda a: np.where(a > 0, a, np.expm1(a)))[0]

    def cast(self, t: Any, dtype: Any) -> RTensor:
        t, target = self._t(t), self.as_dtype(dtype).np
        if t.dtype_ == target:
            return t
        return self.rec.emit("CAST", [t], [(t.shape_, target)], fold=lambda a: a.astype(target))[0]

    # ---- shapes -------------------------------------------------------------------------------
    def reshape(self, t: Any, shape: Any) -> RTensor:
        t = self._t(t)
        dims = _ints(shape.const if isinstance(shape, RTensor) else shape)
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = int(np.prod(t.shape_)) // known if known else 0
        if int(np.prod(dims)) != int(np.prod(t.shape_)):
            raise ValueError(f"cannot reshape {t.shape_} to {tuple(dims)}")
        if tuple(dims) == t.shape_:
            return t
        return self.rec.emit("RESHAPE", [t, self._i32(dims)], [(dims, t.dtype_)], ("ReshapeOptions", {"newShape": dims}),
                             fold=lambda a, _: a.reshape(dims))[0]

    def expand_dims(self, t: Any, axis: int) -> RTensor:
        t = self._t(t)
        axis = int(axis) % (t.ndim + 1)
        return self.reshape(t, list(t.shape_[:axis]) + [1] + list(t.shape_[axis:]))

    def squeeze(self, t: Any, axis: Any = None) -> RTensor:
        t = self._t(t)
        axes = [i for i, d in enumerate(t.shape_) if d == 1] if axis is None else [
            int(a) % t.ndim for a in np.atleast_1d(axis)]
        return self.reshape(t, [d for i, d in enumerate(t.shape_) if i not in axes])

    def transpose(self, t: Any, perm: Any = None) -> RTensor:
        t = self._t(t)
        perm = list(reversed(range(t.ndim))) if perm is None else _ints(perm)
        if perm == list(range(t.ndim)):
            return t
        shape = [t.shape_[p] for p in perm]
        return self.rec.emit("TRANSPOSE", [t, self._i32(perm)], [(shape, t.dtype_)],
                             fold=lambda a, _: np.transpose(a, perm))[0]

    def pad(self, t: Any, paddings: Any, mode: str = "CONSTANT", constant_values: Any = 0) -> RTensor:
        t = self._t(t)
        pads = np.asarray(paddings, np.int64).reshape(t.ndim, 2)
        if not pads.any():
            return t
        if mode.upper() in ("REFLECT", "SYMMETRIC"):
            shape = [d + int(b) + int(e) for d, (b, e) in zip(t.shape_, pads)]
            options = ("MirrorPadOptions", {"mode": 0 if mode.upper() == "REFLECT" else 1})
            return self.rec.emit("MIRROR_PAD", [t, self._i32(pads)], [(shape, t.dtype_)], options,
                                 fold=lambda a, _: np.pad(a, pads, mode=mode.lower()))[0]
        if mode.upper() != "CONSTANT":
            raise NotNative(f"{mode} padding")
        value = self._t(constant_values, t)
        shape = [d + int(b) + int(e) for d, (b, e) in zip(t.shape_, pads)]
        fold = lambda a, *_: np.pad(a, pads, constant_values=value.const)  # noqa: E731
        if value.const is not None and not np.any(value.const):
            return self.rec.emit("PAD", [t, self._i32(pads)], [(shape, t.dtype_)], fold=fold)[0]
        return self.rec.emit("PADV2", [t, self._i32(pads), self.reshape(value, [])], [(shape, t.dtype_)], fold=fold)[0]

    def concat(self, values: Sequence[Any], axis: int) -> RTensor:
        tensors = [self._t(v) for v in values]
        rank = tensors[0].ndim
        axis = int(axis) % rank
        if len(tensors) > 1 and any(t.shape_[axis] for t in tensors):   # empty pieces add nothing
            tensors = [t for t in tensors if t.shape_[axis]]
        if len(tensors) == 1:
            return tensors[0]
        axis = int(axis) % rank
        shape = list(tensors[0].shape_)
        shape[axis] = sum(t.shape_[axis] for t in tensors)
        return self.rec.emit("CONCATENATION", tensors, [(shape, tensors[0].dtype_)],
                             ("ConcatenationOptions", {"axis": axis, "fusedActivationFunction": 0}),
                             fold=lambda *a: np.concatenate(a, axis=axis))[0]

    def split(self, t: Any, num_or_size_splits: Any, axis: int = 0) -> list[RTensor]:
        t = self._t(t)
        axis = int(axis) % t.ndim
        if isinstance(num_or_size_splits, (int, np.integer)):
            n = int(num_or_size_splits)
            if t.shape_[axis] % n:
                raise ValueError(f"{t.shape_[axis]} does not split in {n}")
            sizes = [t.shape_[axis] // n] * n
            inputs, code, options = [self._i32(axis), t], "SPLIT", ("SplitOptions", {"numSplits": n})
        else:
            sizes = _ints(num_or_size_splits)
            inputs = [t, self._i32(sizes), self._i32(axis)]
            code, options = "SPLIT_V", ("SplitVOptions", {"numSplits": len(sizes)})
        outs = []
        for size in sizes:
            shape = list(t.shape_)
            shape[axis] = size
            outs.append((shape, t.dtype_))
        cuts = np.cumsum(sizes)[:-1]
        fold = (lambda _, a: np.split(a, cuts, axis=axis)) if code == "SPLIT" else (
            lambda a, *_: np.split(a, cuts, axis=axis))
        return self.rec.emit(code, inputs, outs, options, fold=fold)

    def strided_slice(self, t: Any, begin: Any, end: Any, strides: Any = None, begin_mask: int = 0,
                      end_mask: int = 0, shrink_axis_mask: int = 0) -> RTensor:
        t = self._t(t)
        begin, end = _ints(begin), _ints(end)
        strides = [1] * len(begin) if strides is None else _ints(strides)
        index, shape = [], []
        for i, d in enumerate(t.shape_):
            if i >= len(begin):
                index.append(slice(None))
                shape.append(d)
                continue
            b = None if begin_mask >> i & 1 else begin[i]
            e = None if end_mask >> i & 1 else end[i]
            if shrink_axis_mask >> i & 1:
                index.append(begin[i])
                continue
            s = slice(b, e, strides[i])
            index.append(s)
            shape.append(len(range(*s.indices(d))))
        if all(isinstance(s, slice) and s.indices(d) == (0, d, 1) for s, d in zip(index, t.shape_)) \
                and len(index) == t.ndim:
            return t
        n = len(begin)
        options = ("StridedSliceOptions", {"beginMask": begin_mask, "endMask": end_mask,
                                           "shrinkAxisMask": shrink_axis_mask})
        return self.rec.emit("STRIDED_SLICE", [t, self._i32(begin), self._i32(end), self._i32(strides)],
                             [(shape, t.dtype_)], options, fold=lambda a, *_: a[tuple(index[:n])])[0]

    def getitem(self, t: RTensor, index: Any) -> RTensor:
        """``t[...]`` with slices, integers and None (numpy basic indexing, no Ellipsis)."""
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            raise NotNative("Ellipsis indexing")
        plain = [i for i in index if i is not None]
        begin, end, strides = [], [], []
        begin_mask = end_mask = shrink = 0
        for k, item in enumerate(plain):
            if isinstance(item, slice):
                begin.append(0 if item.start is None else item.start)
                end.append(0 if item.stop is None else item.stop)
                strides.append(1 if item.step is None else item.step)
                begin_mask |= (item.start is None) << k
                end_mask |= (item.stop is None) << k
            else:
                begin.append(int(item))
                end.append(int(item) + 1)
                strides.append(1)
                shrink |= 1 << k
        y = self.strided_slice(t, begin, end, strides, begin_mask, end_mask, shrink) if plain else t
        if len(plain) == len(index):
            return y
        # None inserts a unit dim where it stands among the kept (sliced) dims
        shape, dims = [], iter(y.shape_)
        for item in index:
            if item is None:
                shape.append(1)
            elif isinstance(item, slice):
                shape.append(next(dims))
        shape.extend(dims)
        return self.reshape(y, shape)

    def slice(self, t: Any, begin: Any, size: Any) -> RTensor:
        t = self._t(t)
        begin, size = _ints(begin), _ints(size)
        size = [d - b if s == -1 else s for d, b, s in zip(t.shape_, begin, size)]
        return self.rec.emit("SLICE", [t, self._i32(begin), self._i32(size)], [(size, t.dtype_)],
                             fold=lambda a, *_: a[tuple(slice(b, b + s) for b, s in zip(begin, size))])[0]

    def gather(self, t: Any, indices: Any, axis: int = 0) -> RTensor:
        t = self._t(t)
        idx = self._t(indices)
        if idx.const is None:
            raise NotNative("GATHER with computed indices")
        axis = int(axis) % t.ndim
        idx = self.rec.const(idx.const.astype(np.int32))
        shape = list(t.shape_[:axis]) + list(idx.shape_) + list(t.shape_[axis + 1:])
        return self.rec.emit("GATHER", [t, idx], [(shape, t.dtype_)], ("GatherOptions", {"axis": axis}),
                             fold=lambda a, i: np.take(a, i, axis=axis))[0]

    def tile(self, t: Any, multiples: Any) -> RTensor:
        t, reps = self._t(t), _ints(multiples)
        shape = [d * r for d, r in zip(t.shape_, reps)]
        return self.rec.emit("TILE", [t, self._i32(reps)], [(shape, t.dtype_)], fold=lambda a, _: np.tile(a, reps))[0]

    def broadcast_to(self, t: Any, shape: Any) -> RTensor:
        t, dims = self._t(t), _ints(shape)
        return self.rec.emit("BROADCAST_TO", [t, self._i32(dims)], [(dims, t.dtype_)],
                             fold=lambda a, _: np.broadcast_to(a, dims).copy())[0]


def _unary_method(kind: str):
    return lambda self, t, name=None, **kw: self._unary(kind, t)


def _binary_method(kind: str):
    return lambda self, a, b, name=None: self._binary(kind, a, b)


for _kind in _UNARY:
    setattr(Backend, _kind, _unary_method(_kind))
for _kind in _BINARY:
    setattr(Backend, _kind, _binary_method(_kind))
