"""Running a .tflite model on float inputs, whatever its input/output types.

:class:`TFLiteModel` quantizes float inputs with the model's own input scale and zero point and
dequantizes integer outputs, so a float32 model and its int8 twin are called the same way. Used by
validation on the workstation and by the benchmark on the device (numpy + LiteRT only).
"""
from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Sequence

import numpy as np

from edgenet.data.preprocess import dequantize_output, quantize_input
from edgenet.errors import DataError
from edgenet.runtime import make_interpreter

_INTEGER = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


class TFLiteModel:
    """One-input .tflite model called on float samples: quantizes them with the model's own input
    scale and zero point and dequantizes integer outputs. The one runner behind validation and the
    benchmark's accuracy pass."""

    def __init__(self, model: str | Path | bytes, num_threads: int | None = None, use_xnnpack: bool = True):
        self._bind(make_interpreter(model, num_threads, use_xnnpack=use_xnnpack))

    @classmethod
    def from_interpreter(cls, interpreter) -> "TFLiteModel":
        """Wrap an interpreter that is already allocated (opened with a delegate, timed ...)."""
        model = cls.__new__(cls)
        model._bind(interpreter)
        return model

    def _bind(self, interpreter) -> None:
        self.interpreter = interpreter
        if len(interpreter.get_input_details()) != 1:
            raise DataError("models with more than one input are not supported here yet")
        self.input = interpreter.get_input_details()[0]
        self.outputs = outputs_in_model_order(interpreter)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input["dtype"])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype in _INTEGER:
            scale, zp = self.input["quantization"]
            return quantize_input(x, scale, zp, self.input_dtype)
        return x.astype(self.input_dtype, copy=False)

    def check_input(self, x: np.ndarray) -> None:
        want = self.input_shape[1:]
        if tuple(x.shape[1:]) != want:
            raise DataError(f"input samples have shape {tuple(x.shape[1:])} but the model expects {want}"
                            + (" (channel count differs)" if x.shape[1:-1] == want[:-1] else ""))

    def predict(self, x: np.ndarray, output: int = 0) -> np.ndarray:
        """float32 samples (N, *input_shape[1:]) -> float32 output ``output`` (N, ...), one invoke per sample."""
        return self.predict_all(x, (output,))[0]

    def predict_all(self, x: np.ndarray, outputs: Sequence[int] | None = None) -> list[np.ndarray]:
        """float32 samples -> one float32 array (N, ...) per output (all, in the model's order, by
        default): every invoke reads every requested output."""
        self.check_input(x)
        details = [self.outputs[k] for k in (range(len(self.outputs)) if outputs is None else outputs)]
        q = self.quantize(x)
        index = self.input["index"]
        results = [np.empty((len(q), *(int(d) for d in det["shape"][1:])), dtype=np.dtype(det["dtype"]))
                   for det in details]
        for i in range(len(q)):
            self.interpreter.set_tensor(index, q[i:i + 1])
            self.interpreter.invoke()
            for det, res in zip(details, results):
                res[i] = self.interpreter.get_tensor(det["index"])[0]
        return [_dequantized(det, res) for det, res in zip(details, results)]


def _dequantized(detail: dict, y: np.ndarray) -> np.ndarray:
    if np.dtype(detail["dtype"]) in _INTEGER:
        scale, zp = detail["quantization"]
        return dequantize_output(y, scale, zp)
    return y.astype(np.float32, copy=False)


def outputs_in_model_order(interpreter) -> list[dict]:
    """The interpreter's output details in the model's own order: ``output_0``, ``output_1`` ... of
    its signature (edgenet's converter writes one; TFLite may list subgraph outputs in another
    order), or the subgraph's order when there is no such signature."""
    details = interpreter.get_output_details()
    try:
        signatures = interpreter._get_full_signature_list()   # {key: {"inputs": {name: index}, "outputs": ...}}
    except Exception:  # private API: absent in some runtimes
        return details
    if not signatures or len(signatures) != 1:
        return details
    named = next(iter(signatures.values())).get("outputs", {})
    keys = [k for k in named if re.fullmatch(r"output_\d+", k)]
    by_index = {int(d["index"]): d for d in details}
    if len(keys) != len(details) or any(int(named[k]) not in by_index for k in keys):
        return details
    return [by_index[int(named[k])] for k in sorted(keys, key=lambda k: int(k.rsplit("_", 1)[1]))]


def op_counts(model: str | Path | bytes) -> dict[str, int]:
    """Builtin op type -> count in a .tflite model (read with no delegate applied)."""
    interp = make_interpreter(model, use_xnnpack=False)
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


class ModelPrecision(str, Enum):
    """What a .tflite model computes in, read from its tensors (not from its file name)."""

    FLOAT32 = "float32"              # float32 weights and activations
    FLOAT16 = "float16"              # float16 weights (DEQUANTIZE to float32), float32 activations
    INT8 = "int8"                    # full-integer: int8 (or uint8) activations and weights
    INT16X8 = "int16x8"              # full-integer with int16 activations, int8 weights
    DYNAMIC_RANGE = "dynamic-range"  # int8 weights, float32 activations (quantized on the fly)

    @property
    def quantized(self) -> bool:
        return self in (ModelPrecision.INT8, ModelPrecision.INT16X8, ModelPrecision.DYNAMIC_RANGE)


_EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")


def model_precision(interpreter) -> ModelPrecision:
    """The precision a model runs in, from its ops' operand and result types (TFLite's own
    classification of post-training quantization: float16, dynamic range, full integer, 16x8).

    An op other than QUANTIZE/DEQUANTIZE that produces int8/uint8 tensors makes it full-integer
    (int16 results: 16x8); integer weights consumed by ops with float results make it dynamic-range;
    float16 tensors without either make it float16.
    """
    try:
        ops = interpreter._get_ops_details()    # private API: absent in some runtimes
    except Exception:  # noqa: BLE001
        ops = None
    integer = {np.dtype(np.int8), np.dtype(np.uint8)}
    if ops:
        results, operands = set(), set()
        for op in ops:
            if op.get("op_name") in _EDGE_OPS:
                continue
            results.update(np.dtype(t) for t in op.get("result_types", ()) if t is not None)
            operands.update(np.dtype(t) for t in op.get("operand_types", ()) if t is not None)
        if np.dtype(np.int16) in results:
            return ModelPrecision.INT16X8
        if results & integer:
            return ModelPrecision.INT8
        if operands & integer:
            return ModelPrecision.DYNAMIC_RANGE
    dtypes = {np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    if ops is None and dtypes & integer:   # no op details: integer I/O means full integer
        io = {np.dtype(d["dtype"]) for d in interpreter.get_input_details()}
        return ModelPrecision.INT8 if io & integer else ModelPrecision.DYNAMIC_RANGE
    if np.dtype(np.float16) in dtypes:
        return ModelPrecision.FLOAT16
    return ModelPrecision.FLOAT32
