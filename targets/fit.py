"""Find the largest model (by mult-adds) that fits a microcontroller: :func:`fit_model`.

Candidates are (width multiplier, resolution) pairs. They are tried from the most mult-adds down;
each one is built (converted to an int8 .tflite by the caller's ``build``), run in the real
TFLite Micro interpreter to measure its arena, and compared with the target's RAM and flash
budgets. The first that fits is the answer: everything after it is smaller. A candidate is not
built when a known failure already decides it: one at least as wide and at least as large in
resolution as a candidate whose arena exceeded RAM also exceeds RAM, and (for MobileNets, whose
weights do not depend on the input size) one at least as wide as a candidate whose model
exceeded flash also exceeds flash.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from edgenet.errors import EdgenetError, TargetError, UsageError
from edgenet.targets.profile import TargetProfile
from edgenet.targets.tflm import kib, run_tflm


class FitStatus(str, Enum):
    FITS = "fits"
    TOO_BIG = "too_big"              # measured: arena over the RAM budget and/or model over flash
    DOES_NOT_RUN = "does_not_run"    # TFLite Micro cannot run it (missing kernel ...)
    BUILD_FAILED = "build_failed"
    DOMINATED = "dominated"          # not built: a known failure decides it
    NOT_NEEDED = "not_needed"        # not built: a candidate with more mult-adds fits


@dataclass(frozen=True)
class FitCandidate:
    alpha: float
    resolution: int
    mult_adds: int
    status: FitStatus
    arena_bytes: int | None = None
    model_bytes: int | None = None
    over_ram: bool = False
    over_flash: bool = False
    reason: str = ""
    path: str | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"alpha {self.alpha:g} @ {self.resolution} px"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass(frozen=True)
class FitResult:
    target: str
    ram_budget: int | None
    flash_budget: int | None
    chosen: FitCandidate | None
    candidates: tuple[FitCandidate, ...]  # every candidate, most mult-adds first
    builds: int                           # how many candidates were actually built and measured

    def to_dict(self) -> dict:
        return {"target": self.target, "ram_budget": self.ram_budget, "flash_budget": self.flash_budget,
                "chosen": self.chosen.to_dict() if self.chosen else None, "builds": self.builds,
                "candidates": [c.to_dict() for c in self.candidates]}

    def report_lines(self) -> list[str]:
        """What was picked, what was rejected and why: one line each."""
        lines = [f"fit for {self.target} (RAM budget {kib(self.ram_budget)}, flash budget "
                 f"{kib(self.flash_budget)}): {self.builds} of {len(self.candidates)} candidates built"]
        for c in self.candidates:
            if c is self.chosen:
                lines.append("  picked   " + candidate_line(c))
            elif c.status is FitStatus.FITS:   # built in the same batch as the pick
                lines.append("  fits too " + candidate_line(c) + " (fewer mult-adds)")
            elif c.status is not FitStatus.NOT_NEEDED:
                lines.append("  rejected " + candidate_line(c))
        skipped = sum(c.status is FitStatus.NOT_NEEDED for c in self.candidates)
        if skipped:
            lines.append(f"  ({skipped} smaller candidate(s) not needed)")
        return lines


def candidate_line(c: FitCandidate) -> str:
    """``alpha 0.5 @ 96 px: 12.2 M mult-adds, arena 117.1 KiB, model 934.4 KiB`` (or why not)."""
    size = f"{c.mult_adds / 1e6:.1f} M mult-adds"
    if c.status is FitStatus.FITS:
        return f"{c.label}: {size}, arena {kib(c.arena_bytes)}, model {kib(c.model_bytes)}"
    return f"{c.label}: {size}: {c.reason}"


def _dominating_failure(alpha: float, res: int, failures: list[FitCandidate],
                        size_depends_on_resolution: bool) -> str | None:
    for f in failures:
        if f.over_ram and alpha >= f.alpha and res >= f.resolution:
            return f"at least as wide and as large as {f.label}, whose arena {kib(f.arena_bytes)} exceeded RAM"
        if f.over_flash and alpha >= f.alpha and (res >= f.resolution or not size_depends_on_resolution):
            return f"at least as wide as {f.label}, whose model {kib(f.model_bytes)} exceeded flash"
    return None


def _measure(profile: TargetProfile, alpha: float, res: int, macs: int,
             build: Callable[[float, int], Path]) -> FitCandidate:
    t0 = time.perf_counter()
    try:
        path = Path(build(alpha, res))
    except EdgenetError as exc:
        return FitCandidate(alpha, res, macs, FitStatus.BUILD_FAILED, reason=f"build failed: {exc}",
                            seconds=time.perf_counter() - t0)
    model_bytes = path.stat().st_size
    run = run_tflm(path, samples=1)
    seconds = time.perf_counter() - t0
    if not run.ok:
        why = f"no TFLite Micro kernel for {', '.join(run.missing_ops)}" if run.missing_ops else run.error
        return FitCandidate(alpha, res, macs, FitStatus.DOES_NOT_RUN, run.arena_bytes, model_bytes,
                            reason=f"does not run: {why}", path=str(path), seconds=seconds)
    ram, flash = profile.ram_budget, profile.flash_budget
    over_ram = ram is not None and run.arena_bytes > ram
    over_flash = flash is not None and model_bytes > flash
    reasons = []
    if over_ram:
        reasons.append(f"arena {kib(run.arena_bytes)} > RAM budget {kib(ram)}")
    if over_flash:
        reasons.append(f"model {kib(model_bytes)} > flash budget {kib(flash)}")
    status = FitStatus.TOO_BIG if reasons else FitStatus.FITS
    return FitCandidate(alpha, res, macs, status, run.arena_bytes, model_bytes, over_ram, over_flash,
                        "; ".join(reasons), str(path), seconds)


def fit_model(profile: TargetProfile, candidates: list[tuple[float, int]],
              build: Callable[[float, int], Path] | None, mult_adds: Callable[[float, int], int], *,
              size_depends_on_resolution: bool = False,
              measure: Callable[[list[tuple[float, int, int]]], list[FitCandidate]] | None = None,
              batch: int = 1, progress: Callable[[FitCandidate], None] | None = None) -> FitResult:
    """The candidate with the most mult-adds whose TFLM arena fits RAM and whose model fits flash.

    Candidates are measured by ``build`` (a path to the int8 .tflite, measured here in TFLite
    Micro) or by ``measure`` (a list of ``(alpha, resolution, mult_adds)`` -> their FitCandidates,
    in order: ``edgenet sweep``'s cells), ``batch`` at a time: the next ``batch`` candidates that
    no known failure rules out are measured together (in parallel when ``measure`` runs them so);
    the answer is the same as one at a time, a batch may build candidates that turn out not to be
    needed. ``progress`` receives each candidate as it is decided.

    Raises TargetError (with ``exc.result``, the FitResult) when none fits.
    """
    if profile.ram_budget is None and profile.flash_budget is None:
        raise UsageError(f"target {profile.name!r} has no RAM or flash budget to fit a model into")
    if not candidates:
        raise UsageError("fit needs at least one (alpha, resolution) candidate")
    if measure is None:
        if build is None:
            raise UsageError("fit needs a build or a measure function")
        measure = lambda group: [_measure(profile, a, r, m, build) for a, r, m in group]  # noqa: E731
    tell = progress or (lambda candidate: None)
    unique = list(dict.fromkeys((float(a), int(r)) for a, r in candidates))
    order = sorted(((a, r, int(mult_adds(a, r))) for a, r in unique), key=lambda c: (-c[2], -c[0], -c[1]))
    decided: dict[int, FitCandidate] = {}
    failures: list[FitCandidate] = []
    chosen: FitCandidate | None = None
    builds = 0
    unrunnable: FitCandidate | None = None  # TFLM lacks a kernel: every candidate has the same ops
    i = 0
    while i < len(order):
        group: list[int] = []
        while i < len(order) and len(group) < max(1, batch):
            alpha, res, macs = order[i]
            why = None if chosen is None else f"fewer mult-adds than {chosen.label}, which fits"
            if why:
                decided[i] = FitCandidate(alpha, res, macs, FitStatus.NOT_NEEDED, reason=why)
            else:
                why = _dominating_failure(alpha, res, failures, size_depends_on_resolution)
                if unrunnable is not None:
                    why = f"same operators as {unrunnable.label}, which TFLite Micro cannot run"
                if why:
                    decided[i] = FitCandidate(alpha, res, macs, FitStatus.DOMINATED, reason=f"not built: {why}")
                    tell(decided[i])
                else:
                    group.append(i)
            i += 1
        if not group:
            continue
        builds += len(group)
        for index, cand in zip(group, measure([order[k] for k in group])):
            decided[index] = cand
            tell(cand)
            if cand.status is FitStatus.FITS:
                chosen = chosen or cand
            elif cand.status is FitStatus.TOO_BIG:
                failures.append(cand)
            elif cand.status is FitStatus.DOES_NOT_RUN and "kernel" in cand.reason:
                unrunnable = unrunnable or cand
    done = [decided[k] for k in range(len(order))]
    # with batches, a candidate built after a bigger one in its batch fits is not the answer
    chosen = next((c for c in done if c.status is FitStatus.FITS), None)
    result = FitResult(profile.name, profile.ram_budget, profile.flash_budget, chosen, tuple(done), builds)
    if chosen is None:
        measured = [c for c in done if c.status in (FitStatus.TOO_BIG, FitStatus.DOES_NOT_RUN, FitStatus.BUILD_FAILED)]
        last = measured[-1] if measured else done[-1]
        exc = TargetError(f"no candidate fits {profile.name}: the smallest tried, {last.label}, {last.reason}")
        exc.result = result
        raise exc
    return result
