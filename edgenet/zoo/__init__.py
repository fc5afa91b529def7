"""The model zoo: architectures by name, their summaries, and loading trained weights.

Architectures live one per module (``mobilenet_v1.py`` ...) and need torch; this registry itself
imports torch only when a model is built. Each module's docstring gives the paper's table it follows.

Hyper-parameters: ``alpha`` (width multiplier) exists for mobilenet_v1, mixnet_s (the reference
builder's depth_multiplier) and xception_tiny; ShuffleNetV2's paper widths are separate tables, so
``shufflenet_v2_x1_0`` and ``squeezenet1_1`` reject alpha != 1. ``activation`` (relu6/relu) is a
MobileNetV1 choice; the other models use their papers' activations.
"""
from __future__ import annotations

import importlib
import numbers
from dataclasses import dataclass
from pathlib import Path

from edgenet.errors import UsageError
from edgenet.limits import MAX_NUM_CLASSES, MAX_RESOLUTION


@dataclass(frozen=True)
class ZooEntry:
    name: str
    module: str          # edgenet.zoo.<module>
    cls: str
    paper: str
    width_multiplier: bool = True      # accepts alpha in (0, 1]; otherwise alpha must be 1
    activations: tuple[str, ...] = ("relu6", "relu")  # selectable; () = the paper's own (fixed)
    kwargs: tuple[tuple[str, object], ...] = ()        # extra constructor arguments
    # the published numbers at 224 px, 1000 classes: (million mult-adds, million parameters); SqueezeNet
    # 1.1's are the reference implementation's (its paper gives v1.0 only, and "2.4x less computation")
    published: tuple[float, float] | None = None


_ZOO = {
    "mobilenet_v1": ZooEntry("mobilenet_v1", "edgenet.zoo.mobilenet_v1", "MobileNetV1",
                             "Howard et al. 2017, MobileNets, Table 1", published=(569, 4.2)),
    "mixnet_s": ZooEntry("mixnet_s", "edgenet.zoo.mixnet", "MixNet",
                         "Tan & Le 2019, MixConv, MixNet-S", activations=(), published=(256, 4.1)),
    "shufflenet_v2_x1_0": ZooEntry("shufflenet_v2_x1_0", "edgenet.zoo.shufflenet_v2", "ShuffleNetV2",
                                   "Ma et al. 2018, ShuffleNet V2, Table 5 (1x)", width_multiplier=False,
                                   activations=(), kwargs=(("width", "1x"),), published=(146, 2.3)),
    "squeezenet1_1": ZooEntry("squeezenet1_1", "edgenet.zoo.squeezenet", "SqueezeNet",
                              "Iandola et al. 2016, SqueezeNet, Table 1 + v1.1", width_multiplier=False,
                              activations=(), published=(350, 1.24)),
    "xception_tiny": ZooEntry("xception_tiny", "edgenet.zoo.xception_tiny", "XceptionTiny",
                              "after Chollet 2017, Xception, Figure 5 (our own small table)", activations=()),
}


def list_models() -> list[ZooEntry]:
    return list(_ZOO.values())


