"""ONNX -> float32 .tflite without TensorFlow: onnx_to_tf's walker and handlers, run on the recording
backend, then the TFLite rewrites and the flatbuffer writer.

    from edgenet.converters.tflite_writer import native_tflite
    graph = native_tflite(onnx_model)          # NotNative (a ConversionError naming the node) when a
                                               # node needs what TFLite's builtins cannot express here
    graph.model                                # .tflite bytes (serving_default signature)
    graph.onnx_node("conv_1_out")              # TFLite tensor name -> ONNX node
    graph.values["conv_1_out"]                 # ONNX value -> (TFLite tensor name, layout perm)

The walker (:class:`~edgenet.converters.onnx_to_tf.graph.GraphTracer`) decides the layouts, the constant
folding and the lowering of each node; its handlers call ``ctx.tf``, which here is the recording backend.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Collection

import numpy as np

from edgenet.converters.onnx_to_tf.values import TensorInfo
from edgenet.converters.tflite_writer.backend import Backend
from edgenet.converters.tflite_writer.fuse import optimize
from edgenet.converters.tflite_writer.serialize import serialize
from edgenet.converters.tflite_writer.tensors import NotNative, RTensor


@dataclass(frozen=True)
class NativeGraph:
    """A model converted by the native writer; the same ``inputs`` / ``outputs`` / ``op_counts`` as
    :class:`~edgenet.converters.onnx_to_tf.values.TFGraph` has, plus the float32 model itself."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    model: bytes  # float32 .tflite
    origins: dict[str, str] = field(default_factory=dict)  # tensor name or name scope -> ONNX node
    seconds: dict[str, float] = field(default_factory=dict)  # record / optimize / serialize
    # ONNX value (graph inputs and node outputs) -> (name of the model tensor holding it, perm: the tensor is
    # ``np.transpose(onnx_value, perm)``); values with no tensor of their own (folded to constants, fused
    # away: a conv's bias ADD, a fused RELU, a RESHAPE before FULLY_CONNECTED) are not listed
    values: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    # node outputs folded to constants at conversion time (ONNX layout, as the writer computed them), each of at
    # most CONSTANT_LIMIT elements: the divergence finder compares them too (a wrong fold is named where it is)
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def onnx_node(self, name: str) -> str | None:
        """The ONNX node that made the TFLite tensor ``name`` (an ONNX value name, or ``<scope>/<op>``
        for a tensor inside a node's lowering); None for graph inputs and constants of no node."""
        while name:
            hit = self.origins.get(name)
            if hit is not None:
                return hit
            if "/" not in name:
                return None
            name = name.rsplit("/", 1)[0]
        return None


def _name_tensors(tracer: Any, outputs: list[RTensor]) -> dict[str, str]:
    """Give each recorded tensor an ONNX value maps to that value's name (graph outputs first);
    returns tensor name -> ONNX node for them."""
    from edgenet.converters.onnx_to_tf.graph import node_label

    origins: dict[str, str] = {}
    producers = {o: node_label(n) for n in tracer.model.graph.node for o in n.output if o}
    claimed: set[int] = set()
    names = [vi.name for vi in tracer.model.graph.output]
    for t, name in zip(outputs, names):
        if id(t) not in claimed and (t.producer is not None or t.const is not None):
            t.name, claimed = name, claimed | {id(t)}
    for node in tracer.model.graph.node:
        for name in node.output:
            value = tracer.values.get(name)
            if value is None or value.is_const or not isinstance(value.tensor, RTensor):
                continue
            t = value.tensor
            if t.producer is not None and id(t) not in claimed:
                t.name = name
                claimed.add(id(t))
    for name, node in producers.items():
        origins[name] = node
    for scope, origin in tracer.scopes.items():
        origins.setdefault(scope, origin.name)
    return origins


CONSTANT_LIMIT = 1 << 20   # elements of a folded node output NativeGraph.constants keeps (larger: not kept)


def _folded_constants(tracer: Any) -> dict[str, np.ndarray]:
    """Node outputs the conversion folded to constants, in ONNX layout (see NativeGraph.constants)."""
    from edgenet.converters.onnx_to_tf.layout import invert

    found = {}
    for name in (o for n in tracer.model.graph.node for o in n.output if o):
        value = tracer.values.get(name)
        if value is None:
            continue
        if value.is_const:
            array = np.asarray(value.const)
        elif isinstance(value.tensor, RTensor) and value.tensor.const is not None:
            array = np.asarray(value.tensor.const)
            array = np.transpose(array, invert(value.perm)) if array.ndim == len(value.perm) else array
        else:
            continue
        if array.size <= CONSTANT_LIMIT:
            found[name] = array
    return found


