"""Latency measurement: warm-up by count and time, then interleaved windows of timed runs.

Only ``invoke()`` is timed: the input tensor is set once before. One clock read per run (a
timestamp after every invoke; run i lasts ``stamp[i] - stamp[i-1]``) keeps the harness's own cost
to a clock call and a list store per run (see ``benchmarks/bench_overhead.py``). The garbage
collector is paused while windows run.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edgenet.benchmark.options import BenchSettings

Invoke = Callable[[], object]
clock_ns = time.perf_counter_ns


def _stamped_runs(invoke: Invoke, count: int) -> list[int]:
    """``count`` calls of ``invoke``: a clock reading before the first and after each one (ns)."""
    stamps = [0] * (count + 1)
    clock = clock_ns
    stamps[0] = clock()
    for i in range(1, count + 1):
        invoke()
        stamps[i] = clock()
    return stamps


def timed_runs(invoke: Invoke, count: int) -> np.ndarray:
    """Call ``invoke`` ``count`` times; the duration of each call in nanoseconds (int64)."""
    return np.diff(np.asarray(_stamped_runs(invoke, count), dtype=np.int64))


def warm_up(invoke: Invoke, min_runs: int, min_seconds: float) -> np.ndarray:
    """Run until both ``min_runs`` runs and ``min_seconds`` have passed; each run's duration in ns."""
    clock = clock_ns
    deadline = clock() + int(min_seconds * 1e9)
    durations: list[int] = []
    last = clock()
    while len(durations) < min_runs or last < deadline:
        invoke()
        now = clock()
        durations.append(now - last)
        last = now
    return np.asarray(durations, dtype=np.int64)


@dataclass(frozen=True)
class Window:
    """One block of consecutive measured runs of one model."""

    role: str           # "float" | "int8"
    first_run: int      # index of its first run in that model's run times
    runs: int
    started_s: float    # when it started, seconds after the measurement began

    def to_dict(self) -> dict:
        return {"role": self.role, "first_run": self.first_run, "runs": self.runs,
                "started_s": self.started_s}


def window_size(estimate_s: float, settings: BenchSettings) -> int:
    """Runs per window: about ``window_seconds`` of work, between 1 and ``settings.window``."""
    if estimate_s <= 0:
        return settings.window
    return int(max(1, min(settings.window, round(settings.window_seconds / estimate_s))))


def measure_interleaved(invokers: Mapping[str, Invoke], estimates_s: Mapping[str, float],
                        settings: BenchSettings) -> tuple[dict[str, np.ndarray], tuple[Window, ...]]:
    """Measured run times (ns) per model, from windows that alternate between the models.

    The order flips every round (A B, B A, A B, ...) so neither model always runs right after
    the other. A model stops once it has ``settings.runs`` runs and ``settings.min_seconds`` of
    measured time; once its time is met, its windows shrink to the runs it still needs.
    """
    roles: Sequence[str] = list(invokers)
    sizes = {r: window_size(estimates_s.get(r, 0.0), settings) for r in roles}
    chunks: dict[str, list[list[int]]] = {r: [] for r in roles}
    counts = {r: 0 for r in roles}
    totals = {r: 0 for r in roles}
    min_ns = int(settings.min_seconds * 1e9)
    windows: list[tuple[str, int, int, int]] = []

    def done(r: str) -> bool:
        return counts[r] >= settings.runs and totals[r] >= min_ns

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock_ns()
        round_index = 0
        while not all(done(r) for r in roles):
            order = roles if round_index % 2 == 0 else list(reversed(roles))
            for r in order:
                if done(r):
                    continue
                n = sizes[r]
                if totals[r] >= min_ns:
                    n = max(1, min(n, settings.runs - counts[r]))
                stamps = _stamped_runs(invokers[r], n)   # per-window work kept small: lists only
                windows.append((r, counts[r], n, stamps[0] - start))
                chunks[r].append(stamps)
                counts[r] += n
                totals[r] += stamps[-1] - stamps[0]
            round_index += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    times = {r: _durations(chunks[r]) for r in roles}
    return times, tuple(Window(r, first, n, began / 1e9) for r, first, n, began in windows)


def _durations(chunks: list[list[int]]) -> np.ndarray:
    """Run durations (ns) from per-window clock readings: one array operation, not one per window."""
    flat = np.asarray([stamp for chunk in chunks for stamp in chunk], dtype=np.int64)
    diffs = np.diff(flat)
    ends = np.cumsum([len(chunk) for chunk in chunks])[:-1] - 1  # the gap from a window to the next
    return np.delete(diffs, ends)


def split_windows(times: np.ndarray, windows: Sequence[Window], role: str) -> list[np.ndarray]:
    """The run times of one model cut into its windows, in order."""
    return [times[w.first_run:w.first_run + w.runs] for w in windows if w.role == role]
