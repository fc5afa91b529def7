"""Graph cleanup before conversion: constants in, constant subgraphs folded, no-op nodes out.

:func:`cleanup` returns a new model in which

1. graph inputs that also have an initializer (every weight was a graph input before IR version 4)
   are plain constants (the IR version is raised to 4 if it was lower, so this is legal);
2. every node whose inputs are all constants -- initializers, ``Constant`` nodes, or ``Shape`` /
   ``Size`` of a tensor whose shape is static after ``onnx.shape_inference`` -- is evaluated with
   ``onnx.reference`` and replaced by an initializer (repeated until nothing changes);
3. ``Identity`` and inference ``Dropout`` nodes are gone, their consumers rewired; a graph output
   keeps its name (the producer's output is renamed instead);
4. nodes and initializers that no graph output depends on are removed, and an optional output nothing
   reads is left unnamed (MaxPool's Indices);
5. ``value_info`` holds the shapes inferred for the cleaned graph.

The helpers at the bottom (constant lookup, consumer counts, fresh names) are shared with
:mod:`edgenet.converters.bn_fold`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from edgenet._deps import require
from edgenet.errors import ConversionError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

# Ops whose value is not a function of their inputs: never folded.
_NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
     "Bernoulli"}
)
_MAX_FOLD_ROUNDS = 8


@dataclass(frozen=True)
class CleanupStats:
    """What :func:`cleanup` changed.

    ``constants_folded``: nodes (``Constant`` nodes included) replaced by initializers;
    ``nodes_removed``: Identity/Dropout nodes bypassed plus dead nodes deleted;
    ``initializer_inputs_dropped``: graph inputs removed because an initializer provides them.
    """

    constants_folded: int
    nodes_removed: int
    initializer_inputs_dropped: int
    split_pieces_read: int = 0     # Split / Slice outputs now reading a Concat's piece (split_concat.py)


def cleanup(model: "onnx.ModelProto") -> tuple["onnx.ModelProto", CleanupStats]:
    """Return a cleaned copy of ``model`` (the input is not modified) and what was changed."""
    onnx = require("onnx")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph

    dropped = _drop_initializer_inputs(out)
    folded = 0
    for _ in range(_MAX_FOLD_ROUNDS):
        n = _fold_constants(out)
        folded += n
        if n == 0:
            break
    from edgenet.converters.split_concat import bypass_split_of_concat, splits_concat

    pieces = bypass_split_of_concat(graph, _static_shapes(out)) if splits_concat(graph) else 0
    bypassed = _remove_noop_nodes(graph)
    dead = _remove_dead_nodes(graph)

    del graph.value_info[:]
    out = with_inferred_shapes(out)
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"cleanup produced an invalid ONNX graph: {_first_line(exc)}") from exc
    return out, CleanupStats(
        constants_folded=folded, nodes_removed=bypassed + dead, initializer_inputs_dropped=dropped,
        split_pieces_read=pieces)


# --------------------------------------------------------------------------------------------
# the passes (each mutates the copy it is given)


def _drop_initializer_inputs(model: "onnx.ModelProto") -> int:
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    keep = [vi for vi in graph.input if vi.name not in init_names]
    dropped = len(graph.input) - len(keep)
    if dropped:
        del graph.input[:]
        graph.input.extend(keep)
    # IR < 4 requires every initializer to be a graph input; from 4 on they are plain constants.
    if model.ir_version < 4:
        model.ir_version = 4
    return dropped


def _fold_constants(model: "onnx.ModelProto") -> int:
    """One sweep in topological order; returns the number of nodes turned into initializers."""
    from onnx import numpy_helper

    graph = model.graph
    opsets = {o.domain or "": o.version for o in model.opset_import}
    consts = constant_values(graph, include_constant_nodes=False)
    static_shapes = _static_shapes(model)
    output_names = {o.name for o in graph.output}

    kept, folded = [], 0
    for node in graph.node:
        values = _try_evaluate(node, consts, static_shapes, opsets, output_names)
        if values is None:
            kept.append(node)
            continue
        for name, value in values.items():
            consts[name] = value
            graph.initializer.append(numpy_helper.from_array(value, name))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
    return folded


def _try_evaluate(
    node: "onnx.NodeProto",
    consts: dict[str, np.ndarray],
    static_shapes: dict[str, tuple[int, ...]],
    opsets: dict[str, int],
    output_names: set[str],
) -> dict[str, np.ndarray] | None:
    """Values of ``node``'s outputs if they are constant, else None."""
    from onnx import numpy_helper

    if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC:
        return None
    if any(a.type in (5, 10) for a in node.attribute):  # GRAPH / GRAPHS: If, Loop, Scan
        return None
    if any(o in output_names for o in node.output):
        return None  # a graph output must stay produced by a node
    outputs = [o for o in node.output if o]
    if not outputs:
        return None

    if node.op_type in ("Shape", "Size") and node.input and node.input[0] in static_shapes:
        shape = static_shapes[node.input[0]]
        if node.op_type == "Size":
            return {outputs[0]: np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)}
        attrs = {a.name: a.i for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return {outputs[0]: np.array(shape[start:end], dtype=np.int64)}

    if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
        return {outputs[0]: numpy_helper.to_array(node.attribute[0].t)}

    inputs = [i for i in node.input if i]
    if node.op_type != "Constant" and not inputs:
        return None
    if not all(i in consts for i in inputs):
        return None
    reference = require("onnx.reference")
    try:
        evaluator = reference.ReferenceEvaluator(node, opsets=opsets)
        results = evaluator.run(None, {i: consts[i] for i in inputs})
    except Exception:  # an op the reference runtime lacks: leave the node for the converter
        return None
    values = {}
    for name, value in zip(node.output, results):
        if not name:
            continue
        if not isinstance(value, np.ndarray):
            if np.isscalar(value):
                value = np.asarray(value)
            else:  # sequences, maps, optionals
                return None
        values[name] = value
    return values


def _remove_noop_nodes(graph: "onnx.GraphProto") -> int:
    """Bypass Identity and inference Dropout nodes; returns how many were removed."""
    consts = constant_values(graph)
    graph_inputs = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    output_names = {o.name for o in graph.output}
    removed = 0
    i = 0
    while i < len(graph.node):
        node = graph.node[i]
        if not _is_noop(node, graph, consts):
            i += 1
            continue
        src, dst = node.input[0], node.output[0]
        if dst not in output_names:
            del graph.node[i]
            rename_uses(graph, dst, src)
            removed += 1
            continue
        producer = _producer_index(graph, src)
        if src in graph_inputs or src in output_names or producer is None:
            i += 1  # e.g. input -> Identity -> output: the Identity is the whole point
            continue
        del graph.node[i]
        prod = graph.node[producer if producer < i else producer - 1]
        for k, name in enumerate(prod.output):
            if name == src:
                prod.output[k] = dst
        rename_uses(graph, src, dst)
        removed += 1
    return removed


def _is_noop(node: "onnx.NodeProto", graph: "onnx.GraphProto", consts: dict) -> bool:
    if node.domain not in ("", "ai.onnx") or not node.input or not node.input[0]:
        return False
    if node.op_type == "Identity":
        return True
    if node.op_type != "Dropout":
        return False
    # the mask output, if anyone reads it, is not a no-op
    if len(node.output) > 1 and node.output[1] and consumer_count(graph, node.output[1]) > 0:
        return False
    if len(node.input) >= 3 and node.input[2]:  # training_mode input (opset 12+)
        mode = consts.get(node.input[2])
        return mode is not None and not bool(np.asarray(mode).item())
    return True


_OPTIONAL_OUTPUTS = {"MaxPool": (1,)}   # outputs a node may leave unnamed (the ONNX spec's optional ones)


def _remove_dead_nodes(graph: "onnx.GraphProto") -> int:
    """Drop nodes and initializers no graph output depends on; returns the nodes removed."""
    needed = {o.name for o in graph.output}
    keep_flags = []
    for node in reversed(graph.node):
        live = any(o in needed for o in node.output if o)
        for k in _OPTIONAL_OUTPUTS.get(node.op_type, ()):
            if live and k < len(node.output) and node.output[k] and node.output[k] not in needed:
                node.output[k] = ""        # an optional output nothing reads (MaxPool's Indices)
        keep_flags.append(live)
        if live:
            needed.update(node_inputs(node))
    keep_flags.reverse()
    kept = [n for n, k in zip(graph.node, keep_flags) if k]
    removed = len(graph.node) - len(kept)
    if removed:
        del graph.node[:]
        graph.node.extend(kept)
    inits = [t for t in graph.initializer if t.name in needed]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)
    return removed


