"""Images from a folder: one subfolder per class, or a flat folder of unlabelled images.

Layout rules:
- If any direct subfolder holds images (searched recursively, hidden entries ignored), the
  folder is *labelled*: classes are those subfolders in sorted order, labels index them. Loose
  images beside class subfolders are an error (ambiguous). Subfolders with no image are not classes.
- Otherwise the images directly in the folder form an *unlabelled* set (labels None).
Files are jpg/jpeg/png/bmp/webp (any case), read with Pillow. Symbolic links are followed, but a
link that points back into its own ancestry (or at itself) is a "symbolic link loop" error naming
it; a folder that cannot be listed is a "permission denied" error. A file that cannot be used is
skipped and counted by reason (undecodable, permission denied), never fatal unless no file can be
used at all. Without ``limit`` the whole folder is used in sorted path order; with ``limit`` a
seeded random sample of that many usable images is taken (so a capped labelled folder still covers
every class), returned in sorted path order.

:func:`scan_image_folder` is the cheap up-front check (file list + the first decodable image) to
run before slow stages.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
UNDECODABLE, PERMISSION = "could not be decoded", "permission denied"


@dataclass(frozen=True)
class FolderImages:
    x: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    skipped: int
    skipped_detail: str = ""        # e.g. "2 could not be decoded (e.g. a.png); 1 permission denied (e.g. b.png)"


@dataclass(frozen=True)
class FolderScan:
    """What :func:`scan_image_folder` found, without decoding more than it had to."""

    path: Path
    files: int                              # image files listed (by suffix)
    class_names: tuple[str, ...] | None     # None: a flat, unlabelled folder
    first_image: Path                       # the first file (in sorted order) that decodes
    first_size: tuple[int, int]             # its (width, height) in pixels
    first_mode: str                         # its Pillow mode, e.g. "RGB", "L"
    tried: int                              # files opened to find it (1 when the first one decodes)

    @property
    def labelled(self) -> bool:
        return self.class_names is not None


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _is_image_name(name: str) -> bool:
    return _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _scandir(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except PermissionError:
        raise DataError(f"{folder}: permission denied (cannot list the folder)") from None
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None


def _real_dir(entry: os.DirEntry, ancestors: tuple[str, ...]) -> str | None:
    """The real path of a (possibly linked) folder entry, None if it is no folder; DataError for a loop."""
    path = Path(entry.path)
    try:
        if not entry.is_dir():                 # follows links; False for files and broken links
            if entry.is_symlink():
                os.stat(path)                  # raises ELOOP for a link that points at itself
            return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{path}: symbolic link loop (the link points back at itself); remove it") from None
        return None
    real = os.path.realpath(path)
    if real in ancestors:
        raise DataError(f"{path}: symbolic link loop (it points back to {real}, which contains it); "
                        "remove the link or point it elsewhere")
    return real


def _images_under(folder: Path, ancestors: tuple[str, ...]) -> list[Path]:
    """Image files under ``folder`` (recursively, links followed, hidden entries skipped), sorted."""
    found: list[Path] = []
    for entry in _scandir(folder):
        if not _visible(entry.name):
            continue
        real = _real_dir(entry, ancestors)
        if real is not None:
            found += _images_under(Path(entry.path), ancestors + (real,))
        elif _is_image_name(entry.name) and _is_file(entry):
            found.append(Path(entry.path))
    return sorted(found)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()                 # follows links: a link to /dev/zero or a FIFO is not a file
    except OSError:
        return False


def _unprintable(name: str) -> bool:
    """A name that cannot be one line of labels.txt: a control character (C0, DEL, C1) or a
    Unicode line or paragraph separator."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029\x85" for c in name)


