"""The ops of a .tflite model as the repair search sees them: each named by its first output
tensor (the name the quantizer knows it by), what feeds it, which model outputs it reaches, and the
groups that must change precision together (an output's producer with the ops that only assemble
the output: one int8 scale over the assembled values is what cannot hold them)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from edgenet.targets.tflite_graph import read_tflite

SKIP = frozenset({"QUANTIZE", "DEQUANTIZE"})
ASSEMBLY = frozenset({"TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "STRIDED_SLICE", "SLICE",
                      "CONCATENATION", "PACK"})


@dataclass(frozen=True)
class Op:
    index: int                    # position in the model's execution order
    name: str                     # its first output tensor's name
    op: str                       # builtin op type, e.g. CONV_2D
    inputs: tuple[str, ...]       # names of the non-constant tensors it reads
    output_position: int | None   # the model output (in the model's order) it produces, if any


def ops(model: bytes) -> list[Op]:
    """Every op of ``model``'s main subgraph except QUANTIZE/DEQUANTIZE, in execution order. An op
    produces output k when its tensor is the k-th model output, or feeds it through QUANTIZE /
    DEQUANTIZE only (what a quantizer puts after an op left in float). The last two models' are
    kept: a repair lists its float model three times (~1 s each for a 5,500-op model)."""
    return list(_ops_kept(bytes(model)))


@functools.lru_cache(maxsize=2)
def _ops_kept(model: bytes) -> tuple[Op, ...]:
    g = read_tflite(model)
    name = {t.index: t.name for t in g.tensors}
    const = {t.index for t in g.tensors if t.is_constant}
    position = {int(t): k for k, t in enumerate(_outputs_in_model_order(model, g))}
    changed = True
    while changed:     # back through converting ops to the tensor that carries the values
        changed = False
        for op in g.operators:
            if op.name in SKIP and op.outputs and op.outputs[0] in position and op.inputs[0] not in position:
                position[op.inputs[0]] = position[op.outputs[0]]
                changed = True
    out = []
    for op in g.operators:
        if op.name in SKIP or not op.outputs:
            continue
        t = op.outputs[0]
        out.append(Op(op.index, name[t], op.name, tuple(name[i] for i in op.inputs if i >= 0 and i not in const),
                      position.get(t)))
    return tuple(out)


def _outputs_in_model_order(model: bytes, g) -> list[int]:
    """Output tensor indices in the signature's ``output_<k>`` order (the order the pipeline judges
    them in), else the subgraph's."""
    from edgenet.inference import outputs_in_model_order
    from edgenet.runtime import make_interpreter

    interp = make_interpreter(model, use_xnnpack=False)
    return [int(d["index"]) for d in outputs_in_model_order(interp)]


def upstream(listing: list[Op], outputs: set[int]) -> set[str]:
    """Names of the ops whose values reach one of the model ``outputs`` (positions)."""
    producer = {op.name: op for op in listing}
    stack = [op for op in listing if op.output_position in outputs]
    seen = {op.name for op in stack}
    while stack:
        for name in stack.pop().inputs:
            feeder = producer.get(name)
            if feeder is not None and feeder.name not in seen:
                seen.add(feeder.name)
                stack.append(feeder)
    return seen


def head_groups(listing: list[Op], failing: set[int]) -> list[tuple[Op, ...]]:
    """For each failing output: its producer and the ops that only assemble it (RESHAPE, TRANSPOSE,
    CONCATENATION ...) back to the ops that computed the values, as one group."""
    producer = {op.name: op for op in listing}
    groups = []
    for op in listing:
        if op.output_position is None or op.output_position not in failing:
            continue
        group, stack = [op], [op]
        while stack:
            current = stack.pop()
            if current.op not in ASSEMBLY:
                continue
            for name in current.inputs:
                feeder = producer.get(name)
                if feeder is not None and feeder not in group and feeder.op in ASSEMBLY:
                    group.append(feeder)
                    stack.append(feeder)
        groups.append(tuple(group))
    return groups


#: ops computing with learned weights: where an output's arithmetic tail (:func:`tail`) begins
LEARNED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "FULLY_CONNECTED", "BATCH_MATMUL"})


def tail(listing: list[Op], starts: set[str]) -> set[str]:
    """Names of the ops between the last learned layers (:data:`LEARNED`) and the ops ``starts`` (a
    failing output's producers): what is reached back from them without passing through a learned
    op, the learned ops left out. In a detector this is the box decode (anchors -/+ distances, times
    the stride), the score's sigmoid and the TopK/Gather selecting the rows: arithmetic on values
    whose range the image size sets, not training (YOLO26n's decoded boxes of background anchors span
    -965..958 px on a 320 px image), so one int8 scale there puts every box on a coarse grid."""
    producer = {op.name: op for op in listing}
    stack = [producer[n] for n in starts if n in producer and producer[n].op not in LEARNED]
    seen = {op.name for op in stack}
    while stack:
        for name in stack.pop().inputs:
            feeder = producer.get(name)
            if feeder is not None and feeder.name not in seen and feeder.op not in LEARNED:
                seen.add(feeder.name)
                stack.append(feeder)
    return seen
