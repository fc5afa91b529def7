"""The walker: checks every node, then traces the ONNX graph node by node into one tf.function.

Every ONNX value becomes a :class:`Value`: a TF tensor plus the layout it is held in (rank-4
activations are channels-last), or a numpy constant. Nodes whose inputs are all constant are folded
with onnx's reference evaluator; the others go to their registered handler. Transposes happen only
where a handler asks for a layout a value does not have yet.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.onnx_to_tf import layout
from converters.onnx_to_tf.context import ConversionState, NodeContext
from converters.onnx_to_tf.registry import get_handler, node_attrs, unsupported_error
from converters.onnx_to_tf.values import TensorInfo, TFGraph, Value
from edgenet._deps import import_tensorflow, require
from edgenet.errors import ConversionError, EdgenetError, ModelError, UnsupportedOpError, UsageError

MIN_OPSET = 9
_DEFAULT_DOMAINS = ("", "ai.onnx")
_NHWC_TO_NCHW = [0, 3, 1, 2]  # the Transpose perm that makes NHWC data NCHW


def default_opset(model: Any) -> int:
    """The default-domain opset the model was exported with."""
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    raise ModelError("ONNX model declares no default-domain opset (opset_import)")


def check_nodes(model: Any, opset: int) -> None:
    """Find every node the converter cannot handle and raise one UnsupportedOpError naming them all."""
    graph = model.graph
    const_names = {init.name for init in graph.initializer}
    problems: list[str] = []
    for node in graph.node:
        name = node.name or (node.output[0] if node.output else "?")
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
        if op_handler.check is not None:
            reason = op_handler.check(node, opset)
            if reason:
                problems.append(f"unsupported ONNX {node.op_type} (node {name!r}): {reason}")
        if node.op_type == "Shape":  # always a constant (static shapes; see shape_ops.shape)
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


def _tf_name(name: str, fallback: str) -> str:
    """A valid TF op name from an ONNX value name."""
    clean = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).lstrip("_-/") or fallback
    return clean if re.match(r"[A-Za-z0-9.]", clean) else f"t{clean}"


def _static_dims(value_info: Any, role: str) -> list[int | str | None]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        raise ModelError(f"ONNX {role} {value_info.name!r} has no shape; export with a static input size")
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in t.shape.dim]


def _kept_nhwc_inputs(model: Any) -> set[str]:
    """Rank-4 inputs whose every consumer is Transpose(0, 3, 1, 2): NHWC data already, kept as is
    (the transpose then costs nothing)."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return {vi.name for vi in model.graph.input if consumers.get(vi.name) and all(
        n.op_type == "Transpose" and list(node_attrs(n).get("perm", [])) == _NHWC_TO_NCHW
        for n in consumers[vi.name])}


def _kept_nhwc_outputs(model: Any) -> set[str]:
    """Outputs the graph itself transposes to channels-last (Transpose(0, 2, 3, 1)): NHWC data already,
    they come out as they are."""
    outputs = {o.name for o in model.graph.output}
    return {n.output[0] for n in model.graph.node
            if n.op_type == "Transpose" and n.output and n.output[0] in outputs
            and tuple(node_attrs(n).get("perm", ())) == layout.NHWC}


@dataclass(frozen=True)
class _InputPlan:
    name: str
    perm: tuple[int, ...]
    spec: Any  # tf.TensorSpec
    info: TensorInfo


def _plan_inputs(onnx: Any, tf: Any, model: Any, initializers: dict, batch_size: int | None
                 ) -> tuple[list[_InputPlan], int]:
    """TF input specs (rank-4 -> NHWC, batch dim set) and the batch the model was exported with."""
    kept = _kept_nhwc_inputs(model)
    plans, model_batch = [], 1
    for vi in (i for i in model.graph.input if i.name not in initializers):
        dims = _static_dims(vi, "input")
        for axis, d in enumerate(dims):
            if not isinstance(d, int) and not (axis == 0 and len(dims) >= 2):
                raise ModelError(f"ONNX input {vi.name!r} has a dynamic dimension {axis} ({d or '?'}); "
                                 "export the model with a static input size")
        if len(dims) >= 2:
            if isinstance(dims[0], int):
                model_batch = dims[0]
            dims[0] = batch_size
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"ONNX input {vi.name!r} has no usable element type") from exc
        perm = layout.NHWC if len(dims) == 4 and vi.name not in kept else layout.identity(len(dims))
        tf_shape = layout.permute_shape(dims, perm)
        spec = tf.TensorSpec(tf_shape, tf.as_dtype(dtype), name=_tf_name(vi.name, "input"))
        info = TensorInfo(vi.name, tuple(-1 if d is None else d for d in dims), tuple(tf_shape), dtype.name,
                          perm == layout.NHWC)
        plans.append(_InputPlan(vi.name, perm, spec, info))
    return plans, model_batch


