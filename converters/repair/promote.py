"""The repair search: the fewest promotions (int16 activations or float, per op group) that make a
failing int8 verdict pass, found within a time budget.

1. candidates: the op groups whose values reach a failing output -- each failing output's producer
   with the ops that only assemble it, then every other op -- each with the promotion the target
   allows it (:func:`converters.repair.kernels.promotion`), in the order of their own error
   (:func:`converters.repair.sensitivity.own_errors`: what the op adds, not what it inherits);
2. sensitivity, measured: the most suspect candidates promoted one at a time, the failing outputs'
   SQNR on a small evaluation subset each time; candidates ranked by what they gained;
3. count: the first 1, 2, 4 ... ranked candidates promoted and judged on the whole evaluation set
   until the verdict passes, then a binary search for the smallest passing count;
4. pruning: each promotion of the passing model dropped in turn (least useful first) when the
   verdict passes without it.

Every round (one quantization and one judgement) is timed; a round starts only when the time
spent so far plus the longest round yet fits the budget. The result says why the search stopped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Mapping, Sequence

from edgenet.converters.repair.graph import Op
from edgenet.converters.repair.kernels import OpPrecision
from edgenet.quality import Verdict

MEASURE_SHARE = 0.5        # of the budget, at most, for measuring single-candidate sensitivity
MEASURE_MAX = 16           # candidates measured one at a time, at most
MIN_GAIN_DB = 0.1          # a measured gain below this is no gain


class Stop(str, Enum):
    """Why the search stopped."""

    PASSED = "passed"
    BUDGET = "budget"                   # the next round would not fit the time budget
    EXHAUSTED = "exhausted"             # every candidate promoted, the verdict still fails
    NO_CANDIDATES = "no_candidates"     # no op reaching a failing output may be promoted on this target
    REFUSED = "refused"                 # the passing model does not run in the target's runtime


@dataclass(frozen=True)
class Quantizer:
    """``fn(assignment) -> .tflite bytes``: the int8 model again, from the same calibrated ranges,
    with each op named in ``assignment`` (by its output tensor in the float model) promoted;
    ``supports``: the promotions that quantizer can make."""

    fn: Callable[[Mapping[str, OpPrecision]], bytes]
    supports: frozenset[OpPrecision]

    def __call__(self, assignment: Mapping[str, OpPrecision]) -> bytes:
        return self.fn(assignment)


@dataclass(frozen=True)
class Candidate:
    """An op group promoted together (an output's producer with the ops that assemble the output,
    or one op), the promotion the target allows it, and why it is suspected."""

    ops: tuple[Op, ...]
    precision: OpPrecision
    reason: str
    proxy_db: float = math.inf           # own error (lower: worse)
    gain_db: float | None = None         # measured: the failing outputs' SQNR gained with it alone

    @property
    def name(self) -> str:
        return self.ops[0].name


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
    budget_seconds: float
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
        def reason(text: str) -> str:     # tensors named in a reason ("reads ...") named by node too
            for tensor, node in onnx_nodes.items():
                if node and tensor in text:
                    text = text.replace(tensor, node)
            return text

        return replace(self, promoted=tuple(replace(p, onnx_node=onnx_nodes.get(p.tensor), reason=reason(p.reason))
                                            for p in self.promoted))

    def to_dict(self) -> dict:
        return {"passed": self.passed, "promoted": [p.to_dict() for p in self.promoted],
                "kept_float": [p.to_dict() for p in self.promoted if p.precision is OpPrecision.FLOAT],
                "int16": [p.to_dict() for p in self.promoted if p.precision is OpPrecision.INT16],
                "rounds": self.rounds, "measured": self.measured, "seconds": round(self.seconds, 3),
                "budget_seconds": round(self.budget_seconds, 3), "stop": self.stop.value, "stopped": self.stop_detail,
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
        cost = f"{self.rounds} round(s), {self.seconds:.1f} s of a {self.budget_seconds:.1f} s budget"
        if self.passed:
            lat = ""
            if "int8" in self.latency_ms and "repaired" in self.latency_ms:
                lat = f", {self.latency_ms['int8']:.2f} -> {self.latency_ms['repaired']:.2f} ms on this host"
            return (f"mixed precision: {len(self.promoted)} op(s) promoted ({what}: {ops}), "
                    f"{self.size_after - self.size_before:+,} bytes{lat}; the verdict passes ({cost})")
        return f"mixed precision: no passing model ({self.stop_detail}; {cost}); none of its models is used"


@dataclass(frozen=True)
class Budget:
    """The search's time: ``factor`` x the plain int8 stage's seconds, at least ``floor`` seconds
    (a model quantized in a blink still gets a few rounds)."""

    factor: float
    int8_seconds: float
    floor: float = 5.0

    @property
    def seconds(self) -> float:
        return 0.0 if self.factor <= 0 else max(self.floor, self.factor * self.int8_seconds)


class _Clock:
    def __init__(self, budget: float, started: float | None):
        self.t0 = time.perf_counter() if started is None else started
        self.budget = budget
        self.longest = 0.0
        self.rounds = 0

    @property
    def spent(self) -> float:
        return time.perf_counter() - self.t0

    def fits(self, share: float = 1.0) -> bool:
        return self.spent + self.longest <= share * self.budget

    def round(self, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.rounds += 1
            self.longest = max(self.longest, time.perf_counter() - t)


def _assignment(chosen: Sequence[Candidate]) -> dict[str, OpPrecision]:
    return {op.name: c.precision for c in chosen for op in c.ops}


def _promotions(chosen: Sequence[Candidate]) -> tuple[Promotion, ...]:
    out: dict[str, Promotion] = {}
    for c in chosen:
        for k, op in enumerate(c.ops):
            if op.name in out:
                continue
            why = c.reason if k == 0 else (f"reads {c.name} ({c.reason})" if c.name in op.inputs
                                           else f"assembles output {c.ops[0].output_position}")
            out[op.name] = Promotion(op.name, op.op, c.precision, why, c.gain_db if k == 0 else None)
    return tuple(out.values())


def search(candidates: Sequence[Candidate], int8_model: bytes, verdict_before: Verdict,
           quantize: Quantizer, judge: Callable[[bytes], Verdict], score: Callable[[bytes], float],
           budget_seconds: float, runs: Callable[[bytes], str | None] | None = None,
           started: float | None = None, skipped: str = "") -> Repair:
    """The smallest set of ``candidates`` (ranked by their own error, most suspect first) whose
    promotion makes ``judge`` pass, searched as the module says. ``score(model)``: the failing
    outputs' SQNR on a small subset (higher is better); ``runs(model)``: None when the target's
    runtime runs the model, else why not; ``started``: when the search's clock started (work done
    before, e.g. the own-error proxy, counts); ``skipped``: why ops were left out (for the report)."""
    clock = _Clock(budget_seconds, started)
    size = len(int8_model)

    def done(model, verdict, chosen, stop, detail, measured):
        return Repair(model, verdict_before, verdict, _promotions(chosen), clock.rounds, clock.spent,
                      budget_seconds, stop, detail, size, len(model) if model is not None else size,
                      measured=measured)

    if not candidates:
        return done(None, verdict_before, (), Stop.NO_CANDIDATES,
                    "no op reaching a failing output may be promoted on this target" + (f" ({skipped})" if skipped else ""), 0)
    # 2. sensitivity, measured one candidate at a time on the subset
    measured: list[Candidate] = []
    base = None
    for c in candidates[:MEASURE_MAX]:
        if not clock.fits(MEASURE_SHARE):
            break
        if base is None:
            base = score(int8_model)
        s = clock.round(lambda: score(quantize(_assignment([c]))))
        measured.append(replace(c, gain_db=s - base if math.isfinite(s - base) else (60.0 if s > base else 0.0)))
    helpful = sorted((c for c in measured if c.gain_db >= MIN_GAIN_DB), key=lambda c: -c.gain_db)
    useless = [c for c in measured if c.gain_db < MIN_GAIN_DB]
    ranked = helpful + list(candidates[len(measured):]) + useless
    # 3. count: 1, 2, 4 ... then bisect between the last failing and the first passing count
    tried: dict[int, tuple[bytes, Verdict]] = {}

    def trial(k: int):
        if k not in tried:
            model = quantize(_assignment(ranked[:k]))
            tried[k] = (model, judge(model))
        return tried[k]

    low, high, k, last = 0, None, 1, (None, verdict_before)
    while k <= len(ranked):
        if not clock.fits():
            return done(None, last[1], ranked[:low], Stop.BUDGET,
                        f"budget spent: the next round would pass {budget_seconds:.1f} s "
                        f"({low} of {len(ranked)} candidate(s) promoted without a pass)", len(measured))
        last = clock.round(trial, k)
        if last[1].passed:
            high = k
            break
        low = k
        k = len(ranked) if k < len(ranked) and 2 * k > len(ranked) else 2 * k
    if high is None:
        return done(None, last[1], ranked, Stop.EXHAUSTED,
                    f"all {len(ranked)} candidate(s) promoted and the verdict still fails"
                    + (f" ({skipped})" if skipped else ""), len(measured))
    while high - low > 1 and clock.fits():
        mid = (low + high) // 2
        if clock.round(trial, mid)[1].passed:
            high = mid
        else:
            low = mid
    chosen = list(ranked[:high])
    model, verdict = tried[high]
    # 4. pruning: least useful first
    for c in sorted(chosen, key=lambda c: (c.gain_db if c.gain_db is not None else -1.0))[:-1] if len(chosen) > 1 else ():
        if not clock.fits():
            break
        rest = [x for x in chosen if x is not c]
        m = clock.round(quantize, _assignment(rest))
        v = judge(m)
        if v.passed:
            chosen, model, verdict = rest, m, v
    note = "" if clock.fits() else " (pruning cut short by the budget)"
    if runs is not None:
        refused = runs(model)
        if refused:
            return done(None, verdict, chosen, Stop.REFUSED, f"the passing model does not run on the target: {refused}",
                        len(measured))
    return done(model, verdict, chosen, Stop.PASSED, "the verdict passes" + note, len(measured))


def plan(listing: Sequence[Op], failing: Sequence[int], own: Mapping[str, "object"], allowed,
         heads: Sequence[tuple[Op, ...]], reachable: set[str]) -> tuple[list[Candidate], str]:
    """Candidates, most suspect first: the failing outputs' head groups, then every op reaching a
    failing output by its own error (lowest first; ops without one last). ``allowed(op_types) ->
    (OpPrecision | None, why not)``; ``own``: tensor -> :class:`OwnError`. Also says which ops no
    promotion was allowed for, and why (one phrase)."""
    out: list[Candidate] = []
    refused: dict[str, list[str]] = {}
    seen: set[str] = set()
    for group in heads:
        precision, why = allowed([op.op for op in group])
        seen.update(op.name for op in group)
        if precision is None:
            refused.setdefault(why, []).append(group[0].op)
            continue
        own_db = min((own[o.name].proxy_db for o in group if o.name in own), default=math.inf)
        out.append(Candidate(group, precision, f"produces failing output {group[0].output_position}", own_db))
    readers: dict[str, list[Op]] = {}
    for op in listing:
        for name in op.inputs:
            readers.setdefault(name, []).append(op)
    rest = []
    for op in listing:
        if op.name in seen or op.name not in reachable:
            continue
        # a tensor carried in more than int8: its producer writes it so, and its readers read it so
        # (a float op whose int8 reader gets the same scale back would change nothing)
        group = (op, *(r for r in readers.get(op.name, ()) if r is not op))
        precision, why = allowed([o.op for o in group])
        if precision is None:
            refused.setdefault(why, []).append(op.op)
            continue
        e = own.get(op.name)
        rest.append(Candidate(group, precision, e.describe() if e is not None else "no own error measured",
                              e.proxy_db if e is not None else math.inf))
    rest.sort(key=lambda c: c.proxy_db)
    skipped = "; ".join(f"{len(v)} op(s) not promotable: {k}" for k, v in refused.items())
    return out + rest, skipped
