"""Typed, frozen configuration of a conversion. Closed choices are Enums."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Precision(str, Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"


class IOType(str, Enum):
    """Type of the int8 model's input and output tensors."""

    INT8 = "int8"
    UINT8 = "uint8"
    FLOAT32 = "float32"


class Activation(str, Enum):
    RELU6 = "relu6"
    RELU = "relu"


class CalibMethod(str, Enum):
    MINMAX = "minmax"          # TFLite's default: the range of everything seen
    PERCENTILE = "percentile"  # clip activation ranges at the 99.99th percentile of |x|
    MSE = "mse"                # per tensor, the clipping range with the least int8 round-trip error


@dataclass(frozen=True)
class ModelSpec:
    """Which model to convert: a zoo name (with its hyper-parameters) or a path to an .onnx file."""

    source: str = "mobilenet_v1"
    alpha: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    in_channels: int = 3
    activation: Activation = Activation.RELU6
    weights: Path | None = None
    input_shape: tuple[int, ...] | None = None   # for `module:function` sources, e.g. (1, 3, 224, 224)

    @property
    def is_onnx_file(self) -> bool:
        return self.source.lower().endswith(".onnx")


@dataclass(frozen=True)
class ConvertOptions:
    model: ModelSpec = ModelSpec()
    target: str = "rpi"
    precisions: tuple[Precision, ...] = (Precision.FLOAT32, Precision.INT8)
    io_type: IOType | None = None    # None: the target profile's input/output type
    calib: str = "shapes"            # built-in dataset name or a folder of images
    calib_samples: int = 200
    calib_method: CalibMethod = CalibMethod.MINMAX
    per_tensor: bool | None = None   # per-tensor weights (None: the target profile's choice)
    equalize: bool = False           # cross-layer equalization + bias correction before quantizing
    equalize_clip: str = "relu"      # ReLU6 in equalized pairs: "relu" (replace), "per_channel" (exact), "skip"
    layer_report: bool = True        # per-layer SQNR of the int8 model against the float one
    eval_samples: int = 64
    opset: int = 17
    seed: int = 0
    out: Path = Path("out")
    force: bool = False
    c_name: str | None = None        # prefix of the firmware sources' C symbols (None: from the model name)
    fit: bool = False                # search alpha x resolution for the largest model that fits the target
    # the grid `--fit` searches (MobileNetV1 width multipliers and input sizes)
    fit_alphas: tuple[float, ...] = (1.0, 0.75, 0.5, 0.35, 0.25)
    fit_resolutions: tuple[int, ...] = (224, 192, 160, 128, 96, 64)

    @property
    def int8(self) -> bool:
        return Precision.INT8 in self.precisions
