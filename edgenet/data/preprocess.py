"""The preprocessing spec that travels with a model.

Calibration, validation and the on-device benchmark all turn an image into a model input with
the same :class:`Preprocess`, which ``edgenet convert`` writes as ``preprocess.json`` beside the
.tflite files. Inputs are channels-last (NHWC) float32; the int8 model's input quantization is
applied afterwards from the model's own input scale and zero point (see :func:`quantize_input`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from edgenet.errors import DataError


class ColorMode(str, Enum):
    RGB = "RGB"
    GRAY = "L"

    @property
    def channels(self) -> int:
        return 3 if self is ColorMode.RGB else 1


@dataclass(frozen=True)
class Preprocess:
    """image (any size, any mode) -> float32 array of shape (height, width, channels).

    Steps, in order: convert to ``color``; resize the shorter side to ``resize`` (0 = straight to
    ``height``x``width``); center-crop to ``height``x``width``; scale to [0, 1] by /255; then
    ``(x - mean) / std`` per channel.
    """

    height: int
    width: int
    color: ColorMode = ColorMode.RGB
    resize: int = 0
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    layout: str = "NHWC"
    version: int = field(default=1)

    @property
    def channels(self) -> int:
        return self.color.channels

    @classmethod
    def default(cls, resolution: int, channels: int = 3) -> "Preprocess":
        color = ColorMode.RGB if channels == 3 else ColorMode.GRAY
        return cls(height=resolution, width=resolution, color=color,
                   mean=(0.5,) * channels, std=(0.5,) * channels)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["color"] = self.color.value
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        try:
            return cls(
                height=int(d["height"]), width=int(d["width"]), color=ColorMode(d.get("color", "RGB")),
                resize=int(d.get("resize", 0)), mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]), layout=str(d.get("layout", "NHWC")),
                version=int(d.get("version", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"invalid preprocessing spec: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "Preprocess":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: no such preprocessing file") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg})") from exc

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
