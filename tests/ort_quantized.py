"""Test helper: a float ONNX model quantized by onnxruntime's own quantizer (QDQ or QOperator), on
seeded random calibration inputs -- the files users bring as model_quantized.onnx."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def quantize_static_file(model: onnx.ModelProto, folder: Path, name: str, *, per_channel: bool, activation: str,
                         fmt: str = "QDQ", seed: int = 1, shape=(1, 3, 16, 16), input_name: str = "x") -> Path:
    """``model`` saved in ``folder`` and quantized with ``quantize_static`` (``fmt``: "QDQ" or
    "QOperator"; ``activation``: "QInt8" or "QUInt8"; int8 weights) on 16 uniform [-1, 1] inputs
    of ``shape``; the quantized file's path."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = folder / f"{name}.onnx"
    dst = folder / f"{name}_{int(per_channel)}_{activation}_{fmt}.onnx"
    onnx.save(model, str(src))
    rng = np.random.default_rng(seed)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=per_channel,
                    activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8)
    return dst


def convert_on_the_producers_grid(path: Path, out: Path, per_channel: bool):
    """``edgenet.convert`` of a quantized file to int8 with float I/O; checks what every quantized
    file must give (every tensor's range from the producer, none calibrated; every weight value as
    stored; the producer's per-channel choice) and returns ``(result, report.json, its int8 verdict,
    report["calibration"]["qdq"])``."""
    import json

    import edgenet

    res = edgenet.convert(str(path), int8=True, out=str(out), mean=0.5, std=0.5, io_type="float32",
                          layer_report=False, eval_samples=16)
    report = json.loads((out / "report.json").read_text())
    found = report["calibration"]["qdq"]
    assert found["tensors_calibrated"] == 0 and found["tensors_with_qdq_range"] >= 5
    assert found["weights_as_stored"]["share"] == 1.0 and found["per_channel"] is per_channel
    verdict = next(p["verdict"] for p in report["precisions"] if p["precision"] == "int8")
    return res, report, verdict, found
