"""The repair search for a model with more candidates than can be measured one at a time: backward,
by segments of its structure (:mod:`.segments`).

Promoting one op at a time finds an error made in one place (a head whose int8 scale cannot hold
it, one conv with a 1000x channel). It is blind to an error spread over many ops -- a deep conv
backbone where each op adds its own 30-40 dB and the output loses its argmax only from their sum:
then every op, and every op family (all convs, all LayerNorms, all attention MatMul/Softmax),
promoted alone gains nothing, and a ranking by gains alone is noise. What *is* measurable there is
what a piece is needed for, seen from a model that passes:

1. every candidate promoted (per level of the target's order: int16 first, then float, while it
   fails) -- one round per level, as the one-at-a-time search does;
2. need, measured: from every candidate at its most exact promotion (float where the target
   runs it, else the last of the target's order), each segment in turn left in int8 alone; the
   failing outputs' score lost is what the segment is needed for (one round each, within
   MEASURE_SHARE of the budget);
3. count: the segments' halves, most needed segment first, the fewest whose promotion passes (the
   first 1, 2, 4 ... as far as the cap of ops allows, then bisection), level by level -- a level
   needing more than the cap moves to the next one;
   When the choice does not pass on examples it was not chosen on (``confirm``), the count grows
   along the ranking until it does (a few rounds of its own);
4. refine: the chosen halves halved, each half left in int8 when the verdict passes without it,
   the halves that cannot be halved again, as far as the budget goes.

Same budget (rounds, counted), same :class:`~.result.Repair`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from typing import Sequence

from edgenet.config import OpPrecision
from edgenet.converters.repair.graph import Op
from edgenet.converters.repair.promote import (MEASURE_SHARE, MIN_GAIN_DB, REFUSALS, Candidate, _assignment, _count,
                                               _flat, _op_count, _prefix_within, _trial)
from edgenet.converters.repair.result import Stop, passes_text
from edgenet.converters.repair.segments import segment_members

CONFIRM_ROUNDS = 4   # rounds of its own for a choice that does not pass on other examples: grown along the ranking
SEGMENTS = 8      # segments a model is cut into: one round each to measure (a budget of 24 rounds leaves
                  # about two levels of counting and a few halvings)


def _segment(members: Sequence[Candidate], reason: str, level: int = 0, gain: float | None = None) -> Candidate:
    ops = tuple({op.name: op for m in members for op in m.ops}.values())
    options = max((m.options for m in members), key=len)
    return Candidate(ops, options, reason, level=level, gain_db=gain, members=tuple(members))


def _exact_members(seg: Candidate) -> list[Candidate]:
    """``seg``'s members (or ``seg``), each at its most exact promotion: float where the target allows
    it float (an exact op; float ops also run on XNNPACK's fast kernels, int16 ones on LiteRT's
    single-threaded reference kernels: a 320x320 detector's eight evaluation examples with every op
    int16 take 2.5 s, with them float 0.04 s), else the last of its options."""
    return [replace(m, level=m.options.index(OpPrecision.FLOAT) if OpPrecision.FLOAT in m.options
                    else len(m.options) - 1) for m in (seg.members or (seg,))]


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
    groups = segment_members(listing, [c for c in candidates if id(c) not in head_ids], SEGMENTS)
    segs = [_segment([h], h.reason) for h in heads] + \
        [_segment(g, f"segment {k + 1} of {len(groups)} ({_span(g)})") for k, g in enumerate(groups)]
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
    # need: from the most exact promotion of everything (float where the target runs it, else the
    # last of its order), each segment alone left in int8
    exact = [_exact_members(s) for s in segs]
    wanted = _assignment([m for ms in exact for m in ms])
    reference = next((wholes[lv][0] for lv in sorted(wholes)
                      if _assignment([replace(s, level=lv) for s in segs]) == wanted), None)
    if reference is None and clock.fits(MEASURE_SHARE):
        try:
            reference = clock.round(lambda: quantize(wanted))
        except REFUSALS:
            reference = None
    need: dict[int, float] = {}
    if reference is not None:
        base = score(reference)
        for k, s in enumerate(segs):
            if not clock.fits(MEASURE_SHARE):
                break
            rest = [m for j, ms in enumerate(exact) if j != k for m in ms]
            try:
                left = clock.round(lambda: score(quantize(_assignment(rest))))
            except REFUSALS:
                continue
            lost = base - left
            need[k] = lost if math.isfinite(lost) else (60.0 if base > left else 0.0)
    helpful = sorted((k for k in need if need[k] >= MIN_GAIN_DB), key=lambda k: -need[k])
    order = helpful + [k for k in range(len(segs)) if k not in need] + [k for k in need if need[k] < MIN_GAIN_DB]
    ranked = [replace(segs[k], gain_db=need.get(k),
                      reason=segs[k].reason + (f": left alone in int8 (the rest promoted), the failing output's "
                                               f"score falls by {need[k]:.1f} dB" if k in need else ""))
              for k in order]
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
        found = _count(leveled, quantize, judge, clock, whole, limit)
        if found is None:
            break
        chosen, model, verdict = found
        if model is None and verdict is None:
            capped.append(f"{leveled[0].precision.value}: the {_op_count(leveled[:limit])} ops of the most needed "
                          f"{limit} of {len(leveled)} half-segments do not pass")
            continue
        grown = ""
        if confirm is not None:
            # the fewest that pass on the evaluation examples are where a choice fits them most: grown
            # along the ranking until the model passes on examples it was not chosen on
            found, grown, why_not = _grow(leveled, len(chosen), limit, (model, verdict), quantize, judge, clock,
                                          confirm)
            if found is None:
                return done(None, before, (), Stop.NOT_CONFIRMED, why_not, len(need))
            chosen, model, verdict = found
        counted = (chosen, model, verdict)
        chosen, model, verdict, cut = _refine(chosen, model, verdict, quantize, judge, clock)
        if confirm is not None and counted[1] is not model and confirm(model) is not None:
            chosen, model, verdict = counted
        promoted = _op_count(chosen)
        if max_ops is not None and promoted > max_ops:
            capped.append(f"{leveled[0].precision.value}: the passing model found promotes {promoted} ops")
            continue
        if runs is not None:
            why_not = runs(model)
            if why_not:
                return done(None, verdict, chosen, Stop.REFUSED,
                            f"the passing model does not run on the target: {why_not}", len(need))
        note = f" (searched by {len(segs)} segments of the model{grown}" + (
            ", refinement cut short by the budget)" if cut else ")")
        return done(model, verdict, chosen, Stop.PASSED, passes_text(verdict) + note, len(need))
    if capped:
        return done(None, before, (), Stop.MOSTLY_PROMOTED,
                    f"a passing model needs more than {max_ops} ops promoted (every candidate promoted passes; "
                    f"by segments of the model, most needed first: {'; '.join(capped)}): not an int8 model",
                    len(need))
    return done(None, before, (), Stop.BUDGET, f"budget spent: all {clock.max_rounds} round(s) used "
                f"(searching by {len(segs)} segments)", len(need))


def _grow(units: list[Candidate], k: int, limit: int | None, found, quantize, judge, clock, confirm):
    """The first ``k`` of ``units`` (passing: ``found`` = (model, verdict)), or more of them, half as
    many again each time (at most ``limit``), until ``confirm(model)`` passes, in
    :data:`CONFIRM_ROUNDS` rounds of the search's own: ((chosen, model, verdict) or None, a note for
    the result, why not)."""
    model, verdict = found
    why_not = confirm(model)
    start, top = k, len(units) if limit is None else min(limit, len(units))
    own = 0
    while why_not is not None and k < top and own < CONFIRM_ROUNDS:
        k = min(top, k + max(1, k // 2))
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
    """The chosen segments halved, least needed first; each piece left in int8 when the verdict passes
    without it, else halved again (breadth first), while the budget lasts: (chosen, model, verdict,
    cut short by the budget)."""
    pieces = [h for seg in sorted(chosen, key=lambda c: c.gain_db if c.gain_db is not None else math.inf)
              for h in _halves(seg)]
    kept = list(pieces)
    work = deque(p for p in pieces if len(chosen) > 1 or len(pieces) > 1)
    while work:
        if not clock.fits():
            return kept, model, verdict, True
        piece = work.popleft()
        rest = [x for x in kept if x is not piece]
        if not rest:
            continue
        m, v = clock.round(_trial, rest, quantize, judge)
        if v is not None and v.passed:
            kept, model, verdict = rest, m, v
            continue
        halves = _halves(piece)
        if len(halves) > 1:
            at = next(i for i, x in enumerate(kept) if x is piece)
            kept[at:at + 1] = halves
            work.extend(halves)
    return kept, model, verdict, False