def validate_hparams(alpha: float, resolution: int, num_classes: int = 1000, in_channels: int = 3) -> None:
    """UsageError (naming the option and its range) unless alpha is in (0, 1], resolution a multiple
    of 32 in [32, :data:`~edgenet.limits.MAX_RESOLUTION`], num_classes in [1,
    :data:`~edgenet.limits.MAX_NUM_CLASSES`] and in_channels 1 or 3. Cheap: no torch."""
    try:
        ok = 0 < float(alpha) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = f"{alpha:g}" if isinstance(alpha, (int, float)) else repr(alpha)
        raise UsageError(f"--alpha must be in (0, 1], got {shown}")

    def integer(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if not integer(resolution) or not 32 <= resolution <= MAX_RESOLUTION or resolution % 32:
        raise UsageError(f"--resolution must be a multiple of 32 in [32, {MAX_RESOLUTION}], got {resolution}")
    if not integer(num_classes) or not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise UsageError(f"--num-classes must be in [1, {MAX_NUM_CLASSES}], got {num_classes}")
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


def has_width_multiplier(name: str) -> bool:
    """Whether zoo model ``name`` takes a width multiplier ``alpha`` (otherwise alpha must be 1)."""
    return _entry(name).width_multiplier


DEFAULT_ACTIVATION = "relu6"  # ModelSpec's and the CLI's default: "not chosen" for fixed-activation models


def check_model_args(name: str, *, alpha: float = 1.0, resolution: int = 224, num_classes: int = 1000,
                     in_channels: int = 3, activation: str = DEFAULT_ACTIVATION) -> ZooEntry:
    """Cheap checks (no torch) of a zoo model and its hyper-parameters; returns its entry.

    ``alpha`` must be 1 for architectures without a width multiplier; ``activation`` is selectable
    only where the entry lists choices (elsewhere the paper's activations are used and only the
    default value is accepted).
    """
    entry = _entry(name)
    validate_hparams(alpha, resolution, num_classes, in_channels)
    if not entry.width_multiplier and alpha != 1:
        raise UsageError(f"{name} has no width multiplier; --alpha must be 1, got {alpha:g}")
    if entry.activations and activation not in entry.activations:
        raise UsageError(f"--activation must be one of {', '.join(entry.activations)} for {name}, "
                         f"got {activation!r}")
    if not entry.activations and activation != DEFAULT_ACTIVATION:
        raise UsageError(f"{name} uses its paper's activations; --activation applies only to "
                         + ", ".join(e.name for e in _ZOO.values() if e.activations))
    return entry


def create_model(name: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
                 num_classes: int = 1000, in_channels: int = 3, activation: str = "relu6",
                 weights: str | Path | None = None, seed: int = 0):
    """Build a zoo model in eval mode. Untrained weights are seeded, so two builds are identical.

    ``alpha`` (width multiplier) applies to mobilenet_v1, mixnet_s and xception_tiny; the others
    reject alpha != 1. ``activation`` (relu6/relu) applies to mobilenet_v1 only.
    """
    entry = check_model_args(name, alpha=alpha, resolution=resolution, num_classes=num_classes,
                             in_channels=in_channels, activation=activation)   # before the heavy import
    from edgenet._deps import require

    torch = require("torch", purpose="building zoo models")
    cls = getattr(importlib.import_module(entry.module), entry.cls)
    kwargs = dict(entry.kwargs)
    if entry.width_multiplier:
        kwargs["alpha"] = alpha
    if entry.activations:
        kwargs["activation"] = activation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(resolution=resolution, num_classes=num_classes, in_channels=in_channels, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model, path: str | Path) -> None:
    """Load a state_dict (or a checkpoint dict holding one under 'state_dict'/'model') safely:
    weights only (see :func:`edgenet.checkpoint.torch_load_weights`), and a mismatch lists the
    missing, unexpected and wrongly shaped keys (:func:`edgenet.checkpoint.load_state_dict_checked`)."""
    from edgenet.checkpoint import load_state_dict_checked, torch_load_weights
    from edgenet.errors import ModelError

    path = Path(path)
    obj = torch_load_weights(path, "weights")
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelError(f"{path}: does not hold a state_dict")
    load_state_dict_checked(model, state, f"{path}: the weights")


def info(name: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
         num_classes: int = 1000, in_channels: int = 3):
    """Per-layer parameters and mult-adds (a :class:`~edgenet.zoo.summary.ModelSummary`)."""
    from edgenet.zoo.summary import summarize

    model = create_model(name, alpha=alpha, resolution=resolution, num_classes=num_classes,
                         in_channels=in_channels)
    width = f" alpha={alpha:g}" if _entry(name).width_multiplier else ""
    label = f"{name}{width} resolution={resolution}"
    return summarize(model, (1, in_channels, resolution, resolution), name=label)
