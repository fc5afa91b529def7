"""A structural fix for a head that concatenates values of different ranges into one output.

Detectors commonly end in ``Concat(boxes_in_pixels, scores)`` along the channel axis: one int8
tensor then holds 0..640 and 0..1 with one scale, and the scores collapse to a handful of values.
No choice of range can save them; giving each part its own tensor (and so its own scale) does, and
keeps the model fully integer, which is what an Edge TPU or an Ethos-U needs.

:func:`split_concat_output` rewrites the ONNX graph so that the output produced by such a Concat
becomes one graph output per Concat input (named ``<output>.0``, ``<output>.1`` ...), in order; the
app concatenates them along the same axis to get the original tensor back. :func:`concat_parts`
finds which outputs can be split and how.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgenet._deps import require


@dataclass(frozen=True)
class SplitOutput:
    """One output written as parts: ``parts`` (new output names) concatenated along ``axis``
    give ``output`` back; ``sizes`` is each part's extent along that axis."""

    output: str
    parts: tuple[str, ...]
    axis: int
    sizes: tuple[int, ...]

    def describe(self) -> str:
        ranges, start = [], 0
        for name, size in zip(self.parts, self.sizes):
            ranges.append(f"{name} ({start}..{start + size - 1})")
            start += size
        return (f"output {self.output!r} is written as {len(self.parts)} outputs, {', '.join(ranges)} along axis "
                f"{self.axis}, each with its own int8 scale; concatenate them in the app to get {self.output!r}")

    def joined(self, outputs) -> Any:
        """The :class:`edgenet.verdicts.parts.JoinedOutput` that rebuilds this output from the
        converted model's ``outputs`` (TensorInfo, in order): where the parts sit and the axis of
        the arrays the model returns (a channels-last 4-D part: the NCHW axis moved to NHWC)."""
        from edgenet.verdicts.parts import JoinedOutput

        names = [o.name for o in outputs]
        first = names.index(self.parts[0])
        return JoinedOutput(self.output, first, len(self.parts), array_axis(self.axis, outputs[first]))


def array_axis(axis: int, info) -> int:
    """The axis of the arrays the converted model returns for ONNX axis ``axis`` of output ``info``
    (a TensorInfo): a channels-last 4-D output has its NCHW axis moved to NHWC."""
    return (0, 3, 1, 2)[axis] if info.channels_last and len(info.onnx_shape) == 4 else axis


def concat_parts(model: Any, output: str) -> tuple[Any, int] | None:
    """(the Concat node, its normalized axis) when graph output ``output`` is a Concat of two or more
    inputs, else None."""
    for node in model.graph.node:
        if node.op_type == "Concat" and output in node.output and len([i for i in node.input if i]) >= 2:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            rank = _rank(model, output)
            return node, axis % rank if rank else axis
    return None


def split_concat_output(model: Any, output: str) -> tuple[Any, SplitOutput]:
    """A copy of ``model`` whose output ``output`` (a Concat) is replaced, in place in the output
    list, by one output per part. ValueError when ``output`` is not such a Concat.

    The parts are the Concat's inputs -- or, for the YOLO export layout, a Concat along the anchors
    of per-level Concats along the channels (``[xy, wh, scores]`` per level), the channel groups
    across levels: ``Concat_anchors(xy_l for each level)``, ``Concat_anchors(wh_l ...)``,
    ``Concat_anchors(scores_l ...)``, which concatenated along the channels give the same tensor
    and keep boxes and scores apart."""
    onnx = require("onnx")
    found = concat_parts(model, output)
    if found is None:
        raise ValueError(f"output {output!r} is not produced by a Concat of several tensors")
    node, axis = found
    new = onnx.ModelProto()
    new.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(new)
    shapes = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
              + list(inferred.graph.input)}

    def dims(name):
        vi = shapes.get(name)
        return [d.dim_value for d in vi.type.tensor_type.shape.dim] if vi is not None else []

    groups = _level_groups(new, node, axis, dims)
    parts, sizes, nodes = [], [], []
    if groups is not None:     # regroup: the channel groups across levels, each along the outer axis
        inner_axis, members, reshapes = groups
        for k, names in enumerate(members):
            part = f"{output}.{k}"
            size = int(dims(names[0])[-1 if reshapes[0] is not None else inner_axis])
            inputs = []
            for level, (name, target) in enumerate(zip(names, reshapes)):
                if target is None:
                    inputs.append(name)
                    continue
                shape, viewed = f"{output}_part{k}_level{level}_shape", f"{output}_part{k}_level{level}"
                new.graph.initializer.append(onnx.numpy_helper.from_array(
                    np.asarray([*target[:-1], size], dtype=np.int64), shape))
                nodes.append(onnx.helper.make_node("Reshape", [name, shape], [viewed], name=viewed))
                inputs.append(viewed)
            nodes.append(onnx.helper.make_node("Concat", inputs, [part], axis=axis, name=f"{output}_part{k}"))
            sizes.append(size)
            parts.append(part)
        axis = inner_axis
    else:
        for k, name in enumerate(i for i in node.input if i):
            part = f"{output}.{k}"
            nodes.append(onnx.helper.make_node("Identity", [name], [part], name=f"{output}_part{k}"))
            d = dims(name)
            sizes.append(int(d[axis]) if len(d) > axis else 0)
            parts.append(part)
    graph = new.graph
    position = [o.name for o in graph.output].index(output)
    old_outputs = list(graph.output)
    del graph.output[:]
    for k, out in enumerate(old_outputs):
        if k != position:
            graph.output.append(out)
            continue
        for part in parts:
            graph.output.append(onnx.helper.make_empty_tensor_value_info(part))
    graph.node.extend(nodes)
    # the Concat itself now feeds nothing: drop it (and only it)
    if not any(output in n.input for n in graph.node):
        keep = [n for n in graph.node if not (n.op_type == "Concat" and output in n.output)]
        del graph.node[:]
        graph.node.extend(keep)
    new = onnx.shape_inference.infer_shapes(new)
    typed = {vi.name: vi for vi in new.graph.value_info}
    for out in new.graph.output:          # the new outputs' types, from shape inference
        if out.name in parts and out.name in typed:
            out.CopyFrom(typed[out.name])
    onnx.checker.check_model(new)
    return new, SplitOutput(output, tuple(parts), axis, tuple(sizes))


