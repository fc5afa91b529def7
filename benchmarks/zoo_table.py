"""The model zoo side by side: size, compute, conversion quality and host latency of every architecture.

For each zoo model (untrained, seeded weights): parameters and mult-adds (`edgenet info`), then
`edgenet convert --int8` (float32 + full-integer int8 for the rpi target: XNNPACK CPU) and
`edgenet bench` on this machine (LiteRT + XNNPACK, 2 threads, float and int8 measured in
interleaved windows, median latency). Prints one Markdown table (and optionally JSON).

    python benchmarks/zoo_table.py                       # 224 px, 1000 classes, every zoo model
    python benchmarks/zoo_table.py --resolution 96 --num-classes 10 --models shufflenet_v2_x1_0,mixnet_s

Columns: float rel err is max |TFLite float - ONNX| / max |ONNX| on the held-out images; SQNR is
int8 against float over all outputs; TRANSPOSE counts that op in the int8 graph (channels-last
everywhere except ShuffleNet's channel shuffles).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def measure(name: str, args, workdir: Path) -> dict:
    import edgenet

    summary = edgenet.info(name, resolution=args.resolution, num_classes=args.num_classes)
    t0 = time.perf_counter()
    result = edgenet.convert(name, target="rpi", int8=True, resolution=args.resolution,
                             num_classes=args.num_classes, calib_samples=args.calib_samples,
                             eval_samples=args.eval_samples, layer_report=False, out=workdir / name)
    convert_s = time.perf_counter() - t0
    report = result.report
    bench = edgenet.bench(result.out, threads=args.threads, delegate="xnnpack", runs=args.runs,
                          min_seconds=args.bench_seconds)
    f, q = bench.model("float"), bench.model("int8")
    entry = next(e for e in edgenet.list_models() if e.name == name)
    return {
        "model": name, "paper": entry.paper, "published_mult_adds_M_params_M": entry.published,
        "resolution": args.resolution, "num_classes": args.num_classes,
        "params": summary.params, "mult_adds": summary.mult_adds,
        "float_bytes": report.sizes.float_bytes, "int8_bytes": report.sizes.int8_bytes,
        "float_rel_err": report.validation.float_rel_err, "int8_sqnr_db": report.validation.int8_sqnr_db,
        "int8_top1_agreement": report.validation.int8_top1_agreement,
        "transpose_int8": report.ops.get("TRANSPOSE", 0), "transpose_float": report.ops_float.get("TRANSPOSE", 0),
        "float_p50_ms": f.latency.p50_ms, "int8_p50_ms": q.latency.p50_ms,
        "float_runs": f.latency.runs, "int8_runs": q.latency.runs,
        "delegated": {"float": f.delegated, "int8": q.delegated},
        "convert_seconds": round(convert_s, 1),
    }


def to_markdown(rows: list[dict], args) -> str:
    head = ("model", "params (M)", "mult-adds (M)", "paper (M MACs / M params, 224 px)", "float KB", "int8 KB",
            "float rel err", "int8 SQNR dB", "TRANSPOSE", "float ms", "int8 ms", "int8 speed-up")
    lines = [f"Zoo at {args.resolution} px, {args.num_classes} classes, untrained seeded weights; "
             f"LiteRT XNNPACK, {args.threads} threads, median of interleaved runs.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    for r in rows:
        pub = r["published_mult_adds_M_params_M"]
        lines.append("| " + " | ".join((
            r["model"], f"{r['params'] / 1e6:.2f}", f"{r['mult_adds'] / 1e6:.1f}",
            f"{pub[0]:g} / {pub[1]:g}" if pub else "-",
            f"{r['float_bytes'] / 1024:,.0f}", f"{r['int8_bytes'] / 1024:,.0f}",
            f"{r['float_rel_err']:.1e}", f"{r['int8_sqnr_db']:.1f}", str(r["transpose_int8"]),
            f"{r['float_p50_ms']:.2f}", f"{r['int8_p50_ms']:.2f}",
            f"{r['float_p50_ms'] / r['int8_p50_ms']:.2f}x")) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--models", default="", help="comma-separated zoo names (default: the whole zoo)")
    ap.add_argument("--calib-samples", type=int, default=100)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=50, help="at least this many timed runs per model")
    ap.add_argument("--bench-seconds", type=float, default=3.0, help="at least this much timed run time per model")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON here")
    args = ap.parse_args()

    import edgenet

    names = [n for n in args.models.split(",") if n] or [e.name for e in edgenet.list_models()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgenet-zoo-") as tmp:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(measure(name, args, Path(tmp)))
    table = to_markdown(rows, args)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
