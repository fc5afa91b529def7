"""A small CPU trainer for the zoo models, so the toolkit can show real accuracy offline.

AdamW (no weight decay on BatchNorm/bias), linear warm-up then cosine decay per step, label
smoothing, and light augmentation on the preprocessed tensors (random rotation, scale and shift
via one batched affine resample). Built-in datasets train on their ``train`` split and report on
their ``test`` split; a folder of class subfolders is split into train and a seeded, stratified
hold-out (``holdout`` fraction). The generated ``shapes`` dataset draws a fresh training set
every epoch (same size, new seed; 97.4% vs 94.6% test top-1 with a fixed set, 25 epochs).
The peak learning rate matters most: at 3e-3..6e-3 MobileNetV1 0.25 sits on a loss plateau for
tens of epochs on shapes (~27% after 40), at 0.02 it reaches 97%+. The final weights (not the
best epoch: picking by test accuracy would leak the test set) are saved with
:func:`edgenet.checkpoint.save_checkpoint`.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgenet import limits
from edgenet.config import Activation
from edgenet.data.datasets import BUILTIN
from edgenet.errors import OutputExistsError, UsageError
from edgenet.train_data import TrainingData, training_data


class TrainingDivergedError(UsageError):
    """The loss became NaN or infinite: the run is stopped and nothing is saved (lower --lr)."""


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    alpha: float
    resolution: int
    epochs: int
    model: str = "mobilenet_v1"
    in_channels: int = 3
    activation: Activation = Activation.RELU6
    batch_size: int = 64
    lr: float = 0.02
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: bool = True
    seed: int = 0
    train_limit: int | None = None   # folders: caps the images before the hold-out split
    test_limit: int | None = None
    fresh_data: bool = True          # generated datasets (shapes): new training images every epoch
    holdout: float = 0.2             # folders only: fraction held out for testing
    threads: int | None = None       # torch intra-op threads; None = os.cpu_count()

    def validate(self) -> None:
        from edgenet.zoo import list_models, validate_hparams

        zoo = [entry.name for entry in list_models()]
        if self.model not in zoo:
            raise UsageError(f"unknown model {self.model!r} (zoo: {', '.join(zoo)})")
        validate_hparams(self.alpha, self.resolution, 2, self.in_channels)
        limits.check_int("--epochs", self.epochs, 1, limits.MAX_EPOCHS)
        limits.check_int("--batch-size", self.batch_size, 2, limits.MAX_BATCH_SIZE)
        limits.check_float("--lr", self.lr, 0, limits.MAX_LR, low_open=True)
        limits.check_int("--seed", self.seed, 0, limits.MAX_SEED)
        if self.threads is not None:
            limits.check_int("--threads", self.threads, 1, limits.MAX_THREADS)
        for name, value in (("--limit", self.train_limit), ("test limit", self.test_limit)):
            if value is not None:
                limits.check_int(name, value, 1, limits.MAX_SAMPLES)
        limits.check_float("weight decay", self.weight_decay, 0, 10)
        limits.check_float("warm-up epochs", self.warmup_epochs, 0, limits.MAX_EPOCHS)
        limits.check_float("label smoothing", self.label_smoothing, 0, 0.999)
        limits.check_float("holdout", self.holdout, 0, 0.9, low_open=True)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["activation"] = self.activation.value
        return d


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    epochs: int
    loss: float
    train_top1: float            # on the augmented training batches, during the epoch
    test_top1: float
    lr: float                    # at the end of the epoch
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    test_top1: float
    test_top5: float
    train_top1: float
    epochs: int
    seconds: float
    path: Path | None
    num_classes: int
    train_samples: int
    test_samples: int
    history: tuple[EpochStats, ...]
    skipped: int = 0             # folder images that could not be used
    skipped_detail: str = ""     # why, by reason
    checkpoint: bytes | None = None   # the checkpoint itself when ``out`` was "-" (for stdout)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        d.pop("checkpoint", None)
        d["history"] = [asdict(h) for h in self.history]
        return d


def _augment(torch, x, generator):
    """Random rotation (+-12 deg), scale (0.9-1.1) and shift (+-8% of the size), edges replicated."""
    n = x.shape[0]

    def uniform(lo: float, hi: float):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-12, 12) * (math.pi / 180)
    inv_scale = 1.0 / uniform(0.9, 1.1)
    tx, ty = uniform(-0.16, 0.16), uniform(-0.16, 0.16)   # grid units: [-1, 1] spans the image
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)


def _evaluate(torch, model, x, y, batch: int = 256) -> tuple[float, float]:
    """(top-1, top-5) accuracy of ``model`` (eval mode) on NCHW tensors."""
    model.eval()
    top1 = top5 = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            target = y[i:i + batch, None]
            top1 += int((best[:, :1] == target).sum())
            top5 += int((best == target).any(dim=1).sum())
    return top1 / len(x), top5 / len(x)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


DEFAULT_ALPHA = 0.25   # small and fast to train on CPU; for models that take a width multiplier


def train(dataset: str, *, alpha: float | None = None, resolution: int, epochs: int,
          out: str | Path | None = None, force: bool = False,
          progress: Callable[[EpochStats], None] | None = None, **options) -> TrainResult:
    """Train a zoo model on ``dataset`` (digits | shapes | folder) and save a checkpoint to ``out``.

    ``alpha`` defaults to :data:`DEFAULT_ALPHA` for models with a width multiplier and to 1 for
    the others (shufflenet_v2_x1_0, squeezenet1_1).

    ``options`` are the other :class:`TrainConfig` fields (model, in_channels, activation,
    batch_size, lr, weight_decay, warmup_epochs, label_smoothing, augment, seed, train_limit,
    test_limit, holdout, threads). ``progress`` is called after every epoch.
    """
    unknown = sorted(set(options) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise UsageError(f"unknown training option(s): {', '.join(unknown)}")
    if "activation" in options:
        options["activation"] = Activation(options["activation"])
    if alpha is None:
        from edgenet.zoo import has_width_multiplier

        alpha = DEFAULT_ALPHA if has_width_multiplier(options.get("model", "mobilenet_v1")) else 1.0
    cfg = TrainConfig(dataset=str(dataset), alpha=alpha, resolution=resolution, epochs=epochs, **options)
    cfg.validate()
    return _fit(cfg, check_out(out, force), progress)


def check_out(out: str | Path | None, force: bool) -> Path | None:
    """``out`` as a Path after the checks every run makes before any work: not a folder, not an
    existing file without ``force``, its folder creatable. ``"-"`` (stdout) and None pass."""
    out = None if out is None else Path(out)
    if out is not None and str(out) != "-":
        if out.is_dir():
            raise UsageError(f"{out} is a folder; --out needs a file name such as {out / 'model.pt'}")
        if out.exists() and not force:
            raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the folder for {out}: {exc.strerror}") from exc
    return out


def _fit(cfg: TrainConfig, out: Path | None, progress: Callable[[EpochStats], None] | None) -> TrainResult:
    from edgenet._deps import require

    torch = require("torch", purpose="training")
    from edgenet.checkpoint import checkpoint_bytes, save_checkpoint

    t_start = time.perf_counter()
    data = training_data(cfg)
    preprocess, train_set, test_set, class_names = data.preprocess, data.train_set, data.test_set, data.class_names

    model, history, (test_top1, test_top5) = fit_float(cfg, data, progress)
    seconds = time.perf_counter() - t_start

    result = TrainResult(test_top1=test_top1, test_top5=test_top5, train_top1=history[-1].train_top1,
                         epochs=cfg.epochs, seconds=seconds, path=out, num_classes=len(class_names),
                         train_samples=len(train_set), test_samples=len(test_set), history=tuple(history),
                         skipped=train_set.skipped, skipped_detail=train_set.skipped_detail)
    if out is not None:
        metrics = {
            "test_top1": test_top1, "test_top5": test_top5, "train_top1": result.train_top1,
            "epochs": cfg.epochs, "seconds": seconds, "train_samples": len(train_set),
            "test_samples": len(test_set),
            "test_split": "test" if cfg.dataset in BUILTIN else f"holdout {cfg.holdout:g}",
            "config": cfg.to_dict(), "torch": torch.__version__,
        }
        fields = dict(model=cfg.model, alpha=cfg.alpha, resolution=cfg.resolution,
                      num_classes=len(class_names), in_channels=cfg.in_channels,
                      activation=cfg.activation, state_dict=model.state_dict(),
                      class_names=class_names, preprocess=preprocess, dataset=cfg.dataset, metrics=metrics)
        if str(out) == "-":
            from dataclasses import replace

            return replace(result, checkpoint=checkpoint_bytes(**fields))
        save_checkpoint(out, **fields)
    return result


def fit_float(cfg: TrainConfig, data: TrainingData, progress: Callable[[EpochStats], None] | None):
    """Train a fresh zoo model on ``data``: ``(model, history, (test top-1, test top-5))``."""
    from edgenet._deps import require
    from edgenet.zoo import create_model

    torch = require("torch", purpose="training")
    with torch_threads(cfg.threads):
        model = create_model(cfg.model, alpha=cfg.alpha, resolution=cfg.resolution,
                             num_classes=len(data.class_names), in_channels=cfg.in_channels,
                             activation=cfg.activation.value, seed=cfg.seed)
        history = _loop(torch, model, cfg, data.epoch_data, data.x_test, data.y_test, progress)
        top = _evaluate(torch, model, data.x_test, data.y_test)
    return model, history, top


@contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` (None: all cores) inside the block."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _loop(torch, model, cfg: TrainConfig, epoch_data: Callable, x_test, y_test,
          progress: Callable[[EpochStats], None] | None) -> list[EpochStats]:
    """The epochs themselves; returns one EpochStats per epoch."""
    n = len(epoch_data(1)[0])
    batch = min(cfg.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: BN needs > 1 sample at 1x1 maps
    total = steps_per_epoch * cfg.epochs
    warmup = min(total // 2, round(cfg.warmup_epochs * steps_per_epoch))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[EpochStats] = []
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        x_train, y_train = epoch_data(epoch)
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            xb, yb = x_train[idx], y_train[idx]
            if cfg.augment:
                xb = _augment(torch, xb, generator)
            lr = _lr_at(step, total, warmup, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(xb)
            loss = loss_fn(logits, yb)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch}, step {b + 1}: the loss became {float(loss.item())} "
                    f"(lower the peak --lr, now {cfg.lr:g}, or the weight decay, now {cfg.weight_decay:g}); "
                    "nothing was saved")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
        test_top1, _ = _evaluate(torch, model, x_test, y_test)
        stats = EpochStats(epoch=epoch, epochs=cfg.epochs, loss=loss_sum / seen, train_top1=correct / seen,
                           test_top1=test_top1, lr=lr, seconds=time.perf_counter() - t0)
        history.append(stats)
        if progress is not None:
            progress(stats)
    return history
