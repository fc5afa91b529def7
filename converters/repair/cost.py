"""What a repair costs on this host: latency of the int8 model before and after, in LiteRT.

int16 ops run on LiteRT's reference kernels (XNNPACK has no 16x8 operators), float ops on XNNPACK's
float kernels: a model with a few int16 ops may be slower than one with those ops in float. The
models are timed interleaved (A, B, C, A, B, C ...) so that a busy machine slows each alike; the
median of the rounds is reported."""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np


def interleaved_latency(models: Mapping[str, bytes], threads: int | None = None, rounds: int = 7,
                        invokes: int = 3, max_seconds: float | None = None) -> dict[str, float]:
    """Median milliseconds of one invoke of each model (LiteRT, XNNPACK where it applies, zero
    inputs), ``rounds`` rounds of ``invokes`` invokes each, the models taking turns; fewer rounds
    (at least 2) when ``max_seconds`` would be passed."""
    from edgenet.runtime import make_interpreter

    interps = {}
    for key, blob in models.items():
        interp = make_interpreter(blob, threads)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        interp.invoke()                       # warm-up: allocation, XNNPACK packing
        interps[key] = interp
    times: dict[str, list[float]] = {k: [] for k in interps}
    t0 = time.perf_counter()
    for r in range(rounds):
        if max_seconds is not None and r >= 2 and time.perf_counter() - t0 > max_seconds * r / rounds:
            break
        for key, interp in interps.items():
            t = time.perf_counter()
            for _ in range(invokes):
                interp.invoke()
            times[key].append((time.perf_counter() - t) * 1000 / invokes)
    return {k: float(np.median(v)) for k, v in times.items()}
