"""Run an ONNX graph one segment at a time, keeping the tensors that cross each cut in memory.

Sequential bias correction (:mod:`edgenet.converters.bias_correction`) needs, at each weight layer
in graph order, the mean output of a model whose *earlier* layers are already corrected. Running the
whole prefix again for every layer costs ``L / 2`` model passes for ``L`` layers (on the PP-OCRv4
text detector at 800x608, 62 layers: 999 of 1,082 s of a conversion). Here the graph is cut after
each layer; segment ``k`` is the nodes between cut ``k - 1`` and cut ``k``, and runs once per batch
of samples on the tensors the earlier segments left behind (the *frontier*: tensors produced before
the cut and read after it). The caller sees each layer's output for all samples before the next
segment runs, and may change it in place (a bias correction adds a constant per channel, which is
exactly what a changed bias does to the layer's output). The whole graph thus runs once.

The frontier of every sample is held at once (``budget_bytes``): when it would grow past the budget,
the trailing batches are dropped and the remaining segments run on fewer samples (reported).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from edgenet._deps import require

if TYPE_CHECKING:  # pragma: no cover
    import onnx

FRONTIER_BUDGET = 1 << 30   # bytes of cached tensors (all samples) between two segments


@dataclass(frozen=True)
class Segment:
    """Nodes ``(start, stop]`` of the graph: ``inputs`` from earlier segments (or graph inputs),
    ``outputs`` read later, and ``target`` (the last node's first output) always among them."""

    start: int
    stop: int
    nodes: tuple[int, ...]         # indices into graph.node actually needed
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    target: str


def is_topological(graph: "onnx.GraphProto") -> bool:
    """Every node's inputs are produced before it (names a subgraph body reads are left to onnxruntime)."""
    known = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    for node in graph.node:
        if any(name not in known for name in node.input):
            return False
        known.update(node.output)
    return True


def plan(graph: "onnx.GraphProto", cuts: Sequence[int]) -> list[Segment]:
    """Segments ending at the node indices ``cuts`` (increasing). Raises ValueError when the node
    list is not in topological order (ONNX requires it; the segments would be wrong)."""
    from edgenet.converters.cleanup import node_inputs

    if not is_topological(graph):
        raise ValueError("the graph's nodes are not in topological order")
    inits = {t.name for t in graph.initializer}
    reads = [node_inputs(node) - inits for node in graph.node]
    last_read: dict[str, int] = {}
    for i, names in enumerate(reads):
        for name in names:
            last_read[name] = i
    produced_at: dict[str, int] = {i.name: -1 for i in graph.input if i.name not in inits}
    for i, node in enumerate(graph.node):
        for name in node.output:
            if name:
                produced_at[name] = i
    segments, start = [], -1
    for stop in cuts:
        target = graph.node[stop].output[0]
        # outputs: produced inside the segment and read after it, plus the target
        outs = [name for i in range(start + 1, stop + 1) for name in graph.node[i].output
                if name and (last_read.get(name, -1) > stop or name == target)]
        needed, nodes = set(outs), []
        for i in range(stop, start, -1):
            if any(o in needed for o in graph.node[i].output):
                nodes.append(i)
                needed |= reads[i]
        ins = sorted(name for name in needed if name in produced_at and produced_at[name] <= start)
        segments.append(Segment(start, stop, tuple(reversed(nodes)), tuple(ins), tuple(dict.fromkeys(outs)), target))
        start = stop
    return segments


def _segment_model(model: "onnx.ModelProto", seg: Segment, dtypes: dict[str, int]) -> "onnx.ModelProto":
    """The nodes of ``seg`` as a model of their own (inputs of any shape: batches of any size)."""
    from edgenet.converters.cleanup import node_inputs

    onnx = require("onnx")
    h = onnx.helper
    graph = model.graph
    nodes = [graph.node[i] for i in seg.nodes]
    used = set()
    for node in nodes:
        used |= node_inputs(node)
    inits = [t for t in graph.initializer if t.name in used]
    sub = h.make_graph(nodes, f"segment_{seg.stop}",
                       [h.make_tensor_value_info(n, dtypes[n], None) for n in seg.inputs],
                       [onnx.ValueInfoProto(name=n) for n in seg.outputs],   # types: onnxruntime infers
                       inits)
    out = h.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out


def run_segments(model: "onnx.ModelProto", feeds: Sequence[dict[str, np.ndarray]], cuts: Sequence[int],
                 session: Callable[["onnx.ModelProto"], object],
                 budget_bytes: int = FRONTIER_BUDGET) -> Iterator[tuple[Segment, list[np.ndarray]]]:
    """Run ``model`` segment by segment over the batches ``feeds`` (graph input name -> array, one
    dict per batch); after each segment yields it and its target tensor, one array per batch still
    held. The caller may modify those arrays in place before the next segment reads them.
    ``session``: builds an onnxruntime session from a model."""
    onnx = require("onnx")
    segments = plan(model.graph, cuts)
    cache: list[dict[str, np.ndarray]] = [dict(f) for f in feeds]
    dtypes = {name: onnx.helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype) for f in feeds for name, x in f.items()}
    later = _read_after(model.graph, segments)
    for seg in segments:
        sess = session(_segment_model(model, seg, dtypes))
        total = 0
        for b, held in enumerate(cache):
            values = sess.run(list(seg.outputs), {n: held[n] for n in seg.inputs})
            for name, value in zip(seg.outputs, values):
                held[name] = value
                dtypes[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
            for name in [n for n in held if n not in later[seg.stop] and n != seg.target]:
                del held[name]
            total += sum(v.nbytes for v in held.values())
            if total > budget_bytes and b + 1 < len(cache):   # the rest of the samples stop here
                del cache[b + 1:]
                break
        yield seg, [held[seg.target] for held in cache]
        for held in cache:
            if seg.target not in later[seg.stop]:
                held.pop(seg.target, None)


def _read_after(graph: "onnx.GraphProto", segments: list[Segment]) -> dict[int, set[str]]:
    """For each cut, the names some node after it reads (the frontier to keep)."""
    from edgenet.converters.cleanup import node_inputs

    out, seen = {}, set()
    stops = {s.stop for s in segments}
    for i in range(len(graph.node) - 1, -1, -1):
        if i in stops:
            out[i] = set(seen)
        seen |= node_inputs(graph.node[i])
    return out
