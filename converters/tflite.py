"""TFLite stage: a channels-last TF graph -> float32 / float16 / full-integer int8 .tflite bytes.

int8 is post-training, full-integer quantization: per-channel weights (per-tensor selectable),
int8 activations, int8 (or uint8 / float32) model input and output. Calibration ranges come from
:mod:`converters.calibration` (batched, multi-threaded), the quantization itself from TensorFlow's
MLIR quantizer.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from converters._capture import captured_fd
from converters.calibration import CalibrationStats, RangeCalibrator, calibrated_by
from edgenet._deps import require
from edgenet.config import CalibMethod, IOType, Precision
from edgenet.errors import ConversionError


@dataclass(frozen=True)
class Int8Result:
    model: bytes
    calibration: CalibrationStats


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = require("tensorflow", purpose="TFLite conversion")
    tf.get_logger().setLevel("ERROR")
    return tf


def _converter(graph):
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([graph.concrete_function], graph.module)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv


def explain_failure(text: str) -> str:
    """One readable line out of the TFLite converter's MLIR diagnostics."""
    flex = re.search(r"TF Select ops: ([^\n]+)", text)
    if flex:
        return (f"TFLite's builtin op set has no kernel for {flex.group(1).strip()} (an ONNX op that maps to it "
                "cannot run on the device runtimes edgenet targets)")
    for line in text.splitlines():
        m = re.search(r"error: (.+)$", line)
        if m and "failed while converting" not in m.group(1):
            return m.group(1).strip()[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:300] if lines else "unknown error"


def _run(conv, what: str) -> bytes:
    with captured_fd(2) as log:
        try:
            model = conv.convert()
        except Exception as exc:
            raise ConversionError(f"TFLite {what} conversion failed: "
                                  f"{explain_failure(str(exc) + chr(10) + log.text)}") from exc
    return bytes(model)


def to_float_tflite(graph, precision: Precision = Precision.FLOAT32) -> bytes:
    """float32 (or float16-weights) TFLite model of a converters.onnx_to_tf.TFGraph."""
    conv = _converter(graph)
    if precision is Precision.FLOAT16:
        tf = _tf()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision is not Precision.FLOAT32:
        raise ValueError(f"not a float precision: {precision}")
    return _run(conv, precision.value)


def to_int8_tflite(graph, calib_inputs: Sequence[np.ndarray], *, io_type: IOType = IOType.INT8,
                   per_channel: bool = True, method: CalibMethod = CalibMethod.MINMAX,
                   batch_size: int = 16, num_threads: int | None = None) -> Int8Result:
    """Full-integer int8 model; ``calib_inputs`` holds one float32 array (N, ...) per model input,
    already preprocessed and in the TF graph's layout (NHWC for images)."""
    tf = _tf()
    if len(calib_inputs) != len(graph.inputs):
        raise ConversionError(f"calibration data has {len(calib_inputs)} input(s), the model {len(graph.inputs)}")
    for arr, info in zip(calib_inputs, graph.inputs):
        want = tuple(d for d in info.tf_shape[1:])
        if tuple(arr.shape[1:]) != want:
            raise ConversionError(f"calibration samples have shape {tuple(arr.shape[1:])}, "
                                  f"model input '{info.name}' wants {want}")
    calibrator = RangeCalibrator(calib_inputs, method, batch_size, num_threads or os.cpu_count())
    first = [x[:1] for x in calibrator.inputs]

    conv = _converter(graph)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: iter([first])  # required by the API; ranges come from ours
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io = {IOType.INT8: tf.int8, IOType.UINT8: tf.uint8, IOType.FLOAT32: tf.float32}[IOType(io_type)]
    conv.inference_input_type = io
    conv.inference_output_type = io
    if not per_channel:
        conv._experimental_disable_per_channel = True
    with calibrated_by(calibrator):
        model = _run(conv, "int8")
    if calibrator.last_stats is None:
        raise ConversionError("the TFLite converter did not ask for calibration (TensorFlow version change?)")
    return Int8Result(model, calibrator.last_stats)
