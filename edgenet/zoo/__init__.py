"""The model zoo: architectures by name, their summaries, and loading trained weights.

Architectures live one per module (``mobilenet_v1.py`` ...) and need torch; this registry itself
imports torch only when a model is built.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from edgenet.errors import ModelError, UsageError


@dataclass(frozen=True)
class ZooEntry:
    name: str
    module: str          # edgenet.zoo.<module>
    cls: str
    paper: str


_ZOO = {
    "mobilenet_v1": ZooEntry("mobilenet_v1", "edgenet.zoo.mobilenet_v1", "MobileNetV1",
                             "Howard et al. 2017, MobileNets, Table 1"),
}


def list_models() -> list[ZooEntry]:
    return list(_ZOO.values())


def validate_hparams(alpha: float, resolution: int, num_classes: int = 1000, in_channels: int = 3) -> None:
    if not (0 < alpha <= 1):
        raise UsageError(f"--alpha must be in (0, 1], got {alpha:g}")
    if resolution < 32 or resolution % 32:
        raise UsageError(f"--resolution must be a multiple of 32 and at least 32, got {resolution}")
    if num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1, got {num_classes}")
    if in_channels not in (1, 3):
        raise UsageError(f"in_channels must be 1 or 3, got {in_channels}")


def _entry(name: str) -> ZooEntry:
    try:
        return _ZOO[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, list(_ZOO), n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UsageError(f"unknown model {name!r}{hint} (zoo: {', '.join(_ZOO)})") from None


def create_model(name: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
                 num_classes: int = 1000, in_channels: int = 3, activation: str = "relu6",
                 weights: str | Path | None = None, seed: int = 0):
    """Build a zoo model in eval mode. Untrained weights are seeded, so two builds are identical."""
    from edgenet._deps import require

    torch = require("torch", purpose="building zoo models")
    entry = _entry(name)
    validate_hparams(alpha, resolution, num_classes, in_channels)
    cls = getattr(importlib.import_module(entry.module), entry.cls)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(alpha=alpha, resolution=resolution, num_classes=num_classes,
                    in_channels=in_channels, activation=activation)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model, path: str | Path) -> None:
    """Load a state_dict (or a checkpoint dict holding one under 'state_dict'/'model') safely."""
    from edgenet._deps import require

    torch = require("torch")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsafe globals ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load weights ({first[:200]})") from exc
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelError(f"{path}: does not hold a state_dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state)
                   if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch in {len(wrong)} tensor(s), e.g. {k}: checkpoint "
                         f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise ModelError(f"{path}: weights do not match the model; " + "; ".join(parts))
    model.load_state_dict(state)


def info(name: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
         num_classes: int = 1000, in_channels: int = 3):
    """Per-layer parameters and mult-adds (a :class:`~edgenet.zoo.summary.ModelSummary`)."""
    from edgenet.zoo.summary import summarize

    model = create_model(name, alpha=alpha, resolution=resolution, num_classes=num_classes,
                         in_channels=in_channels)
    label = f"{name} alpha={alpha:g} resolution={resolution}"
    return summarize(model, (1, in_channels, resolution, resolution), name=label)
