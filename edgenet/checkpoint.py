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
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenet.config import Activation
from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError, ModelError, UsageError
from edgenet.io import atomic_write_bytes
from edgenet.limits import regular_file

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
    # written by `edgenet train --qat` (edgenet.qat_train): {"ranges": {...}, "qdq_file", "qdq_sha256",
    # "scheme"}; None for float checkpoints
    qat: dict | None = None
    qdq_onnx: bytes | None = None    # the QDQ ONNX model the QAT run exported (its bytes)

    def qdq_model(self):
        """The QDQ ``onnx.ModelProto`` a ``--qat`` checkpoint carries (the learned scales and zero
        points as QuantizeLinear / DequantizeLinear pairs), or None for a float checkpoint."""
        if self.qdq_onnx is None:
            return None
        import onnx

        return onnx.load_from_string(self.qdq_onnx)

    def build_model(self):
        """The zoo model with these weights, in eval mode."""
        from edgenet.zoo import create_model

        model = create_model(self.model, alpha=self.alpha, resolution=self.resolution,
                             num_classes=self.num_classes, in_channels=self.in_channels,
                             activation=self.activation.value)
        load_state_dict_checked(model, self.state_dict, f"checkpoint weights for {self.model} "
                                f"alpha={self.alpha:g} resolution={self.resolution}")
        return model.eval()


def _few(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")


def state_dict_mismatch(model, state: dict) -> str | None:
    """None if ``state`` fits ``model`` key for key and shape for shape; otherwise one line listing
    the missing, unexpected and wrongly shaped keys (a few of each, with counts)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state)
                   if tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
    if wrong:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]
        parts.append(f"{len(wrong)} with a shape mismatch (file vs model: {_few(shapes, 2)})")
    return "; ".join(parts) or None


def load_state_dict_checked(model, state: dict, what: str) -> None:
    """``model.load_state_dict(state)``, or a one-line ModelError saying which keys do not fit."""
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ModelError(f"{what} do not match the model: {problem}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:   # e.g. a dtype that cannot be copied
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{what} cannot be loaded: {first}") from exc


def torch_load_weights(path: str | Path, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` with our own one-line ModelErrors: a file holding
    pickled Python objects other than tensors is refused (loading it could run code), a file that
    is not ``torch.save`` output or is truncated says so."""
    from edgenet._deps import require

    torch = require("torch", purpose=f"reading {what}s")
    path = regular_file(path, f"{what} file", ModelError)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc) or "invalid load key" in str(exc):   # bytes, not a pickle
            raise ModelError(f"{path}: the {what} file is not a PyTorch file (torch.save)") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        named = f" ({found.group(1)})" if found else ""
        raise ModelError(f"{path}: refused: the {what} file holds pickled Python objects{named}, not only tensors, "
                         "and loading those could run code; edgenet loads weights only. If you trust the "
                         "file, re-save just its state_dict with torch.save") from None
    except EOFError:
        raise ModelError(f"{path}: the {what} file is empty or truncated") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 -- zip and pickle-protocol errors all mean "not torch.save output"
        kind = "truncated or corrupt" if "zip archive" in str(exc) else "not a PyTorch file (torch.save)"
        raise ModelError(f"{path}: the {what} file is {kind}") from None


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


