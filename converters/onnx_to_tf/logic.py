"""Comparisons (Equal, Greater, Less, GreaterOrEqual, LessOrEqual), logic (Not, And, Or, Xor) and
Where, with ONNX (numpy) broadcasting, in the layout of the main operand (see elementwise)."""
from __future__ import annotations

from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.elementwise import broadcast_operands
from edgenet.converters.onnx_to_tf.registry import handler

_COMPARE = {"Equal": "equal", "Greater": "greater", "Less": "less", "GreaterOrEqual": "greater_equal",
            "LessOrEqual": "less_equal"}
_LOGIC = {"And": "logical_and", "Or": "logical_or"}


def _binary(ctx: NodeContext, fn):
    (ta, tb), perm = broadcast_operands(ctx, [ctx.required(0), ctx.required(1)])
    if ta.dtype != tb.dtype:  # a constant operand of another width (ONNX requires one type)
        tb = ctx.tf.cast(tb, ta.dtype)
    return [ctx.out(fn(ta, tb), perm)]


def _make(fn_name: str):
    def convert(ctx: NodeContext):
        return _binary(ctx, getattr(ctx.tf.math, fn_name))

    return convert


for _op, _name in {**_COMPARE, **_LOGIC}.items():
    handler(_op)(_make(_name))


@handler("Xor")
def logical_xor(ctx: NodeContext):
    return _binary(ctx, ctx.tf.math.not_equal)


@handler("Not")
def logical_not(ctx: NodeContext):
    x = ctx.required(0)
    return [ctx.out(ctx.tf.math.logical_not(ctx.tensor(x)), x.perm)]


@handler("Where")
def where(ctx: NodeContext):
    """SELECT_V2 broadcasts all three operands like numpy."""
    tf = ctx.tf
    cond, a, b = ctx.required(0), ctx.required(1), ctx.required(2)
    (tc, ta, tb), perm = broadcast_operands(ctx, [cond, a, b])
    if tc.dtype != tf.bool:
        tc = tf.cast(tc, tf.bool)
    return [ctx.out(tf.where(tc, ta, tb), perm)]
