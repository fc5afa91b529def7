"""The data of a training run: the built-in splits or a folder's seeded, stratified hold-out, as
NCHW float32 tensors, with fresh training images every epoch for generated datasets (shapes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgenet.data.datasets import BUILTIN, Dataset, load_dataset
from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError

GENERATED = ("shapes",)  # procedural datasets: an unlimited supply of training images


def _holdout_split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded, stratified split of a labelled folder: (train, held-out test)."""
    if data.labels is None:
        raise DataError(f"{data.name}: training needs one subfolder per class, "
                        "this folder holds loose (unlabelled) images")
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for cls in np.unique(data.labels):
        members = rng.permutation(np.flatnonzero(data.labels == cls))
        if len(members) >= 2:
            test_idx.extend(members[:max(1, round(fraction * len(members)))].tolist())
    is_test = np.zeros(len(data), bool)
    is_test[test_idx] = True
    if not is_test.any():
        raise DataError(f"{data.name}: too few images to hold out a test set (need 2+ in a class)")

    def part(mask: np.ndarray) -> Dataset:
        return Dataset(x=data.x[mask], labels=data.labels[mask], class_names=data.class_names,
                       name=data.name, skipped=data.skipped, skipped_detail=data.skipped_detail)

    return part(~is_test), part(is_test)


def _load_splits(cfg, preprocess: Preprocess) -> tuple[Dataset, Dataset]:
    if cfg.dataset in BUILTIN:
        train_set = load_dataset(cfg.dataset, preprocess, "train", cfg.train_limit, cfg.seed)
        test_set = load_dataset(cfg.dataset, preprocess, "test", cfg.test_limit)
        return train_set, test_set
    whole = load_dataset(cfg.dataset, preprocess, limit=cfg.train_limit, seed=cfg.seed)
    train_set, test_set = _holdout_split(whole, cfg.holdout, cfg.seed)
    if cfg.test_limit is not None:
        test_set = Dataset(x=test_set.x[:cfg.test_limit], labels=test_set.labels[:cfg.test_limit],
                           class_names=test_set.class_names, name=test_set.name)
    return train_set, test_set


@dataclass(frozen=True)
class TrainingData:
    """What one training run reads: the splits, the preprocessing, and the NCHW tensors."""
    preprocess: Preprocess
    train_set: Dataset
    test_set: Dataset
    epoch_data: Callable          # epoch (1-based) -> (x NCHW float32, labels int64) tensors
    x_test: object                # torch.Tensor NCHW
    y_test: object

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train_set.class_names


def training_data(cfg, preprocess: Preprocess | None = None) -> TrainingData:
    """Load and check ``cfg.dataset`` (``cfg``: an :class:`edgenet.train.TrainConfig`; DataError if
    it cannot train a classifier)."""
    from edgenet._deps import require

    torch = require("torch", purpose="training")
    preprocess = preprocess or Preprocess.default(cfg.resolution, cfg.in_channels)
    train_set, test_set = _load_splits(cfg, preprocess)
    class_names = train_set.class_names
    if train_set.labels is None or class_names is None:
        raise DataError(f"{cfg.dataset}: training needs labelled images (one subfolder per class)")
    if len(class_names) < 2:
        raise DataError(f"{cfg.dataset}: training needs at least 2 classes, found {len(class_names)}")
    if len(train_set) < 2:
        raise DataError(f"{cfg.dataset}: training needs at least 2 images, found {len(train_set)}")

    def nchw(data: Dataset):
        return (torch.from_numpy(np.ascontiguousarray(data.x.transpose(0, 3, 1, 2))),
                torch.from_numpy(data.labels))

    first_epoch = nchw(train_set)

    def epoch_data(epoch: int):
        """Training tensors for ``epoch``; generated datasets draw fresh images every epoch."""
        if epoch == 1 or not (cfg.fresh_data and cfg.dataset in GENERATED):
            return first_epoch
        fresh = load_dataset(cfg.dataset, preprocess, "train", cfg.train_limit,
                             seed=cfg.seed * 100_003 + epoch - 1)
        return nchw(fresh)
    x_test, y_test = nchw(test_set)
    return TrainingData(preprocess, train_set, test_set, epoch_data, x_test, y_test)
