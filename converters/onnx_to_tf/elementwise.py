"""Binary/variadic elementwise ops with ONNX (numpy) broadcasting, done in the layout of the main operand."""
from __future__ import annotations

from functools import reduce
from typing import Sequence

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler
from edgenet.converters.onnx_to_tf.values import Value


def main_operand(values: Sequence[Value]) -> Value | None:
    """The operand whose layout an elementwise op works in: a non-constant of the highest rank,
    channels-last if there is one (so activations never leave NHWC), else the first."""
    rank = max(v.rank for v in values)
    candidates = [v for v in values if v.rank == rank and not v.is_const]
    preferred = layout.channels_last(rank) if rank == 4 else None
    return next((v for v in candidates if v.perm == preferred), candidates[0] if candidates else None)


def broadcast_operands(ctx: NodeContext, values: Sequence[Value]) -> tuple[list, tuple[int, ...]]:
    """TF tensors of ``values`` that broadcast in TF exactly as the ONNX values do in ONNX.

    The layout is that of the first non-constant operand of the highest rank (channels-last for
    activations); lower-rank operands get leading unit dims first (numpy rule), then every operand is
    permuted into that layout. Constants are permuted in numpy and lose their leading unit dims, so a
    (C, 1, 1) bias against an NHWC tensor becomes a plain (C,) constant.
    """
    tf = ctx.tf
    rank = max(v.rank for v in values)
    main = main_operand(values)
    perm = main.perm if main is not None else layout.identity(rank)
    tensors = []
    for v in values:
        if v.is_const:
            array = v.const.reshape((1,) * (rank - v.rank) + v.const.shape)
            array = np.transpose(array, perm)
            if main is not None:
                while array.ndim and array.shape[0] == 1:
                    array = array[0]
            tensors.append(tf.constant(np.ascontiguousarray(array).reshape(array.shape)))  # 0-d stays 0-d
        elif v.rank < rank:
            t = ctx.onnx_order(v)
            t = tf.reshape(t, [1] * (rank - v.rank) + [-1 if d is None else d for d in v.onnx_shape])
            expanded = Value(t, layout.identity(rank))
            tensors.append(ctx.in_layout(expanded, perm))
        else:
            tensors.append(ctx.in_layout(v, perm))
    return tensors, perm


def _binary(ctx: NodeContext, fn):
    a, b = ctx.required(0), ctx.required(1)
    (ta, tb), perm = broadcast_operands(ctx, [a, b])
    return [ctx.out(fn(ta, tb), perm)]


@handler("Add")
def add(ctx: NodeContext):
    return _binary(ctx, ctx.tf.add)


@handler("Sub")
def sub(ctx: NodeContext):
    return _binary(ctx, ctx.tf.subtract)


@handler("Mul")
def mul(ctx: NodeContext):
    return _binary(ctx, ctx.tf.multiply)


_NARROWED = (np.int64, np.int16, np.int8, np.uint8, np.uint16)   # computed in int32: FLOOR_DIV has no int64


def _integer_operands(ctx: NodeContext):
    """(a, b, perm, dtype) of an integer binary op: both operands broadcast and in int32 (int64
    index arithmetic narrowed: exact for values within int32, as every index of a vision model is;
    LiteRT's FLOOR_DIV has no int64 kernel and TFLite Micro computes int32), ``dtype`` the ONNX one
    to cast back to. UnsupportedOpError for uint32 / uint64."""
    tf = ctx.tf
    a, b = ctx.required(0), ctx.required(1)
    dtype = np.dtype(a.dtype)
    if dtype != np.int32 and dtype.type not in _NARROWED:
        raise ctx.unsupported(f"{ctx.node.op_type} of {dtype.name}")
    (ta, tb), perm = broadcast_operands(ctx, [a, b])
    if dtype != np.int32:
        ta, tb = tf.cast(ta, tf.int32), tf.cast(tb, tf.int32)
    return ta, tb, perm, dtype


def _floor_needs_fix(tf, ta, tb, remainder):
    """Where floor division is one below truncation: a remainder, and operands of opposite signs."""
    return tf.logical_and(tf.not_equal(remainder, 0), tf.not_equal(tf.less(ta, 0), tf.less(tb, 0)))


def _integer_out(ctx: NodeContext, y, perm, dtype):
    return [ctx.out(y if dtype == np.int32 else ctx.tf.cast(y, ctx.tf.as_dtype(dtype)), perm)]


