"""Statistics on synthetic timings, and the timing loops on synthetic workloads (no model needed)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from edgenet.benchmark.options import BenchSettings, Delegate, DelegateKind
from edgenet.benchmark.stats import LatencyStats, speedup
from edgenet.benchmark.timing import (measure_interleaved, split_windows, timed_runs, warm_up,
                                  window_size)
from edgenet.errors import UsageError


# -- statistics ---------------------------------------------------------------------------------
def test_stats_of_1_to_100_match_hand_computed_values():
    s = LatencyStats.of(np.arange(1, 101, dtype=float))
    assert s.runs == 100 and s.min_ms == 1 and s.max_ms == 100
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)        # rank 0.9 * 99 = 89.1 -> 90 + 0.1
    assert s.p99_ms == pytest.approx(99.01)
    assert s.std_ms == pytest.approx(math.sqrt(sum((v - 50.5) ** 2 for v in range(1, 101)) / 99))
    assert s.throughput_per_s == pytest.approx(1000 / 50.5)


def test_stats_are_order_independent_and_robust_to_one_outlier():
    rng = np.random.default_rng(0)
    times = rng.normal(10.0, 0.1, 999).tolist() + [500.0]
    s = LatencyStats.of(times)
    shuffled = LatencyStats.of(rng.permutation(times))
    assert s == shuffled
    assert s.max_ms == 500.0
    assert s.p50_ms == pytest.approx(10.0, abs=0.05)    # the outlier moves the mean, not the median
    assert s.mean_ms > 10.4
    assert s.p99_ms < 11.0


def test_stats_of_one_run_and_bad_input():
    one = LatencyStats.of([2.5])
    assert (one.min_ms, one.p50_ms, one.p99_ms, one.max_ms, one.std_ms) == (2.5, 2.5, 2.5, 2.5, 0.0)
    with pytest.raises(ValueError):
        LatencyStats.of([])
    with pytest.raises(ValueError):
        LatencyStats.of([1.0, float("nan")])
    with pytest.raises(ValueError):
        LatencyStats.of([1.0, -2.0])


def test_speedup_from_synthetic_windows():
    f_windows = [np.full(10, 10.0), np.full(10, 12.0), np.full(10, 20.0)]   # the device slows down ...
    q_windows = [np.full(10, 5.0), np.full(10, 6.0), np.full(10, 8.0)]      # ... for both models
    sp = speedup(LatencyStats.of(np.concatenate(f_windows)), LatencyStats.of(np.concatenate(q_windows)),
                 f_windows, q_windows)
    assert sp.p50 == pytest.approx(12.0 / 6.0)
    assert sp.mean == pytest.approx(14.0 / (19.0 / 3.0))
    assert (sp.window_min, sp.window_max, sp.window_pairs) == (pytest.approx(2.0), pytest.approx(2.5), 3)


# -- timing loops -------------------------------------------------------------------------------
def _busy(seconds: float):
    def invoke():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    return invoke


def test_timed_runs_measure_each_call():
    durations = timed_runs(_busy(0.002), 5)
    assert durations.dtype == np.int64 and durations.shape == (5,)
    assert np.all(durations >= 2_000_000) and np.all(durations < 50_000_000)


def test_warm_up_honours_both_count_and_time():
    by_count = warm_up(lambda: None, 25, 0.0)
    assert len(by_count) == 25
    t0 = time.perf_counter()
    by_time = warm_up(_busy(0.001), 2, 0.05)
    assert time.perf_counter() - t0 >= 0.05
    assert len(by_time) > 2            # time, not the count minimum of 2, ended it (~50 runs on an idle CPU)
    assert by_time.sum() / 1e9 >= 0.049


def test_window_size_targets_window_seconds_within_bounds():
    s = BenchSettings(window=1000, window_seconds=0.5)
    assert window_size(0.1, s) == 5
    assert window_size(2.0, s) == 1
    assert window_size(1e-6, s) == 1000
    assert window_size(0.0, s) == 1000


def test_interleaved_windows_alternate_and_meet_count_and_time():
    settings = BenchSettings(runs=30, min_seconds=0.06, window=8, window_seconds=0.5, warmup=0,
                             warmup_seconds=0)
    times, windows = measure_interleaved({"float": _busy(0.0004), "int8": _busy(0.0002)},
                                         {"float": 0.0004, "int8": 0.0002}, settings)
    roles = [w.role for w in windows]
    assert roles[:6] == ["float", "int8", "int8", "float", "float", "int8"]   # A B, B A, A B
    for role in ("float", "int8"):
        assert len(times[role]) >= 30
        assert times[role].sum() >= 0.06e9
        chunks = split_windows(times[role], windows, role)
        assert sum(len(c) for c in chunks) == len(times[role])
        assert all(1 <= len(c) <= 8 for c in chunks)
    assert np.median(times["float"]) > np.median(times["int8"])
    starts = [w.started_s for w in windows]
    assert starts == sorted(starts)


def test_interleaving_cancels_drift():
    """Two identical workloads on a device that slows down 3x during the run: measured one after
    the other the second looks ~2x slower; interleaved, their speedup stays near 1."""
    t0 = time.perf_counter()
    span = 0.4

    def drifting():
        slow = 1.0 + 2.0 * min(1.0, (time.perf_counter() - t0) / span)
        end = time.perf_counter() + 0.0002 * slow
        while time.perf_counter() < end:
            pass

    settings = BenchSettings(runs=1, min_seconds=span / 2, window=10, window_seconds=0.005, warmup=0,
                             warmup_seconds=0)
    times, windows = measure_interleaved({"float": drifting, "int8": drifting},
                                         {"float": 0.0004, "int8": 0.0004}, settings)
    sp = speedup(LatencyStats.of(times["float"] / 1e6), LatencyStats.of(times["int8"] / 1e6),
                 split_windows(times["float"], windows, "float"), split_windows(times["int8"], windows, "int8"))
    assert 0.8 < sp.p50 < 1.25, sp
    assert 0.8 < sp.mean < 1.25, sp

    t0 = time.perf_counter()                # the same device measured sequentially, for contrast:
    first = timed_runs(drifting, 50)        # early (~10 ms of a 400 ms drift, even on a loaded CPU) ...
    time.sleep(max(0.0, t0 + span - time.perf_counter()))
    second = timed_runs(drifting, 50)       # ... and once the device has slowed down
    assert np.median(second) / np.median(first) > 1.3


# -- settings -----------------------------------------------------------------------------------
def test_settings_reject_impossible_values():
    with pytest.raises(UsageError, match="runs"):
        BenchSettings(runs=0)
    with pytest.raises(UsageError, match="min-seconds"):
        BenchSettings(min_seconds=-1)
    with pytest.raises(UsageError, match="min-seconds"):
        BenchSettings(min_seconds=float("nan"))


@pytest.mark.parametrize("text, kind, library", [
    ("xnnpack", DelegateKind.XNNPACK, None), ("NONE", DelegateKind.NONE, None),
    ("edgetpu", DelegateKind.EDGETPU, "libedgetpu.so.1"),
    ("/opt/lib/libdelegate.so", DelegateKind.LIBRARY, "/opt/lib/libdelegate.so"),
    ("libfoo.so.2", DelegateKind.LIBRARY, "libfoo.so.2"),
])
def test_delegate_parse(text, kind, library):
    d = Delegate.parse(text)
    assert (d.kind, d.library) == (kind, library)


def test_delegate_parse_rejects_unknown_names():
    with pytest.raises(UsageError, match="unknown delegate 'gpu'"):
        Delegate.parse("gpu")
