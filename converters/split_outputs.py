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
    list, by the Concat's inputs as outputs. ValueError when ``output`` is not such a Concat."""
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
    parts, sizes, nodes = [], [], []
    for k, name in enumerate(i for i in node.input if i):
        part = f"{output}.{k}"
        nodes.append(onnx.helper.make_node("Identity", [name], [part], name=f"{output}_part{k}"))
        vi = shapes.get(name)
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim] if vi is not None else []
        sizes.append(int(dims[axis]) if len(dims) > axis else 0)
        parts.append(part)
    graph = new.graph
    position = [o.name for o in graph.output].index(output)
    old_outputs = list(graph.output)
    del graph.output[:]
    for k, out in enumerate(old_outputs):
        if k != position:
            graph.output.append(out)
            continue
        for part, name in zip(parts, (i for i in node.input if i)):
            vi = shapes.get(name)
            made = onnx.ValueInfoProto()
            if vi is not None:
                made.CopyFrom(vi)
            made.name = part
            graph.output.append(made)
    graph.node.extend(nodes)
    # the Concat itself now feeds nothing: drop it (and only it)
    if not any(output in n.input for n in graph.node):
        keep = [n for n in graph.node if not (n.op_type == "Concat" and output in n.output)]
        del graph.node[:]
        graph.node.extend(keep)
    onnx.checker.check_model(new)
    return new, SplitOutput(output, tuple(parts), axis, tuple(sizes))


def _rank(model: Any, name: str) -> int:
    for vi in list(model.graph.output) + list(model.graph.value_info):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return 0
