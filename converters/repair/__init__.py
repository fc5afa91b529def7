"""Automatic mixed precision: when an int8 verdict fails, promote the fewest ops -- to int16
activations where the target's runtime has the kernel, to float where it runs float -- that make
the verdict pass (the order is the target profile's ``repair`` setting; the kernel table is
targets/kernels.toml).

* :mod:`.kernels` -- which promotion an op may get on a target;
* :mod:`.graph` -- the ops, what reaches a failing output, the head groups;
* :mod:`.sensitivity` -- each op's own error (proxy), the failing outputs' score (measured);
* :mod:`.promote` -- the ranked, budgeted search; :mod:`.result` -- what it found;
* :mod:`.cost` -- latency before and after.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from edgenet.converters.repair.kernels import OpPrecision, promotions, runtime_kernels
from edgenet.converters.repair.promote import Budget, Candidate, Judge, Quantizer, plan, search
from edgenet.converters.repair.result import Promotion, Repair, Stop

__all__ = ["OpPrecision", "Budget", "Candidate", "Judge", "Promotion", "Quantizer", "Repair", "Stop", "repair",
           "candidates"]


def candidates(float_model: bytes, int8_model: bytes, failing: Sequence[int], samples, runtime: str,
               order: Sequence, supports) -> tuple[list[Candidate], str]:
    """The ranked candidates of a failing int8 model (see :func:`.promote.plan`) and why ops were left
    out: ``samples`` (a few float examples) feed the own-error proxy (measured only for at most
    :data:`.promote.MEASURE_MAX` candidates: more are ranked by segments, as they run); ``runtime``, ``order`` (the
    profile's repair steps) and ``supports`` (the quantizer's promotions) decide what each op may get."""
    from edgenet.converters.repair.graph import head_groups, ops, upstream
    from edgenet.converters.repair.sensitivity import own_errors

    from edgenet.converters.repair.promote import MEASURE_MAX

    listing = ops(float_model)
    failing_set = set(failing)
    reachable = upstream(listing, failing_set)
    kernels = runtime_kernels(runtime)
    heads = head_groups(listing, failing_set)

    def allowed(types):
        return promotions(types, kernels, order, supports)

    found = plan(listing, failing, {}, allowed, heads, reachable)
    if len(found[0]) > MEASURE_MAX:
        # searched by segments in execution order (converters.repair.backward), where the own-error
        # proxy ranks nothing: not computed (a float run keeping every tensor, on LiteRT's reference
        # kernels: 3 s for YOLOv8n at 800x608)
        return found
    own = own_errors(float_model, int8_model, samples, [op.name for op in listing if op.name in reachable])
    return plan(listing, failing, own, allowed, heads, reachable)


def repair(float_model: bytes, int8_model: bytes, verdict, samples, quantize: Quantizer,
           judge: Callable, score: Callable[[bytes], float], runtime: str, order: Sequence, budget: Budget,
           runs: Callable[[bytes], str | None] | None = None, failing: Sequence[int] | None = None,
           max_ops: int | None = None, confirm: Callable[[bytes], str | None] | None = None) -> Repair:
    """Promote the fewest ops of the failing ``int8_model`` (quantized from ``float_model``; ops are
    named by their output tensors there) that make ``judge(model) -> Verdict`` pass, within
    ``budget``; ``verdict`` is the failing one. ``failing``: the positions of the model outputs
    behind its failing outputs (default: the verdict's own positions; an output judged joined from
    parts names all of them); ``max_ops``: the most ops a repair may promote (Stop.MOSTLY_PROMOTED);
    ``confirm(model)``: None when the chosen model also passes on data the search did not choose on,
    else why not (Stop.NOT_CONFIRMED)."""
    t0 = time.perf_counter()
    if failing is None:
        failing = [k for k, out in enumerate(verdict.outputs) if not out.passed]
    from edgenet.converters.repair.graph import ops

    ranked, skipped = candidates(float_model, int8_model, failing, samples, runtime, order, quantize.supports)
    return search(ranked, int8_model, verdict, quantize, judge, score, budget.rounds, runs, t0, skipped, max_ops,
                  confirm, ops(float_model))
