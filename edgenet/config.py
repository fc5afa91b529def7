"""Typed, frozen configuration of a conversion. Closed choices are Enums."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class Precision(str, Enum):
    """What a .tflite model computes in (TFLite's post-training quantization modes).

    - ``float32``: float32 weights and activations;
    - ``float16``: float16 weights, dequantized to float32 when the model is loaded, float32
      activations (TFLite "float16 quantization"; a GPU delegate can run it in half precision);
    - ``dynamic``: int8 weights, float32 activations, quantized on the fly per inference by the
      ops that have hybrid kernels (TFLite "dynamic range quantization");
    - ``int8``: full integer: int8 weights and activations, int32 biases (TFLite "full integer
      quantization"; needs calibration data);
    - ``int16x8``: int16 activations, int8 weights, int64 biases (TFLite's
      EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8; needs calibration data).
    """

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @property
    def full_integer(self) -> bool:
        """int8 or int16x8: integer activations, quantized from calibration ranges."""
        return self in (Precision.INT8, Precision.INT16X8)

    @property
    def quantized(self) -> bool:
        """Integer weights (dynamic, int8, int16x8)."""
        return self in (Precision.DYNAMIC, Precision.INT8, Precision.INT16X8)

    @property
    def file_name(self) -> str:
        """The file ``edgenet convert`` writes this precision to: ``model_float.tflite`` for float32
        (the reference every other one is validated against), ``model_<precision>.tflite`` else."""
        return "model_float.tflite" if self is Precision.FLOAT32 else f"model_{self.value}.tflite"


class IOType(str, Enum):
    """Type of the int8 model's input and output tensors."""

    INT8 = "int8"
    UINT8 = "uint8"
    FLOAT32 = "float32"


class OpPrecision(str, Enum):
    """What one op of a full-integer model computes in, when it is not the model's own scheme
    (:func:`edgenet.converters.quantize.quantize`'s ``op_precision``):

    - ``int16``: int16 activations (symmetric, per tensor), int8 weights, int64 biases ("a16w8",
      TFLite's 16x8 kernels); QUANTIZE ops requantize between it and its int8 neighbours;
    - ``float``: left in float (float32 weights and activations), DEQUANTIZE before and QUANTIZE
      after it.
    """

    INT16 = "int16"
    FLOAT = "float"


class Activation(str, Enum):
    RELU6 = "relu6"
    RELU = "relu"


class CalibMethod(str, Enum):
    MINMAX = "minmax"          # TFLite's default: the range of everything seen
    PERCENTILE = "percentile"  # clip activation ranges at the 99.99th percentile of |x|
    MSE = "mse"                # per tensor, the clipping range with the least int8 round-trip error


@dataclass(frozen=True)
class InputShape:
    """``--input-shape``: the dims of one model input (``name`` None: the model's only input)."""

    name: str | None
    dims: tuple[int, ...]

    def __str__(self) -> str:
        dims = ",".join(map(str, self.dims))
        return dims if self.name is None else f"{self.name}:{dims}"


class ResizeMode(str, Enum):
    """How an image is brought to the model's height x width."""

    STRETCH = "stretch"   # straight to height x width (aspect ratio not kept)
    CROP = "crop"         # shorter side to the size that covers height x width, then a centre crop


class ChannelOrder(str, Enum):
    RGB = "rgb"
    BGR = "bgr"


@dataclass(frozen=True)
class PreprocessOptions:
    """What the user said about an image input's preprocessing (None: not said).

    ``mean``/``std`` are per channel on the 0..1 pixel scale (one value: every channel), as in
    ``--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225``; ``resize_short`` is the shorter side before
    a centre crop (``--resize 256``); ``file`` a preprocess.json whose settings are taken.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: ChannelOrder | None = None
    resize: ResizeMode | None = None
    resize_short: int | None = None
    file: Path | None = None

    @property
    def given(self) -> tuple[str, ...]:
        """The CLI options that were given, e.g. ("--mean", "--std")."""
        names = {"mean": "--mean", "std": "--std", "channel_order": "--channel-order", "resize": "--resize",
                 "resize_short": "--resize", "file": "--preprocess"}
        return tuple(dict.fromkeys(flag for key, flag in names.items() if getattr(self, key) is not None))


@dataclass(frozen=True)
class ModelSpec:
    """Which model to convert: a zoo name (with its hyper-parameters), a checkpoint, an .onnx file,
    a torch.export program or a ``module:function``. ``given`` names the fields the user set (so an
    option that does not apply to the kind of model can be refused instead of ignored)."""

    source: str = "mobilenet_v1"
    alpha: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    in_channels: int = 3
    activation: Activation = Activation.RELU6
    weights: Path | None = None
    input_shapes: tuple[InputShape, ...] = ()   # --input-shape: .onnx, `module:function` and .pt2 sources
    keep_layout: tuple[str, ...] = ()           # rank-4 inputs NOT to be treated as NCHW images
    given: frozenset[str] = frozenset()         # fields set by the user (alpha, resolution, ...)
    module: Any = None                          # a torch.nn.Module passed to edgenet.convert directly

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The one unnamed --input-shape, or None."""
        unnamed = [s.dims for s in self.input_shapes if s.name is None]
        return unnamed[0] if unnamed else None

    @property
    def is_onnx_file(self) -> bool:
        return self.source.lower().endswith(".onnx")


@dataclass(frozen=True)
class ConvertOptions:
    model: ModelSpec = ModelSpec()
    target: str = "rpi"
    precisions: tuple[Precision, ...] | None = None   # None: float32 + the target profile's precision and variants
    profile_variants: bool = True    # add the profile's variants (android: float16 for the GPU) to `precisions`
    io_type: IOType | None = None    # None: the target profile's input/output type
    calib: str | None = None         # built-in dataset name, a folder of images, or .npz/.npy arrays;
                                     # None: what the model records (checkpoints), else "shapes"
    preprocess: PreprocessOptions = PreprocessOptions()
    allow_mismatch: bool = False     # write the files even when float TFLite differs from ONNX
    allow_degraded: bool = False     # write the files even when a quantized model fails its verdict
    strict_int8: bool = False        # no mixed-precision repair: every op integer (accelerators)
    given: frozenset[str] = frozenset()   # the options the user set (so those that do not apply are refused)
    calib_samples: int = 200
    calib_method: CalibMethod = CalibMethod.MINMAX
    per_tensor: bool | None = None   # per-tensor weights (None: the target profile's choice)
    equalize: bool = False           # cross-layer equalization + bias correction before quantizing
    normalize_in_model: bool = False  # the image input's (x - mean) / std inside the graph: it takes 0..1 pixels
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
        return Precision.INT8 in (self.precisions or ())

    def with_precisions(self, profile) -> "ConvertOptions":
        """These options with ``precisions`` resolved for ``profile``: float32 first (the reference
        every other precision is validated against), then what was asked for, or the profile's
        ``precision`` when nothing was; and the profile's ``variants`` unless ``profile_variants`` is
        off (an explicit ``--precision LIST`` is taken as it is)."""
        from dataclasses import replace

        asked = self.precisions if self.precisions is not None else (profile.precision,)
        variants = profile.variants if self.profile_variants else ()
        return replace(self, precisions=tuple(dict.fromkeys((Precision.FLOAT32, *asked, *variants))))
