"""Accuracy of int8 quantization schemes on trained models: per-channel vs per-tensor weights, the
calibration methods, and cross-layer equalization (CLE) + bias correction.

For each trained checkpoint (MobileNetV1 alpha 0.25: digits at 32 px, shapes at 64 px) every row is
one ``edgenet.convert(...)`` run; top-1 is measured on the whole held-out test split. SQNR and top-1
agreement compare the int8 model's logits with those of the float model as trained (ReLU6), so the
CLE rows include the change of ReLU6 to ReLU (the row "float32, ReLU6 -> ReLU" isolates it), except
the row that keeps ReLU6 exactly (a per-channel limit: relu(x) - relu(relu(x) - c)). A last table shows an untrained
MobileNetV1 (ReLU) whose BN parameters fold into spread per-channel weight ranges without changing
its function (no labels: agreement and SQNR only) -- the case per-tensor quantization breaks on.

    python benchmarks/accuracy_table.py                       # trains the two models first if needed
    python benchmarks/accuracy_table.py --digits d.pt --shapes s.pt [--json out.json]
    python benchmarks/accuracy_table.py --digits d.pt --shapes s.pt --only qat   # the PTQ vs QAT table only

The PTQ vs QAT table: per model, float top-1 (float .tflite), PTQ int8 (the default conversion:
per-channel, minmax on 200 calibration images) and QAT int8 (``edgenet train --qat --from CKPT``: 3
epochs of fake-quantized fine-tuning, then ``edgenet convert qat.pt --int8``, whose int8 .tflite uses
the learned ranges), all TFLite, on the whole test split; beside it the QDQ ONNX the QAT run exported,
run by onnxruntime with graph optimizations off (the arithmetic QAT trained with).

Without checkpoints it trains them into --workdir (default /tmp/edgenet_accuracy; reused when
present): digits ~2 min, shapes ~20 min (80 epochs at 64 px) on the 2-core development machine.
The conversions take ~2 min more.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAIN = {  # dataset -> edgenet.train arguments
    "digits": dict(alpha=0.25, resolution=32, epochs=40),
    "shapes": dict(alpha=0.25, resolution=64, epochs=80),
}


@dataclass(frozen=True)
class Scheme:
    label: str
    kwargs: dict                     # edgenet.convert keywords

    @property
    def keeps_relu6(self) -> bool:
        return self.kwargs.get("equalize_clip") == "per_channel"


SCHEMES = (
    Scheme("int8 per-channel, minmax", dict(calib_method="minmax")),
    Scheme("int8 per-channel, percentile", dict(calib_method="percentile")),
    Scheme("int8 per-channel, mse", dict(calib_method="mse")),
    Scheme("int8 per-tensor, minmax", dict(per_tensor=True, calib_method="minmax")),
    Scheme("int8 per-tensor, mse", dict(per_tensor=True, calib_method="mse")),
    Scheme("int8 per-tensor + CLE + bias corr., minmax", dict(per_tensor=True, equalize=True, calib_method="minmax")),
    Scheme("int8 per-tensor + CLE + bias corr., mse", dict(per_tensor=True, equalize=True, calib_method="mse")),
    Scheme("int8 per-tensor + CLE (ReLU6 kept: per-channel limit) + bias corr., minmax",
           dict(per_tensor=True, equalize=True, calib_method="minmax", equalize_clip="per_channel")),
)


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    from edgenet.converters.validate import sqnr_db

    return sqnr_db(ref.reshape(len(ref), -1), test.reshape(len(test), -1))


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits.reshape(len(logits), -1), axis=1) == labels))


def _checkpoint(dataset: str, given: str | None, workdir: Path) -> Path:
    if given:
        return Path(given)
    path = workdir / f"{dataset}_mobilenet_v1.pt"
    if not path.exists():
        from edgenet.train import train

        t0 = time.perf_counter()
        print(f"training {dataset} ({TRAIN[dataset]}) ...", file=sys.stderr, flush=True)
        res = train(dataset, out=path, force=True, **TRAIN[dataset])
        print(f"  {dataset}: test top-1 {res.test_top1:.3f} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def _relu_twin(ckpt_path: Path, folder: Path) -> Path:
    """The same weights with ReLU instead of ReLU6: the float model cross-layer equalization converts."""
    from edgenet.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(ckpt_path)
    out = folder / "relu_twin.pt"
    save_checkpoint(out, model=ck.model, alpha=ck.alpha, resolution=ck.resolution, num_classes=ck.num_classes,
                    in_channels=ck.in_channels, activation="relu", state_dict=ck.state_dict,
                    class_names=ck.class_names, preprocess=ck.preprocess, dataset=ck.dataset, metrics=ck.metrics)
    return out


def evaluate(source: str, calib: str, x: np.ndarray, labels: np.ndarray | None, schemes=SCHEMES,
             relu_twin: str | None = None, calib_samples: int = 200,
             float_label: str = "float32 (as trained, ReLU6)") -> dict:
    """Run every scheme on ``source``; metrics against the float model of the first conversion."""
    import edgenet
    from edgenet.inference import TFLiteModel

    rows, float_out = [], None
    with tempfile.TemporaryDirectory() as tmp:
        # each scheme as it is: no mixed-precision repair (strict_int8), and a damaged model is measured,
        # not refused (allow_degraded): the table is there to show the damage
        common = dict(calib=calib, calib_samples=calib_samples, eval_samples=len(x), layer_report=False,
                      force=True, out=Path(tmp) / "out", strict_int8=True, allow_degraded=True)
        for scheme in schemes:
            t0 = time.perf_counter()
            res = edgenet.convert(source, int8=True, **common, **scheme.kwargs)
            if float_out is None:
                float_out = TFLiteModel(res.float_path).predict(x)
                ref = {"label": float_label, "sqnr_db": None, "agreement": 1.0,
                       "top1": None if labels is None else _top1(float_out, labels)}
            q = TFLiteModel(res.int8_path).predict(x)
            eq = (res.report.calibration or {}).get("equalization")
            rows.append({"label": scheme.label, "top1": None if labels is None else _top1(q, labels),
                         "agreement": _top1(q, np.argmax(float_out.reshape(len(x), -1), axis=1)),
                         "sqnr_db": _sqnr(float_out, q), "sqnr_own_float_db": res.report.validation.int8_sqnr_db,
                         "report_accuracy": res.report.accuracy, "seconds": round(time.perf_counter() - t0, 1),
                         "equalization": eq})
        if relu_twin is not None:
            res = edgenet.convert(relu_twin, int8=False, **{k: v for k, v in common.items()
                                                            if k not in ("strict_int8", "allow_degraded")})
            f = TFLiteModel(res.float_path).predict(x)
            rows.insert(0, {"label": "float32, ReLU6 -> ReLU (the model CLE quantizes)",
                            "top1": None if labels is None else _top1(f, labels),
                            "agreement": _top1(f, np.argmax(float_out.reshape(len(x), -1), axis=1)),
                            "sqnr_db": _sqnr(float_out, f)})
    return {"source": str(source), "n_eval": len(x), "rows": [ref, *rows]}


def spread_bn_model(alpha: float = 0.25, resolution: int = 64, sigma: float = 1.0, seed: int = 0,
                    activation: str = "relu"):
    """Untrained MobileNetV1 (torch, eval mode) whose BatchNorm parameters carry a per-channel
    scale that BN folding turns into spread weight ranges, the function left as it was.

    Every BN that feeds a depthwise conv (stem, pointwise) gets gammas ``g ~ logN(0, sigma)``; the
    depthwise BN after it gets running variances ``g^2``, so it divides the same factor out again
    (exact with ReLU; with ReLU6 only while ``g x < 6``). After folding, the depthwise weights are
    large on channels whose inputs are small -- the pattern of trained MobileNets that per-tensor
    weight quantization cannot represent."""
    import torch

    from edgenet.zoo import create_model
    from edgenet.zoo.mobilenet_v1 import DepthwiseSeparable

    torch.manual_seed(seed)
    model = create_model("mobilenet_v1", alpha=alpha, resolution=resolution, num_classes=10, activation=activation)
    torch.nn.init.normal_(model.classifier.weight, 0, 1.0 / model.num_features ** 0.5)
    gen = torch.Generator().manual_seed(seed)
    blocks = [m for m in model.features if isinstance(m, DepthwiseSeparable)]
    feeding = [model.features[0][1]] + [b.pw[1] for b in blocks[:-1]]
    with torch.no_grad():
        for bn, block in zip(feeding, blocks):
            g = torch.exp(sigma * torch.randn(bn.num_features, generator=gen))
            bn.weight.copy_(g)
            dw_bn = block.dw[1]
            dw_bn.running_var.copy_(g ** 2 - dw_bn.eps)
    return model.eval()


def _spread_bn_onnx(folder: Path, alpha: float, resolution: int) -> Path:
    from edgenet.converters.export import export_onnx

    path = folder / f"mobilenet_v1_{alpha:g}_{resolution}_spread_bn.onnx"
    model = spread_bn_model(alpha, resolution)
    path.write_bytes(export_onnx(model, (1, 3, resolution, resolution)).SerializeToString())
    return path


def _qat_checkpoint(ckpt: Path, workdir: Path) -> Path:
    path = workdir / f"{ckpt.stem}_qat.pt"
    if not path.exists():
        from edgenet.qat_train import train_qat

        t0 = time.perf_counter()
        print(f"QAT fine-tuning {ckpt} ...", file=sys.stderr, flush=True)
        train_qat(from_checkpoint=ckpt, out=path, force=True)
        print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def ptq_vs_qat(ckpt: Path, qat_ckpt: Path, x: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 on (x NHWC, labels): float, PTQ int8 and QAT int8 (TFLite), and the QAT QDQ ONNX (onnxruntime)."""
    import edgenet
    from edgenet.checkpoint import load_checkpoint
    from edgenet.inference import TFLiteModel
    from edgenet.qat_export import qdq_session, run_qdq

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(int8=True, force=True, layer_report=False, strict_int8=True, allow_degraded=True,
                      eval_samples=len(x))
        ptq = edgenet.convert(str(ckpt), out=Path(tmp) / "ptq", **common)
        out["float"] = _top1(TFLiteModel(ptq.float_path).predict(x), labels)
        out["ptq_int8"] = _top1(TFLiteModel(ptq.int8_path).predict(x), labels)
        qat = edgenet.convert(str(qat_ckpt), out=Path(tmp) / "qat", **common)
        out["qat_float"] = _top1(TFLiteModel(qat.float_path).predict(x), labels)
        q = TFLiteModel(qat.int8_path).predict(x)
        out["qat_int8"] = _top1(q, labels)
        out["qat_notes"] = [n for n in qat.report.notes if "QAT" in n]
    ck = load_checkpoint(qat_ckpt)
    o = run_qdq(qdq_session(ck.qdq_onnx), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    out["qat_qdq_onnxruntime"] = _top1(o, labels)
    step = ck.qat["ranges"]["activations"][max(ck.qat["ranges"]["activations"], key=lambda k: int(k.split("_")[-1]))]
    out["qat_int8_vs_qdq_within_1_step"] = float(np.mean(np.abs(q.reshape(o.shape) - o) <= 1.001 * step["scale"]))
    out["n_eval"] = len(x)
    return out


def qat_markdown(results: dict) -> str:
    lines = ["**PTQ vs QAT, int8 (TFLite)** (whole test split)", "",
             "| model | test images | float | PTQ int8 | Δ PTQ | QAT weights, float | QAT int8 | Δ QAT | "
             "QAT QDQ ONNX (onnxruntime) | QAT int8 logits within 1 step of QDQ |", "|---|" + "---:|" * 9]
    for title, r in results.items():
        lines.append(f"| {title} | {r['n_eval']} | {100 * r['float']:.2f}% | {100 * r['ptq_int8']:.2f}% | "
                     f"{100 * (r['ptq_int8'] - r['float']):+.2f} | {100 * r['qat_float']:.2f}% | {100 * r['qat_int8']:.2f}% | "
                     f"{100 * (r['qat_int8'] - r['float']):+.2f} | {100 * r['qat_qdq_onnxruntime']:.2f}% | "
                     f"{100 * r['qat_int8_vs_qdq_within_1_step']:.1f}% |")
    return "\n".join(lines)


def markdown(title: str, result: dict) -> str:
    has_top1 = result["rows"][0]["top1"] is not None
    head = "| scheme | top-1 | Δ top-1 (points) | top-1 agreement | SQNR (dB) |" if has_top1 else \
        "| scheme | top-1 agreement | SQNR (dB) |"
    lines = [f"**{title}** ({result['n_eval']} test images)", "", head,
             "|---|" + "---:|" * (head.count("|") - 2)]
    base = result["rows"][0]["top1"]
    for r in result["rows"]:
        sq = "–" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        cells = [r["label"]]
        if has_top1:
            cells += [f"{100 * r['top1']:.2f}%", "–" if r is result["rows"][0] else f"{100 * (r['top1'] - base):+.2f}"]
        cells += [f"{100 * r['agreement']:.1f}%", sq]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", help="checkpoint trained on digits (trained if not given)")
    ap.add_argument("--shapes", help="checkpoint trained on shapes (trained if not given)")
    ap.add_argument("--workdir", default="/tmp/edgenet_accuracy")
    ap.add_argument("--skip", nargs="*", default=[], choices=["digits", "shapes", "spread", "qat"])
    ap.add_argument("--only", choices=["qat"], help="only the PTQ vs QAT table")
    ap.add_argument("--json", help="also write the measurements to this JSON file")
    args = ap.parse_args()

    from edgenet.checkpoint import load_checkpoint
    from edgenet.data.datasets import load_dataset

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results, qat_results, t0 = {}, {}, time.perf_counter()
    for dataset in ("digits", "shapes"):
        if dataset in args.skip:
            continue
        ckpt = _checkpoint(dataset, getattr(args, dataset), workdir)
        ck = load_checkpoint(ckpt)
        test = load_dataset(dataset, ck.preprocess, split="test")
        if "qat" not in args.skip:
            title = f"MobileNetV1 α={ck.alpha:g} {ck.resolution} px, {dataset}"
            qat_results[title] = ptq_vs_qat(ckpt, _qat_checkpoint(ckpt, workdir), test.x, test.labels)
        if args.only == "qat":
            continue
        twin = _relu_twin(ckpt, workdir)
        res = evaluate(str(ckpt), dataset, test.x, test.labels, relu_twin=str(twin))
        title = f"MobileNetV1 α={ck.alpha:g} {ck.resolution} px trained on {dataset}"
        results[dataset] = {"title": title, **res}
        print(markdown(title, res) + "\n", flush=True)
    if qat_results:
        results["ptq_vs_qat"] = qat_results
        print(qat_markdown(qat_results) + "\n", flush=True)
    if "spread" not in args.skip and args.only is None:
        from edgenet.data.preprocess import Preprocess

        pre = Preprocess(height=64, width=64, color=Preprocess.default(64, 3).color, mean=(0.5,) * 3, std=(0.5,) * 3)
        x = load_dataset("shapes", pre, split="test").x
        path = _spread_bn_onnx(workdir, 0.25, 64)
        res = evaluate(str(path), "shapes", x, None, float_label="float32 (ReLU)",
                       schemes=[sc for sc in SCHEMES if not sc.keeps_relu6])
        title = ("untrained MobileNetV1 α=0.25 64 px (ReLU) with BN parameters that fold into spread "
                 "per-channel ranges, same function (shapes images; no labels)")
        results["spread_bn"] = {"title": title, **res}
        print(markdown(title, res) + "\n", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
