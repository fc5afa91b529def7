"""Ops with axis attributes that work in any layout by remapping the axis: Concat, Split, Slice,
Gather, Pad."""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.elementwise import main_operand
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs
from edgenet.converters.onnx_to_tf.values import Value


def _common_layout(values: list[Value]) -> tuple[int, ...]:
    main = main_operand(values)
    return main.perm if main is not None else values[0].perm


@handler("Concat")
def concat(ctx: NodeContext):
    values = [v for v in (ctx.input(i) for i in range(ctx.num_inputs)) if v is not None]
    # empty tensors (e.g. a zero-size constant) contribute nothing
    values = [v for v in values if not (v.is_const and v.const.size == 0)] or values[:1]
    perm = _common_layout(values)
    axis = int(ctx.attr("axis"))
    tensors = [ctx.in_layout(v, perm) for v in values]
    if len(tensors) == 1:
        return [ctx.out(tensors[0], perm)]
    return [ctx.out(ctx.tf.concat(tensors, axis=layout.tf_axis(perm, axis)), perm)]


@handler("Split")
def split(ctx: NodeContext):
    x = ctx.required(0)
    axis = int(ctx.attr("axis", 0)) % x.rank
    size = x.onnx_shape[axis]
    if ctx.opset < 13:
        sizes = ctx.attr("split")
    else:
        array = ctx.const_input(1, "split sizes")
        sizes = None if array is None else array.reshape(-1).tolist()
    count = len(ctx.node.output)
    if sizes is None:
        if size is None:
            raise ctx.unsupported("split of the dynamic batch dim")
        parts = int(ctx.attr("num_outputs", count))
        chunk = -(-size // parts)  # ONNX: equal chunks, the last one smaller if it does not divide
        sizes = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
    sizes = [int(s) for s in sizes]
    tensor, tf_axis = ctx.tensor(x), layout.tf_axis(x.perm, axis)
    if len(set(sizes)) == 1 and 2 <= len(sizes) <= 4:  # SPLIT, which XNNPACK delegates for 2-4 outputs
        pieces = ctx.tf.split(tensor, len(sizes), axis=tf_axis)
    else:  # one strided slice per piece (XNNPACK delegates neither SPLIT_V nor a 5-way SPLIT)
        pieces, start = [], 0
        for size in sizes:
            index = [slice(None)] * x.rank
            index[tf_axis] = slice(start, start + size)
            pieces.append(tensor[tuple(index)])
            start += size
    return [ctx.out(p, x.perm) for p in pieces]


def _slice_params(ctx: NodeContext, rank: int):
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes"), None
    else:
        starts = ctx.const_input(1, "starts").reshape(-1).tolist()
        ends = ctx.const_input(2, "ends").reshape(-1).tolist()
        a, s = ctx.const_input(3, "axes"), ctx.const_input(4, "steps")
        axes = None if a is None else a.reshape(-1).tolist()
        steps = None if s is None else s.reshape(-1).tolist()
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    return starts, ends, axes, steps


@handler("Slice")
def slice_(ctx: NodeContext):
    x = ctx.required(0)
    shape = x.onnx_shape
    starts, ends, axes, steps = _slice_params(ctx, x.rank)
    rank = x.rank
    begin, end, stride = [0] * rank, [0] * rank, [1] * rank
    begin_mask = end_mask = (1 << rank) - 1  # untouched dims: whole range
    big = 2 ** 62
    for onnx_axis, start, stop, step in zip(axes, starts, ends, steps):
        i = layout.tf_axis(x.perm, onnx_axis)
        dim = shape[onnx_axis]
        step = int(step)
        if step == 0:
            raise ctx.unsupported("step 0")
        if dim is None:
            if start != 0 or stop < big // 4 or step != 1:
                raise ctx.unsupported("slicing of the dynamic batch dim")
            continue
        start, stop = int(start), int(stop)
        start = start + dim if start < 0 else start
        stop = stop + dim if stop < 0 else stop
        if step > 0:
            start, stop = min(max(start, 0), dim), min(max(stop, 0), dim)
        else:
            start, stop = min(max(start, 0), dim - 1), min(max(stop, -1), dim - 1)
        begin_mask &= ~(1 << i)
        begin[i], stride[i] = start, step
        if step < 0 and stop < 0:  # runs down to and including index 0
            continue
        end_mask &= ~(1 << i)
        end[i] = stop
    y = ctx.tf.strided_slice(ctx.tensor(x), begin, end, stride, begin_mask=begin_mask, end_mask=end_mask)
    return [ctx.out(y, x.perm)]


@handler("Gather")
def gather(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    indices = ctx.const_input(1, "indices")
    axis = int(ctx.attr("axis", 0)) % x.rank
    dim = x.onnx_shape[axis]
    if dim is None:
        raise ctx.unsupported("gather along the dynamic batch dim")
    indices = np.where(indices < 0, indices + dim, indices).astype(np.int32)  # int32: TFLite Micro's GATHER
    tf_axis = layout.tf_axis(x.perm, axis)
    if indices.ndim == 0:  # the axis disappears; the other dims keep their TF order
        y = tf.gather(ctx.tensor(x), indices, axis=tf_axis)
        kept = [d for d in x.perm if d != axis]
        return [ctx.out(y, [d - (d > axis) for d in kept])]
    if indices.ndim == 1:
        step = _progression(indices)
        if step is not None:  # evenly spaced positions (a range, a reversal): one strided slice
            stop = int(indices[0]) + step * indices.size
            index = [slice(None)] * x.rank
            index[tf_axis] = slice(int(indices[0]), stop if stop >= 0 else None, step)
            return [ctx.out(ctx.tensor(x)[tuple(index)], x.perm)]
        return [ctx.out(tf.gather(ctx.tensor(x), indices, axis=tf_axis), x.perm)]
    return [ctx.out(tf.gather(ctx.onnx_order(x), indices, axis=axis))]


def _progression(indices: np.ndarray) -> int | None:
    """The common step of 1-D indices that are evenly spaced (at least two, step not 0), else None."""
    if indices.size < 2:
        return None
    steps = np.diff(indices.astype(np.int64))
    return int(steps[0]) if steps[0] != 0 and np.all(steps == steps[0]) else None


def _check_pad(node, opset: int) -> str | None:
    mode = node_attrs(node).get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        return f"mode={mode!r}"
    return None


@handler("Pad", check=_check_pad)
def pad(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    rank = x.rank
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = list(ctx.attr("pads")), float(ctx.attr("value", 0.0))
        axes = list(range(rank))
    else:
        pads = ctx.const_input(1, "pads").reshape(-1).tolist()
        v = ctx.const_input(2, "constant value")
        value = 0.0 if v is None or v.size == 0 else v.reshape(-1)[0].item()
        a = ctx.const_input(3, "axes")
        axes = list(range(rank)) if a is None else [int(i) % rank for i in a.reshape(-1)]
    n = len(axes)
    before, after = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        before[axis], after[axis] = int(pads[k]), int(pads[k + n])
    t = ctx.tensor(x)
    if any(p < 0 for p in before + after):  # negative pads crop
        shape = x.onnx_shape
        begin = [max(0, -before[d]) for d in x.perm]
        size = [-1 if shape[d] is None else shape[d] - max(0, -before[d]) - max(0, -after[d]) for d in x.perm]
        t = tf.slice(t, begin, size)
        before, after = [max(0, p) for p in before], [max(0, p) for p in after]
    paddings = [[before[d], after[d]] for d in x.perm]
    if not any(any(p) for p in paddings):
        return [ctx.out(t, x.perm)]
    if mode == "constant":
        y = tf.pad(t, paddings, constant_values=tf.constant(value, t.dtype))
    elif mode == "reflect":
        y = tf.pad(t, paddings, mode="REFLECT")
    else:  # edge: the border slices repeated (strided slices + concat, which XNNPACK runs in float and int8)
        y = t
        for i, (b, e) in enumerate(paddings):
            if b or e:
                size = y.shape[i]
                index = [slice(None)] * rank
                index[i] = slice(0, 1)
                first = [y[tuple(index)]] * b
                index[i] = slice(size - 1, size)
                last = [y[tuple(index)]] * e
                y = tf.concat(first + [y] + last, axis=i)
    return [ctx.out(y, x.perm)]
