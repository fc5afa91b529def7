"""The repair search for a model with more candidates than can be measured one at a time: backward,
by segments of its structure (:mod:`.segments`).

Promoting one op at a time finds an error made in one place (a head whose int8 scale cannot hold
it, one conv with a 1000x channel). It is blind to an error spread over many ops -- a deep conv
backbone where each op adds its own 30-40 dB and the output loses its argmax only from their sum:
then every op, and every op family (all convs, all LayerNorms, all attention MatMul/Softmax),
promoted alone gains nothing, and a ranking by gains alone is noise. What works there is promoting
pieces of structure, counted down from a model that passes:

1. every candidate promoted (per level of the target's order: int16 first, then float, while it
   fails) -- one round per level, as the one-at-a-time search does;
2. rank: the failing outputs' producers first, then the segments as they run, with the outputs'
   arithmetic tail (the ops after their last learned layers: a detector's box decode and TopK/Gather,
   :func:`.graph.tail`) as a segment of its own, right after the first one (see ``by_segments``);
3. count: the segments' halves, in that order, the fewest whose promotion passes (the
   first 1, 2, 4 ... as far as the cap of ops allows, then bisection), level by level -- a level
   needing more than the cap moves to the next one;
   When the choice does not pass on examples it was not chosen on (``confirm``), the count grows
   along the ranking until it does (a few rounds of its own);
4. refine: the chosen halves halved, each half left in int8 when the verdict passes without it,
   the halves that cannot be halved again, as far as the budget goes -- unless the count had to
   grow: then it stands.

Same budget (rounds, counted), same :class:`~.result.Repair`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Sequence

from edgenet.converters.repair.graph import Op, tail
from edgenet.converters.repair.promote import Candidate, _assignment, _count, _flat, _op_count, _prefix_within, \
    _trial
from edgenet.converters.repair.result import Stop, passes_text
from edgenet.converters.repair.segments import segment_members

CONFIRM_ROUNDS = 4   # rounds of its own for a choice that does not pass on other examples: grown along the ranking
SEGMENTS = 8      # segments a model is cut into (their halves are counted: 16 pieces take about 5 rounds
                  # to count, which leaves a budget of 24 rounds two levels of counting and the halvings)


def _segment(members: Sequence[Candidate], reason: str, level: int = 0, gain: float | None = None) -> Candidate:
    ops = tuple({op.name: op for m in members for op in m.ops}.values())
    options = max((m.options for m in members), key=len)
    return Candidate(ops, options, reason, level=level, gain_db=gain, members=tuple(members))


def _halves(seg: Candidate) -> list[Candidate]:
    if len(seg.members) <= 1:
        return [seg]
    mid = len(seg.members) // 2
    return [_segment(part, seg.reason, seg.level, seg.gain_db) for part in (seg.members[:mid], seg.members[mid:])]


def _span(members: Sequence[Candidate]) -> str:
    first, last = members[0].ops[0], members[-1].ops[0]
    return f"{first.op} {first.name} .. {last.op} {last.name}" if len(members) > 1 else f"{first.op} {first.name}"


def by_segments(candidates: Sequence[Candidate], listing: Sequence[Op], verdict_before, quantize, judge, score,
                clock, max_ops: int | None, done, skipped: str = "", runs=None, confirm=None):
    """The search of the module's docstring over ``candidates`` (as :func:`.promote.search` takes
    them) cut into segments of ``listing`` (every op, in execution order), ``verdict_before`` the failing
    verdict; ``confirm(model)``: None when the chosen model passes on data it was not chosen on, else
    why not (the refined model first, then the counted one; else Stop.NOT_CONFIRMED); ``clock`` counts the
    rounds, ``done(model, verdict, chosen, stop, detail, measured)`` makes the result."""
    before = verdict_before
    # a failing output's producer (with the ops assembling it) is a segment of its own: one int8 scale
    # over a head is the one place-bound trouble the one-at-a-time search was best at
    heads = [c for c in candidates if c.ops[0].output_position is not None]
    head_ids = {id(h) for h in heads}
    # the failing outputs' arithmetic tail (after their last learned layers: a detector's box decode
    # and TopK/Gather) is a segment of its own, counted right after the first segment: its values'
    # range is set by the arithmetic, not by training, and counted as it runs it came last, past the
    # cap of ops (YOLO26n's boxes on a 7.5 px grid: the first 8 of 17 half-segments promoted still
    # failed, the tail never tried). Not before the first segment: the first and the last ops are
    # where int8 hurts most, and counted first the tail took YOLOv8n's 24 rounds (its stem is what
    # int8 hurts: 39 ops promoted, not 19) and a small detector's cap (its decode is half its ops)
    where = {op.name: k for k, op in enumerate(listing)}
    ends = tail(listing, {op.name for h in heads for op in h.ops})
    arith = sorted((c for c in candidates if id(c) not in head_ids and c.ops[0].name in ends),
                  key=lambda c: where.get(c.ops[0].name, len(listing)))
    arith_ids = {id(c) for c in arith}
    groups = segment_members(listing, [c for c in candidates if id(c) not in head_ids | arith_ids], SEGMENTS)
    segs = [_segment(g, f"segment {k + 1} of {len(groups)} ({_span(g)})") for k, g in enumerate(groups)]
    if arith:
        segs.insert(min(1, len(segs)), _segment(arith, f"the outputs' tail after their last learned layers "
                                                       f"({_span(arith)})"))
    segs = [_segment([h], h.reason) for h in heads] + segs
    levels = max(len(c.options) for c in candidates)
    wholes: dict[int, tuple] = {}
    first = None
    for level in range(levels):
        if not clock.fits():
            return done(None, before, (), Stop.BUDGET, f"budget spent: all {clock.max_rounds} round(s) used "
                        f"(every candidate promoted, level {level + 1} of {levels})", 0)
        wholes[level] = clock.round(_trial, [replace(s, level=level) for s in segs], quantize, judge)
        if wholes[level][1] is not None and wholes[level][1].passed:
            first = level
            break
    if first is None:
        last = [replace(s, level=levels - 1) for s in segs]
        verdict = wholes[levels - 1][1]
        kinds = ", ".join(sorted({c.precision.value for c in _flat(last)}))
        return done(None, verdict, last, Stop.EXHAUSTED,
                    f"all {len(candidates)} candidate(s) promoted ({kinds}) and the verdict still fails"
                    + (f" ({skipped})" if skipped else "")
                    + ("; the quantizer refused that model" if verdict is None else ""), 0)
    # ranked as they run, the failing outputs' producers first: the first and the last ops of a
    # network are where int8 hurts most, and an error made early passes through every op after it.
    # Measuring each segment's need (the others promoted, it alone in int8) took one round each
    # and ranked no better on the real models (PP-OCRv4's recognizer, YOLOv8n): from int16
    # everywhere it measured 0.0 dB for all but one segment of each (and int16's reference kernels
    # made each round 2.5 s on YOLOv8n); from float everywhere it ranked middle segments ahead of the
    # first ones, and the recognizer's count no longer passed within the cap of ops in float.
    ranked = list(segs)
    # the unit of counting: each segment's halves, in the segments' order (a cap may fall inside a segment)
    units = [h for s in ranked for h in _halves(s)]
    capped: list[str] = []
    for level in range(first, levels):
        leveled = [replace(s, level=level) for s in units]
        whole = wholes.get(level)
        if whole is None:
            if not clock.fits():
                break
            whole = clock.round(_trial, leveled, quantize, judge)
        if whole[1] is None or not whole[1].passed:
            continue
        limit = None if max_ops is None else _prefix_within(leveled, max_ops)
        tried: dict[int, tuple] = {}
        found = _count(leveled, quantize, judge, clock, whole, limit, tried)
        if found is None:
            break
        chosen, model, verdict = found
        if model is None and verdict is None:
            capped.append(f"{leveled[0].precision.value}: the {_op_count(leveled[:limit])} ops of the first "
                          f"{limit} of {len(leveled)} half-segments fail")
            continue
        grown = ""
        if confirm is not None:
            # the fewest that pass on the evaluation examples are where a choice fits them most: grown
            # along the ranking until the model passes on examples it was not chosen on
            found, grown, why_not = _grow(leveled, len(chosen), limit, (model, verdict), quantize, judge, clock,
                                          confirm, tried)
            if found is None:
                return done(None, before, (), Stop.NOT_CONFIRMED, why_not, 0)
            chosen, model, verdict = found
        counted = (chosen, model, verdict)
        cut = False
        if not grown:
            chosen, model, verdict, cut = _refine(chosen, model, verdict, quantize, judge, clock)
            if confirm is not None and counted[1] is not model and confirm(model) is not None:
                chosen, model, verdict = counted
        # else not refined: the fewest pieces that pass on the evaluation examples did not pass on
        # the others, so the count stands at the edge of what the evaluation examples can tell, and
        # each piece the refinement leaves out on their word alone brings it back over (PP-OCRv4's
        # recognizer: 19 rounds cut its 98 float ops to 64, on a model that then failed on the
        # calibration examples, and the grown count was kept)
        promoted = _op_count(chosen)
        if max_ops is not None and promoted > max_ops:
            capped.append(f"{leveled[0].precision.value}: the passing model found promotes {promoted} ops")
            continue
        if runs is not None:
            why_not = runs(model)
            if why_not:
                return done(None, verdict, chosen, Stop.REFUSED,
                            f"the passing model does not run on the target: {why_not}", 0)
        note = f" (searched by {len(segs)} segments of the model{grown}" + (
            ", refinement cut short by the budget)" if cut else ", not refined)" if grown else ")")
        return done(model, verdict, chosen, Stop.PASSED, passes_text(verdict) + note, 0)
    if capped:
        return done(None, before, (), Stop.MOSTLY_PROMOTED,
                    f"a passing model needs more than {max_ops} ops promoted (every candidate promoted passes, the "
                    f"most the cap allows does not -- counted by segments of the model, the outputs' producers first: "
                    f"{'; '.join(capped)}): not an int8 model",
                    0)
    return done(None, before, (), Stop.BUDGET, f"budget spent: all {clock.max_rounds} round(s) used "
                f"(searching by {len(segs)} segments)", 0)


def _grow(units: list[Candidate], k: int, limit: int | None, found, quantize, judge, clock, confirm,
          tried: dict | None = None):
    """The first ``k`` of ``units`` (passing: ``found`` = (model, verdict)), or more of them, half as
    many again each time (at most ``limit``), until ``confirm(model)`` passes, in
    :data:`CONFIRM_ROUNDS` rounds of the search's own (a count in ``tried`` -- {count: (model,
    verdict)} -- takes none): ((chosen, model, verdict) or None, a note for the result, why not)."""
    model, verdict = found
    why_not = confirm(model)
    start, top = k, len(units) if limit is None else min(limit, len(units))
    own = 0
    while why_not is not None and k < top and own < CONFIRM_ROUNDS:
        k = min(top, k + max(1, k // 2))
        if tried is not None and k in tried:     # counted already
            model, verdict = tried[k]
        else:
            model, verdict = _trial(units[:k], quantize, judge)
            clock.rounds += 1
            clock.max_rounds += 1
        own += 1
        if verdict is not None and verdict.passed:
            why_not = confirm(model)
    if why_not is not None:
        return None, "", why_not + (f" (nor with up to {k} of {len(units)} half-segments promoted)" if own else "")
    grown = f"; {k} half-segments, not the {start} that passed first, to pass on other examples too" if own else ""
    return (list(units[:k]), model, verdict), grown, None


def _refine(chosen: list[Candidate], model: bytes, verdict, quantize, judge, clock):
    """The chosen segments halved, in the order counted; each piece left in int8 when the verdict passes
    without it, else halved again (breadth first), while the budget lasts: (chosen, model, verdict,
    cut short by the budget). Each step is judged by the quick verdict alone (a :class:`Judge`'s; the
    whole evaluation set of a 608x800 text detector took 2.8 s a step, 17 steps); the refined model
    then once by the whole one, and the counted choice stands when it fails there."""
    quick = getattr(judge, "quick", judge)
    pieces = [h for seg in chosen for h in _halves(seg)]
    kept = list(pieces)
    accepted = [(list(chosen), model, verdict)]     # every state the refinement passed through
    work = deque(p for p in pieces if len(chosen) > 1 or len(pieces) > 1)
    cut = False
    # the states judged, by the promotions they make: a piece halved down to nothing needed leaves the
    # same state each time its last half is tried (YOLO26n: the outputs' producers alone, 4 times)
    judged: dict[frozenset, tuple] = {}
    while work:
        piece = work.popleft()
        rest = [x for x in kept if x is not piece]
        if not rest:
            continue
        key = frozenset(_assignment(rest).items())
        if key not in judged:
            if not clock.fits():
                cut = True
                break
            judged[key] = clock.round(_trial, rest, quantize, quick)
        m, v = judged[key]
        if v is not None and v.passed:
            kept = rest
            accepted.append((list(rest), m, v))
            continue
        halves = _halves(piece)
        if len(halves) > 1:
            at = next(i for i, x in enumerate(kept) if x is piece)
            kept[at:at + 1] = halves
            work.extend(halves)
    if len(accepted) == 1 or quick is judge:
        return (*accepted[-1], cut)
    return (*_last_passing(accepted, judge.full), cut)


def _last_passing(accepted: list[tuple], full) -> tuple:
    """The last of the refinement's ``accepted`` states (the first: the counted choice, judged in
    full) whose model passes the whole verdict, found by bisection (each piece left out makes passing
    harder, so the states pass up to some point): at most log2(len) whole verdicts of models already
    made, none requantized."""
    lo, hi = 0, len(accepted) - 1            # accepted[lo] passes in full; accepted[hi] not known
    judged: dict[int, object] = {}
    while lo < hi:
        mid = (lo + hi + 1) // 2
        judged[mid] = full(accepted[mid][1])
        if judged[mid].passed:
            lo = mid
        else:
            hi = mid - 1
    chosen, model, verdict = accepted[lo]
    return chosen, model, judged.get(lo, verdict)
