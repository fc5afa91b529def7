"""The repair search: the fewest promotions (int16 activations or float, per op group) that make a
failing int8 verdict pass, found within a budget of rounds.

1. candidates: the op groups whose values reach a failing output -- each failing output's producer
   with the ops that only assemble it, then every other op -- each with the promotion the target
   allows it (:func:`converters.repair.kernels.promotion`), in the order of their own error
   (:func:`converters.repair.sensitivity.own_errors`: what the op adds, not what it inherits);
2. sensitivity, measured: the most suspect candidates promoted one at a time, the failing outputs'
   SQNR on a small evaluation subset each time; candidates ranked by what they gained;
3. count: every candidate promoted (if that fails, the next promotion in the target's order is
   tried for each: int16, then float), then the first 1, 2, 4 ... ranked candidates, judged on the
   whole evaluation set until the verdict passes, then a binary search for the smallest passing count;
4. pruning: each promotion of the passing model dropped in turn (least useful first) when the
   verdict passes without it.

Every round (one quantization and one judgement) is counted; a round starts only while the budget
(a number of rounds, the target profile's ``repair_rounds``) has one left. The budget is counted, not
timed: the same model and data give the same search, and the same repaired model byte for byte, on
any machine at any load (a time budget gave fewer rounds, and another model, on a busy machine). The
rounds' seconds are measured and reported. The result says why the search stopped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from edgenet.config import OpPrecision
from edgenet.converters.repair.graph import Op
from edgenet.converters.repair.result import Promotion, Repair, Stop, passes_text
from edgenet.errors import ConversionError
from edgenet.quality import Verdict

MEASURE_SHARE = 0.5        # of the budget, at most, for measuring single-candidate sensitivity
MEASURE_MAX = 16           # candidates measured one at a time, at most
HEAD_REASON = "produces failing output"
MIN_GAIN_DB = 0.1          # a measured gain below this is no gain
REFUSALS = (ConversionError, ValueError, RuntimeError)   # a quantizer or runtime refusing one promotion


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
    options: tuple[OpPrecision, ...]     # what the target allows it, in the profile's repair order
    reason: str
    proxy_db: float = math.inf           # own error (lower: worse)
    gain_db: float | None = None         # measured: the failing outputs' SQNR gained with it alone
    level: int = 0                       # which of ``options`` it gets (the last one past the end)
    members: tuple["Candidate", ...] = ()  # a segment (converters.repair.backward): these, each at ``level``

    @property
    def name(self) -> str:
        return self.ops[0].name

    @property
    def precision(self) -> OpPrecision:
        return self.options[min(self.level, len(self.options) - 1)]


@dataclass(frozen=True)
class Budget:
    """The search's cost: at most ``rounds`` quantize-and-judge rounds (the profile's ``repair_rounds``)."""

    rounds: int


class _Clock:
    """Counts the search's rounds against its budget (and times them, for the report only)."""

    def __init__(self, max_rounds: int, started: float | None):
        self.t0 = time.perf_counter() if started is None else started
        self.max_rounds = max_rounds
        self.rounds = 0

    @property
    def spent(self) -> float:
        return time.perf_counter() - self.t0

    def fits(self, share: float = 1.0) -> bool:
        """One more round fits within ``share`` of the budget."""
        return self.rounds + 1 <= math.floor(share * self.max_rounds)

    def round(self, fn, *args):
        try:
            return fn(*args)
        finally:
            self.rounds += 1


def _flat(chosen: Sequence[Candidate]) -> list[Candidate]:
    """``chosen`` with each segment replaced by its members at the segment's level."""
    return [m for c in chosen
            for m in ([replace(x, level=c.level, reason=c.reason, gain_db=None) for x in c.members]
                      if c.members else [c])]


def _assignment(chosen: Sequence[Candidate]) -> dict[str, OpPrecision]:
    return {op.name: c.precision for c in _flat(chosen) for op in c.ops}


def _promotions(chosen: Sequence[Candidate]) -> tuple[Promotion, ...]:
    out: dict[str, Promotion] = {}
    for c in _flat(chosen):
        for k, op in enumerate(c.ops):
            if op.name in out:
                continue
            why = c.reason if k == 0 else (f"reads {c.name} ({c.reason})" if c.name in op.inputs
                                           else f"assembles output {c.ops[0].output_position}")
            out[op.name] = Promotion(op.name, op.op, c.precision, why, c.gain_db if k == 0 else None)
    return tuple(out.values())


