"""Gemm and MatMul; a constant right operand becomes a (K, N) matrix so TFLite emits FULLY_CONNECTED."""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler


@handler("Gemm")
def gemm(ctx: NodeContext):
    tf = ctx.tf
    a, b, c = ctx.required(0), ctx.required(1), ctx.input(2)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_a, trans_b = bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0))
    if a.rank != 2 or b.rank != 2:
        raise ctx.unsupported(f"rank-{a.rank} x rank-{b.rank} operands (Gemm takes matrices)")
    ta = ctx.onnx_order(a)
    if trans_a:
        ta = tf.transpose(ta)
    if b.is_const:
        matrix = b.const.T if trans_b else b.const
        if alpha != 1.0:
            matrix = matrix * np.asarray(alpha, matrix.dtype)
        y = tf.matmul(ta, np.ascontiguousarray(matrix))
    else:
        y = tf.matmul(ta, ctx.onnx_order(b), transpose_b=trans_b)
        if alpha != 1.0:
            y = y * alpha
    if c is not None and beta != 0.0:
        if c.is_const:
            bias = c.const * np.asarray(beta, c.const.dtype) if beta != 1.0 else c.const
            bias = bias.reshape(bias.shape[-1:]) if bias.ndim == 2 and bias.shape[0] == 1 else bias
            y = y + tf.constant(np.ascontiguousarray(bias).reshape(bias.shape), y.dtype)
        else:
            tc = ctx.onnx_order(c)
            if c.rank == 2 and c.onnx_shape[0] == 1:
                # a (1, N) bias broadcasts as (N,); kept 2-D, TF's grappler fuses MatMul(transpose_a) + Add
                # into a _FusedMatMul that rejects it at run time ("bias must be 1-dimensional")
                tc = tf.reshape(tc, [-1])
            y = y + (tc * beta if beta != 1.0 else tc)
    return [ctx.out(y)]


@handler("MatMul")
def matmul(ctx: NodeContext):
    tf = ctx.tf
    a, b = ctx.required(0), ctx.required(1)
    ta = ctx.onnx_order(a)
    tb = tf.constant(np.ascontiguousarray(b.const)) if b.is_const else ctx.onnx_order(b)
    squeeze = []
    if a.rank == 1:  # numpy semantics: vector operands gain a dim that is dropped afterwards
        ta, squeeze = ta[None, :], squeeze + [-2]
    if b.rank == 1:
        tb, squeeze = tb[:, None], squeeze + [-1]
    y = tf.linalg.matmul(ta, tb)  # batch dims broadcast like numpy
    if squeeze:
        y = tf.squeeze(y, axis=squeeze)
    return [ctx.out(y)]