# --------------------------------------------------------------------------------------------
# shared graph helpers


def constant_values(
    graph: "onnx.GraphProto", include_constant_nodes: bool = True
) -> dict[str, np.ndarray]:
    """Initializers (and, optionally, plain ``Constant(value=...)`` node outputs) as arrays."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    if include_constant_nodes:
        for node in graph.node:
            if (
                node.op_type == "Constant"
                and node.domain in ("", "ai.onnx")
                and len(node.attribute) == 1
                and node.attribute[0].name == "value"
            ):
                values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def node_inputs(node: "onnx.NodeProto") -> set[str]:
    """Names ``node`` reads: its inputs plus names its subgraphs (If/Loop/Scan bodies) use."""
    names = {i for i in node.input if i}
    for sub in _subgraphs(node):
        for inner in sub.node:
            names.update(node_inputs(inner))
    return names


def consumer_count(graph: "onnx.GraphProto", name: str) -> int:
    """How many nodes read ``name`` (graph outputs count as one reader each)."""
    count = sum(1 for node in graph.node if name in node_inputs(node))
    return count + sum(1 for o in graph.output if o.name == name)


def rename_uses(graph: "onnx.GraphProto", old: str, new: str) -> None:
    """Make every reader of ``old`` (nodes, subgraph nodes, graph outputs) read ``new``."""
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for sub in _subgraphs(node):
            rename_uses(sub, old, new)
    for out in graph.output:
        if out.name == old:
            out.name = new


def unique_name(graph: "onnx.GraphProto", base: str, taken: set[str] | None = None) -> str:
    """A tensor name not used in ``graph`` (nor in ``taken``), derived from ``base``."""
    used = taken if taken is not None else set()
    existing = _all_names(graph)
    name, k = base, 1
    while name in existing or name in used:
        name = f"{base}_{k}"
        k += 1
    used.add(name)
    return name


def name_allocator(graph: "onnx.GraphProto"):
    """A function ``base -> name`` giving names no value of ``graph`` (as it is now: node outputs,
    inputs, initializers) has, nor each other: for a pass that adds many nodes (the graph is read
    once). value_info is not read: a quantized file's value_info keeps its float graph's names,
    which the rewrite of it gives back to the values they named."""
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | \
        {t.name for t in graph.initializer}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    return fresh


def _all_names(graph: "onnx.GraphProto") -> set[str]:
    names = {t.name for t in graph.initializer} | {vi.name for vi in graph.input}
    names |= {vi.name for vi in graph.output} | {vi.name for vi in graph.value_info}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _subgraphs(node: "onnx.NodeProto") -> Iterator["onnx.GraphProto"]:
    for attr in node.attribute:
        if attr.type == 5:  # GRAPH
            yield attr.g
        elif attr.type == 10:  # GRAPHS
            yield from attr.graphs


def _producer_index(graph: "onnx.GraphProto", name: str) -> int | None:
    for k, node in enumerate(graph.node):
        if name in node.output:
            return k
    return None


def _static_shapes(model: "onnx.ModelProto") -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, for every tensor whose shape inference gives all dims as numbers."""
    inferred = with_inferred_shapes(model)
    return dict(_iter_static_shapes(inferred.graph))


def _iter_static_shapes(graph: "onnx.GraphProto") -> Iterable[tuple[str, tuple[int, ...]]]:
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        dims = tt.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            yield vi.name, tuple(int(d.dim_value) for d in dims)
    for t in graph.initializer:  # initializers have known shapes too
        yield t.name, tuple(int(d) for d in t.dims)


def with_inferred_shapes(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """``model`` with value_info from shape inference (the model itself if inference fails)."""
    onnx = require("onnx")
    try:
        return onnx.shape_inference.infer_shapes(
            model, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception:  # shape inference is best effort; unknown shapes just fold less
        return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