def search(candidates: Sequence[Candidate], int8_model: bytes, verdict_before: Verdict,
           quantize: Quantizer, judge: Callable[[bytes], Verdict], score: Callable[[bytes], float],
           budget_rounds: int, runs: Callable[[bytes], str | None] | None = None,
           started: float | None = None, skipped: str = "", max_ops: int | None = None,
           confirm: Callable[[bytes], str | None] | None = None,
           listing: Sequence[Op] | None = None) -> Repair:
    """The smallest set of ``candidates`` (ranked by their own error, most suspect first) whose
    promotion makes ``judge`` pass, searched as the module says. ``score(model)``: the failing
    outputs' SQNR on a small subset (higher is better); ``runs(model)``: None when the target's
    runtime runs the model, else why not; ``started``: when the search's clock started (work done
    before, e.g. the own-error proxy, counts); ``skipped``: why ops were left out (for the report);
    ``max_ops``: the most ops a repair may promote (more, and it is not an int8 model: the count stops
    there, Stop.MOSTLY_PROMOTED); ``confirm(model)``: None when the chosen model passes on other data
    too, else why not -- the pruned model first, then the one before pruning (pruning to the fewest
    ops is where a choice fits the evaluation examples most), else Stop.NOT_CONFIRMED. ``listing``:
    every op of the model in execution order -- with it, a model with more candidates than can be measured one at a time (MEASURE_MAX) is searched by
    segments of its structure instead (:func:`converters.repair.backward.by_segments`)."""
    clock = _Clock(budget_rounds, started)
    size = len(int8_model)

    def done(model, verdict, chosen, stop, detail, measured):
        return Repair(model, verdict_before, verdict, _promotions(chosen), clock.rounds, clock.spent,
                      clock.max_rounds, stop, detail, size, len(model) if model is not None else size,
                      measured=measured)

    if not candidates:
        return done(None, verdict_before, (), Stop.NO_CANDIDATES,
                    "no op reaching a failing output may be promoted on this target"
                    + (f" ({skipped})" if skipped else ""), 0)
    if listing is not None and len(candidates) > MEASURE_MAX:
        from edgenet.converters.repair.backward import by_segments

        return by_segments(candidates, listing, verdict_before, quantize, judge, score, clock, max_ops, done,
                           skipped, runs, confirm)
    levels = max(len(c.options) for c in candidates)
    measured, known, refused, base = 0, {}, [], None
    what = f"{levels} level(s)" if levels > 1 else "the candidates"
    for level in range(levels):
        # level 0: each candidate's first promotion (int16 before float on a CPU target); when all of
        # them so promoted do not pass (one round tells), the next level gives the next one to those
        # that have it; only a level that can pass is measured and counted
        leveled = [replace(c, level=level, gain_db=None) for c in candidates]
        if not clock.fits():
            return done(None, verdict_before, (), Stop.BUDGET,
                        f"budget spent: all {budget_rounds} round(s) used (level {level + 1} of "
                        f"{what})", measured)
        whole = clock.round(_trial, leveled, quantize, judge)
        if whole[1] is None or not whole[1].passed:
            if level + 1 < levels:
                continue
            kinds = ", ".join(sorted({c.precision.value for c in leveled}))
            return done(None, whole[1] or verdict_before, leveled, Stop.EXHAUSTED,
                        f"all {len(leveled)} candidate(s) promoted ({kinds}) and the verdict still fails"
                        + (f" ({skipped})" if skipped else "")
                        + ("; the quantizer refused that model" if whole[1] is None else ""), measured)
        if base is None:
            base = score(int8_model)
        ranked, n = _measure(leveled, int8_model, base, quantize, score, clock, known, refused)
        measured += n
        limit = None if max_ops is None else _prefix_within(ranked, max_ops)
        found = _count(ranked, quantize, judge, clock, whole if len(ranked) == len(leveled) else None, limit)
        if found is not None and found[1] is None and found[2] is None:
            return done(None, verdict_before, (), Stop.MOSTLY_PROMOTED,
                        f"a passing model needs more than {max_ops} ops promoted (all {_op_count(leveled)} "
                        f"candidate ops promoted pass, the {_op_count(ranked[:limit])} most useful do not): "
                        "not an int8 model", measured)
        counted = found is not None
        if not counted:             # budget: the passing model of all of them stands
            chosen, (model, verdict) = leveled, whole
        else:
            chosen, model, verdict = found
            if verdict is None or not verdict.passed:   # a refused candidate left out of ``ranked``
                chosen, (model, verdict) = leveled, whole
        break
    unpruned = (chosen, model, verdict)
    chosen, model, verdict, cut = _prune(chosen, model, verdict, quantize, judge, clock)
    if confirm is not None:
        why_not = confirm(model)
        if why_not and unpruned[1] is not model:
            if confirm(unpruned[1]) is None:
                (chosen, model, verdict), why_not = unpruned, None
        if why_not:
            return done(None, verdict_before, (), Stop.NOT_CONFIRMED, why_not, measured)
    promoted = _op_count(chosen)
    if max_ops is not None and promoted > max_ops:     # the budget ended before the count got below the cap
        return done(None, verdict_before, (), Stop.MOSTLY_PROMOTED,
                    f"the one passing model found promotes {promoted} ops (more than {max_ops}): not an int8 "
                    "model", measured)
    note = (" (all candidates kept: the budget ended before the count)" if not counted else
            " (pruning cut short by the budget)" if cut else "")
    if refused:
        note += f"; the quantizer refused {len(refused)} promotion(s), e.g. {refused[0]}"
    if runs is not None:
        why_not = runs(model)
        if why_not:
            return done(None, verdict, chosen, Stop.REFUSED, f"the passing model does not run on the target: {why_not}",
                        measured)
    return done(model, verdict, chosen, Stop.PASSED, passes_text(verdict) + note, measured)


