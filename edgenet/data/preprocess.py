"""The preprocessing spec that travels with a model.

Calibration, validation and the on-device benchmark all turn an image into a model input with
the same :class:`Preprocess`, which ``edgenet convert`` writes as ``preprocess.json`` beside the
.tflite files. Inputs are channels-last (NHWC) float32; the int8 model's input quantization is
applied afterwards from the model's own input scale and zero point (see :func:`quantize_input`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from edgenet.errors import DataError


MAX_SIDE = 8192        # pixels: the largest height/width/resize a preprocessing spec may ask for


class ColorMode(str, Enum):
    """PIL mode an image is converted to; its channel count is the model input's."""

    RGB = "RGB"
    GRAY = "L"
    RGBA = "RGBA"

    @property
    def channels(self) -> int:
        return {ColorMode.RGB: 3, ColorMode.GRAY: 1, ColorMode.RGBA: 4}[self]

    @classmethod
    def for_channels(cls, channels: int) -> "ColorMode":
        """The mode of an image with ``channels`` channels (1, 3 or 4); DataError otherwise."""
        modes = {1: cls.GRAY, 3: cls.RGB, 4: cls.RGBA}
        if channels not in modes:
            raise DataError(f"images have 1, 3 or 4 channels, not {channels}")
        return modes[channels]


@dataclass(frozen=True)
class Preprocess:
    """image (any size, any mode) -> float32 array of shape (height, width, channels).

    Steps, in order: convert to ``color``; resize the shorter side to ``resize`` (0 = straight to
    ``height``x``width``); center-crop to ``height``x``width``; scale to [0, 1] by /255; reverse the
    channels when ``channel_order`` is ``"BGR"`` (OpenCV-trained models); then ``(x - mean) / std``
    per channel (``mean``/``std`` on the 0..1 scale, in the model's channel order).
    Raises DataError (one line) for values out of range: sides 1..8192, std > 0, finite numbers,
    one mean/std per channel.
    """

    height: int
    width: int
    color: ColorMode = ColorMode.RGB
    resize: int = 0
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    layout: str = "NHWC"
    version: int = field(default=1)
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        for key in ("height", "width"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
                raise DataError(f"preprocessing {key} must be an integer in 1..{MAX_SIDE}, got {value!r}")
        if isinstance(self.resize, bool) or not isinstance(self.resize, int) or not 0 <= self.resize <= MAX_SIDE:
            raise DataError(f"preprocessing resize must be an integer in 0..{MAX_SIDE} (0: no crop), got {self.resize!r}")
        if self.resize and self.resize < min(self.height, self.width):
            raise DataError(f"preprocessing resize {self.resize} is smaller than the crop "
                            f"{self.height}x{self.width}")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != self.channels:
                raise DataError(f"preprocessing {key} has {len(values)} value(s); the {self.color.value} input "
                                f"has {self.channels} channel(s)")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise DataError(f"preprocessing {key} must be finite numbers, got {list(values)}")
        if any(v <= 0 for v in self.std):
            raise DataError(f"preprocessing std must be > 0 for every channel, got {list(self.std)}")
        # pixels are 0..1 after /255: a mean or std far outside that scale is a typo (255 for 1), and
        # overflows float32 at the extremes
        if any(abs(v) > 1e3 for v in self.mean) or any(not 1e-4 <= v <= 1e3 for v in self.std):
            raise DataError(f"preprocessing mean/std are on the 0..1 pixel scale (|mean| <= 1000, std in 1e-4..1000), "
                            f"got mean {list(self.mean)}, std {list(self.std)}")
        if self.channel_order not in ("RGB", "BGR"):
            raise DataError(f"preprocessing channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.channel_order == "BGR" and self.color is not ColorMode.RGB:
            raise DataError("preprocessing channel_order BGR needs a 3-channel (RGB) input")
        if self.layout != "NHWC":
            raise DataError(f"preprocessing layout must be NHWC, got {self.layout!r}")

    @property
    def channels(self) -> int:
        return self.color.channels

    @classmethod
    def default(cls, resolution: int, channels: int = 3, width: int | None = None) -> "Preprocess":
        """Inputs in [-1, 1], i.e. ``(x - 0.5) / 0.5`` (edgenet's zoo convention)."""
        return cls(height=resolution, width=resolution if width is None else width,
                   color=ColorMode.for_channels(channels), mean=(0.5,) * channels, std=(0.5,) * channels)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["color"] = self.color.value
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        if not isinstance(d, dict):
            raise DataError(f"invalid preprocessing spec: a JSON object is needed, not {type(d).__name__}")
        missing = [k for k in ("height", "width", "mean", "std") if k not in d]
        if missing:
            raise DataError(f"invalid preprocessing spec: missing {', '.join(missing)}")

        def integer(key: str, default=None) -> int:
            value = d.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise DataError(f"invalid preprocessing spec: {key} must be an integer, got {value!r}")
            return int(value)

        def numbers(key: str) -> tuple[float, ...]:
            value = d[key]
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in value):
                raise DataError(f"invalid preprocessing spec: {key} must be a list of numbers, got {value!r}")
            return tuple(float(v) for v in value)

        color = d.get("color", "RGB")
        if color not in [c.value for c in ColorMode]:
            raise DataError(f"invalid preprocessing spec: color must be one of "
                            f"{', '.join(c.value for c in ColorMode)}, got {color!r}")
        return cls(height=integer("height"), width=integer("width"), color=ColorMode(color),
                   resize=integer("resize", 0), mean=numbers("mean"), std=numbers("std"),
                   layout=str(d.get("layout", "NHWC")), version=integer("version", 1),
                   channel_order=str(d.get("channel_order", "RGB")).upper())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "Preprocess":
        path = Path(path)
        try:
            if not path.is_file():
                raise DataError(f"{path}: no such preprocessing file" if not path.exists()
                                else f"{path}: not a regular file")
            if path.stat().st_size > 1 << 20:
                raise DataError(f"{path}: too large for a preprocessing file ({path.stat().st_size:,} bytes)")
            from edgenet.safe_json import load_file   # limits: depth, size, finite numbers, 64-bit integers

            return cls.from_dict(load_file(path, str(path), max_bytes=1 << 20, max_depth=8))
        except PermissionError as exc:
            raise DataError(f"{path}: permission denied") from exc
        except DataError as exc:
            msg = str(exc)
            raise DataError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None

    # -- application -----------------------------------------------------------------------
    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (or 0..255 float) HxWxC already at (height, width) -> normalized float32."""
        x = np.asarray(pixels, dtype=np.float32)
        if x.ndim == 2:
            x = x[..., None]
        if x.shape[-1] != self.channels:
            raise DataError(
                f"image has {x.shape[-1]} channel(s) but the model's preprocessing expects {self.channels}"
            )
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((x / 255.0 - mean) / std).astype(np.float32)

    def __call__(self, image) -> np.ndarray:
        """A PIL image -> float32 (height, width, channels)."""
        img = image.convert(self.color.value)
        if self.resize:
            w, h = img.size
            s = self.resize / min(w, h)
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), resample=2)  # bilinear
            w, h = img.size
            left, top = (w - self.width) // 2, (h - self.height) // 2
            img = img.crop((left, top, left + self.width, top + self.height))
        elif img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), resample=2)
        return self.normalize(np.asarray(img))


def quantize_input(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """float -> integer model input, with the model's own input quantization parameters."""
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * scale
