"""What to measure and how: the benchmark's settings, validated, and the delegate choice."""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from edgenet import limits
from edgenet.errors import UsageError

EDGETPU_LIBRARY = "libedgetpu.so.1"


class DelegateKind(str, Enum):
    XNNPACK = "xnnpack"    # LiteRT's built-in CPU delegate (the runtime's default)
    NONE = "none"          # reference kernels only (BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    EDGETPU = "edgetpu"    # Coral Edge TPU through libedgetpu.so.1
    LIBRARY = "library"    # any external delegate .so given by path


@dataclass(frozen=True)
class Delegate:
    kind: DelegateKind = DelegateKind.XNNPACK
    library: str | None = None     # the .so for EDGETPU / LIBRARY

    @classmethod
    def parse(cls, text: "str | Delegate | None") -> "Delegate":
        """``xnnpack`` | ``none`` | ``edgetpu`` | a path to a delegate ``.so``."""
        if isinstance(text, Delegate):
            return text
        value = (text or "xnnpack").strip()
        lowered = value.lower()
        if lowered in (DelegateKind.XNNPACK.value, DelegateKind.NONE.value):
            return cls(DelegateKind(lowered))
        if lowered == DelegateKind.EDGETPU.value:
            return cls(DelegateKind.EDGETPU, EDGETPU_LIBRARY)
        if ".so" in os.path.basename(value) or "/" in value or value.endswith(".dylib"):
            return cls(DelegateKind.LIBRARY, value)
        raise UsageError(f"unknown delegate {value!r}: use xnnpack, none, edgetpu or a path to a delegate .so")

    @property
    def label(self) -> str:
        return self.library if self.kind is DelegateKind.LIBRARY else self.kind.value


@dataclass(frozen=True)
class BenchSettings:
    """How latency is measured (all counts per model).

    Warm-up runs until both ``warmup`` runs and ``warmup_seconds`` are done. Measurement then
    alternates windows of the two models (float, int8, int8, float, ...), each window about
    ``window_seconds`` long (at most ``window`` runs, at least one), until every model has at
    least ``runs`` runs and ``min_seconds`` of measured time. A 100 ms model gets windows of 5
    runs; a 10 us one gets windows of 1000 runs (10 ms), which keeps the harness's per-window
    work negligible.
    """

    threads: int = 0                 # 0: os.cpu_count()
    delegate: Delegate = Delegate()
    warmup: int = 10
    warmup_seconds: float = 1.0
    runs: int = 50
    min_seconds: float = 3.0
    window: int = 1000
    window_seconds: float = 0.5

    def __post_init__(self):
        """Every count and time is checked against :mod:`edgenet.limits` (UsageError naming the option)."""
        if self.threads != 0:          # 0: all CPUs of the device
            limits.check_int("--threads", self.threads, 1, limits.MAX_THREADS)
        limits.check_int("--warmup", self.warmup, 0, limits.MAX_WARMUP)
        limits.check_int("--runs", self.runs, 1, limits.MAX_RUNS)
        limits.check_int("--window", self.window, 1, limits.MAX_WINDOW)
        limits.check_float("--warmup-seconds", self.warmup_seconds, 0, limits.MAX_WARMUP_SECONDS)
        limits.check_float("--min-seconds", self.min_seconds, 0, limits.MAX_SECONDS)
        limits.check_float("--window-seconds", self.window_seconds, 0, limits.MAX_WINDOW_SECONDS)

    @property
    def effective_threads(self) -> int:
        return self.threads or min(os.cpu_count() or 1, limits.MAX_THREADS)

    def to_dict(self) -> dict:
        return {
            "threads": self.effective_threads,
            "delegate": self.delegate.label,
            "warmup_runs": self.warmup,
            "warmup_seconds": self.warmup_seconds,
            "min_runs": self.runs,
            "min_seconds": self.min_seconds,
            "window_runs": self.window,
            "window_seconds": self.window_seconds,
        }
