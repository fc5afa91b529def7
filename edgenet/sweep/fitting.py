"""`edgenet convert --fit` on the sweep's machinery: each candidate is a sweep cell.

A candidate (width, resolution) of the zoo model is converted for the target exactly as a sweep
cell is (:func:`edgenet.sweep.worker.run_cell`: full convert, the target's own checks, with a
quick calibration of at most 64 images and one validation image), and its record becomes a
:class:`~edgenet.targets.fit.FitCandidate`: converted = fits; over the target's budgets = too big (the
arena and model size from the target's report); not runnable = does not run; an error = the
build failed. :func:`edgenet.targets.fit.fit_model` asks for ``workers`` candidates at a time
(EDGENET_FIT_WORKERS, default 1), which run at once on the sweep's process pool (one by one in
this process with one worker). Each candidate is logged to the ``edgenet.fit`` logger as it is
decided.
"""
from __future__ import annotations

import logging
import os

from edgenet.config import ConvertOptions, Precision
from edgenet.sweep.cells import Cell, target_sha256, edgenet_version

log = logging.getLogger("edgenet.fit")
QUICK_CALIB = 64


def fit_workers() -> int:
    """Candidates measured at once: EDGENET_FIT_WORKERS, else 1 (in the convert process, where
    the libraries are loaded already). On the 2-core development machine two pool workers did not pay
    for their start-up and the candidates a batch builds in vain: the default search took 42.9 s
    with 2 (10 builds) and 40.7 s with 1 (8 builds), against 50.0 s before it used sweep cells."""
    text = os.environ.get("EDGENET_FIT_WORKERS", "")
    return max(1, int(text)) if text.isdigit() else 1


def candidate_cell(opts: ConvertOptions, alpha: float, resolution: int, target_sha: str) -> Cell:
    """The sweep cell that measures one candidate: the user's convert options at this size, a quick
    calibration, one validation image, no per-layer report."""
    m = opts.model
    options = {"in_channels": m.in_channels, "activation": m.activation.value,
               "weights": None if m.weights is None else str(m.weights),
               "io_type": None if opts.io_type is None else opts.io_type.value, "per_tensor": opts.per_tensor,
               "calib_method": opts.calib_method.value, "equalize": opts.equalize or None,
               "equalize_clip": opts.equalize_clip if opts.equalize else None, "opset": opts.opset,
               "layer_report": False}
    return Cell(model=m.source, kind="zoo", alpha=float(alpha), resolution=int(resolution),
                num_classes=m.num_classes, target=opts.target, precision=Precision.INT8, calib=opts.calib,
                calib_samples=min(opts.calib_samples, QUICK_CALIB), eval_samples=2, seed=opts.seed, bench=False,
                target_sha256=target_sha, version=edgenet_version(),
                options=tuple((k, v) for k, v in options.items() if v is not None))


def to_candidate(record: dict, alpha: float, resolution: int, macs: int, profile):
    """A sweep record -> a FitCandidate judged against ``profile``'s budgets."""
    from edgenet.targets.fit import FitCandidate, FitStatus
    from edgenet.targets.tflm import kib

    seconds = float(record.get("seconds") or 0.0)
    status, error = record.get("status"), record.get("error") or ""
    if status == "failed":
        return FitCandidate(alpha, resolution, macs, FitStatus.BUILD_FAILED, reason=f"build failed: {error}",
                            seconds=seconds)
    arena, size = record.get("arena_bytes"), record.get("flash_bytes") or record.get("size_bytes")
    ram, flash = profile.ram_budget, profile.flash_budget
    over_ram = bool(ram is not None and arena is not None and arena > ram)
    over_flash = bool(flash is not None and size is not None and size > flash)
    if status == "ok":
        return FitCandidate(alpha, resolution, macs, FitStatus.FITS, arena, size, seconds=seconds)
    if not (over_ram or over_flash):   # converted, within budgets, yet the target's checks fail: it does not run
        return FitCandidate(alpha, resolution, macs, FitStatus.DOES_NOT_RUN, arena, size,
                            reason=f"does not run: {error}", seconds=seconds)
    reasons = ([f"arena {kib(arena)} > RAM budget {kib(ram)}"] if over_ram else []) + \
              ([f"model {kib(size)} > flash budget {kib(flash)}"] if over_flash else [])
    return FitCandidate(alpha, resolution, macs, FitStatus.TOO_BIG, arena, size, over_ram, over_flash,
                        "; ".join(reasons), seconds=seconds)


class CellMeasure:
    """``measure`` for :func:`edgenet.targets.fit.fit_model`: a batch of candidates as sweep cells, run at
    once on a process pool kept for the whole search (or here, with one worker)."""

    def __init__(self, opts: ConvertOptions, profile, workers: int | None = None):
        self.opts, self.profile = opts, profile
        self.workers = workers or fit_workers()
        self.target_sha = target_sha256(opts.target)
        self._pool = None

    def __call__(self, group: list[tuple[float, int, int]]):
        from edgenet.sweep.worker import run_cell

        cells = [candidate_cell(self.opts, a, r, self.target_sha) for a, r, _ in group]
        if self.workers == 1 or len(cells) == 1 and self._pool is None:
            records = [run_cell(c, None, keep_files=False)[0] for c in cells]
        else:
            records = self._on_pool(cells)
        return [to_candidate(rec, a, r, m, self.profile) for rec, (a, r, m) in zip(records, group)]

    def _on_pool(self, cells: list[Cell]) -> list[dict]:
        from concurrent.futures.process import BrokenProcessPool

        from edgenet.sweep.executors import _pool_cell, start_pool, stop_pool
        from edgenet.sweep.worker import one_line

        if self._pool is None:
            self._pool = start_pool(self.workers, 1)
        futures = [self._pool.submit(_pool_cell, cell, None, False) for cell in cells]
        records = []
        for cell, future in zip(cells, futures):
            try:
                records.append(future.result()[0])
            except BrokenProcessPool:
                stop_pool(self._pool)
                self._pool = None
                records.append({"id": cell.id, "status": "failed", "error": "the worker process died"})
            except Exception as exc:
                records.append({"id": cell.id, "status": "failed", "error": one_line(exc)})
        return records

    def close(self) -> None:
        if self._pool is not None:
            from edgenet.sweep.executors import stop_pool

            stop_pool(self._pool)
            self._pool = None


def log_candidate(candidate) -> None:
    from edgenet.targets.fit import FitStatus, candidate_line

    word = {FitStatus.FITS: "fits", FitStatus.DOMINATED: "skipped"}.get(candidate.status, "rejected")
    log.info("fit: %-8s %s", word, candidate_line(candidate))


__all__ = ["CellMeasure", "candidate_cell", "to_candidate", "fit_workers", "log_candidate"]
