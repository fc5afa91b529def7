"""A model's ops cut into a few contiguous segments of its execution order, at the points where the
fewest tensors are alive: the boundaries between its blocks (a residual block, a LayerNorm with the
attention it feeds, a head), so that a segment is a piece of structure, not an arbitrary slice.

Why: int8 error that is *spread* over a deep network (each op adding its own 30-40 dB, accumulating
to a few dB at the output: PP-OCRv4's recognizer, whose conv backbone alone makes its CTC argmax
disagree) cannot be found one op at a time -- promoting any single op, or any single family of ops
(every conv, every LayerNorm, the attention), gains nothing measurable, while promoting a quarter of
the backbone does. The repair's backward search (:mod:`.backward`) measures what each segment is
needed for instead: the failing outputs' score lost when that segment alone is left in int8 and every
other candidate stays promoted.
"""
from __future__ import annotations

from typing import Sequence

from edgenet.converters.repair.graph import Op


def live_counts(listing: Sequence[Op]) -> list[int]:
    """For each position i of ``listing`` (execution order): how many op outputs computed at or
    before i are still read after it (the tensors a cut after op i would cross)."""
    position = {op.name: k for k, op in enumerate(listing)}
    last_read: dict[str, int] = {}
    for k, op in enumerate(listing):
        for name in op.inputs:
            if name in position:
                last_read[name] = k
    delta = [0] * (len(listing) + 1)
    for name, end in last_read.items():
        start = position[name]
        if end > start:                      # alive after positions start .. end-1
            delta[start] += 1
            delta[end] -= 1
    counts, running = [], 0
    for k in range(len(listing)):
        running += delta[k]
        counts.append(running)
    return counts


def cut_points(listing: Sequence[Op], count: int) -> list[int]:
    """At most ``count - 1`` positions (a segment ends after each), about evenly spaced, each the
    position with the fewest live tensors within a third of a segment's length of its even place
    (ties: the nearest to it). Fewer when the model has fewer ops than ``count``."""
    n = len(listing)
    if count <= 1 or n <= 1:
        return []
    live = live_counts(listing)
    size = n / count
    cuts: list[int] = []
    for k in range(1, count):
        ideal = round(k * size) - 1
        lo = max(cuts[-1] + 1 if cuts else 0, round(ideal - size / 3))
        hi = min(n - 2, round(ideal + size / 3))
        if lo > hi:
            continue
        cuts.append(min(range(lo, hi + 1), key=lambda i: (live[i], abs(i - ideal))))
    return cuts


def segment_members(listing: Sequence[Op], members: Sequence, count: int) -> list[list]:
    """``members`` (objects with ``.ops``, e.g. repair candidates: an op with the ops that read it)
    put into the ``count`` segments of ``listing`` (by where their first op runs), in execution
    order; empty segments left out."""
    cuts = cut_points(listing, count)
    where = {op.name: k for k, op in enumerate(listing)}
    bounds = [*cuts, len(listing) - 1]
    out: list[list] = [[] for _ in bounds]
    for m in sorted(members, key=lambda m: where.get(m.ops[0].name, len(listing))):
        k = where.get(m.ops[0].name, len(listing) - 1)
        out[next(j for j, b in enumerate(bounds) if k <= b)].append(m)
    return [seg for seg in out if seg]
