"""`--equalize` cost against the plain int8 stage, on a real detector, in a fresh process (issue #17).

Runs ``edgenet convert MODEL --int8 --equalize`` once and prints every stage's time from its
report.json, then the equalize stage (cross-layer equalization, its float checks and sequential
bias correction) against the ``tflite int8`` stage of the same run (calibration + quantization).
The target: equalization costs at most a few times the int8 stage (``--max-ratio``, default 3).

Default model: PaddleOCR's PP-OCRv4 text detector (rapidocr-onnxruntime 1.4.4) at 800x608, the
size where the old per-layer bias correction took 999 of 1,082 s. Calibration images are the
built-in synthetic ones: the timing does not depend on what the images show.

    python benchmarks/equalize_speed.py [--model FILE.onnx] [--input-shape 1,3,608,800]
        [--mean 0.485,0.456,0.406] [--std 0.229,0.224,0.225] [--calib-samples 50] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL_MODELS = Path(os.environ.get("EDGENET_REAL_MODELS", "/work/cache/real-models"))
DETECTOR = REAL_MODELS / "rapidocr_onnxruntime/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "edgenet", "convert", str(args.model), "--input-shape", args.input_shape,
               "--mean", args.mean, "--std", args.std, "--int8", "--equalize", "--allow-degraded",
               "--calib-samples", str(args.calib_samples), "--out", str(out), "--force", "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"edgenet convert failed: {proc.stderr.strip().splitlines()[-1:]}")
        report = json.loads((out / "report.json").read_text())
    stages = [(s["name"], s["seconds"]) for s in report["stages"]]
    seconds = dict(stages)
    eq = report["calibration"]["equalization"]
    return {"model": str(args.model), "input_shape": args.input_shape, "calib_samples": args.calib_samples,
            "wall_seconds": round(wall, 2), "stages": stages,
            "int8_seconds": seconds.get("tflite int8"), "equalize_seconds": seconds.get("equalize"),
            "bias_correction_seconds": eq["bias"]["seconds"], "bias_correction_samples": eq["bias"]["samples"],
            "bias_correction_layers": eq["bias"]["layers"], "pairs": eq["pairs"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DETECTOR)
    ap.add_argument("--input-shape", default="1,3,608,800")
    ap.add_argument("--mean", default="0.485,0.456,0.406")
    ap.add_argument("--std", default="0.229,0.224,0.225")
    ap.add_argument("--calib-samples", type=int, default=50)
    ap.add_argument("--max-ratio", type=float, default=3.0, help="equalize stage / int8 stage allowed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.model.is_file():
        sys.exit(f"no model at {args.model} (set --model or EDGENET_REAL_MODELS)")
    r = run(args)
    ratio = r["equalize_seconds"] / max(r["int8_seconds"], 1e-9)
    r["ratio"], r["meets_target"] = round(ratio, 2), ratio <= args.max_ratio
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{args.model.name} at {args.input_shape}, {args.calib_samples} calibration samples: "
              f"{r['wall_seconds']:.1f} s for the whole command")
        for name, sec in r["stages"]:
            print(f"  {name:<28} {sec:8.2f} s")
        print(f"equalize {r['equalize_seconds']:.1f} s ({r['pairs']} pairs; bias correction of "
              f"{r['bias_correction_layers']} layers on {r['bias_correction_samples']} samples "
              f"{r['bias_correction_seconds']:.1f} s) vs int8 stage {r['int8_seconds']:.1f} s: {ratio:.2f}x, "
              f"{'meets' if r['meets_target'] else 'MISSES'} the {args.max_ratio:g}x target "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0 if r["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
