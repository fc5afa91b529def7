"""What edgenet wrote into an output folder: ``.edgenet-manifest.json``, each published file's name
with its sha256. ``convert --force`` (:mod:`edgenet.outdir`) replaces or removes a file only
while it is recorded there and its content still has that hash; report.json's ``files`` list is
the user's to edit and is no such record. A folder of an earlier edgenet (``.edgenet.json`` or
report.json listing names, no hashes) has no file that is provably edgenet's.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from edgenet.errors import EdgenetError

MANIFEST = ".edgenet-manifest.json"
LEGACY_MANIFEST = ".edgenet.json"          # earlier versions: names without hashes
MANIFEST_BYTES = 1 << 20
LOCK = ".edgenet.lock"
STAGING_PREFIX = ".edgenet-staging-"


def _plain(name: str) -> bool:
    """A file name edgenet may have published: one path component, not its own bookkeeping."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name
            and name != LOCK and not name.startswith(STAGING_PREFIX))


def _listed(path: Path) -> frozenset[str] | None:
    """The plain file names in the ``files`` list of JSON file ``path`` (None: no such list)."""
    from edgenet.safe_json import load_file

    try:
        names = load_file(path, max_bytes=MANIFEST_BYTES)
    except (OSError, EdgenetError):
        return None
    names = names.get("files") if isinstance(names, dict) else None
    if not isinstance(names, list):
        return None
    return frozenset(n for n in names if isinstance(n, str) and _plain(n))


def digest(path: str | os.PathLike) -> str | None:
    """sha256 of the regular file ``path`` (not followed if a symbolic link: None), or None when
    it is not one or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        h = hashlib.sha256()
        with os.fdopen(fd, "rb", closefd=False) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def manifest(out: str | os.PathLike) -> dict[str, str] | None:
    """``{file name: sha256}`` of what the last conversion published into ``out`` (from
    .edgenet-manifest.json), None when there is no manifest (or one that is not edgenet's)."""
    from edgenet.safe_json import load_file

    path = Path(out) / MANIFEST
    if path.is_symlink():
        return None
    try:
        record = load_file(path, max_bytes=MANIFEST_BYTES)
    except (OSError, EdgenetError):
        return None
    files = record.get("files") if isinstance(record, dict) and record.get("written_by") == "edgenet" else None
    if not isinstance(files, dict):
        return None
    return {n: h for n, h in files.items() if _plain(n) and n != MANIFEST and isinstance(h, str)}


def recorded_files(out: str | os.PathLike) -> frozenset[str]:
    """The files an earlier conversion wrote into ``out`` and nobody changed since: the names in
    .edgenet-manifest.json whose content still has the sha256 recorded there (and the manifest)."""
    out = Path(out)
    files = manifest(out)
    if files is None:
        return frozenset()
    return frozenset(n for n, h in files.items() if digest(out / n) == h) | {MANIFEST}


def changed_files(out: str | os.PathLike) -> list[str]:
    """The files of ``out``'s manifest that are there but no longer hold what edgenet wrote."""
    out = Path(out)
    files = manifest(out) or {}
    return sorted(n for n, h in files.items() if os.path.lexists(out / n) and digest(out / n) != h)


def _legacy(out: Path) -> bool:
    """``out`` was written by an earlier edgenet: a file list without hashes, no manifest."""
    return manifest(out) is None and any(_listed(out / n) is not None for n in (LEGACY_MANIFEST, "report.json"))
