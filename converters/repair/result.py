"""What the repair search found: the promotions of the model it chose, the cost, the verdicts
before and after, and why it stopped (report.json's ``mixed_precision``, report.md's section)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Mapping

from edgenet.config import OpPrecision
from edgenet.quality import Verdict


def passes_text(verdict: Verdict) -> str:
    """What a passing repair says of its verdict: it passes, or (every output without signal in the
    evaluation data: a single example, nothing decided) it no longer fails, judging nothing."""
    from edgenet.verdicts import Status

    return "the verdict no longer fails (not judged: no signal in the evaluation data)" \
        if getattr(verdict, "status", None) is Status.NOT_JUDGED else "the verdict passes"


class Stop(str, Enum):
    """Why the search stopped."""

    PASSED = "passed"
    BUDGET = "budget"                   # the next round would not fit the time budget
    EXHAUSTED = "exhausted"             # every candidate promoted, the verdict still fails
    NO_CANDIDATES = "no_candidates"     # no op reaching a failing output may be promoted on this target
    REFUSED = "refused"                 # the passing model does not run in the target's runtime
    MOSTLY_FLOAT = "mostly_float"       # the passing model computes most of its ops in float: not an int8 model
    MOSTLY_PROMOTED = "mostly_promoted"  # a passing model needs most ops promoted (int16 or float): not an int8 model
    NOT_CONFIRMED = "not_confirmed"     # passes on the examples it was searched on, not on others: fit to them


@dataclass(frozen=True)
class Promotion:
    """One op of the repaired model in another precision than int8."""

    tensor: str
    op: str
    precision: OpPrecision
    reason: str
    gain_db: float | None = None
    onnx_node: str | None = None

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "op": self.op, "precision": self.precision.value, "reason": self.reason,
                "gain_db": None if self.gain_db is None else round(self.gain_db, 2), "onnx_node": self.onnx_node}


@dataclass(frozen=True)
class Repair:
    model: bytes | None                  # the passing model (None: none passed)
    verdict_before: Verdict
    verdict: Verdict                     # of the passing model, or of the last model tried
    promoted: tuple[Promotion, ...]      # in the passing model, or in the last model tried
    rounds: int
    seconds: float
    budget_rounds: int
    stop: Stop
    stop_detail: str
    size_before: int
    size_after: int
    latency_ms: Mapping[str, float] = field(default_factory=dict)   # this host, LiteRT: int8, repaired, float32
    measured: int = 0                    # candidates whose sensitivity was measured

    @property
    def passed(self) -> bool:
        return self.model is not None

    def named(self, onnx_nodes: Mapping[str, str | None]) -> "Repair":
        """The same repair with each promotion's ONNX node filled in (``onnx_nodes``: tensor -> node)."""
        names = {t: n for t, n in onnx_nodes.items() if n and t}
        # whole names only (a tensor called "out" is no part of "output"), the longest first
        pattern = re.compile("|".join(f"(?<![\\w./:-]){re.escape(t)}(?![\\w/:-]|\\.\\w)"
                                      for t in sorted(names, key=len, reverse=True))) if names else None

        def reason(text: str) -> str:     # tensors named in a reason ("reads ...") named by node too
            return pattern.sub(lambda m: names[m.group(0)], text) if pattern else text

        return replace(self, promoted=tuple(replace(p, onnx_node=onnx_nodes.get(p.tensor), reason=reason(p.reason))
                                            for p in self.promoted))

    def as_written(self) -> "Repair":
        """The same repair with each promotion's precision read back from the passing model: an op
        the quantizer kept in int8 (no recipe for the precision asked) is no promotion, and one it
        had to leave in float says so."""
        if self.model is None:
            return self
        from edgenet.config import Precision
        from edgenet.converters.op_precision import op_precisions

        actual = {e.output: e.precision for e in op_precisions(self.model)}
        kept = []
        for p in self.promoted:
            got = actual.get(p.tensor, Precision.INT8)
            if got is Precision.INT16X8:
                kept.append(replace(p, precision=OpPrecision.INT16))
            elif got in (Precision.FLOAT32, Precision.FLOAT16):
                note = "" if p.precision is OpPrecision.FLOAT else \
                    f"; asked {p.precision.value}, the quantizer left it float"
                kept.append(replace(p, precision=OpPrecision.FLOAT, reason=p.reason + note))
        return replace(self, promoted=tuple(kept))

    def to_dict(self) -> dict:
        return {"passed": self.passed, "promoted": [p.to_dict() for p in self.promoted],
                "kept_float": [p.to_dict() for p in self.promoted if p.precision is OpPrecision.FLOAT],
                "int16": [p.to_dict() for p in self.promoted if p.precision is OpPrecision.INT16],
                "rounds": self.rounds, "measured": self.measured, "seconds": round(self.seconds, 3),
                "budget_rounds": self.budget_rounds, "stop": self.stop.value, "stopped": self.stop_detail,
                "size_before": self.size_before, "size_after": self.size_after,
                "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
                "verdict_before": {"passed": self.verdict_before.passed,
                                   "failing": [o.name for o in self.verdict_before.outputs if not o.passed]},
                "verdict_after": {"passed": self.verdict.passed,
                                  "failing": [o.name for o in self.verdict.outputs if not o.passed]},
                "summary": self.summary()}

    def summary(self) -> str:
        counts = {p: sum(1 for x in self.promoted if x.precision is p) for p in OpPrecision}
        what = ", ".join(f"{n} to {p.value}" for p, n in counts.items() if n) or "none"
        ops = ", ".join(f"{x.op} {x.onnx_node or x.tensor} ({x.precision.value})" for x in self.promoted[:4]) + \
            (" ..." if len(self.promoted) > 4 else "")
        cost = f"{self.rounds} of {self.budget_rounds} round(s), {self.seconds:.1f} s"
        if self.passed:
            lat = ""
            ms = self.latency_ms
            if "int8" in ms and "repaired" in ms:
                lat = f", {_time(ms['int8'])} -> {_time(ms['repaired'])} on this host"
                if _slower(ms.get("same_ops_float", math.inf), ms["repaired"]):
                    lat += (f" (the same ops in float also pass and take {_time(ms['same_ops_float'])}: "
                            "int16 kernels are slower here; a CPU target may prefer repair = [\"float\", ...])")
                if _slower(ms.get("float32", math.inf), ms["repaired"]):
                    lat += (f"; slower than the float model ({_time(ms['float32'])}) on this host: where speed is "
                            "why int8 was asked for, model_float.tflite serves better")
            return (f"mixed precision: {len(self.promoted)} op(s) promoted ({what}: {ops}), "
                    f"{self.size_after - self.size_before:+,} bytes{lat}; {passes_text(self.verdict)} ({cost})")
        hint = ""
        if self.stop in (Stop.MOSTLY_PROMOTED, Stop.MOSTLY_FLOAT):
            hint = ("; the int8 error is spread over most of the model: --precision float32,int16x8 writes and "
                    "judges a model with 16-bit activations everywhere, or deploy model_float.tflite")
        elif self.stop is Stop.NOT_CONFIRMED:
            hint = ("; the int8 error sits close to the verdict's line: --precision float32,int16x8 judges 16-bit "
                    "activations everywhere, or deploy model_float.tflite")
        return f"mixed precision: no passing model ({self.stop_detail}; {cost}); none of its models is used{hint}"


#: a latency is said to be slower than another only beyond this share (timings of one host, interleaved)
SLOWER_BY = 0.05


def _slower(fast_ms: float, slow_ms: float) -> bool:
    """``slow_ms`` is more than :data:`SLOWER_BY` above ``fast_ms`` (a tiny model's 0.010 against 0.011 ms
    is no finding)."""
    return fast_ms * (1 + SLOWER_BY) < slow_ms


def _time(ms: float) -> str:
    """A latency with the digits it has: '4.52 ms', '0.31 ms', '12.5 us' (a tiny model's invoke read
    '0.01 ms' at two decimals)."""
    return f"{ms:.2f} ms" if ms >= 0.1 else f"{ms * 1000:.1f} us"

