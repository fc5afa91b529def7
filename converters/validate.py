"""Validation stage: the float TFLite model against ONNX, the int8 model against the float one."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenet._deps import require
from edgenet.benchmark.accuracy import agreement, sqnr_db, top_k_accuracy  # the device-side definitions


@dataclass(frozen=True)
class FloatCheck:
    max_abs_err: float
    rel_err: float          # max abs error / max |ONNX output|
    samples: int


@dataclass(frozen=True)
class Int8Check:
    top1_agreement: float   # fraction of samples where int8 and float pick the same class
    sqnr_db: float          # 10 log10(sum f^2 / sum (f - q)^2) over all outputs
    samples: int


@dataclass(frozen=True)
class OutputCheck:
    """One model output: float TFLite against ONNX, int8 against float."""
    name: str
    float_max_abs_err: float
    float_rel_err: float
    int8_sqnr_db: float | None


@dataclass(frozen=True)
class Accuracy:
    float_top1: float
    int8_top1: float | None
    float_top5: float | None
    int8_top5: float | None
    n_eval: int

    @property
    def top1_drop_points(self) -> float | None:
        return None if self.int8_top1 is None else round(100 * (self.float_top1 - self.int8_top1), 3)


def onnx_outputs(onnx_model, x_nhwc: np.ndarray, channels_last_input: bool) -> list[np.ndarray]:
    """Every output of the ONNX model on NHWC samples (transposed to NCHW when the model wants it),
    in the graph's order, one array (N, ...) each."""
    ort = require("onnxruntime", purpose="validation against ONNX")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.transpose(x_nhwc, (0, 3, 1, 2)) if channels_last_input else x_nhwc
    runs = [sess.run(None, {name: x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([run[k] for run in runs]).astype(np.float32) for k in range(len(runs[0]))]


def check_float(onnx_out: np.ndarray, float_out: np.ndarray, channels_last_output: bool = False) -> FloatCheck:
    """Compare float TFLite outputs with ONNX outputs of the same samples."""
    got = np.transpose(float_out, (0, 3, 1, 2)) if channels_last_output and float_out.ndim == 4 else float_out
    err = float(np.max(np.abs(onnx_out - got)))
    scale = float(np.max(np.abs(onnx_out))) or 1.0
    return FloatCheck(err, err / scale, len(onnx_out))


def check_int8(float_out: np.ndarray, int8_out: np.ndarray) -> Int8Check:
    return Int8Check(agreement(float_out, int8_out), sqnr_db(float_out, int8_out), len(float_out))


def accuracy(float_out: np.ndarray, int8_out: np.ndarray | None, labels: np.ndarray) -> Accuracy:
    classes = float_out.reshape(len(float_out), -1).shape[1]
    five = classes >= 5
    return Accuracy(
        float_top1=top_k_accuracy(float_out, labels, 1),
        int8_top1=None if int8_out is None else top_k_accuracy(int8_out, labels, 1),
        float_top5=top_k_accuracy(float_out, labels, 5) if five else None,
        int8_top5=top_k_accuracy(int8_out, labels, 5) if five and int8_out is not None else None,
        n_eval=len(labels),
    )