def _level_groups(model: Any, node: Any, axis: int, dims):
    """(inner axis, per channel group the inputs across levels, per level the Reshape target of the
    YOLOv5 layout or None) when every input of ``node`` is a Concat along one other axis with the
    same part sizes (the YOLO head layout), else None.

    A level may also be ``Reshape(Concat(xy, wh, scores along the last axis), [B, -1, no])`` (the
    YOLOv5 export: ``[B, anchors, H, W, no]`` viewed as ``[B, anchors*H*W, no]``): a Reshape that
    keeps the last axis only merges the others, so each part can be reshaped on its own
    (``[B, -1, part size]``) and the parts concatenated along the last axis give the same tensor."""
    producers = {o: n for n in model.graph.node for o in n.output}
    levels, reshapes = [], []
    for name in (i for i in node.input if i):
        level, target = producers.get(name), None
        if level is not None and level.op_type == "Reshape":
            target = _reshape_target(model, level, producers)
            inner = producers.get(level.input[0])
            if target is None or inner is None or inner.op_type != "Concat":
                return None
            rank = len(dims(inner.output[0]))
            inner_axis = next((a.i for a in inner.attribute if a.name == "axis"), 0) % max(rank, 1)
            # the concatenated axis must be the last on both sides, and keep its size
            if inner_axis != rank - 1 or not dims(inner.output[0]) or target[-1] != dims(inner.output[0])[-1] \
                    or len(dims(level.output[0])) != len(target):
                return None
            level = inner
        levels.append(level)
        reshapes.append(target)
    if len(levels) < 2 or any(c is None or c.op_type != "Concat" for c in levels):
        return None
    out_rank = len(dims(node.output[0]))
    inner = set()
    for c, target in zip(levels, reshapes):
        rank = len(dims(c.output[0]))
        k = next((a.i for a in c.attribute if a.name == "axis"), 0) % max(rank, 1)
        inner.add(out_rank - 1 if target is not None else k)   # in the outer Concat's coordinates
    if len(inner) != 1 or axis in inner:
        return None
    inner_axis = inner.pop()
    layout = [tuple(dims(i)[-1 if t is not None else inner_axis] if dims(i) else -1 for i in c.input)
              for c, t in zip(levels, reshapes)]
    if len(set(layout)) != 1 or -1 in layout[0] or len(layout[0]) < 2:
        return None
    return inner_axis, [tuple(c.input[k] for c in levels) for k in range(len(layout[0]))], reshapes


def _reshape_target(model: Any, node: Any, producers: dict) -> list[int] | None:
    """The constant target shape of a Reshape node (an initializer or a Constant), else None."""
    from onnx import numpy_helper

    if len(node.input) < 2:
        return None
    name = node.input[1]
    for init in model.graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).ravel()]
    const = producers.get(name)
    if const is not None and const.op_type == "Constant":
        for a in const.attribute:
            if a.name == "value":
                return [int(v) for v in numpy_helper.to_array(a.t).ravel()]
    return None


def _rank(model: Any, name: str) -> int:
    for vi in list(model.graph.output) + list(model.graph.value_info):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return 0
