"""Summary statistics of run times, and the int8/float speedup from interleaved windows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
