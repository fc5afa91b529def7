"""Automatic mixed precision: keep in float the few ops that int8 breaks, until the verdict passes.

When a quantized model fails its verdict (:mod:`edgenet.quality`), the damage usually comes from a
handful of ops: a head that concatenates ranges that differ by 100x, a softmax or layer norm whose
int8 output keeps two values, an activation with a long tail. TensorFlow's MLIR quantizer can leave
chosen ops in float (``denylisted_nodes``, as its QuantizationDebugger does); this module decides
which, from what the per-layer report already measured:

1. candidates, in order: the ops that produce a failing output (a per-channel collapse shows at the
   output's producer even when the tensor's overall SQNR looks fine), then every op by the precision
   it loses itself -- its output's SQNR against the float model, subtracted from the worst SQNR of
   its inputs (an op that turns 38 dB inputs into a 12 dB output is responsible for 26 dB; one that
   passes on 12 dB is not);
2. rounds: keep the first 1, 2, 4 ... candidates in float, quantize again from the same calibrated
   ranges, judge again; stop at the first passing model, or when the budget (rounds, share of ops
   kept) is spent.

The result lists what was kept, why, and what it costs (size, float ops).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from edgenet.quality import Verdict

MAX_ROUNDS = 5
MAX_KEPT_FRACTION = 0.25
_SKIP = {"QUANTIZE", "DEQUANTIZE"}
_ASSEMBLY = {"TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "STRIDED_SLICE", "SLICE",
             "CONCATENATION", "PACK"}


@dataclass(frozen=True)
class KeptOp:
    """One op left in float: its output tensor in the .tflite, its type and why it was chosen."""

    tensor: str
    op: str
    reason: str
    onnx_node: str | None = None    # the ONNX node that made it, when known

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "op": self.op, "reason": self.reason, "onnx_node": self.onnx_node}


@dataclass(frozen=True)
class Repair:
    model: bytes | None          # the first passing model (None: none passed within the budget)
    verdict: Verdict             # the verdict of the last model tried
    kept: tuple[KeptOp, ...]     # ops kept in float in that model
    rounds: int
    seconds: float
    size_before: int
    size_after: int

    @property
    def passed(self) -> bool:
        return self.model is not None

    def to_dict(self) -> dict:
        return {"passed": self.passed, "kept_float": [k.to_dict() for k in self.kept], "rounds": self.rounds,
                "seconds": round(self.seconds, 3), "size_before": self.size_before, "size_after": self.size_after}

    def named(self, onnx_nodes: dict) -> "Repair":
        """The same repair with each kept op's ONNX node filled in from ``onnx_nodes`` (tensor -> node)."""
        from dataclasses import replace

        return replace(self, kept=tuple(replace(k, onnx_node=onnx_nodes.get(k.tensor)) for k in self.kept))

    def summary(self) -> str:
        ops = ", ".join(f"{k.op} {k.onnx_node or k.tensor}" for k in self.kept[:4]) + (" ..." if len(self.kept) > 4 else "")
        size = f"{self.size_after - self.size_before:+,} bytes"
        if self.passed:
            return f"mixed precision: {len(self.kept)} op(s) kept in float ({ops}), {size}; the verdict passes"
        return (f"mixed precision: no passing model within {self.rounds} round(s) (up to {len(self.kept)} op(s) tried "
                "in float); none of those models is used")


@dataclass(frozen=True)
class _Op:
    index: int
    name: str          # its first output tensor's name
    op: str
    inputs: tuple[str, ...]
    output_position: int | None   # the model output (in the model's order) it produces, if any


def _ops(model: bytes) -> list[_Op]:
    from edgenet.inference import outputs_in_model_order
    from edgenet.runtime import make_interpreter

    interp = make_interpreter(model, use_xnnpack=False)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    position = {int(d["index"]): k for k, d in enumerate(outputs_in_model_order(interp))}
    details = interp._get_ops_details()
    ops = []
    for op in details:
        if op["op_name"] in _SKIP or not len(op["outputs"]):
            continue
        out = int(op["outputs"][0])
        ops.append(_Op(int(op["index"]), names.get(out, str(out)), op["op_name"],
                       tuple(names[int(i)] for i in op["inputs"] if int(i) >= 0 and int(i) in names),
                       position.get(out, _output_through_requantize(details, out, position))))
    return ops


def _output_through_requantize(details, tensor: int, position: dict[int, int]) -> int | None:
    """The output position ``tensor`` reaches through a QUANTIZE/DEQUANTIZE, if any."""
    for op in details:
        if op["op_name"] in _SKIP and tensor in [int(i) for i in op["inputs"]]:
            for o in op["outputs"]:
                if int(o) in position:
                    return position[int(o)]
    return None


