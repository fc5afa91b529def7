"""Images from a folder: one subfolder per class, or a flat folder of unlabelled images.

Layout rules:
- If any direct subfolder holds images (searched recursively, hidden entries ignored), the
  folder is *labelled*: classes are those subfolders in sorted order, labels index them. Loose
  images beside class subfolders are an error (ambiguous). Subfolders with no image are not classes.
- Otherwise the images directly in the folder form an *unlabelled* set (labels None).
Files are jpg/jpeg/png/bmp (any case), read with Pillow. A file that fails to decode is skipped
and counted, never fatal unless no file decodes at all. Without ``limit`` the whole folder is
used in sorted path order; with ``limit`` a seeded random sample of that many decodable images
is taken (so a capped labelled folder still covers every class), returned in sorted path order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


@dataclass(frozen=True)
class FolderImages:
    x: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    skipped: int


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and _visible(path)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if _is_image(p) and all(_visible(q) for q in p.relative_to(folder).parents if q.name))


def list_image_files(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """(files in sorted order, their labels or None, class names or None), nothing decoded yet."""
    classes: list[tuple[str, list[Path]]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p)):
        files = _images_under(sub)
        if files:
            classes.append((sub.name, files))
    loose = sorted(p for p in root.iterdir() if _is_image(p))
    if classes and loose:
        raise DataError(f"{root}: holds both class subfolders and {len(loose)} loose image(s) "
                        f"(e.g. {loose[0].name}); move the loose images into a class folder")
    if classes:
        files = [f for _, fs in classes for f in fs]
        labels = [k for k, (_, fs) in enumerate(classes) for _ in fs]
        return files, labels, tuple(name for name, _ in classes)
    return loose, None, None


def _decode(path: Path, preprocess: Preprocess) -> np.ndarray | None:
    try:
        with Image.open(path) as img:
            img.load()
            return preprocess(img)
    except Exception:  # noqa: BLE001 -- any decoder failure (truncated, not an image, bomb ...) = skip
        return None


def load_folder(root: str | Path, preprocess: Preprocess, limit: int | None = None,
                seed: int = 0) -> FolderImages:
    """Decode and preprocess the images of ``root`` (see the module docstring for the rules)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder of images")
    files, labels, class_names = list_image_files(root)
    if not files:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                        f"directly or in class subfolders)")
    order = range(len(files)) if limit is None else np.random.default_rng(seed).permutation(len(files))
    wanted = len(files) if limit is None else limit
    kept: list[int] = []
    arrays: dict[int, np.ndarray] = {}
    skipped = 0
    for i in order:
        if len(kept) >= wanted:
            break
        arr = _decode(files[i], preprocess)
        if arr is None:
            skipped += 1
            continue
        kept.append(int(i))
        arrays[int(i)] = arr
    if not kept:
        raise DataError(f"{root}: none of the {len(files)} images could be decoded")
    kept.sort()
    x = np.stack([arrays[i] for i in kept]).astype(np.float32, copy=False)
    y = None if labels is None else np.asarray([labels[i] for i in kept], dtype=np.int64)
    return FolderImages(x=x, labels=y, class_names=class_names, skipped=skipped)