def _measure(candidates: list[Candidate], int8_model: bytes, base: float, quantize: Quantizer,
             score: Callable[[bytes], float], clock: "_Clock", known: dict, refused: list[str]
             ) -> tuple[list[Candidate], int]:
    """The most suspect candidates promoted one at a time (within MEASURE_SHARE of the budget), ranked
    by the failing outputs' SQNR gained: helpful ones first, then the unmeasured in proxy order, then
    the measured that gained nothing alone. A candidate the quantizer refuses (REFUSALS) is dropped
    and named in ``refused``."""
    measured: list[Candidate] = []
    n = 0
    for c in candidates[:MEASURE_MAX]:
        key = (c.name, c.precision)        # ``known``: gains of earlier levels, not measured twice
        if key not in known:
            if not clock.fits(MEASURE_SHARE):
                break
            try:
                s = clock.round(lambda: score(quantize(_assignment([c]))))
            except REFUSALS as exc:       # the quantizer cannot make this op so: never a candidate
                known[key] = None
                first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                refused.append(f"{c.ops[0].op} {c.name}: {first}")
                n += 1
                continue
            known[key] = s - base if math.isfinite(s - base) else (60.0 if s > base else 0.0)
            n += 1
        if known[key] is None:
            continue
        measured.append(replace(c, gain_db=known[key]))
    helpful = sorted((c for c in measured if c.gain_db >= MIN_GAIN_DB), key=lambda c: -c.gain_db)
    useless = [c for c in measured if c.gain_db < MIN_GAIN_DB]
    rest = [c for c in candidates if (c.name, c.precision) not in known]     # unmeasured, in proxy order
    return helpful + rest + useless, n


def _trial(chosen: Sequence[Candidate], quantize: Quantizer, judge) -> tuple[bytes | None, Verdict | None]:
    """(model, verdict) with ``chosen`` promoted; (None, None) when the quantizer refuses it.
    ``judge`` may be a :class:`Judge`: its quick verdict first, the whole one only when that passes."""
    try:
        model = quantize(_assignment(chosen))
        return model, judge(model)
    except REFUSALS:
        return None, None


@dataclass(frozen=True)
class Judge:
    """The verdict two ways: ``quick`` on a small subset of the evaluation data (int16 ops run on
    slow reference kernels: a whole evaluation set of a 224x224 model with them takes tens of
    seconds), ``full`` on all of it; a model is judged in full only when it passes the quick one."""

    full: Callable[[bytes], Verdict]
    quick: Callable[[bytes], Verdict]

    def __call__(self, model: bytes) -> Verdict:
        quick = self.quick(model)
        return quick if not quick.passed else self.full(model)


def _op_count(candidates: Sequence[Candidate]) -> int:
    """How many distinct ops ``candidates`` promote (groups share ops: an op and its readers)."""
    return len({op.name for c in _flat(candidates) for op in c.ops})


def _prefix_within(ranked: Sequence[Candidate], max_ops: int) -> int:
    """The most leading candidates of ``ranked`` whose distinct ops number at most ``max_ops``."""
    seen: set[str] = set()
    for k, c in enumerate(ranked):
        seen.update(op.name for op in c.ops)
        if len(seen) > max_ops:
            return k
    return len(ranked)


