"""QDQ ONNX in, full-integer TFLite out: MobileNetV1 (alpha 0.25, 32 px, trained on digits) quantized
by onnxruntime's ``quantize_static`` (QDQ format), converted by ``edgenet convert --int8`` with the
producer's ranges, compared with onnxruntime running the QDQ model on the 400 held-out digits.

For each onnxruntime setting (per-channel / per-tensor weights, uint8 / int8 activations) it prints
the share of output values within one output quantization step of onnxruntime's, the largest
difference in steps, top-1 agreement, both top-1 accuracies, how many activation tensors took a
QDQ range and how many had to be calibrated, and the share of weight values kept as stored.

    python benchmarks/qdq_onnx.py [--digits CKPT] [--workdir DIR] [--json out.json]

Without ``--digits`` it trains the checkpoint as ``benchmarks/accuracy_table.py`` does (reused
from --workdir). onnxruntime calibrates on digits' calibration split (200 images); edgenet gets no
calibration data (no ``calib``: its own verdict runs on the built-in images; the report says how
many tensors had no QDQ range and were calibrated).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = (("per-channel, uint8 activations", True, "QUInt8"), ("per-channel, int8 activations", True, "QInt8"),
            ("per-tensor, uint8 activations", False, "QUInt8"), ("per-tensor, int8 activations", False, "QInt8"))


def float_onnx(ckpt_path: Path, out: Path) -> tuple[Path, object]:
    """The checkpoint exported to ONNX (NCHW input ``input``), and its preprocessing."""
    from edgenet.checkpoint import load_checkpoint
    from edgenet.converters.export import export_onnx
    from edgenet.zoo import create_model

    ckpt = load_checkpoint(ckpt_path)
    module = create_model(ckpt.model, alpha=ckpt.alpha, resolution=ckpt.resolution, num_classes=ckpt.num_classes,
                          in_channels=ckpt.in_channels, activation=ckpt.activation)
    module.load_state_dict(ckpt.state_dict)
    module.eval()
    model = export_onnx(module, (1, ckpt.in_channels, ckpt.resolution, ckpt.resolution), opset=13)
    out.write_bytes(model.SerializeToString())
    return out, ckpt.preprocess


def quantize_qdq(src: Path, dst: Path, calib_nchw: np.ndarray, per_channel: bool, activation: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's recommended first step: shape inference and its graph optimizations (BatchNorm
    # folded into the Conv before it), so that each Conv is quantized with its final weights
    prepared = dst.with_name(dst.stem + "_prepared.onnx")
    quant_pre_process(str(src), str(prepared))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calib_nchw[i:i + 1]} for i in range(len(calib_nchw))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8)
    return dst


def measure(qdq_path: Path, preprocess, x_nhwc: np.ndarray, labels: np.ndarray, out: Path) -> dict:
    import onnx

    import edgenet
    from edgenet.converters.qdq import strip_qdq
    from edgenet.converters.validate import onnx_session
    from edgenet.inference import TFLiteModel

    t0 = time.perf_counter()
    res = edgenet.convert(str(qdq_path), int8=True, out=str(out), force=True,
                          mean=preprocess.mean, std=preprocess.std, io_type="float32", layer_report=False,
                          allow_degraded=True)
    seconds = time.perf_counter() - t0
    qdq = onnx.load(str(qdq_path))
    sess = onnx_session(qdq)
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    ref = np.concatenate([sess.run(None, {"input": x_nchw[i:i + 1]})[0] for i in range(len(x_nchw))])
    got = TFLiteModel(res.int8_path).predict(x_nhwc)
    _, ranges, _ = strip_qdq(qdq)
    lo, hi = ranges[qdq.graph.output[0].name]
    step = (hi - lo) / 255
    steps = np.abs(ref.astype(np.float64) - got) / step
    found = res.report.calibration["qdq"]
    verdict = res.report.precisions[1]["verdict"]
    return {"within_one_step": float(np.mean(steps <= 1 + 1e-4)), "max_steps": float(steps.max()),
            "identical": float(np.mean(steps < 1e-3)),
            "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "top1_qdq_onnxruntime": float(np.mean(ref.argmax(1) == labels)),
            "top1_int8_tflite": float(np.mean(got.argmax(1) == labels)),
            "tensors_with_qdq_range": found["tensors_with_qdq_range"],
            "tensors_calibrated": found["tensors_calibrated"],
            "weights_as_stored": found["weights_as_stored"], "verdict": verdict["status"],
            "verdict_reference": verdict["reference"], "seconds": round(seconds, 1)}


def main() -> int:
    from accuracy_table import _checkpoint

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", help="checkpoint trained on digits (trained if not given)")
    ap.add_argument("--workdir", default="/tmp/edgenet_accuracy")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    from edgenet.data.datasets import load_dataset

    ckpt = _checkpoint("digits", args.digits, Path(args.workdir))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, pre = float_onnx(ckpt, tmp / "float.onnx")
        calib = load_dataset("digits", pre, "calib").x
        test = load_dataset("digits", pre, "test")
        for label, per_channel, act in SETTINGS:
            qdq = quantize_qdq(src, tmp / f"qdq_{int(per_channel)}_{act}.onnx",
                               np.ascontiguousarray(calib.transpose(0, 3, 1, 2)), per_channel, act)
            rows[label] = measure(qdq, pre, test.x, test.labels, tmp / f"out_{int(per_channel)}_{act}")
            r = rows[label]
            print(f"{label}: {100 * r['within_one_step']:.2f}% within 1 step (identical {100 * r['identical']:.2f}%, "
                  f"max {r['max_steps']:.2f} steps), top-1 agreement {100 * r['top1_agreement']:.2f}%, top-1 "
                  f"onnxruntime QDQ {100 * r['top1_qdq_onnxruntime']:.2f}% / int8 TFLite "
                  f"{100 * r['top1_int8_tflite']:.2f}%, {r['tensors_with_qdq_range']} tensors with QDQ ranges, "
                  f"{r['tensors_calibrated']} calibrated, weights as stored "
                  f"{100 * r['weights_as_stored']['share']:.2f}%, verdict {r['verdict']} "
                  f"(vs {r['verdict_reference']}), {r['seconds']} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(ckpt), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
