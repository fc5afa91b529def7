"""Summary statistics of run times, and the int8/float speedup from interleaved windows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from edgenet.benchmark.result import ModelReport

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of per-run latencies in milliseconds.

    Percentiles use linear interpolation between order statistics (numpy's default); ``std``
    is the sample standard deviation (ddof=1; 0 for one run); throughput is runs per second of
    measured time (1000 / mean_ms, one inference at a time).
    """

    runs: int
    min_ms: float
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput_per_s: float

    @classmethod
    def of(cls, times_ms: Sequence[float] | np.ndarray) -> "LatencyStats":
        t = np.asarray(times_ms, dtype=np.float64)
        if t.ndim != 1 or t.size == 0:
            raise ValueError("latency statistics need a non-empty 1-D sequence of run times")
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError("run times must be finite and >= 0")
        p50, p90, p99 = np.percentile(t, [50, 90, 99])
        mean = float(t.mean())
        return cls(
            runs=int(t.size), min_ms=float(t.min()), mean_ms=mean,
            std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
            p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), max_ms=float(t.max()),
            throughput_per_s=1000.0 / mean if mean > 0 else float("inf"),
        )

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Speedup:
    """How many times faster the int8 model is than the float one (float latency / int8 latency).

    ``p50`` and ``mean`` compare the whole distributions; ``window_min``/``window_max`` are the
    extremes of the ratio of medians over paired windows (the k-th float window against the k-th
    int8 window), which shows how much drift during the run moved the answer.
    """

    p50: float
    mean: float
    window_min: float
    window_max: float
    window_pairs: int

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def speedup(float_stats: LatencyStats, int8_stats: LatencyStats,
            float_windows: Sequence[np.ndarray], int8_windows: Sequence[np.ndarray]) -> Speedup:
    """The int8 speedup over float from the two models' statistics and their measured windows."""
    ratios = [float(np.median(f)) / float(np.median(q))
              for f, q in zip(float_windows, int8_windows) if len(f) and len(q) and np.median(q) > 0]
    p50 = float_stats.p50_ms / int8_stats.p50_ms if int8_stats.p50_ms > 0 else float("inf")
    mean = float_stats.mean_ms / int8_stats.mean_ms if int8_stats.mean_ms > 0 else float("inf")
    return Speedup(p50=p50, mean=mean,
                   window_min=min(ratios) if ratios else p50, window_max=max(ratios) if ratios else p50,
                   window_pairs=len(ratios))


# A run's median more than this many times its fastest run: something else took the CPU, or its
# clock changed, for much of the measurement (on an idle board with a fixed clock p50/min is ~1.0-1.2).
NOISY_P50_OVER_MIN = 1.5
# Paired windows disagreeing on the speedup by more than this factor: the device drifted.
NOISY_WINDOW_SPREAD = 1.5
# A 1-minute load average above this fraction of the usable CPUs (not counting our own threads).
NOISY_LOAD_PER_CPU = 0.5


def noise_reasons(models: Sequence["ModelReport"], gain: Speedup | None, load_start: float | None,
                  load_end: float | None, cpus: int, threads: int) -> list[str]:
    """Why these numbers are noisy, one phrase each (empty: nothing suspicious was seen).

    Checks: p50 / min of each model (> :data:`NOISY_P50_OVER_MIN`), the spread of the paired-window
    speedups (> :data:`NOISY_WINDOW_SPREAD`), and the 1-minute load average before the run and
    after it less our own threads (> :data:`NOISY_LOAD_PER_CPU` per usable CPU).
    """
    reasons = []
    for m in models:
        ratio = m.latency.p50_ms / m.latency.min_ms if m.latency.min_ms > 0 else float("inf")
        if ratio > NOISY_P50_OVER_MIN:
            reasons.append(f"{m.precision}: p50 is {ratio:.2f}x the fastest run "
                           f"(> {NOISY_P50_OVER_MIN:g}x: other work or clock changes during the run)")
    if gain is not None and gain.window_min > 0 and gain.window_max / gain.window_min > NOISY_WINDOW_SPREAD:
        reasons.append(f"the speedup of paired windows ranges {gain.window_min:.2f}x-{gain.window_max:.2f}x "
                       "(the device drifted during the run)")
    busy = cpus * NOISY_LOAD_PER_CPU
    if load_start is not None and load_start > busy:
        reasons.append(f"load average {load_start:.2f} on {cpus} usable CPU(s) before the run: other processes "
                       "were competing for the CPU")
    elif load_end is not None and load_end - min(threads, cpus) > busy:
        reasons.append(f"load average {load_end:.2f} on {cpus} usable CPU(s) after the run (with our "
                       f"{threads} thread(s)): other processes were competing for the CPU")
    return reasons
