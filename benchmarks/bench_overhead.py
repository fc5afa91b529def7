"""The benchmark harness's own cost: `edgenet bench` timing loops vs a bare ``interpreter.invoke()`` loop.

Target (bench issue): the harness adds less than 2% to a bare invoke loop on the same model.

For each model, blocks of N invokes run in alternating order (bare, harness, harness, bare, ...)
so drift hits both alike; each block is timed as a whole. Three loops are compared:
  bare      for _ in range(n): invoke()
  runs      edgenet.benchmark.timing.timed_runs(invoke, n)           (the per-run timing loop)
  windows   edgenet.benchmark.timing.measure_interleaved(...)        (the whole windowed measurement)
The verdict uses the harness's own cost per invoke, measured around a no-op callable (min of
blocks: no model noise), divided by the model's bare invoke time. The loops timed on the model
itself are printed as a cross-check (min and median of blocks; on a busy machine they are noisy).

    python benchmarks/bench_overhead.py                  # builds two small models with TensorFlow
    python benchmarks/bench_overhead.py out/model_int8.tflite out/model_float.tflite [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.02


def build_models(folder: Path) -> list[Path]:
    """Two float32 CNNs made with TensorFlow: ~10 us and ~1 ms per invoke on a desktop core."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    rng = np.random.default_rng(0)
    paths = []
    for name, size, widths in (("tiny_32px", 32, (8, 16)), ("small_96px", 96, (16, 32, 64, 128))):
        weights, channels = [], 3
        for width in widths:
            weights.append(tf.constant(rng.normal(0, 0.2, (3, 3, channels, width)).astype(np.float32)))
            channels = width
        head = tf.constant(rng.normal(0, 0.2, (channels, 10)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
        def forward(x, weights=tuple(weights), head=head):
            for w in weights:
                x = tf.nn.relu6(tf.nn.conv2d(x, w, 2, "SAME"))
            return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), head)

        conv = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
        path = folder / f"{name}.tflite"
        path.write_bytes(conv.convert())
        paths.append(path)
    return paths


def _loops(invoke, n: int, per_invoke_s: float) -> dict:
    """The three loops over ``invoke``, each returning its block time in ns."""
    from edgenet.benchmark.options import BenchSettings
    from edgenet.benchmark.timing import measure_interleaved, timed_runs

    clock = time.perf_counter_ns
    settings = BenchSettings(threads=1, runs=n, min_seconds=0.0, warmup=0, warmup_seconds=0.0)

    def bare():
        t = clock()
        for _ in range(n):
            invoke()
        return clock() - t

    def runs():
        t = clock()
        timed_runs(invoke, n)
        return clock() - t

    def windows():
        t = clock()
        measure_interleaved({"m": invoke}, {"m": per_invoke_s}, settings)
        return clock() - t

    return {"bare": bare, "runs": runs, "windows": windows}


def _blocks(loops: dict, seconds: float, min_rounds: int = 10) -> dict[str, np.ndarray]:
    """Block times per loop, the loops alternating (A B C, C B A, ...) for ``seconds``."""
    times: dict[str, list[int]] = {k: [] for k in loops}
    order = list(loops)
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline or i < min_rounds:
        for name in (order if i % 2 == 0 else order[::-1]):
            times[name].append(loops[name]())
        i += 1
    return {k: np.asarray(v, dtype=np.float64) for k, v in times.items()}


def harness_cost_ns(n: int = 2000, seconds: float = 2.0) -> dict[str, float]:
    """What each loop adds per call over a bare loop, measured around a no-op callable (min of blocks)."""
    blocks = _blocks(_loops(lambda: None, n, 1e-7), seconds)
    bare = blocks["bare"].min()
    return {k: float((blocks[k].min() - bare) / n) for k in ("runs", "windows")}


def measure(path: Path, threads: int, seconds: float, cost_ns: dict[str, float]) -> dict:
    from edgenet.runtime import make_interpreter

    interp = make_interpreter(path, threads)
    detail = interp.get_input_details()[0]
    shape, dtype = detail["shape"], np.dtype(detail["dtype"])
    rng = np.random.default_rng(0)
    sample = (rng.uniform(-1, 1, shape) if dtype.kind == "f" else rng.integers(-100, 100, shape)).astype(dtype)
    interp.set_tensor(detail["index"], sample)
    invoke = interp.invoke

    t_end, warm = time.perf_counter() + 0.5, 0
    while time.perf_counter() < t_end:  # warm-up, and an estimate of one invoke
        invoke()
        warm += 1
    per_invoke_s = 0.5 / warm
    n = max(5, int(0.03 / per_invoke_s))     # ~30 ms blocks
    blocks = _blocks(_loops(invoke, n, per_invoke_s), seconds)
    bare_min, bare_median = blocks["bare"].min(), float(np.median(blocks["bare"]))
    bare_ns = bare_min / n
    result = {"model": path.name, "invokes_per_block": n, "blocks": len(blocks["bare"]),
              "bare_us_per_invoke": round(bare_ns / 1e3, 3)}
    for name in ("runs", "windows"):
        # the verdict: the harness's own cost per invoke (measured without model noise) vs one invoke
        result[f"{name}_cost_ns"] = round(cost_ns[name], 1)
        result[f"{name}_overhead_pct"] = round(100 * cost_ns[name] / bare_ns, 4)
        # the cross-check: the loops timed on the model itself (min and median of blocks; noisy)
        result[f"{name}_direct_min_pct"] = round(100 * (blocks[name].min() / bare_min - 1), 3)
        result[f"{name}_direct_median_pct"] = round(100 * (float(np.median(blocks[name])) / bare_median - 1), 3)
    result["ok"] = all(result[f"{k}_overhead_pct"] < 100 * TARGET for k in ("runs", "windows"))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path, help=".tflite files (default: build two with TensorFlow)")
    ap.add_argument("--threads", type=int, default=1, help="interpreter threads (1: least noise)")
    ap.add_argument("--seconds", type=float, default=6.0, help="measuring time per model")
    ap.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or build_models(Path(tmp))
        cost = harness_cost_ns()
        results = [measure(p, args.threads, args.seconds, cost) for p in models]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"harness cost per invoke (no-op callable, min of blocks): timed runs {cost['runs']:.0f} ns, "
              f"interleaved windows {cost['windows']:.0f} ns")
        print(f"overhead vs a bare invoke loop on each model (target < {100 * TARGET:.0f}%), "
              f"{args.threads} thread(s); direct = the loops timed on the model (min / median of blocks)")
        for r in results:
            print(f"  {r['model']:<22} bare {r['bare_us_per_invoke']:>9.2f} us/invoke | "
                  f"runs {r['runs_overhead_pct']:7.3f}% (direct {r['runs_direct_min_pct']:+.2f}% / "
                  f"{r['runs_direct_median_pct']:+.2f}%) | windows {r['windows_overhead_pct']:7.3f}% (direct "
                  f"{r['windows_direct_min_pct']:+.2f}% / {r['windows_direct_median_pct']:+.2f}%) | "
                  f"{'OK' if r['ok'] else 'OVER'} [{r['blocks']} blocks of {r['invokes_per_block']}]")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