def _count(ranked: list[Candidate], quantize: Quantizer, judge, clock: "_Clock", whole=None,
           limit: int | None = None, tried: dict | None = None):
    """All of ``ranked`` promoted (when that fails, the level is done in one round), then the first
    1, 2, 4 ... until the verdict passes, then bisected to the smallest passing count, as far as the
    budget goes: (chosen, model, verdict) -- the passing one, or all of them failing -- or None when
    the budget ran out before the first round. ``limit``: the most candidates that may be chosen; when
    the first ``limit`` do not pass, ([], None, None). ``tried``: filled with {count: (model, verdict)}
    of every count tried (for a search that goes on along the same ranking)."""
    tried = {} if tried is None else tried
    if whole is not None:
        tried[len(ranked)] = whole

    def trial(k: int):
        if k not in tried:
            tried[k] = _trial(ranked[:k], quantize, judge)
        return tried[k]

    def passed(k: int) -> bool:
        verdict = tried[k][1] if k in tried else clock.round(trial, k)[1]
        return verdict is not None and verdict.passed

    if not ranked:
        return [], None, None
    # all of them first (``whole``: already tried): when even that fails, the level is done
    if len(ranked) not in tried and not clock.fits():
        return None
    if not passed(len(ranked)):
        model, verdict = tried[len(ranked)]
        return list(ranked), model, verdict
    low, high, k = 0, None, 1
    cap = len(ranked) if limit is None else min(limit, len(ranked))
    while k < len(ranked):
        if not clock.fits():        # out of rounds: the passing model of all of them stands
            break
        k = min(k, cap)
        if passed(k):
            high = k
            break
        low = k
        if k >= cap:
            break
        k *= 2
    if high is None and cap < len(ranked) and low >= cap:
        return [], None, None       # the first ``limit`` do not pass: more would be needed
    if high is None:
        high = len(ranked)
    while high - low > 1 and clock.fits():
        mid = (low + high) // 2
        if passed(mid):
            high = mid
        else:
            low = mid
    return list(ranked[:high]), *tried[high]


def _prune(chosen: list[Candidate], model: bytes, verdict: Verdict, quantize: Quantizer, judge, clock: "_Clock"):
    """Each promotion dropped in turn, least useful first, where the verdict passes without it;
    (chosen, model, verdict, cut short by the budget)."""
    order = sorted(chosen, key=lambda c: (c.gain_db if c.gain_db is not None else -1.0))
    for c in order[:-1]:
        if not clock.fits():
            return chosen, model, verdict, True
        rest = [x for x in chosen if x is not c]
        m, v = clock.round(_trial, rest, quantize, judge)
        if v is not None and v.passed:
            chosen, model, verdict = rest, m, v
    return chosen, model, verdict, False


def plan(listing: Sequence[Op], failing: Sequence[int], own: Mapping[str, "object"], allowed,
         heads: Sequence[tuple[Op, ...]], reachable: set[str]) -> tuple[list[Candidate], str]:
    """Candidates, most suspect first: the failing outputs' head groups, then every op reaching a
    failing output by its own error (lowest first; ops without one last). ``allowed(op_types) ->
    (allowed OpPrecisions in order, why not the others)``; ``own``: tensor -> :class:`OwnError`. Also says which ops no
    promotion was allowed for, and why (one phrase)."""
    out: list[Candidate] = []
    refused: dict[str, list[str]] = {}
    seen: set[str] = set()
    for group in heads:
        options, why = allowed([op.op for op in group])
        seen.update(op.name for op in group)
        if not options:
            refused.setdefault(why, []).append(group[0].op)
            continue
        own_db = min((own[o.name].proxy_db for o in group if o.name in own), default=math.inf)
        out.append(Candidate(group, options, f"{HEAD_REASON} {group[0].output_position}", own_db))
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
        options, why = allowed([o.op for o in group])
        if not options:
            refused.setdefault(why, []).append(op.op)
            continue
        e = own.get(op.name)
        rest.append(Candidate(group, options, e.describe() if e is not None else "no own error measured",
                              e.proxy_db if e is not None else math.inf))
    rest.sort(key=lambda c: c.proxy_db)
    skipped = "; ".join(f"{len(v)} op(s) not promotable: {k}" for k, v in refused.items())
    return out + rest, skipped