def rank_candidates(model: bytes, layer_sqnr: dict[str, float | None], failing: Sequence[int] = ()
                    ) -> list[tuple[str, str, str, int | None]]:
    """(tensor, op, reason, output position) of the ops to keep in float, most responsible first:
    the producers of the ``failing`` outputs (positions in the model's order), then by dB lost."""
    ops = _ops(model)
    ranked: list[tuple[float, str, str, str]] = []
    for op in ops:
        out = layer_sqnr.get(op.name)
        ins = [layer_sqnr[i] for i in op.inputs if layer_sqnr.get(i) is not None]
        inherited = min(ins) if ins else math.inf
        if out is None or not math.isfinite(out):
            continue
        lost = (inherited - out) if math.isfinite(inherited) else 60.0 - out   # graph inputs: int8's best
        reason = f"output {out:.1f} dB from inputs at {inherited:.1f} dB" if math.isfinite(inherited) else \
            f"output {out:.1f} dB"
        ranked.append((lost, op.name, op.op, reason))
    ranked.sort(key=lambda r: -r[0])
    heads = []
    producers = {op.name: op for op in ops}
    for op in ops:
        if op.output_position is None or op.output_position not in failing:
            continue
        heads.append((op.name, op.op, "produces a damaged output", op.output_position))
        # every op that only assembles the output (moves values, or puts tensors side by side:
        # RESHAPE, TRANSPOSE, CONCATENATION ...) up to the ops that computed the values: one int8
        # scale over the assembled values is what cannot hold them, the parts each have their own
        stack, done = [op], {op.name}
        while stack:
            current = stack.pop()
            if current.op not in _ASSEMBLY:
                continue
            for name in current.inputs:
                feeder = producers.get(name)
                if feeder is not None and feeder.name not in done and feeder.op in _ASSEMBLY:
                    done.add(feeder.name)
                    heads.append((feeder.name, feeder.op, f"assembles damaged output {op.output_position}", None))
                    stack.append(feeder)
    seen = {h[0] for h in heads}
    return heads + [(name, kind, f"loses {lost:.1f} dB ({why})", None) for lost, name, kind, why in ranked
                    if name not in seen and lost > 0]


def repair(float_model: bytes, int8_model: bytes, layer_sqnr: dict[str, float | None], failing: Sequence[int],
           quantize: Callable[[Sequence[str], Sequence[int]], bytes], judge: Callable[[bytes], Verdict],
           max_rounds: int = MAX_ROUNDS, max_fraction: float = MAX_KEPT_FRACTION,
           max_seconds: float | None = None) -> Repair:
    """Keep more and more candidates in float (1, 2, 4 ...) until ``judge`` passes the model that
    ``quantize(kept_tensors, float_outputs)`` returns, or the budget is spent. Ops are named as in
    ``float_model`` (the model that was quantized: the quantizer knows them by those names);
    ``layer_sqnr`` is keyed by the same names. ``failing``: the positions of the outputs that failed;
    an output whose producer is kept in float is made float32 too (one int8 scale is what could
    not hold it)."""
    t0 = time.perf_counter()
    candidates = rank_candidates(float_model, layer_sqnr, failing)
    limit = max(1, int(len(_ops(float_model)) * max_fraction))
    kept: tuple[KeptOp, ...] = ()
    heads = sum(1 for c in candidates if c[2] == "produces a damaged output" or c[2].startswith("assembles damaged"))
    verdict, rounds, k = None, 0, max(1, heads)
    last_round = 0.0
    while rounds < max_rounds and candidates and (max_seconds is None or rounds == 0   # a round must fit
                                                  or time.perf_counter() - t0 + last_round <= max_seconds):
        round_start = time.perf_counter()
        chosen = candidates[:min(k, limit, len(candidates))]
        kept = tuple(KeptOp(t, op, why) for t, op, why, _ in chosen)
        model = quantize([x.tensor for x in kept], [pos for *_, pos in chosen if pos is not None])
        verdict = judge(model)
        rounds += 1
        last_round = time.perf_counter() - round_start
        if verdict.passed:
            return Repair(model, verdict, kept, rounds, time.perf_counter() - t0, len(int8_model), len(model))
        if k >= min(limit, len(candidates)):
            break
        k *= 2
    last = verdict if verdict is not None else judge(int8_model)
    return Repair(None, last, kept, rounds, time.perf_counter() - t0, len(int8_model), len(int8_model))
