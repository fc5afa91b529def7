"""Trained-model checkpoints that carry everything ``edgenet convert`` needs.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``: tensors, strings, numbers, lists and dicts only, no pickled
classes. Besides the ``state_dict`` it records the architecture hyper-parameters, the class names
and the preprocessing, so a converted model needs no other flags. The ``state_dict`` key also
lets :func:`edgenet.zoo.load_weights` read a checkpoint directly.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenet.config import Activation
from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError, ModelError, UsageError
from edgenet.io import atomic_write_bytes

FORMAT = "edgenet-checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    model: str                       # zoo name, e.g. "mobilenet_v1"
    alpha: float
    resolution: int
    num_classes: int
    in_channels: int
    activation: Activation
    state_dict: dict                 # parameter/buffer name -> torch.Tensor
    class_names: tuple[str, ...]
    preprocess: Preprocess
    dataset: str                     # what it was trained on: "digits", "shapes" or a folder
    metrics: dict = field(default_factory=dict)

    def build_model(self):
        """The zoo model with these weights, in eval mode."""
        from edgenet.zoo import create_model

        model = create_model(self.model, alpha=self.alpha, resolution=self.resolution,
                             num_classes=self.num_classes, in_channels=self.in_channels,
                             activation=self.activation.value)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise ModelError(f"checkpoint weights do not match {self.model} alpha={self.alpha:g}: "
                             f"{first}") from exc
        return model.eval()


def _plain(value: Any, where: str) -> Any:
    """Check that ``value`` survives ``weights_only=True`` loading (no arbitrary objects)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, str)):  # subclasses (torch's TorchVersion ...) would be pickled as such
        return int(value) if isinstance(value, int) else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return _plain(value.item(), where)
    raise ModelError(f"cannot store {type(value).__name__} in a checkpoint's {where}")


def save_checkpoint(path: str | Path, *, model: str, alpha: float, resolution: int, num_classes: int,
                    in_channels: int, activation: Activation | str, state_dict: dict,
                    class_names: tuple[str, ...] | list[str], preprocess: Preprocess, dataset: str,
                    metrics: dict | None = None) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then rename)."""
    from edgenet._deps import require

    torch = require("torch", purpose="saving checkpoints")
    if len(class_names) != num_classes:
        raise ModelError(f"{len(class_names)} class names for a model with {num_classes} classes")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": str(model),
        "alpha": float(alpha),
        "resolution": int(resolution),
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "activation": Activation(activation).value,
        "class_names": [str(n) for n in class_names],
        "preprocess": preprocess.to_dict(),
        "dataset": str(dataset),
        "metrics": _plain(metrics or {}, "metrics"),  # only plain types load with weights_only
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    try:
        return atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise UsageError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc


def _field(obj: dict, key: str, kind: type, path: Path):
    if key not in obj:
        raise ModelError(f"{path}: checkpoint has no {key!r} entry")
    value = obj[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelError(f"{path}: checkpoint entry {key!r} should be {kind.__name__}, "
                         f"got {type(value).__name__}")
    return value


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a one-line ModelError."""
    from edgenet._deps import require

    torch = require("torch", purpose="reading checkpoints")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- zip, pickle, unsafe-global errors all mean "not ours"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a readable checkpoint ({first})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ModelError(f"{path}: not an edgenet checkpoint (a bare state_dict? "
                         "use it as --weights with explicit --alpha/--resolution instead)")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{path}: checkpoint format version {version!r} is not supported "
                         f"(this edgenet reads version {FORMAT_VERSION})")
    state = _field(obj, "state_dict", dict, path)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"{path}: checkpoint state_dict must map names to tensors")
    class_names = tuple(str(n) for n in _field(obj, "class_names", list, path))
    num_classes = _field(obj, "num_classes", int, path)
    if len(class_names) != num_classes:
        raise ModelError(f"{path}: {len(class_names)} class names for {num_classes} classes")
    try:
        activation = Activation(_field(obj, "activation", str, path))
        preprocess = Preprocess.from_dict(_field(obj, "preprocess", dict, path))
    except (ValueError, DataError) as exc:
        raise ModelError(f"{path}: {exc}") from exc
    return Checkpoint(
        model=_field(obj, "model", str, path),
        alpha=_field(obj, "alpha", float, path),
        resolution=_field(obj, "resolution", int, path),
        num_classes=num_classes,
        in_channels=_field(obj, "in_channels", int, path),
        activation=activation,
        state_dict=state,
        class_names=class_names,
        preprocess=preprocess,
        dataset=_field(obj, "dataset", str, path),
        metrics=_field(obj, "metrics", dict, path),
    )

