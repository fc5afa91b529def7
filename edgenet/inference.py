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


class TFLiteModel:
    def __init__(self, model: str | Path | bytes, num_threads: int | None = None, use_xnnpack: bool = True):
        self.interpreter = make_interpreter(model, num_threads, use_xnnpack=use_xnnpack)
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        if len(self.interpreter.get_input_details()) != 1:
            raise DataError("models with more than one input are not supported here yet")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input["dtype"])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype in (np.int8, np.uint8, np.int16):
            scale, zp = self.input["quantization"]
            return quantize_input(x, scale, zp, self.input_dtype)
        return x.astype(self.input_dtype, copy=False)

    def _dequantize(self, detail: dict, y: np.ndarray) -> np.ndarray:
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8, np.int16):
            scale, zp = detail["quantization"]
            return dequantize_output(y, scale, zp)
        return y.astype(np.float32, copy=False)

    def check_input(self, x: np.ndarray) -> None:
        want = self.input_shape[1:]
        if tuple(x.shape[1:]) != want:
            raise DataError(f"input samples have shape {tuple(x.shape[1:])} but the model expects {want}"
                            + (" (channel count differs)" if x.shape[1:-1] == want[:-1] else ""))

    def predict(self, x: np.ndarray, output: int = 0) -> np.ndarray:
        """float32 samples (N, *input_shape[1:]) -> float32 outputs (N, ...), one invoke per sample."""
        self.check_input(x)
        detail = self.outputs[output]
        index = self.input["index"]
        results = []
        for sample in self.quantize(x):
            self.interpreter.set_tensor(index, sample[None])
            self.interpreter.invoke()
            results.append(self.interpreter.get_tensor(detail["index"])[0].copy())
        return self._dequantize(detail, np.stack(results))



def op_counts(model: str | Path | bytes) -> dict[str, int]:
    """Builtin op type -> count in a .tflite model (read with no delegate applied)."""
    interp = make_interpreter(model, use_xnnpack=False)
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))
