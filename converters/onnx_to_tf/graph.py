"""The walker: checks every node, then traces the ONNX graph node by node through a ``tf``-like backend.

The backend is the TFLite writer's recorder (:class:`edgenet.converters.tflite_writer.backend.Backend`:
each call records TFLite builtin operators); the handlers call it as ``ctx.tf`` with TensorFlow's
function names, which is where the package's name comes from (TensorFlow itself is not used).
Every ONNX value becomes a :class:`Value`: a tensor plus the layout it is held in (rank-4
activations are channels-last), or a numpy constant. Nodes whose inputs are all constant are folded
with onnx's reference evaluator (Shape of a tensor with a static shape is a constant too, so
Shape -> Gather -> Range/ConstantOfShape/Reshape chains fold); the others go to their registered
handler, inside a name scope named after the node (see :mod:`~edgenet.converters.onnx_to_tf.scopes`).
Transposes happen only where a handler asks for a layout a value does not have yet.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Collection

import numpy as np

from edgenet.converters.onnx_to_tf import fusion, layout
from edgenet.converters.onnx_to_tf.context import ConversionState, NodeContext
from edgenet.converters.onnx_to_tf.inputs import (check_keep_layout, nhwc_outputs_in_onnx, plan_inputs, tf_name)
from edgenet.converters.onnx_to_tf.registry import get_handler, unsupported_error
from edgenet.converters.onnx_to_tf.scopes import NodeOrigin, scope_name
from edgenet.converters.onnx_to_tf.values import TensorInfo, Value
from edgenet._deps import require
from edgenet.errors import ConversionError, EdgenetError, ModelError, UnsupportedOpError, UsageError

MIN_OPSET = 1
_DEFAULT_DOMAINS = ("", "ai.onnx")
# ops whose output is a constant as soon as the input's shape is static, whatever its values
_SHAPE_ONLY = ("Shape", "Size")
# before opset 7, these broadcast by an ``axis`` attribute (not numpy's rule)
_LEGACY_BROADCAST = frozenset("Add Sub Mul Div Pow And Or Xor Equal Greater Less".split())


def default_opset(model: Any) -> int:
    """The default-domain opset the model was exported with."""
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    raise ModelError("ONNX model declares no default-domain opset (opset_import)")


def node_label(node: Any) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def check_nodes(model: Any, opset: int, fused: Collection[int] = ()) -> None:
    """Find every node the converter cannot handle and raise one UnsupportedOpError naming them all.
    ``fused`` holds indices of nodes converted as part of a multi-node pattern."""
    graph = model.graph
    const_names = {init.name for init in graph.initializer}
    problems: list[str] = []
    for index, node in enumerate(graph.node):
        if index in fused:
            continue
        name = node_label(node)
        inputs = [i for i in node.input if i]
        foldable = node.domain in _DEFAULT_DOMAINS and (
            node.op_type == "Constant" or (inputs and all(i in const_names for i in inputs)))
        if foldable:
            const_names.update(o for o in node.output if o)
            continue
        op_handler = get_handler(node.op_type) if node.domain in _DEFAULT_DOMAINS else None
        if op_handler is None:
            op = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
            problems.append(f"unsupported ONNX op {op!r} (node {name!r})")
            continue
        if opset < 7 and node.op_type in _LEGACY_BROADCAST and any(a.name == "axis" for a in node.attribute):
            problems.append(f"unsupported ONNX {node.op_type} (node {name!r}): opset-{opset} broadcasting along "
                            "an axis attribute")
        elif op_handler.check is not None:
            reason = op_handler.check(node, opset)
            if reason:
                problems.append(f"unsupported ONNX {node.op_type} (node {name!r}): {reason}")
        if node.op_type in _SHAPE_ONLY:  # constants (static shapes; see shape_ops)
            const_names.update(o for o in node.output if o)
    if problems:
        raise unsupported_error(problems)


def _fold(onnx: Any, node: Any, opset: int, arrays: list[np.ndarray | None]) -> list[np.ndarray]:
    """Evaluate one node on constant inputs with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    helper = onnx.helper
    feeds = {n: a for n, a in zip(node.input, arrays) if n}
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in feeds.items()]
    outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = helper.make_graph([node], "fold", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, feeds)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class GraphTracer:
    """One ONNX model, ready to be traced through a backend (see the module docstring)."""

    def __init__(self, model: Any, batch_size: int | None, keep_layout: Collection[str], dynamic_batch: bool,
                 tf: Any):
        """``tf``: what the handlers call as ``ctx.tf``: the TFLite writer's recording backend
        (:class:`edgenet.converters.tflite_writer.backend.Backend`)."""
        self.onnx = require("onnx", purpose="ONNX to TFLite conversion")
        self.tf = tf
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise UsageError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.model = model
        self.opset = opset = default_opset(model)
        if opset < MIN_OPSET:
            raise UnsupportedOpError(f"ONNX opset {opset} is not supported (need {MIN_OPSET} or newer)")
        self.fusions = fusion.find_fusions(model)
        self.fused_at = {f.nodes[-1]: f for f in self.fusions}
        self.absorbed = {i for f in self.fusions for i in f.nodes}
        check_nodes(model, opset, self.absorbed)
        graph = model.graph
        self.initializers = {init.name: self.onnx.numpy_helper.to_array(init) for init in graph.initializer}
        self.keep = check_keep_layout(model, keep_layout, self.initializers)
        self.inputs = plan_inputs(self.onnx, tf, model, self.initializers, batch_size, dynamic_batch, self.keep)
        self.kept_outputs = nhwc_outputs_in_onnx(model) | self.keep
        self.readers = Counter(name for node in graph.node for name in node.input if name)
        self.readers.update(o.name for o in graph.output)
        self.op_counts: Counter[str] = Counter()
        self.output_infos: list[TensorInfo] = []
        self.scopes: dict[str, NodeOrigin] = {}
        self.origins: dict[str, NodeOrigin] = {}  # ONNX node label -> origin (fused nodes: the fused op)
        self.values: dict[str, Value] = {}  # of the last trace

    # ---- tracing ------------------------------------------------------------------------------
    def trace(self, *args: Any) -> list[Any]:
        """The graph outputs (backend layout of each output's TensorInfo)."""
        tf = self.tf
        state = ConversionState(tf, self.onnx, self.opset, dynamic=any(
            p.info.tf_shape and p.info.tf_shape[0] is None for p in self.inputs))
        state.readers = self.readers
        for name, array in self.initializers.items():
            state.values[name] = Value.constant(array)
        for plan, arg in zip(self.inputs, args):
            state.values[plan.name] = Value(arg, plan.perm)
        self.op_counts.clear()
        self.scopes.clear()
        self.origins.clear()
        for index, node in enumerate(self.model.graph.node):
            if index in self.absorbed and index not in self.fused_at:
                continue
            self._convert(index, node, state)
        self.output_infos.clear()
        outputs = [self._graph_output(state, vi.name, k) for k, vi in enumerate(self.model.graph.output)]
        self.values = state.values
        return outputs

    def _graph_output(self, state: ConversionState, name: str, index: int) -> Any:
        """The backend tensor of one graph output (rank 4: NHWC unless kept); appends its TensorInfo."""
        tf = self.tf
        if name not in state.values:
            raise ModelError(f"ONNX output {name!r} is produced by no node")
        value = state.values[name]
        perm = layout.NHWC if value.rank == 4 and name not in self.kept_outputs else layout.identity(value.rank)
        tensor = tf.identity(state.in_layout(value, perm), name=tf_name(name, f"output_{index}"))
        tf_shape = tuple(tensor.shape.as_list())
        onnx_shape = layout.onnx_shape_of(tf_shape, perm)
        self.output_infos.append(TensorInfo(name, tuple(-1 if d is None else d for d in onnx_shape), tf_shape,
                                            np.dtype(tensor.dtype.as_numpy_dtype).name, perm == layout.NHWC))
        return tensor

    def _convert(self, index: int, node: Any, state: ConversionState) -> None:
        onnx, tf = self.onnx, self.tf
        name = node_label(node)
        fused = self.fused_at.get(index)
        if fused is not None:
            with tf.name_scope(scope_name(node)) as scope:
                self.scopes[scope.rstrip("/")] = self.origins[name] = NodeOrigin(name, fused.op_type)
                x = state.values[fused.input]
                t = state.in_layout(x, x.perm)
                state.values[fused.output] = Value(tf.nn.gelu(t, approximate=False), x.perm)
            self.op_counts[fused.op_type] += 1
            return
        inputs: list[Value | None] = []
        for i in node.input:
            if not i:
                inputs.append(None)
            elif i not in state.values:
                raise ModelError(f"ONNX node {name!r} reads {i!r}, which no earlier node produces "
                                 "(graph not topologically sorted?)")
            else:
                inputs.append(state.values[i])
        present = [v for v in inputs if v is not None]
        op_handler = get_handler(node.op_type)
        self.op_counts[node.op_type] += 1
        if node.op_type == "Constant" or (present and all(v.is_const for v in present)):
            try:
                arrays = _fold(onnx, node, self.opset, [v.const if v is not None else None for v in inputs])
            except Exception as exc:  # the reference evaluator cannot do it: let the handler build it
                if op_handler is None:
                    raise UnsupportedOpError(f"cannot evaluate constant ONNX {node.op_type} (node {name!r}): "
                                             f"{_first_line(exc)}") from exc
            else:
                for out_name, array in zip(node.output, arrays):
                    if out_name:
                        state.values[out_name] = Value.constant(array)
                return
        if op_handler is None:  # pragma: no cover - check_nodes guarantees a handler
            raise unsupported_error([f"unsupported ONNX op {node.op_type!r} (node {name!r})"])
        with tf.name_scope(scope_name(node)) as scope:
            self.scopes[scope.rstrip("/")] = NodeOrigin(name, node.op_type)
            try:
                outputs = op_handler.convert(NodeContext(node, state))
            except EdgenetError:
                raise
            except Exception as exc:  # a malformed node, or the backend rejecting what the handler built
                raise ConversionError(f"converting ONNX {node.op_type} (node {name!r}) failed: "
                                      f"{_first_line(exc)}") from exc
        for out_name, value in zip(node.output, outputs):
            if out_name:
                state.values[out_name] = value