def onnx_to_tf(model: Any, batch_size: int | None = 1) -> TFGraph:
    """Convert an ONNX model to a channels-last TensorFlow concrete function.

    Rank-4 inputs and outputs are NHWC in TF (see ``TensorInfo.channels_last``), except inputs and
    outputs the graph itself transposes from/to NHWC, which are kept as they are. ``batch_size`` sets
    dim 0 of every input of rank >= 2; None makes it dynamic. Raises UnsupportedOpError naming every
    unsupported node before building anything.
    """
    onnx = require("onnx", purpose="ONNX to TensorFlow conversion")
    tf = import_tensorflow(purpose="ONNX to TensorFlow conversion")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be >= 1 or None, got {batch_size}")
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise UnsupportedOpError(f"ONNX opset {opset} is not supported (need {MIN_OPSET} or newer)")
    check_nodes(model, opset)

    graph = model.graph
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    inputs, model_batch = _plan_inputs(onnx, tf, model, initializers, batch_size)
    kept_outputs = _kept_nhwc_outputs(model)
    op_counts: Counter[str] = Counter()
    output_infos: list[TensorInfo] = []
    readers = Counter(name for node in graph.node for name in node.input if name)
    readers.update(o.name for o in graph.output)

    def trace(*args: Any) -> list[Any]:
        state = ConversionState(tf, onnx, opset, batch_size, model_batch)
        state.readers = readers
        for name, array in initializers.items():
            state.values[name] = Value.constant(array)
        for plan, arg in zip(inputs, args):
            state.values[plan.name] = Value(arg, plan.perm)
        op_counts.clear()
        for node in graph.node:
            _convert_node(node, state, onnx, opset)
            op_counts[node.op_type] += 1
        output_infos.clear()
        return [_graph_output(state, vi.name, index, vi.name in kept_outputs, output_infos)
                for index, vi in enumerate(graph.output)]

    function = tf.function(trace, input_signature=[p.spec for p in inputs], autograph=False)
    try:
        concrete = function.get_concrete_function()
    except EdgenetError:
        raise
    except (ValueError, TypeError, tf.errors.OpError) as exc:  # e.g. TF rejecting an output
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"ONNX to TensorFlow conversion failed: {first}") from exc
    module = tf.Module()
    module.function = function
    return TFGraph(concrete, module, tuple(p.info for p in inputs), tuple(output_infos), dict(op_counts))


def _graph_output(state: ConversionState, name: str, index: int, keep_layout: bool,
                  infos: list[TensorInfo]) -> Any:
    """The TF tensor of one graph output (rank 4: NHWC unless ``keep_layout``); appends its TensorInfo."""
    tf = state.tf
    if name not in state.values:
        raise ModelError(f"ONNX output {name!r} is produced by no node")
    value = state.values[name]
    perm = layout.NHWC if value.rank == 4 and not keep_layout else layout.identity(value.rank)
    tensor = tf.identity(state.in_layout(value, perm), name=_tf_name(name, f"output_{index}"))
    tf_shape = tuple(tensor.shape.as_list())
    onnx_shape = layout.onnx_shape_of(tf_shape, perm)
    infos.append(TensorInfo(name, tuple(-1 if d is None else d for d in onnx_shape), tf_shape,
                            np.dtype(tensor.dtype.as_numpy_dtype).name, perm == layout.NHWC))
    return tensor


def _convert_node(node: Any, state: ConversionState, onnx: Any, opset: int) -> None:
    name = node.name or (node.output[0] if node.output else node.op_type)
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
    if node.op_type == "Constant" or (present and all(v.is_const for v in present)):
        try:
            arrays = _fold(onnx, node, opset, [v.const if v is not None else None for v in inputs])
        except Exception as exc:  # the reference evaluator cannot do it: let the handler build it
            if op_handler is None:
                raise UnsupportedOpError(f"cannot evaluate constant ONNX {node.op_type} (node {name!r}): "
                                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        else:
            for out_name, array in zip(node.output, arrays):
                if out_name:
                    state.values[out_name] = Value.constant(array)
            return
    if op_handler is None:  # pragma: no cover - check_nodes guarantees a handler
        raise unsupported_error([f"unsupported ONNX op {node.op_type!r} (node {name!r})"])
    try:
        outputs = op_handler.convert(NodeContext(node, state))
    except EdgenetError:
        raise
    except Exception as exc:  # a malformed node, or a TF op rejecting what the handler built
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"converting ONNX {node.op_type} (node {name!r}) failed: {first}") from exc
    for out_name, value in zip(node.output, outputs):
        if out_name:
            state.values[out_name] = value
