"""Which ops of an int8 model the Edge TPU compiler would map, and where the graph falls back.

The table below restates, as data, the operators and limitations Coral documents for the Edge
TPU ("TensorFlow models on the Edge TPU", supported operations), plus the general requirements:
8-bit quantized tensors, sizes fixed at compile time, constant parameters, and tensors of at most
rank 4 where only the innermost three dimensions may be larger than 1 (so batch 1).

The compiler maps ops into one Edge TPU segment in graph order and stops at the first op it
cannot map: that op and everything after it run on the CPU, even ops the TPU supports. A float
QUANTIZE right at the model input is the exception: it stays on the CPU in front of the segment.
When ``edgetpu_compiler`` is on PATH its own verdict is added (``edgenet.targets.edgetpu_compiler``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgenet.targets.tflite_graph import OpInfo, TfliteGraph, read_tflite

SOFTMAX_MAX_ELEMENTS = 16000
_QUANTIZED = ("int8", "uint8")
_CONSTANT_OK = ("int8", "uint8", "int32")  # weights, biases (int32), axes/shapes (int32)


def _effective_rank(shape: tuple[int, ...]) -> int:
    return sum(1 for d in shape if d > 1)


def _axes(graph: TfliteGraph, op: OpInfo, input_pos: int) -> np.ndarray | None:
    if len(op.inputs) <= input_pos or op.inputs[input_pos] < 0:
        return None
    values = graph.constants.get(op.inputs[input_pos])
    return None if values is None else np.atleast_1d(values).astype(int)


def _rank_of_first_input(graph: TfliteGraph, op: OpInfo) -> int:
    return len(graph.tensor(op.inputs[0]).shape)


def _no_fused_activation(graph: TfliteGraph, op: OpInfo) -> str | None:
    if op.options.get("fused_activation", 0) != 0:
        return "has a fused activation function"
    return None


def _same_dilation(graph: TfliteGraph, op: OpInfo) -> str | None:
    if op.options.get("dilation_h", 1) != op.options.get("dilation_w", 1):
        return "dilation differs between x and y"
    return None


def _fully_connected(graph: TfliteGraph, op: OpInfo) -> str | None:
    if op.options.get("weights_format", 0) != 0:
        return "weights are not in the default format"
    if _effective_rank(graph.tensor(op.outputs[0]).shape) > 1:
        return "output is not one-dimensional"
    return None


def _reduce_not_batch(graph: TfliteGraph, op: OpInfo) -> str | None:
    axes = _axes(graph, op, 1)
    if axes is None:
        return "reduction axes are not constant"
    rank = _rank_of_first_input(graph, op)
    if 0 in {int(a) % rank for a in axes} and rank > 1:
        return "reduces over the batch dimension"
    return None


def _mean(graph: TfliteGraph, op: OpInfo) -> str | None:
    problem = _reduce_not_batch(graph, op)
    if problem:
        return problem
    shape = graph.tensor(op.inputs[0]).shape
    axes = {int(a) % len(shape) for a in _axes(graph, op, 1)}
    if len(shape) > 1 and len(shape) - 1 in axes and shape[-1] % 4:
        return f"reduces over channels ({shape[-1]}) that are not a multiple of 4"
    return None


def _pad(graph: TfliteGraph, op: OpInfo) -> str | None:
    pads = _axes(graph, op, 1)
    if pads is None:
        return "paddings are not constant"
    if pads.size >= 2 and _rank_of_first_input(graph, op) == 4 and np.any(pads.reshape(-1, 2)[0] != 0):
        return "pads the batch dimension"
    return None


def _pack(graph: TfliteGraph, op: OpInfo) -> str | None:
    return "packs along the batch dimension" if op.options.get("axis", 0) == 0 else None


def _split(graph: TfliteGraph, op: OpInfo) -> str | None:
    axis = _axes(graph, op, 0)
    if axis is None:
        return "split axis is not constant"
    rank = len(graph.tensor(op.inputs[1]).shape)
    return "splits along the batch dimension" if rank > 1 and int(axis[0]) % rank == 0 else None


def _softmax(graph: TfliteGraph, op: OpInfo) -> str | None:
    t = graph.tensor(op.inputs[0])
    if _effective_rank(t.shape) > 1:
        return "input is not one-dimensional"
    if t.num_elements > SOFTMAX_MAX_ELEMENTS:
        return f"input has {t.num_elements} elements (max {SOFTMAX_MAX_ELEMENTS})"
    return None


def _strided_slice(graph: TfliteGraph, op: OpInfo) -> str | None:
    strides = _axes(graph, op, 3)
    if strides is None or np.any(strides != 1):
        return "strides are not all 1"
    if op.options.get("ellipsis_mask", 0) or op.options.get("new_axis_mask", 0):
        return "uses an ellipsis or new-axis mask"
    return None


def _concatenation(graph: TfliteGraph, op: OpInfo) -> str | None:
    problem = _no_fused_activation(graph, op)
    if problem:
        return problem
    constant = [i for i in op.inputs if i >= 0 and graph.tensor(i).is_constant]
    if constant and len(op.inputs) != 2:
        return "has a constant input and more than 2 inputs"
    return None


@dataclass(frozen=True)
class EdgeTpuOpRule:
    limitation: str                                         # Coral's documented limitation ("" if none)
    check: Callable[[TfliteGraph, OpInfo], str | None] | None = None  # reason the op breaks it, or None


# TFLite builtin operator -> what Coral documents for it on the Edge TPU
EDGETPU_OPS: dict[str, EdgeTpuOpRule] = {
    "ADD": EdgeTpuOpRule(""),
    "AVERAGE_POOL_2D": EdgeTpuOpRule("no fused activation function", _no_fused_activation),
    "CONCATENATION": EdgeTpuOpRule("no fused activation; a constant input only as the second of two "
                                   "inputs, all zeros (a zero padding)", _concatenation),
    "CONV_2D": EdgeTpuOpRule("same dilation in x and y", _same_dilation),
    "DEPTHWISE_CONV_2D": EdgeTpuOpRule("same dilation in x and y", _same_dilation),
    "EXPAND_DIMS": EdgeTpuOpRule(""),
    "FULLY_CONNECTED": EdgeTpuOpRule("default weights format; one-dimensional output", _fully_connected),
    "L2_NORMALIZATION": EdgeTpuOpRule(""),
    "LOGISTIC": EdgeTpuOpRule(""),
    "LSTM": EdgeTpuOpRule("unidirectional only"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": EdgeTpuOpRule("unidirectional only"),
    "MAXIMUM": EdgeTpuOpRule(""),
    "MAX_POOL_2D": EdgeTpuOpRule("no fused activation function", _no_fused_activation),
    "MEAN": EdgeTpuOpRule("no reduction over batch; a channel reduction needs channels % 4 == 0", _mean),
    "MINIMUM": EdgeTpuOpRule(""),
    "MUL": EdgeTpuOpRule(""),
    "PACK": EdgeTpuOpRule("no packing along batch", _pack),
    "PAD": EdgeTpuOpRule("no padding of the batch dimension", _pad),
    "PRELU": EdgeTpuOpRule("alpha constant and one-dimensional (shared over height and width)"),
    "QUANTIZE": EdgeTpuOpRule("8-bit to 8-bit requantization only"),
    "REDUCE_MAX": EdgeTpuOpRule("not over the batch dimension", _reduce_not_batch),
    "REDUCE_MIN": EdgeTpuOpRule("not over the batch dimension", _reduce_not_batch),
    "RELU": EdgeTpuOpRule(""),
    "RELU6": EdgeTpuOpRule(""),
    "RELU_N1_TO_1": EdgeTpuOpRule(""),
    "RESHAPE": EdgeTpuOpRule("some reshapes of large tensors may not map"),
    "RESIZE_BILINEAR": EdgeTpuOpRule("3-D input/output; some sizes stay on the CPU to keep precision"),
    "RESIZE_NEAREST_NEIGHBOR": EdgeTpuOpRule("3-D input/output; some sizes stay on the CPU to keep precision"),
    "RSQRT": EdgeTpuOpRule(""),
    "SLICE": EdgeTpuOpRule(""),
    "SOFTMAX": EdgeTpuOpRule(f"one-dimensional input of at most {SOFTMAX_MAX_ELEMENTS:,} elements", _softmax),
    "SPACE_TO_DEPTH": EdgeTpuOpRule(""),
    "SPLIT": EdgeTpuOpRule("no splitting along batch", _split),
    "SQUARED_DIFFERENCE": EdgeTpuOpRule(""),
    "SQUEEZE": EdgeTpuOpRule(""),
    "STRIDED_SLICE": EdgeTpuOpRule("all strides 1, no ellipsis or new-axis mask", _strided_slice),
    "SUB": EdgeTpuOpRule(""),
    "SUM": EdgeTpuOpRule("not over the batch dimension", _reduce_not_batch),
    "TANH": EdgeTpuOpRule(""),
    "TRANSPOSE": EdgeTpuOpRule(""),
    "TRANSPOSE_CONV": EdgeTpuOpRule(""),
}


def _general_problem(graph: TfliteGraph, op: OpInfo) -> str | None:
    """The Edge TPU's requirements on every op's tensors."""
    for i in (*op.inputs, *op.outputs):
        if i < 0:
            continue
        t = graph.tensor(i)
        if t.is_constant:
            if t.dtype not in _CONSTANT_OK:
                return f"constant tensor '{t.name}' is {t.dtype}, not quantized"
            continue
        if t.dtype not in _QUANTIZED:
            return f"tensor '{t.name}' is {t.dtype} (the Edge TPU runs 8-bit tensors only)"
        if t.is_dynamic:
            return f"tensor '{t.name}' has a dynamic size {list(t.shape_signature)}"
        if len(t.shape) > 4:
            return f"tensor '{t.name}' has rank {len(t.shape)} (max 4)"
        if int(np.prod(t.shape[:-3])) > 1:
            return f"tensor '{t.name}' {list(t.shape)} has an outer dimension > 1 (batch must be 1)"
    return None


def op_problem(graph: TfliteGraph, op: OpInfo) -> str | None:
    """Why the Edge TPU cannot run this op, or None when it can."""
    rule = EDGETPU_OPS.get(op.name)
    if rule is None:
        return f"{op.name} is not an Edge TPU operation"
    problem = _general_problem(graph, op)
    if problem is None and rule.check is not None:
        problem = rule.check(graph, op)
    return problem


@dataclass(frozen=True)
class EdgeTpuOp:
    index: int
    op: str
    on_tpu: bool
    reason: str = ""  # why it runs on the CPU
    note: str = ""    # documented limitation worth knowing when it maps


@dataclass(frozen=True)
class EdgeTpuAnalysis:
    ops: tuple[EdgeTpuOp, ...]
    first_unsupported: int | None      # index of the op where the TPU segment ends

    @property
    def mappable_ops(self) -> int:
        return sum(o.on_tpu for o in self.ops)

    @property
    def cpu_ops(self) -> int:
        return len(self.ops) - self.mappable_ops

    def summary(self) -> str:
        total = len(self.ops)
        if self.first_unsupported is None:
            cpu = f" ({self.cpu_ops} input conversion op(s) on the CPU)" if self.cpu_ops else ""
            return f"all {self.mappable_ops} of {total} ops map to the Edge TPU{cpu}"
        stop = self.ops[self.first_unsupported]
        return (f"{self.mappable_ops} of {total} ops map to the Edge TPU; from op {stop.index} "
                f"({stop.op}: {stop.reason}) on, {self.cpu_ops} run on the CPU")

    def to_dict(self) -> dict:
        return {
            "mappable_ops": self.mappable_ops, "cpu_ops": self.cpu_ops,
            "first_unsupported": self.first_unsupported,
            "ops": [{"index": o.index, "op": o.op, "placement": "tpu" if o.on_tpu else "cpu",
                     "reason": o.reason, "note": o.note} for o in self.ops],
        }


def _is_input_quantize(graph: TfliteGraph, op: OpInfo) -> bool:
    if op.name != "QUANTIZE" or not op.inputs:
        return False
    t = graph.tensor(op.inputs[0])
    return op.inputs[0] in graph.inputs and t.dtype not in _QUANTIZED


def analyze_edgetpu(model: str | Path | bytes | TfliteGraph) -> EdgeTpuAnalysis:
    """Place each op of the main subgraph on the Edge TPU or the CPU, in graph order."""
    graph = model if isinstance(model, TfliteGraph) else read_tflite(model)
    ops: list[EdgeTpuOp] = []
    first_unsupported: int | None = None
    segment_started = False
    for op in graph.operators:
        note = EDGETPU_OPS[op.name].limitation if op.name in EDGETPU_OPS else ""
        if first_unsupported is not None:
            stop = graph.operators[first_unsupported]
            ops.append(EdgeTpuOp(op.index, op.name, False, f"after {stop.name} (op {stop.index})", note))
            continue
        if not segment_started and _is_input_quantize(graph, op):
            ops.append(EdgeTpuOp(op.index, op.name, False, "float input quantization stays on the CPU", note))
            continue
        segment_started = True
        problem = op_problem(graph, op)
        if problem is None:
            ops.append(EdgeTpuOp(op.index, op.name, True, "", note))
        else:
            first_unsupported = op.index
            ops.append(EdgeTpuOp(op.index, op.name, False, problem, note))
    return EdgeTpuAnalysis(tuple(ops), first_unsupported)
