"""One entry point for every dataset edgenet uses: calibration, validation, training, benchmarks.

``load_dataset(spec, preprocess, split, limit, seed)`` where ``spec`` is
- ``"digits"``: the real handwritten digits scikit-learn ships (fixed stratified split
  train / calib / test = 1,197 / 200 / 400, see :mod:`edgenet.data.digits`);
- ``"shapes"``: a generated 8-class RGB dataset (train / calib / test = 2,000 / 200 / 504 by
  default, see :mod:`edgenet.data.shapes`);
- a folder path: class subfolders or a flat folder of images, used whole (``split`` ignored;
  see :mod:`edgenet.data.folder`; :func:`edgenet.data.folder.scan_image_folder` checks one quickly).
Everything here runs on the device too: numpy and Pillow only (scikit-learn for digits).
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError, UsageError
from edgenet.io import atomic_write_text

BUILTIN = ("digits", "shapes")
SPLITS = ("train", "calib", "test")


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray                       # float32 NHWC, already preprocessed with the given Preprocess
    labels: np.ndarray | None           # int64, None for an unlabelled (flat) folder
    class_names: tuple[str, ...] | None
    name: str                           # "digits", "shapes" or the folder path
    skipped: int = 0                    # images that could not be used
    skipped_detail: str = ""            # why, by reason, e.g. "2 could not be decoded (e.g. a.png)"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)


def _unknown_spec(spec: str) -> DataError:
    looks_like_path = any(c in spec for c in "/\\") or spec.startswith(".") or "." in Path(spec).name
    if looks_like_path:
        return DataError(f"{spec}: no such folder")
    close = difflib.get_close_matches(spec.lower(), BUILTIN, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return DataError(f"unknown dataset {spec!r}: {hint}use 'digits', 'shapes' or a folder of images")


_memory: dict | None = None   # see served_from


@contextmanager
def served_from(memory: dict):
    """While active, :func:`load_dataset` answers from ``memory`` the requests it holds and adds
    to it what it loads: ``(spec, preprocess, split, limit, seed) -> Dataset``.

    This lets one process load and preprocess the data once and hand the arrays to conversions
    elsewhere (``edgenet sweep`` puts them in Ray's object store; each cell converts with them).
    Not thread-safe: one conversion at a time per process.
    """
    global _memory
    previous, _memory = _memory, memory
    try:
        yield memory
    finally:
        _memory = previous


def serving() -> bool:
    """Whether :func:`load_dataset` answers from preloaded arrays (:func:`served_from`) now."""
    return _memory is not None


def load_dataset(spec: str, preprocess: Preprocess, split: str = "test", limit: int | None = None,
                 seed: int = 0) -> Dataset:
    """Load ``spec`` (digits | shapes | folder path), preprocessed to float32 NHWC."""
    if _memory is not None:
        key = (str(spec), preprocess, split, limit, seed)
        if key not in _memory:
            _memory[key] = _load_dataset(spec, preprocess, split, limit, seed)
        return _memory[key]
    return _load_dataset(spec, preprocess, split, limit, seed)


def _load_dataset(spec: str, preprocess: Preprocess, split: str, limit: int | None, seed: int) -> Dataset:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}")
    if seed < 0:
        raise UsageError(f"seed must be non-negative, got {seed}")
    spec = str(spec)
    if spec == "digits":
        from edgenet.data.digits import CLASS_NAMES, load_digits_split

        x, labels = load_digits_split(preprocess, split, limit, seed)
        return Dataset(x=x, labels=labels, class_names=CLASS_NAMES, name="digits")
    if spec == "shapes":
        from edgenet.data.shapes import CLASS_NAMES, load_shapes_split

        x, labels = load_shapes_split(preprocess, split, limit, seed)
        return Dataset(x=x, labels=labels, class_names=CLASS_NAMES, name="shapes")
    path = Path(spec).expanduser()
    if not path.exists():
        raise _unknown_spec(spec)
    from edgenet.data.folder import load_folder

    images = load_folder(path, preprocess, limit=limit, seed=seed)
    return Dataset(x=images.x, labels=images.labels, class_names=images.class_names, name=spec,
                   skipped=images.skipped, skipped_detail=images.skipped_detail)


# -- labels.txt ----------------------------------------------------------------------------------
def write_labels(path: str | Path, class_names: tuple[str, ...] | list[str]) -> Path:
    """Write ``labels.txt``: one class name per line, line k = class index k (atomic)."""
    names = [str(n) for n in class_names]
    bad = [n for n in names if not n.strip() or "\n" in n or "\r" in n or n != n.strip()]
    if bad:
        raise DataError(f"class name {bad[0]!r} cannot be written to labels.txt "
                        "(empty, surrounding spaces or a line break)")
    return atomic_write_text(path, "".join(f"{n}\n" for n in names))


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read ``labels.txt`` back (trailing blank lines ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such labels file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read labels ({exc})") from exc
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{path}: labels file is empty")
    if not all(lines):
        raise DataError(f"{path}: blank line {lines.index('') + 1} in labels file")
    return tuple(lines)
