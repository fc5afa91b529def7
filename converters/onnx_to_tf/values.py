"""Data types of the converter: the public TensorInfo (a graph input or output) and the internal Value."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgenet.converters.onnx_to_tf import layout


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output, as ONNX and as the TFLite model see it."""

    name: str  # ONNX value name
    onnx_shape: tuple[int, ...]  # as in ONNX, e.g. (1, 3, 224, 224); -1 = dynamic batch
    tf_shape: tuple[int | None, ...]  # as in the TFLite model, e.g. (1, 224, 224, 3); None = dynamic batch
    dtype: str  # numpy dtype name, e.g. "float32"
    channels_last: bool  # True when the TFLite tensor = the ONNX tensor transposed by (0, 2, 3, 1)


@dataclass(frozen=True, eq=False)
class Value:
    """An ONNX value during conversion: a TF tensor in layout ``perm`` (``tf = transpose(onnx, perm)``),
    or a constant kept as numpy in ONNX layout (turned into a tf.constant only when an op needs it)."""

    tensor: Any = None  # tf.Tensor, or None for a constant
    perm: tuple[int, ...] = ()
    const: np.ndarray | None = None

    @staticmethod
    def constant(array: np.ndarray) -> "Value":
        array = np.asarray(array)
        return Value(None, layout.identity(array.ndim), array)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def rank(self) -> int:
        return len(self.perm)

    @property
    def onnx_shape(self) -> tuple:
        """Static ONNX shape; None for the dynamic batch dim."""
        if self.const is not None:
            return tuple(self.const.shape)
        return layout.onnx_shape_of(tuple(self.tensor.shape.as_list()), self.perm)

    @property
    def dtype(self) -> np.dtype:
        if self.const is not None:
            return self.const.dtype
        return np.dtype(self.tensor.dtype.as_numpy_dtype)