def _kept_values(tracer: Any, ops: list, inputs: list[RTensor], outputs: list[RTensor]
                 ) -> dict[str, tuple[str, tuple[int, ...]]]:
    """ONNX value -> (tensor name, perm) for the values whose tensor the written model holds (call
    after :func:`serialize`, which settles the names)."""
    written = {id(t) for op in ops for t in (*op.inputs, *op.outputs) if t is not None}
    written.update(id(t) for t in (*inputs, *outputs))
    names = [p.name for p in tracer.inputs] + [o for n in tracer.model.graph.node for o in n.output if o]
    kept = {}
    for name in names:
        value = tracer.values.get(name)
        if value is None or value.is_const or not isinstance(value.tensor, RTensor):
            continue
        if id(value.tensor) in written and value.tensor.const is None:
            kept[name] = (value.tensor.name, tuple(value.perm))
    return kept


def _distinct_outputs(backend: Backend, outputs: list[RTensor], infos: list[TensorInfo]) -> list[RTensor]:
    """Each graph output its own tensor: an output that is a graph input (an Identity, a Transpose the
    layout absorbed) or another output again becomes a RESHAPE to its own shape; a constant output
    stays a constant tensor (as in TensorFlow's models). NotNative for an empty output (``infos``: the
    outputs' TensorInfo, for the message)."""
    seen: set[int] = set()
    result = []
    for t, info in zip(outputs, infos):
        if any(int(d) == 0 for d in t.shape_):
            raise NotNative(f"graph output {info.name!r} is empty (shape {tuple(info.onnx_shape)}): a TFLite model "
                            "cannot return a tensor of no elements")
        if t.const is not None and id(t) in seen:
            t = backend.rec.const(t.const.copy())
        elif t.producer is None and t.const is None or id(t) in seen:
            t = backend.rec.emit("RESHAPE", [t, backend._i32(t.shape_)], [(t.shape_, t.dtype_)],
                                 ("ReshapeOptions", {"newShape": list(t.shape_)}))[0]
        seen.add(id(t))
        result.append(t)
    return result


def _named(exc: NotNative, scopes: dict) -> NotNative:
    """``exc`` again, its message naming the ONNX node whose lowering raised it (from the recorder's
    scope: the node's own, or one inside it)."""
    scope, origin = exc.scope or "", None
    while scope and origin is None:
        origin = scopes.get(scope)
        scope = scope.rsplit("/", 1)[0] if "/" in scope else ""
    where = f"ONNX {origin.op_type} (node {origin.name!r})" if origin is not None else "the ONNX graph"
    named = NotNative(f"{where} cannot be written as TFLite builtin operators: {exc}")
    named.node, named.op_type, named.scope = (origin.name, origin.op_type, exc.scope) if origin else (None, None,
                                                                                                     exc.scope)
    return named


def native_tflite(model: Any, keep_layout: Collection[str] = (), batch_size: int | None = None,
                  unfused: Collection[str] = ()) -> NativeGraph:
    """Convert a static-shaped ONNX model to float32 .tflite bytes without TensorFlow. ``unfused``: TFLite
    ops not to fuse out of arithmetic, for a runtime without them (``TargetProfile.unfused_ops``).

    Raises NotNative (a ConversionError) naming the ONNX node when a node needs a function (or variant)
    the recording backend does not implement, or a shape is dynamic; UnsupportedOpError naming every
    node no handler converts (before anything is built); ModelError for a malformed graph."""
    from edgenet.converters.onnx_to_tf import graph as walker

    started = time.perf_counter()
    backend = Backend()
    tracer = walker.GraphTracer(model, batch_size, keep_layout, False, tf=backend)
    try:
        args = [backend.rec.placeholder(p.spec.shape, p.spec.dtype.np, p.spec.name) for p in tracer.inputs]
        outputs = tracer.trace(*args)
        outputs = _distinct_outputs(backend, [backend._t(o) for o in outputs], tracer.output_infos)
    except NotNative as exc:
        raise _named(exc, tracer.scopes) from exc
    origins = _name_tensors(tracer, outputs)
    recorded = time.perf_counter()
    ops = optimize(backend.rec.ops, outputs, backend.rec, unfused)
    optimized = time.perf_counter()
    data = serialize(ops, args, outputs)
    done = time.perf_counter()
    return NativeGraph(tuple(p.info for p in tracer.inputs), tuple(tracer.output_infos), dict(tracer.op_counts),
                       data, origins, {"record": recorded - started, "optimize": optimized - recorded,
                                       "serialize": done - optimized}, _kept_values(tracer, ops, args, outputs),
                       _folded_constants(tracer))
