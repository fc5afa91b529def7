"""Recording backend, comparison / selection family and the remaining math: comparisons, logic,
``where`` (SELECT_V2), arg-max/min, FLOOR_DIV / FLOOR_MOD, CUMSUM, ``moments`` (MEAN, SQUARED_DIFFERENCE, MEAN, as TensorFlow's
converter lowers ``tf.nn.moments``), GELU, POW, REVERSE_V2, GATHER_ND, SCATTER_ND and the
``ones_like`` / ``zeros`` constants. Same conventions as :mod:`~edgenet.converters.tflite_writer.backend`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgenet.converters.tflite_writer.tensors import NotNative, RTensor

_COMPARE = {"greater": ("GREATER", np.greater), "less": ("LESS", np.less), "equal": ("EQUAL", np.equal),
            "not_equal": ("NOT_EQUAL", np.not_equal), "greater_equal": ("GREATER_EQUAL", np.greater_equal),
            "less_equal": ("LESS_EQUAL", np.less_equal)}
_LOGIC = {"logical_and": ("LOGICAL_AND", np.logical_and), "logical_or": ("LOGICAL_OR", np.logical_or)}


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


class LogicOps:
    """Mixed into :class:`~edgenet.converters.tflite_writer.backend.Backend`."""

    rec: Any

    def _compare(self, kind: str, a: Any, b: Any) -> RTensor:
        code, fn = {**_COMPARE, **_LOGIC}[kind]
        like = a if isinstance(a, RTensor) else b if isinstance(b, RTensor) else None
        a, b = self._t(a, like), self._t(b, like)
        if a.dtype_ != b.dtype_:
            raise NotNative(f"{code} of {a.dtype_.name} and {b.dtype_.name}")
        shape = np.broadcast_shapes(a.shape_, b.shape_)
        return self.rec.emit(code, [a, b], [(shape, np.bool_)], fold=fn)[0]

    def logical_not(self, t: Any, name: Any = None) -> RTensor:
        t = self._t(t)
        return self.rec.emit("LOGICAL_NOT", [t], [(t.shape_, np.bool_)], fold=np.logical_not)[0]

    def where(self, cond: Any, x: Any = None, y: Any = None, name: Any = None) -> RTensor:
        if x is None or y is None:
            raise NotNative("tf.where with one argument")
        cond = self._t(cond)
        like = x if isinstance(x, RTensor) else y if isinstance(y, RTensor) else None
        x, y = self._t(x, like), self._t(y, like)
        if cond.dtype_ != np.bool_ or x.dtype_ != y.dtype_:
            raise NotNative("SELECT_V2 of mixed types")
        shape = np.broadcast_shapes(cond.shape_, x.shape_, y.shape_)
        return self.rec.emit("SELECT_V2", [cond, x, y], [(shape, x.dtype_)], fold=np.where)[0]

    def _arg(self, code: str, fn, t: Any, axis: int, output_type: Any = None, **_: Any) -> RTensor:
        t = self._t(t)
        axis = int(axis) % t.ndim
        out = np.int64 if output_type is None else self.as_dtype(output_type).np
        shape = [d for i, d in enumerate(t.shape_) if i != axis]
        options = ("ArgMaxOptions" if code == "ARG_MAX" else "ArgMinOptions",
                   {"outputType": 4 if out == np.int64 else 2})   # TensorType INT64 / INT32
        return self.rec.emit(code, [t, self._i32([axis])], [(shape, out)], options,
                             fold=lambda a, _: fn(a, axis=axis).astype(out))[0]

    def top_k(self, t: Any, k: int, sorted: bool = True, **_: Any) -> tuple[RTensor, RTensor]:  # noqa: A002
        """TOPK_V2 over the last axis: the ``k`` largest values, largest first (equal values: the lower
        index first, as ONNX's TopK), and their int32 indices."""
        t = self._t(t)
        k = int(k)
        shape = [*t.shape_[:-1], k]

        def fold(a, _):
            order = np.argsort(-a, axis=-1, kind="stable")[..., :k]
            return np.take_along_axis(a, order, axis=-1), order.astype(np.int32)

        values, indices = self.rec.emit("TOPK_V2", [t, self._i32([k])], [(shape, t.dtype_), (shape, np.int32)],
                                        ("TopKV2Options", {}), fold=fold)
        return values, indices

    def _floor(self, code: str, fn, a: Any, b: Any) -> RTensor:
        like = a if isinstance(a, RTensor) else b if isinstance(b, RTensor) else None
        a, b = self._t(a, like), self._t(b, like)
        if a.dtype_ != b.dtype_ or a.dtype_ not in (np.int32, np.float32):
            raise NotNative(f"{code} of {a.dtype_.name} and {b.dtype_.name} (int32 or float32 only)")
        shape = np.broadcast_shapes(a.shape_, b.shape_)
        options = ("FloorDivOptions" if code == "FLOOR_DIV" else "FloorModOptions", {})
        return self.rec.emit(code, [a, b], [(shape, a.dtype_)], options, fold=lambda x, y: fn(x, y).astype(a.dtype_))[0]

    def floordiv(self, a: Any, b: Any, name: Any = None) -> RTensor:
        """FLOOR_DIV: ``a // b`` rounded toward minus infinity (int32 or float32: LiteRT's kernel has
        no int64, TFLite Micro's int32 and float32)."""
        return self._floor("FLOOR_DIV", np.floor_divide, a, b)

    def floormod(self, a: Any, b: Any, name: Any = None) -> RTensor:
        """FLOOR_MOD: ``a - b * floor(a / b)``, the sign of ``b`` (Python's ``%``; int32 or float32)."""
        return self._floor("FLOOR_MOD", np.mod, a, b)

    def cumsum(self, t: Any, axis: int = 0, exclusive: bool = False, reverse: bool = False, **_: Any) -> RTensor:
        """CUMSUM along ``axis`` (float32, int32 or int64 in LiteRT), exclusive (each element the sum
        of those before it) and / or from the end."""
        t = self._t(t)
        axis = int(axis) % t.ndim

        def fold(a, _):
            x = np.flip(a, axis) if reverse else a
            y = np.cumsum(x, axis=axis, dtype=a.dtype)
            if exclusive:
                y = y - x
            return np.flip(y, axis) if reverse else y

        return self.rec.emit("CUMSUM", [t, self._i32([axis])], [(t.shape_, t.dtype_)],
                             ("CumsumOptions", {"exclusive": bool(exclusive), "reverse": bool(reverse)}),
                             fold=fold)[0]

    def argmax(self, t: Any, axis: int = 0, output_type: Any = None, **kw: Any) -> RTensor:
        return self._arg("ARG_MAX", np.argmax, t, axis, output_type)

    def argmin(self, t: Any, axis: int = 0, output_type: Any = None, **kw: Any) -> RTensor:
        return self._arg("ARG_MIN", np.argmin, t, axis, output_type)

    def reverse(self, t: Any, axis: Any) -> RTensor:
        t, axes = self._t(t), [int(a) % self._t(t).ndim for a in _ints(axis)]
        return self.rec.emit("REVERSE_V2", [t, self._i32(axes)], [(t.shape_, t.dtype_)],
                             fold=lambda a, _: np.flip(a, axis=tuple(axes)))[0]

    def moments(self, t: Any, axes: Any, keepdims: bool = False, **_: Any) -> tuple[RTensor, RTensor]:
        t = self._t(t)
        mean = self.reduce_mean(t, axis=axes, keepdims=True)
        diff = self.rec.emit("SQUARED_DIFFERENCE", [t, mean], [(t.shape_, t.dtype_)],
                             fold=lambda a, b: np.square(a - b))[0]
        var = self.reduce_mean(diff, axis=axes, keepdims=keepdims)
        if not keepdims:
            mean = self.squeeze(mean, axis=axes)
        return mean, var

    def gelu(self, t: Any, approximate: bool = False, **_: Any) -> RTensor:
        t = self._t(t)
        return self.rec.emit("GELU", [t], [(t.shape_, t.dtype_)], ("GeluOptions", {"approximate": bool(approximate)}))[0]

    def pow(self, a: Any, b: Any, name: Any = None) -> RTensor:
        like = a if isinstance(a, RTensor) else b if isinstance(b, RTensor) else None
        a, b = self._t(a, like), self._t(b, like)
        shape = np.broadcast_shapes(a.shape_, b.shape_)
        return self.rec.emit("POW", [a, b], [(shape, a.dtype_)], fold=np.power)[0]

    def gather_nd(self, t: Any, indices: Any, **_: Any) -> RTensor:
        t, idx = self._t(t), self._t(indices)
        if idx.const is not None:
            idx = self.rec.const(idx.const.astype(np.int32))
        elif idx.dtype_ != np.int32:
            raise NotNative(f"GATHER_ND with computed {idx.dtype_.name} indices (int32 only)")
        shape = list(idx.shape_[:-1]) + list(t.shape_[idx.shape_[-1]:])
        return self.rec.emit("GATHER_ND", [t, idx], [(shape, t.dtype_)],
                             fold=lambda a, i: a[tuple(np.moveaxis(i, -1, 0))])[0]

    def scatter_nd(self, indices: Any, updates: Any, shape: Any, **_: Any) -> RTensor:
        idx, updates, dims = self._t(indices), self._t(updates), _ints(shape)
        if idx.const is None:
            raise NotNative("SCATTER_ND with computed indices")
        idx = self.rec.const(idx.const.astype(np.int32))
        def fold(i, u, _):   # TensorFlow's rule: updates at a repeated index add up
            out = np.zeros(dims, u.dtype)
            np.add.at(out, tuple(np.moveaxis(i, -1, 0)), u)
            return out

        return self.rec.emit("SCATTER_ND", [idx, updates, self._i32(dims)], [(dims, updates.dtype_)], fold=fold)[0]

    def ones_like(self, t: Any, dtype: Any = None, **_: Any) -> RTensor:
        t = self._t(t)
        return self.rec.const(np.ones(t.shape_, t.dtype_ if dtype is None else self.as_dtype(dtype).np))

    def zeros(self, shape: Any, dtype: Any = None, **_: Any) -> RTensor:
        return self.rec.const(np.zeros(_ints(shape), np.float32 if dtype is None else self.as_dtype(dtype).np))


def _compare_method(kind: str):
    return lambda self, a, b, name=None: self._compare(kind, a, b)


for _kind in {**_COMPARE, **_LOGIC}:
    setattr(LogicOps, _kind, _compare_method(_kind))