def save_checkpoint(path: str | Path, **fields) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then rename); ``fields`` as for
    :func:`checkpoint_bytes`."""
    data = checkpoint_bytes(**fields)
    try:
        return atomic_write_bytes(path, data)
    except OSError as exc:
        raise UsageError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc


def checkpoint_bytes(*, model: str, alpha: float, resolution: int, num_classes: int,
                     in_channels: int, activation: Activation | str, state_dict: dict,
                     class_names: tuple[str, ...] | list[str], preprocess: Preprocess, dataset: str,
                     metrics: dict | None = None, qat: dict | None = None) -> bytes:
    """The checkpoint file's bytes (``torch.save`` of a dict of plain types and tensors). ``qat``
    (QAT runs only): plain data plus ``qdq_onnx``, the QDQ model's bytes as a uint8 tensor."""
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
    if qat is not None:
        qdq = qat.get("qdq_onnx")
        if not isinstance(qdq, torch.Tensor) or qdq.dtype != torch.uint8:
            raise ModelError("a QAT checkpoint's qat entry needs qdq_onnx as a uint8 tensor")
        payload["qat"] = {**_plain({k: v for k, v in qat.items() if k != "qdq_onnx"}, "qat"), "qdq_onnx": qdq}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


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
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a one-line ModelError.

    Everything is checked here, against the file (never blamed on a command-line option): the
    format, the hyper-parameters (alpha, resolution, classes ... within the zoo's bounds) and the
    state_dict against the architecture they describe (missing, unexpected and wrongly shaped keys).
    """
    from edgenet._deps import require

    torch = require("torch", purpose="reading checkpoints")
    path = Path(path)
    obj = torch_load_weights(path)
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
    ckpt = Checkpoint(
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
        **_qat_fields(obj, path, torch),
    )
    _check_architecture(ckpt, path)
    return ckpt


def _qat_fields(obj: dict, path: Path, torch) -> dict:
    """``{"qat": ..., "qdq_onnx": bytes}`` from a --qat checkpoint's ``qat`` entry, {} without one."""
    if "qat" not in obj:
        return {}
    qat = _field(obj, "qat", dict, path)
    qdq = qat.get("qdq_onnx")
    if not isinstance(qdq, torch.Tensor) or qdq.dtype != torch.uint8 or qdq.ndim != 1:
        raise ModelError(f"{path}: the checkpoint's qat entry has no QDQ ONNX model (qdq_onnx uint8 tensor)")
    data = qdq.numpy().tobytes()
    digest = qat.get("qdq_sha256")
    if digest is not None:
        import hashlib

        if hashlib.sha256(data).hexdigest() != digest:
            raise ModelError(f"{path}: the checkpoint's QDQ ONNX model does not match its recorded sha256 (damaged)")
    _check_ranges(qat.get("ranges"), path)
    return {"qat": {k: v for k, v in qat.items() if k != "qdq_onnx"}, "qdq_onnx": data}


def _check_ranges(ranges, path: Path) -> None:
    """ModelError unless ``ranges`` is ``{"activations": {name: {"scale" > 0, "zero_point" in int8}}, ...}``."""
    acts = ranges.get("activations") if isinstance(ranges, dict) else None
    if not isinstance(acts, dict) or not acts:
        raise ModelError(f"{path}: the checkpoint's qat entry has no activation ranges")
    for name, r in acts.items():
        scale = r.get("scale") if isinstance(r, dict) else None
        zp = r.get("zero_point") if isinstance(r, dict) else None
        if not (isinstance(scale, float) and math.isfinite(scale) and scale > 0
                and isinstance(zp, int) and not isinstance(zp, bool) and -128 <= zp <= 127):
            raise ModelError(f"{path}: the checkpoint's QAT range of {name} is not a positive scale with an "
                             f"int8 zero point ({r!r:.80})")


def _check_architecture(ckpt: Checkpoint, path: Path) -> None:
    """ModelError naming the checkpoint if its hyper-parameters or weights do not make a zoo model."""
    from edgenet.zoo import check_model_args, create_model

    try:
        check_model_args(ckpt.model, alpha=ckpt.alpha, resolution=ckpt.resolution, num_classes=ckpt.num_classes,
                         in_channels=ckpt.in_channels, activation=ckpt.activation.value)
    except UsageError as exc:   # says "--alpha ..."; the user never passed it: the file holds it
        reason = re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), str(exc))
        raise ModelError(f"{path}: the checkpoint records an invalid architecture ({reason}); "
                         "the file is corrupt or was not written by edgenet train") from None
    module = create_model(ckpt.model, alpha=ckpt.alpha, resolution=ckpt.resolution, num_classes=ckpt.num_classes,
                          in_channels=ckpt.in_channels, activation=ckpt.activation.value)
    problem = state_dict_mismatch(module, ckpt.state_dict)
    if problem:
        raise ModelError(f"{path}: the checkpoint's weights do not match the {ckpt.model} alpha={ckpt.alpha:g} "
                         f"it records: {problem}")
