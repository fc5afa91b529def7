"""The recorded graph: tensors with static shapes (or numpy constants) and the TFLite builtin operators
that make them, as the recording backend (:mod:`~edgenet.converters.tflite_writer.backend`) emits them.

A :class:`RTensor` stands where onnx_to_tf's handlers expect a ``tf.Tensor``: it has ``.shape``
(with ``as_list()``), ``.dtype`` (with ``as_numpy_dtype``) and the arithmetic operators, each of which
records an operator (or, on constants only, folds it in numpy). Shapes are static: a dynamic dim
raises :class:`NotNative` (the conversion then fails naming the ONNX node).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edgenet.errors import ConversionError


class NotNative(ConversionError):
    """A node needs a function (or a variant of one) the TFLite writer does not implement: no TFLite
    builtin expresses it here. :func:`~edgenet.converters.tflite_writer.native_tflite` raises it naming
    the ONNX node (``node``: its name, ``op_type``: its ONNX op, when known)."""

    node: str | None = None
    op_type: str | None = None
    scope: str | None = None   # the recorder's node scope it was raised in


class DType:
    """A dtype as handlers compare it (``t.dtype == tf.float32``, ``t.dtype.as_numpy_dtype``)."""

    def __init__(self, np_dtype: Any):
        self.as_numpy_dtype = np.dtype(np_dtype).type
        self.np = np.dtype(np_dtype)
        self.name = self.np.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return self.np == other.np
        try:
            return self.np == np.dtype(other)
        except TypeError:
            return NotImplemented

    def __hash__(self) -> int:
        return hash(self.np)

    def __repr__(self) -> str:
        return f"DType({self.name})"


class Shape(tuple):
    """A static shape (a tuple of ints) with TensorFlow's ``as_list()``."""

    def as_list(self) -> list[int]:
        return list(self)


@dataclass(eq=False)
class Op:
    """One TFLite builtin operator: ``code`` a BuiltinOperator name, ``options`` (BuiltinOptions name,
    field dict) or None; inputs may hold None for an absent optional input (index -1)."""

    code: str
    inputs: list[Any]
    outputs: list[Any]
    options: tuple[str, dict] | None = None
    scope: str = ""


@dataclass(eq=False)
class RTensor:
    """A recorded tensor: static ``shape``, numpy ``dtype``; ``const`` holds its value when known at
    conversion time (then it is a TFLite buffer, made by no operator)."""

    rec: Any  # the Recorder
    shape_: tuple[int, ...]
    dtype_: np.dtype
    const: np.ndarray | None = None
    name: str = ""
    producer: Op | None = field(default=None, repr=False)

    @property
    def shape(self) -> Shape:
        return Shape(self.shape_)

    @property
    def dtype(self) -> DType:
        return DType(self.dtype_)

    @property
    def ndim(self) -> int:
        return len(self.shape_)

    # arithmetic, as tf.Tensor has it (recorded through the backend); numpy defers to it
    __array_ufunc__ = None

    def __add__(self, o): return self.rec.tf.add(self, o)
    def __radd__(self, o): return self.rec.tf.add(o, self)
    def __sub__(self, o): return self.rec.tf.subtract(self, o)
    def __rsub__(self, o): return self.rec.tf.subtract(o, self)
    def __mul__(self, o): return self.rec.tf.multiply(self, o)
    def __rmul__(self, o): return self.rec.tf.multiply(o, self)
    def __truediv__(self, o): return self.rec.tf.divide(self, o)
    def __rtruediv__(self, o): return self.rec.tf.divide(o, self)
    def __neg__(self): return self.rec.tf.negative(self)
    def __getitem__(self, index): return self.rec.tf.getitem(self, index)

    def __gt__(self, o): return self.rec.tf.greater(self, o)
    def __lt__(self, o): return self.rec.tf.less(self, o)
    def __ge__(self, o): return self.rec.tf.greater_equal(self, o)
    def __le__(self, o): return self.rec.tf.less_equal(self, o)

    def __hash__(self) -> int:
        return id(self)


class Recorder:
    """The operators and tensors of one conversion, in the order they were made."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.tf: Any = None  # the backend, set by it
        self.scope = ""
        self._names: dict[str, int] = {}

    def unique(self, base: str) -> str:
        count = self._names.get(base, 0)
        self._names[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def const(self, array: Any, dtype: Any = None) -> RTensor:
        array = np.asarray(array, dtype=dtype)
        return RTensor(self, tuple(array.shape), array.dtype, const=array)

    def placeholder(self, shape: Sequence[int], dtype: Any, name: str) -> RTensor:
        if any(d is None or d < 0 for d in shape):
            raise NotNative(f"input {name!r} has a dynamic shape {tuple(shape)}")
        return RTensor(self, tuple(int(d) for d in shape), np.dtype(dtype), name=name)

    def emit(self, code: str, inputs: Sequence[Any], outs: Sequence[tuple[Sequence[int], Any]],
             options: tuple[str, dict] | None = None, fold: Callable[..., Any] | None = None) -> list[RTensor]:
        """Record one operator (``outs``: (shape, dtype) per output) and return its output tensors; when
        every input is a constant and ``fold`` computes the op in numpy, return constants instead."""
        present = [t for t in inputs if t is not None]
        if present and all(t.const is not None for t in present):
            if fold is None:
                raise NotNative(f"{code} of constants")
            result = fold(*[t.const if t is not None else None for t in inputs])
            results = result if isinstance(result, (list, tuple)) else [result]
            return [self.const(np.asarray(r, dtype=dt)) for r, (_, dt) in zip(results, outs)]
        for shape, _ in outs:
            if any(d is None or int(d) < 0 for d in shape):
                raise NotNative(f"{code} with a dynamic shape {tuple(shape)}")
        empty = [any(int(d) == 0 for d in shape) for shape, _ in outs]
        if any(empty) and not all(empty):
            raise NotNative(f"{code} making an empty tensor among its outputs {[tuple(s) for s, _ in outs]}")
        if all(empty):
            # an empty tensor holds no values: a constant of its shape (no kernel runs on it; CONCATENATION
            # drops it, an op reading it is folded or makes an empty constant again)
            return [self.const(np.zeros(tuple(int(d) for d in shape), dtype)) for shape, dtype in outs]
        op = Op(code, list(inputs), [], options, self.scope)
        base = f"{self.scope}/{code.lower()}" if self.scope else code.lower()
        for shape, dtype in outs:
            t = RTensor(self, tuple(int(d) for d in shape), np.dtype(dtype), name=self.unique(base), producer=op)
            op.outputs.append(t)
        self.ops.append(op)
        return op.outputs
