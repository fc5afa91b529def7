"""Conversion speed: the whole `edgenet convert --int8` of MobileNetV1 1.0/224 with 200 calibration images.

Target (issue #2): at most 15 s on the 2-core development machine. Prints each stage's time.

    python benchmarks/convert_speed.py [--alpha 1.0] [--resolution 224] [--calib-samples 200] [--repeat 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 15.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--calib-samples", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = ap.parse_args()

    import edgenet

    t_import = time.perf_counter()
    import tensorflow  # noqa: F401  (import cost is not part of the conversion)
    import torch  # noqa: F401
    t_import = time.perf_counter() - t_import
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = edgenet.convert("mobilenet_v1", target="rpi", int8=True, alpha=args.alpha,
                                     resolution=args.resolution, calib_samples=args.calib_samples,
                                     out=Path(tmp) / "out")
            wall = time.perf_counter() - t0
        stages = {s.name: s.seconds for s in result.report.stages}
        runs.append({"wall_seconds": round(wall, 2), "stages": stages,
                     "int8_sqnr_db": result.report.validation.int8_sqnr_db})
        if not args.json:
            print(f"run {i + 1}: {wall:.2f} s wall (target <= {TARGET_SECONDS:.0f} s)")
            for name, sec in stages.items():
                print(f"  {name:<16} {sec:6.2f} s")
    best = min(r["wall_seconds"] for r in runs)
    if args.json:
        print(json.dumps({"model": f"mobilenet_v1 {args.alpha:g}/{args.resolution}",
                          "calib_samples": args.calib_samples, "import_seconds": round(t_import, 2),
                          "runs": runs, "best_wall_seconds": best, "target_seconds": TARGET_SECONDS}, indent=2))
    else:
        print(f"best: {best:.2f} s; {'meets' if best <= TARGET_SECONDS else 'MISSES'} the {TARGET_SECONDS:.0f} s target"
              f" (library imports, {t_import:.1f} s, not counted)")
    return 0 if best <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
