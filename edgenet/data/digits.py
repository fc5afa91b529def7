"""The UCI handwritten digits that scikit-learn ships (1,797 real 8x8 images, classes 0..9).

The split is fixed, stratified and independent of any seed, so calibration and test images never
leak into training whatever seed a run uses: per class, after a shuffle seeded with
``SPLIT_SEED``, the first 40 images are ``test``, the next 20 ``calib`` and the rest ``train``
(400 / 200 / 1,197 images). The ``seed`` argument only orders the images inside a split (which
matters when ``limit`` takes a prefix); every prefix stays class-balanced because the split is
returned class by class in round-robin order.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from edgenet.data.preprocess import Preprocess

SPLIT_SEED = 20170417  # fixed: the split must not move with the run's seed
TEST_PER_CLASS = 40
CALIB_PER_CLASS = 20
CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
SPLIT_SIZES = {"train": 1197, "calib": 200, "test": 400}


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 8 x 8 scaled 0..255, labels int64 N), read from scikit-learn's copy."""
    from edgenet._deps import require

    datasets = require("sklearn.datasets", purpose="the built-in digits dataset")
    bunch = datasets.load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(split: str, seed: int = 0) -> np.ndarray:
    """Indices into the 1,797 digits for ``split``, class-balanced round-robin, ordered by ``seed``."""
    _, labels = _raw_digits()
    fixed = np.random.default_rng(SPLIT_SEED)
    order = np.random.default_rng(seed)
    per_class: list[np.ndarray] = []
    for cls in range(len(CLASS_NAMES)):
        members = fixed.permutation(np.flatnonzero(labels == cls))
        bounds = {"test": (0, TEST_PER_CLASS),
                  "calib": (TEST_PER_CLASS, TEST_PER_CLASS + CALIB_PER_CLASS),
                  "train": (TEST_PER_CLASS + CALIB_PER_CLASS, len(members))}[split]
        chosen = members[bounds[0]:bounds[1]]
        per_class.append(chosen if seed == 0 else order.permutation(chosen))
    # round-robin: class 0, 1, ..., 9, 0, 1, ... so that every prefix is balanced
    longest = max(len(c) for c in per_class)
    rounds = [c[i] for i in range(longest) for c in per_class if i < len(c)]
    return np.asarray(rounds, dtype=np.int64)


def load_digits_split(preprocess: Preprocess, split: str, limit: int | None,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 NHWC preprocessed, labels int64) for one split of the digits."""
    images, labels = _raw_digits()
    idx = split_indices(split, seed)
    if limit is not None:
        idx = idx[:limit]
    x = np.empty((len(idx), preprocess.height, preprocess.width, preprocess.channels), np.float32)
    for row, i in enumerate(idx):
        x[row] = preprocess(Image.fromarray(images[i]))
    return x, labels[idx].copy()
