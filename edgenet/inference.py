"""Running a .tflite model on float inputs, whatever its input/output types.

:class:`TFLiteModel` quantizes float inputs with the model's own input scale and zero point and
dequantizes integer outputs, so a float32 model and its int8 twin are called the same way. Used by
validation on the workstation and by the benchmark on the device (numpy + LiteRT only).
"""
from __future__ import annotations

from pathlib import Path

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
        self.outputs = interpreter.get_output_details()

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
        """float32 samples (N, *input_shape[1:]) -> float32 outputs (N, ...), one invoke per sample."""
        self.check_input(x)
        detail = self.outputs[output]
        q = self.quantize(x)
        index, out_index = self.input["index"], detail["index"]
        results = np.empty((len(q), *(int(d) for d in detail["shape"][1:])), dtype=np.dtype(detail["dtype"]))
        for i in range(len(q)):
            self.interpreter.set_tensor(index, q[i:i + 1])
            self.interpreter.invoke()
            results[i] = self.interpreter.get_tensor(out_index)[0]
        if np.dtype(detail["dtype"]) in _INTEGER:
            scale, zp = detail["quantization"]
            return dequantize_output(results, scale, zp)
        return results.astype(np.float32, copy=False)


def op_counts(model: str | Path | bytes) -> dict[str, int]:
    """Builtin op type -> count in a .tflite model (read with no delegate applied)."""
    interp = make_interpreter(model, use_xnnpack=False)
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))
