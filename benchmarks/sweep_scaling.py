"""How `edgenet sweep` scales from 1 to 2 workers on this machine, with both executors.

    python benchmarks/sweep_scaling.py                 # local and ray, 1 and 2 workers, one round
    python benchmarks/sweep_scaling.py --rounds 2 --executors ray
    python benchmarks/sweep_scaling.py --grid large   # 8 larger cells (up to MobileNetV1 1.0/224)

Each run is the real command in a fresh process, into a fresh folder:

    edgenet sweep mobilenet_v1 --alpha 0.25,0.5 --resolution 64,96 --target rpi,cortex-m \
        --num-classes 2 --out DIR --executor E --workers N

(8 cells, each a full convert with 200 calibration and 64 validation images and the target's
checks; --grid large: --alpha 0.5,1.0 --resolution 160,224). A bare Python loop is timed alone
and two at once before and after: on an idle 2-core machine both take the same time; when
other jobs hold a core, two at once take longer and no sweep can scale. Runs are interleaved
(local 1, local 2, ray 1, ray 2, then again) so drift of the shared machine favours neither. Printed per run: wall time of the command; "first cell", when the first
cell was committed (worker start-up: Ray, the torch and onnxruntime imports, first export, all of it
inside the command's time); and the cells' phase after it (7 cells). The 1-minute load average is
read before each run: other people's jobs on a 2-core machine slow the 2-worker run the most.
After the first round the first run's command is run again: it must redo no cell.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRIDS = {
    # the sweep: 8 small cells (2-4 s each while TensorFlow wrote the float models; about
    # 0.5 s each since): a worker's start-up (torch, onnxruntime and the quantizer's imports, about
    # 1.5 CPU-seconds each) weighs as much as a third of the cells
    "small": ["mobilenet_v1", "--alpha", "0.25,0.5", "--resolution", "64,96", "--target", "rpi,cortex-m",
              "--num-classes", "2"],
    # 8 larger cells of the same kind (up to MobileNetV1 1.0/224): start-up weighs less
    "large": ["mobilenet_v1", "--alpha", "0.5,1.0", "--resolution", "160,224", "--target", "rpi,cortex-m",
              "--num-classes", "2"],
}
LOOP = "import time\nt = time.perf_counter()\ns = 0\nfor i in range(10_000_000): s += i\nprint(time.perf_counter() - t)"
ELAPSED = re.compile(r"^\[(\d+)/(\d+)\] .*elapsed (\d+):(\d+),")


def _load() -> float:
    return os.getloadavg()[0]


def loop_reference() -> tuple[float, float]:
    """A bare Python loop alone, then two at once: how much of two cores this machine gives now."""
    one = float(subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True).stdout)
    procs = [subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    two = max(float(p.communicate()[0]) for p in procs)
    return round(one, 2), round(two, 2)


def run_once(executor: str, workers: int, out: Path, grid: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "edgenet", "sweep", *grid, "--out", str(out), "--executor", executor,
           "--workers", str(workers)]
    load = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    marks = {}
    for line in proc.stderr.splitlines():
        m = ELAPSED.match(line)
        if m:
            marks[int(m.group(1))] = 60 * int(m.group(3)) + int(m.group(4))
    lines = (out / "results.jsonl").read_text().splitlines()
    ran = re.search(r"ran (\d+), skipped (\d+)", proc.stderr)
    return {"executor": executor, "workers": workers, "wall_s": round(wall, 1), "load_1min": round(load, 2),
            "first_cell_s": marks.get(1), "cells_phase_s": (marks[max(marks)] - marks[1]) if len(marks) > 1 else None,
            "lines": len(lines), "ran": int(ran.group(1)) if ran else None,
            "skipped": int(ran.group(2)) if ran else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="small")
    parser.add_argument("--json", default=None, help="also write the runs to this file")
    args = parser.parse_args()
    executors = [e for e in args.executors.split(",") if e]
    grid = GRIDS[args.grid]
    work = Path(tempfile.mkdtemp(prefix="edgenet-sweep-bench-"))
    runs = []
    try:
        print(f"cpus {os.cpu_count()}; uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        print("grid:", " ".join(grid))
        one, two = loop_reference()
        print(f"reference loop: alone {one:.2f} s, two at once {two:.2f} s (1.00 = two free cores)", flush=True)
        for rnd in range(args.rounds):
            for executor in executors:
                for workers in (1, 2):
                    out = work / f"{executor}-{workers}-{rnd}"
                    r = run_once(executor, workers, out, grid)
                    runs.append(r)
                    print(json.dumps(r), flush=True)
                    if r["lines"] != 8:
                        raise SystemExit(f"expected 8 result lines, got {r['lines']}")
            if rnd == 0:
                again = run_once(executors[0], 1, work / f"{executors[0]}-1-0", grid)
                print("re-run of the first command:", json.dumps(again), flush=True)
                if again["ran"] != 0 or again["lines"] != 8:
                    raise SystemExit("the re-run redid cells")
        print()
        print("| executor | workers | wall (s) | first cell (s) | other 7 cells (s) | load before |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in runs:
            print(f"| {r['executor']} | {r['workers']} | {r['wall_s']:.1f} | {r['first_cell_s']} | "
                  f"{r['cells_phase_s']} | {r['load_1min']:.2f} |")
        print()
        for executor in executors:
            one = [r["wall_s"] for r in runs if r["executor"] == executor and r["workers"] == 1]
            two = [r["wall_s"] for r in runs if r["executor"] == executor and r["workers"] == 2]
            p1 = [r["cells_phase_s"] for r in runs if r["executor"] == executor and r["workers"] == 1]
            p2 = [r["cells_phase_s"] for r in runs if r["executor"] == executor and r["workers"] == 2]
            print(f"{executor}: 2 workers vs 1, whole command {min(one) / min(two):.2f}x "
                  f"(best {min(one):.1f} s vs {min(two):.1f} s); cells after the first "
                  f"{min(p1) / max(1, min(p2)):.2f}x")
        one, two = loop_reference()
        print(f"reference loop after: alone {one:.2f} s, two at once {two:.2f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