def list_image_files(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """(files in sorted order, their labels or None, class names or None), nothing decoded yet."""
    root = Path(root)
    top = (os.path.realpath(root),)
    classes: list[tuple[str, list[Path]]] = []
    loose: list[Path] = []
    for entry in _scandir(root):
        if not _visible(entry.name):
            continue
        real = _real_dir(entry, top)
        if real is not None:
            files = _images_under(Path(entry.path), top + (real,))
            if files:
                classes.append((entry.name, files))
        elif _is_image_name(entry.name) and _is_file(entry):
            loose.append(Path(entry.path))
    if classes and loose:
        raise DataError(f"{root}: holds both class subfolders and {len(loose)} loose image(s) "
                        f"(e.g. {loose[0].name}); move the loose images into a class folder")
    if classes:
        odd = next((name for name, _ in classes if _unprintable(name)), None)
        if odd is not None:
            raise DataError(f"{root}: the class folder {odd!r} has a line break or control character in its name, "
                            "and class names are written one per line (labels.txt, model metadata); rename it")
        files = [f for _, fs in classes for f in fs]
        labels = [k for k, (_, fs) in enumerate(classes) for _ in fs]
        return files, labels, tuple(name for name, _ in classes)
    return loose, None, None


def _open(path: Path):
    """The decoded image, or the reason it cannot be used (UNDECODABLE / PERMISSION)."""
    try:
        img = Image.open(path)
        img.load()
        return img
    except PermissionError:
        return PERMISSION
    except Exception:  # noqa: BLE001 -- any decoder failure (truncated, not an image, bomb ...) = skip
        return UNDECODABLE


def _describe(failures: dict[str, list[Path]]) -> str:
    return "; ".join(f"{len(paths)} {reason} (e.g. {paths[0].name})" for reason, paths in failures.items() if paths)


def _nothing_usable(root: Path, total: int, failures: dict[str, list[Path]]) -> DataError:
    if failures[PERMISSION] and not failures[UNDECODABLE]:
        return DataError(f"{root}: permission denied reading all {total} image(s) (e.g. {failures[PERMISSION][0]})")
    if failures[UNDECODABLE] and not failures[PERMISSION]:
        return DataError(f"{root}: none of the {total} images could be decoded (e.g. {failures[UNDECODABLE][0].name})")
    return DataError(f"{root}: none of the {total} images could be used: {_describe(failures)}")


def _checked_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        if os.path.islink(root):
            raise DataError(f"{root}: a broken or looping symbolic link, not a folder of images")
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder of images")
    return root


def _listed(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    files, labels, class_names = list_image_files(root)
    if not files:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                        f"directly or in class subfolders)")
    return files, labels, class_names


def scan_image_folder(path: str | Path) -> FolderScan:
    """A quick check of an image folder before slow stages: the layout and file list, and the first
    file that decodes. DataError (one line) for a missing/empty folder, a bad layout, a symbolic
    link loop, an unlistable folder, or a folder where no image can be decoded or read.

    Cost: one directory walk and one decode (plus one per undecodable file met before it).
    """
    root = _checked_root(path)
    files, _, class_names = _listed(root)
    failures: dict[str, list[Path]] = {UNDECODABLE: [], PERMISSION: []}
    for tried, file in enumerate(files, start=1):
        img = _open(file)
        if isinstance(img, str):
            failures[img].append(file)
            continue
        with img:
            return FolderScan(root, len(files), class_names, file, tuple(img.size), img.mode, tried)
    raise _nothing_usable(root, len(files), failures)


def load_folder(root: str | Path, preprocess: Preprocess, limit: int | None = None,
                seed: int = 0) -> FolderImages:
    """Decode and preprocess the images of ``root`` (see the module docstring for the rules)."""
    root = _checked_root(root)
    files, labels, class_names = _listed(root)
    order = range(len(files)) if limit is None else np.random.default_rng(seed).permutation(len(files))
    wanted = len(files) if limit is None else limit
    kept: list[int] = []
    arrays: dict[int, np.ndarray] = {}
    failures: dict[str, list[Path]] = {UNDECODABLE: [], PERMISSION: []}
    for i in order:
        if len(kept) >= wanted:
            break
        img = _open(files[i])
        if isinstance(img, str):
            failures[img].append(files[i])
            continue
        try:
            with img:
                arr = preprocess(img)
        except DataError:
            raise
        except Exception:  # noqa: BLE001 -- a decoder error surfacing during conversion
            failures[UNDECODABLE].append(files[i])
            continue
        kept.append(int(i))
        arrays[int(i)] = arr
    if not kept:
        raise _nothing_usable(root, len(files), failures)
    kept.sort()
    x = np.stack([arrays[i] for i in kept]).astype(np.float32, copy=False)
    y = None if labels is None else np.asarray([labels[i] for i in kept], dtype=np.int64)
    skipped = sum(len(v) for v in failures.values())
    return FolderImages(x=x, labels=y, class_names=class_names, skipped=skipped,
                        skipped_detail=_describe(failures))
