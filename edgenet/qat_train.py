"""``edgenet train --qat``: quantization-aware fine-tuning of a float zoo model, written as a
checkpoint that holds the learned ranges and, beside it, a QDQ ONNX model.

Flow: the float model (from ``from_checkpoint``, or trained here first with the usual recipe) ->
:func:`edgenet.qat.prepare_qat` (BN folded, int8 fake quantization where TFLite quantizes) ->
``qat_epochs`` epochs of the usual training loop (AdamW, cosine, augmentation) at a lower peak
learning rate, the activation ranges tracked by their observers and frozen for the last epoch ->
the weight scales set from the final weights -> :func:`edgenet.qat_export.export_qdq`.

What is saved (``out``, e.g. ``digits_qat.pt``):

- the checkpoint: the fine-tuned float weights in the zoo layout (BN as ``x + bias``, see
  :func:`edgenet.qat.float_state_dict`), so ``edgenet convert digits_qat.pt`` works as for any
  checkpoint; and a ``qat`` entry: the ranges (:func:`edgenet.qat.qat_ranges`), the QDQ model's bytes
  (``qdq_onnx``, a uint8 tensor: the checkpoint stays self-contained), its file name and sha256,
  and the accuracies measured;
- ``digits_qat_qdq.onnx`` beside it: the same QDQ model, for onnxruntime or any QDQ consumer; its
  ``metadata_props`` hold the preprocessing, class names and dataset (:func:`edgenet.qat_export.describe`).

The held-out accuracy of the QAT model is measured with onnxruntime running the QDQ model with graph
optimizations off (:func:`edgenet.qat_export.qdq_session`), i.e. on what was exported.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgenet.data.datasets import BUILTIN
from edgenet.errors import UsageError
from edgenet.train import EpochStats, TrainConfig, TrainResult

QAT_LR = 2e-5            # peak learning rate of the fine-tuning: 1/1000 of the float recipe's 0.02
QAT_EPOCHS = 3


@dataclass(frozen=True)
class QATResult:
    """A QAT run: the float model it started from, the fine-tuned fake-quantized model, the files."""
    float_top1: float            # the float model before fine-tuning, held-out set
    qat_top1: float              # the QAT model in PyTorch (fake quantization), held-out set
    qdq_top1: float              # the exported QDQ ONNX in onnxruntime (reference kernels), held-out set
    qdq_max_steps: float         # largest |onnxruntime - torch| logit difference, in output quantization steps
    qdq_within_step: float       # fraction of logits onnxruntime and torch give within 1 quantization step
    qdq_agreement: float         # fraction of held-out images with the same top-1 class in both
    test_samples: int
    seconds: float
    path: Path | None
    qdq_path: Path | None
    float_train: TrainResult | None = None      # when the float model was trained in this run
    history: tuple[EpochStats, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        d["qdq_path"] = None if self.qdq_path is None else str(self.qdq_path)
        d["float_train"] = None if self.float_train is None else self.float_train.to_dict()
        d["history"] = [asdict(h) for h in self.history]
        return d


def qdq_path_for(out: Path) -> Path:
    """``digits_qat.pt`` -> ``digits_qat_qdq.onnx`` (same folder)."""
    return out.with_name(f"{out.stem}_qdq.onnx")


class _ObservedWhileTraining:
    """Wraps the QAT GraphModule for the training loop: observers run in train mode unless frozen,
    never in eval mode (so the held-out set does not shape the ranges)."""

    def __init__(self, gm):
        self.gm, self.frozen = gm, False

    def __getattr__(self, name):
        return getattr(self.gm, name)

    def __call__(self, x):
        return self.gm(x)

    def train(self, mode: bool = True):
        from edgenet import qat

        self.gm.train(mode)
        qat.set_observers(self.gm, activations=mode and not self.frozen, weights=mode)
        return self

    def eval(self):
        return self.train(False)


def train_qat(dataset: str | None = None, *, from_checkpoint: str | Path | None = None,
              out: str | Path, force: bool = False, qat_epochs: int = QAT_EPOCHS, qat_lr: float = QAT_LR,
              progress: Callable[[EpochStats], None] | None = None,
              float_progress: Callable[[EpochStats], None] | None = None, **train_options) -> QATResult:
    """Fine-tune with fake quantization and save ``out`` + its QDQ ONNX (module docstring).

    With ``from_checkpoint`` the float model, dataset and preprocessing come from that checkpoint
    (``dataset`` must then be None or the same); otherwise ``dataset`` and ``train_options`` (as
    :func:`edgenet.train.train`: alpha, resolution, epochs, model, ...) train the float model first.
    UsageError for a model QAT does not support, ``out`` "-" (two files are written) or bad values.
    """
    from edgenet import limits, qat
    from edgenet.train import check_out

    limits.check_int("--qat-epochs", qat_epochs, 1, limits.MAX_EPOCHS)
    limits.check_float("--qat-lr", qat_lr, 0, limits.MAX_LR, low_open=True)
    if str(out) == "-":
        raise UsageError("--qat writes two files (the checkpoint and its QDQ ONNX): give --out a file name")
    if from_checkpoint is not None:
        from edgenet.checkpoint import load_checkpoint

        ckpt = load_checkpoint(from_checkpoint)
        qat.check_qat_model(ckpt.model)
        if dataset is not None and dataset != ckpt.dataset:
            raise UsageError(f"--from {from_checkpoint} was trained on {ckpt.dataset!r}, not {dataset!r}: "
                             "fine-tune on the data it was trained on (drop --dataset)")
        cfg_dict = dict(ckpt.metrics.get("config") or {})
        options = {k: v for k, v in train_options.items()
                   if k in ("batch_size", "seed", "threads", "augment", "train_limit", "test_limit")}
        if ckpt.dataset not in BUILTIN:
            # a folder's held-out images are chosen by the seed and the image cap the float run used:
            # the same ones, or the float model's training images would be "held out" now
            options.update(seed=int(cfg_dict.get("seed", 0)), train_limit=cfg_dict.get("train_limit"))
        cfg = TrainConfig(dataset=ckpt.dataset, alpha=ckpt.alpha, resolution=ckpt.resolution, epochs=qat_epochs,
                          model=ckpt.model, in_channels=ckpt.in_channels, activation=ckpt.activation,
                          holdout=float(cfg_dict.get("holdout", 0.2)), **options)
    else:
        if dataset is None:
            raise UsageError("--qat needs --dataset, or --from a float checkpoint to fine-tune")
        from edgenet.train import DEFAULT_ALPHA
        from edgenet.zoo import has_width_multiplier

        ckpt = None
        options = dict(train_options)
        if "activation" in options:
            from edgenet.config import Activation

            options["activation"] = Activation(options["activation"])
        alpha = options.pop("alpha", None)
        if alpha is None:
            alpha = DEFAULT_ALPHA if has_width_multiplier(options.get("model", "mobilenet_v1")) else 1.0
        cfg = TrainConfig(dataset=str(dataset), alpha=alpha, **options)
        qat.check_qat_model(cfg.model)
    cfg.validate()
    out = check_out(out, force)
    qdq_out = qdq_path_for(out)
    if qdq_out.exists() and not force:
        from edgenet.errors import OutputExistsError

        raise OutputExistsError(f"{qdq_out} exists; pass --force to overwrite it")
    return _run(cfg, ckpt, out, qdq_out, qat_epochs, qat_lr, progress, float_progress)


def _run(cfg: TrainConfig, ckpt, out: Path, qdq_out: Path, qat_epochs: int, qat_lr: float,
         progress, float_progress) -> QATResult:
    import torch

    from edgenet import qat, qat_export
    from edgenet.checkpoint import save_checkpoint
    from edgenet.io import atomic_write_bytes
    from edgenet.train import _evaluate, _loop, fit_float, torch_threads, training_data

    t_start = time.perf_counter()
    data = training_data(cfg, None if ckpt is None else ckpt.preprocess)
    float_result = None
    with torch_threads(cfg.threads):
        if ckpt is None:
            model, history, (top1, top5) = fit_float(cfg, data, float_progress)
            float_result = TrainResult(test_top1=top1, test_top5=top5, train_top1=history[-1].train_top1,
                                       epochs=cfg.epochs, seconds=time.perf_counter() - t_start, path=None,
                                       num_classes=len(data.class_names), train_samples=len(data.train_set),
                                       test_samples=len(data.test_set), history=tuple(history))
        else:
            if tuple(data.class_names) != tuple(ckpt.class_names):
                raise UsageError(f"the checkpoint's classes {list(ckpt.class_names)[:4]}... are not the "
                                 f"dataset's {list(data.class_names)[:4]}...")
            model = ckpt.build_model()
        float_top1, _ = _evaluate(torch, model, data.x_test, data.y_test)

        gm = qat.prepare_qat(model)
        net = _ObservedWhileTraining(gm)
        qat_cfg = replace(cfg, epochs=qat_epochs, lr=qat_lr, warmup_epochs=min(0.25, qat_epochs / 2))

        def on_epoch(stats: EpochStats) -> None:
            net.frozen = stats.epoch >= qat_epochs - 1      # the last epoch trains on fixed ranges
            if progress is not None:
                progress(stats)

        history = _loop(torch, net, qat_cfg, data.epoch_data, data.x_test, data.y_test, on_epoch)
        qat.refresh_weight_ranges(gm)
        qat.set_observers(gm, activations=False, weights=False)
        gm.eval()
        qat_top1, _ = _evaluate(torch, gm, data.x_test, data.y_test)
        with torch.inference_mode():
            torch_logits = gm(data.x_test).numpy()

    shape = (1, cfg.in_channels, cfg.resolution, cfg.resolution)
    qdq = qat_export.export_qdq(gm, shape)
    qat_export.describe(qdq, preprocess=data.preprocess, class_names=data.class_names, dataset=cfg.dataset)
    qdq_bytes = qdq.SerializeToString()
    ort_logits = qat_export.run_qdq(qat_export.qdq_session(qdq_bytes), data.x_test.numpy())
    step = float(qat.activation_fake_quants(gm)[-1][1].scale.reshape(-1)[0])
    diff = np.abs(ort_logits - torch_logits) / step
    labels = data.y_test.numpy()
    qdq_top1 = float(np.mean(ort_logits.argmax(1) == labels))

    atomic_write_bytes(qdq_out, qdq_bytes)
    float_model = model if ckpt is None else ckpt.build_model()
    metrics = {
        "test_top1": qdq_top1, "test_split": "test", "test_samples": len(data.test_set),
        "float_test_top1": float_top1, "qat_torch_test_top1": qat_top1,
        "config": cfg.to_dict(), "torch": torch.__version__,
        "qat_epochs": qat_epochs, "qat_lr": qat_lr,
    }
    save_checkpoint(out, model=cfg.model, alpha=cfg.alpha, resolution=cfg.resolution,
                    num_classes=len(data.class_names), in_channels=cfg.in_channels, activation=cfg.activation,
                    state_dict=qat.float_state_dict(gm, float_model), class_names=data.class_names,
                    preprocess=data.preprocess, dataset=cfg.dataset, metrics=metrics,
                    qat={"scheme": "int8: weights symmetric per-channel [-127, 127], activations asymmetric "
                                   "per-tensor [-128, 127]",
                         "ranges": qat.qat_ranges(gm), "qdq_file": qdq_out.name,
                         "qdq_sha256": hashlib.sha256(qdq_bytes).hexdigest(),
                         "qdq_onnx": torch.frombuffer(bytearray(qdq_bytes), dtype=torch.uint8)})
    return QATResult(float_top1=float_top1, qat_top1=qat_top1, qdq_top1=qdq_top1,
                     qdq_max_steps=float(diff.max()), qdq_within_step=float(np.mean(diff <= 1 + 1e-3)),
                     qdq_agreement=float(np.mean(ort_logits.argmax(1) == torch_logits.argmax(1))),
                     test_samples=len(data.test_set), seconds=time.perf_counter() - t_start, path=out,
                     qdq_path=qdq_out, float_train=float_result, history=tuple(history))
