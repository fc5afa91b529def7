"""Cleanup: a Split (or Slice) that takes apart what a Concat just put together reads the pieces.

End-to-end detector heads (Ultralytics YOLOv10 / YOLO26 with ``nms=False``) concatenate the boxes
(in pixels, 0..640) and the class scores (a sigmoid's 0..1) along the channels, transpose, and
split them again along the same values::

    Concat([boxes [1, 4, A], scores [1, 80, A]], axis=1) -> Transpose(0, 2, 1) -> Split([4, 80], axis=-1)

The float result is the same with or without the round trip, but an int8 CONCATENATION has one
scale for all its inputs and its output (TFLite's int8 operator spec): the scores then live on a
grid of 640 / 255 = 2.5 and every one of them is 0 -- the int8 model detects nothing (a YOLO26n
measured F1 0.00). Reading the pieces directly keeps each on its own range.

:func:`bypass_split_of_concat` rewrites each output of such a Split (and each Slice with constant
bounds, step 1, on one axis) that covers exactly one piece of the Concat, through at most one
Transpose between them, into the piece itself (an Identity, which cleanup's no-op pass removes) or
the piece transposed the same way (a Transpose of the piece). The Concat and Transpose stay while
anything else reads them; the dead-node pass drops them otherwise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else a.i
    return default


def _pieces(concat, shapes: dict, axis: int) -> list[tuple[int, int]] | None:
    """[start, end) of each Concat input along ``axis``, or None (a shape not known)."""
    bounds, start = [], 0
    for name in concat.input:
        shape = shapes.get(name)
        if shape is None or len(shape) <= axis or shape[axis] <= 0:
            return None
        bounds.append((start, start + shape[axis]))
        start += shape[axis]
    return bounds


def _split_ranges(node, consts: dict, shapes: dict, rank: int) -> tuple[int, list[tuple[int, int]]] | None:
    """(axis, [start, end) of each output) of a Split, or of a one-axis step-1 Slice; None otherwise."""
    if node.op_type == "Split":
        axis = _attr(node, "axis", 0) % rank
        sizes = None
        if len(node.input) > 1 and node.input[1]:
            sizes = consts.get(node.input[1])
        elif _attr(node, "split") is not None:
            sizes = np.asarray(_attr(node, "split"))
        if sizes is None:
            total = (shapes.get(node.input[0]) or [0] * rank)[axis]
            if total <= 0 or total % len(node.output):
                return None
            sizes = [total // len(node.output)] * len(node.output)
        ends = np.cumsum([int(s) for s in np.asarray(sizes).reshape(-1)])
        return axis, [(int(e - s), int(e)) for s, e in zip(np.asarray(sizes).reshape(-1), ends)]
    if node.op_type == "Slice" and len(node.input) >= 3:
        values = [consts.get(n) if n else None for n in node.input[1:5]]
        starts, ends = values[0], values[1]
        axes = values[2] if len(values) > 2 and values[2] is not None else np.arange(len(np.reshape(starts, -1)))
        steps = values[3] if len(values) > 3 and values[3] is not None else np.ones(1)
        if starts is None or ends is None or np.size(starts) != 1 or np.size(axes) != 1 \
                or np.reshape(steps, -1)[0] != 1:
            return None
        axis = int(np.reshape(axes, -1)[0]) % rank
        total = (shapes.get(node.input[0]) or [0] * rank)[axis]
        start, end = (int(np.clip(v + total if v < 0 else v, 0, total))
                      for v in (int(np.reshape(starts, -1)[0]), int(np.reshape(ends, -1)[0])))
        return axis, [(start, end)]
    return None


def splits_concat(graph: "onnx.GraphProto") -> bool:
    """Whether any Split / Slice reads a Concat, directly or through a Transpose (a quick look)."""
    producer = {o: n.op_type for n in graph.node for o in n.output if o}
    through = {o: n.input[0] for n in graph.node if n.op_type == "Transpose" and n.input for o in n.output}
    return any(n.op_type in ("Split", "Slice") and n.input and
               "Concat" in (producer.get(n.input[0]), producer.get(through.get(n.input[0], "")))
               for n in graph.node)


def bypass_split_of_concat(graph: "onnx.GraphProto", shapes: dict[str, tuple[int, ...]]) -> int:
    """Rewrite Split / Slice outputs that are exactly one piece of a Concat (module docstring);
    ``shapes``: static shapes of the graph's values. Returns how many outputs now read their piece."""
    from onnx import helper

    from edgenet.converters.cleanup import constant_values, name_allocator

    producer = {o: n for n in graph.node for o in n.output if o}
    outputs = {o.name for o in graph.output}
    consts = constant_values(graph)
    fresh = name_allocator(graph)
    rewired, new_nodes = 0, []
    for node in graph.node:
        src = producer.get(node.input[0]) if node.op_type in ("Split", "Slice") and node.input else None
        perm = None
        if src is not None and src.op_type == "Transpose":
            rank = len(shapes.get(node.input[0]) or ())
            perm = _attr(src, "perm") or list(range(rank))[::-1]   # no perm: the axes reversed (ONNX)
            src = producer.get(src.input[0])
        if src is None or src.op_type != "Concat" or src.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        shape = shapes.get(node.input[0])
        if shape is None or (perm is not None and len(perm) != len(shape)):
            new_nodes.append(node)
            continue
        rank = len(shape)
        found = _split_ranges(node, consts, shapes, rank)
        concat_axis = _attr(src, "axis", 0) % rank
        if found is None or (perm[found[0]] if perm is not None else found[0]) != concat_axis:
            new_nodes.append(node)
            continue
        pieces = _pieces(src, shapes, concat_axis)
        if pieces is None or not all(r in pieces for r in found[1]) or any(o in outputs for o in node.output):
            new_nodes.append(node)
            continue
        for out, r in zip(node.output, found[1]):
            piece = src.input[pieces.index(r)]
            if perm is None:
                new_nodes.append(helper.make_node("Identity", [piece], [out],
                                                  name=fresh(f"{node.name or out}/piece")))
            else:
                new_nodes.append(helper.make_node("Transpose", [piece], [out], perm=perm,
                                                  name=fresh(f"{node.name or out}/piece")))
            rewired += 1
    if rewired:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return rewired