@handler("Div")
def div(ctx: NodeContext):
    """Float: DIV (a constant divisor as a MUL by its inverse). Integer: ONNX truncates toward zero
    (C's ``/``): FLOOR_DIV plus one where the floor remainder is non-zero and the operands' signs
    differ (-7 / 2 = -3, where FLOOR_DIV gives -4), in int32 (:func:`_integer_operands`)."""
    tf = ctx.tf
    a, b = ctx.required(0), ctx.required(1)
    if np.issubdtype(a.dtype, np.integer):
        ta, tb, perm, dtype = _integer_operands(ctx)
        q = tf.floordiv(ta, tb)
        y = tf.where(_floor_needs_fix(tf, ta, tb, tf.floormod(ta, tb)), q + 1, q)
        return _integer_out(ctx, y, perm, dtype)
    if b.is_const and b.rank <= a.rank and not a.is_const:  # x / c -> x * (1/c): MUL fuses, DIV does not
        inverse = Value.constant((1.0 / b.const).astype(b.const.dtype))
        (ta, tb), perm = broadcast_operands(ctx, [a, inverse])
        return [ctx.out(ta * tb, perm)]
    return _binary(ctx, tf.divide)


@handler("Mod")
def mod(ctx: NodeContext):
    """ONNX Mod. ``fmod=0`` (integers): the sign of the divisor, Python's ``%``: FLOOR_MOD.
    ``fmod=1``: C's fmod, the sign of the dividend: on integers the floor remainder less the divisor
    where floor and truncation differ (:func:`_floor_needs_fix`); on floats FLOOR_MOD of the
    magnitudes (equal signs: no correction, so no rounding is added) given the dividend's sign."""
    tf = ctx.tf
    a = ctx.required(0)
    fmod = int(ctx.attr("fmod", 0))
    if np.issubdtype(a.dtype, np.integer):
        ta, tb, perm, dtype = _integer_operands(ctx)
        r = tf.floormod(ta, tb)
        if fmod:
            r = tf.where(_floor_needs_fix(tf, ta, tb, r), r - tb, r)
        return _integer_out(ctx, r, perm, dtype)
    if np.dtype(a.dtype) != np.float32:
        raise ctx.unsupported(f"Mod of {np.dtype(a.dtype).name}")
    (ta, tb), perm = broadcast_operands(ctx, [a, ctx.required(1)])
    if not fmod:     # floats' floor modulus is ONNX's only from opset 28 (before: fmod=1 required)
        if ctx.opset < 28:
            raise ctx.unsupported("fmod=0 on floats before opset 28 (the ONNX spec requires fmod=1)")
        return [ctx.out(tf.floormod(ta, tb), perm)]
    m = tf.floormod(tf.abs(ta), tf.abs(tb))
    return [ctx.out(tf.where(tf.less(ta, 0.0), -m, m), perm)]


@handler("Pow")
def power(ctx: NodeContext):
    tf = ctx.tf
    a, b = ctx.required(0), ctx.required(1)
    if b.is_const and b.const.size == 1 and not a.is_const:
        exponent = float(b.const.reshape(()))
        t = ctx.tensor(a)
        if exponent == 2.0:
            return [ctx.out(t * t, a.perm)]
        if exponent == 1.0:
            return [a]
        if exponent == 0.5:
            return [ctx.out(tf.sqrt(t), a.perm)]
    return _binary(ctx, lambda x, y: tf.pow(x, tf.cast(y, x.dtype)))


def _variadic(ctx: NodeContext, fn):
    values = [v for v in (ctx.input(i) for i in range(ctx.num_inputs)) if v is not None]
    tensors, perm = broadcast_operands(ctx, values)
    return [ctx.out(reduce(fn, tensors), perm)]


@handler("Max")
def maximum(ctx: NodeContext):
    return _variadic(ctx, ctx.tf.maximum)


@handler("Min")
def minimum(ctx: NodeContext):
    return _variadic(ctx, ctx.tf.minimum)


@handler("Sum")
def total(ctx: NodeContext):
    return _variadic(ctx, ctx.tf.add)


@handler("Mean")
def mean(ctx: NodeContext):
    values = [v for v in (ctx.input(i) for i in range(ctx.num_inputs)) if v is not None]
    tensors, perm = broadcast_operands(ctx, values)
    return [ctx.out(reduce(ctx.tf.add, tensors) * (1.0 / len(tensors)), perm)]


@handler("PRelu")
def prelu(ctx: NodeContext):
    tf = ctx.tf
    x, slope = ctx.required(0), ctx.required(1)
    (tx, ts), perm = broadcast_operands(ctx, [x, slope])
    return [ctx.out(tf.maximum(tx, 0.0) + ts * tf.minimum(tx, 0.0), perm)]
