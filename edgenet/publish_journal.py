"""The journal of a publish (:class:`edgenet.outdir.OutputFolder`): what a publish moved where, written
(and fsync'ed) before the first rename, so that an interrupted publish can be undone by the next
conversion into the same folder (:func:`rollback`), also after a SIGKILL."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from edgenet.errors import EdgenetError
from edgenet.manifest import MANIFEST_BYTES, _plain

JOURNAL, PREVIOUS, FILES = "publish.json", "previous", "files"


def is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def identity(path: Path) -> list[int]:
    st = os.lstat(path)
    return [st.st_dev, st.st_ino]


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    if is_folder(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def rollback(root: Path, out: Path) -> OSError | None:
    """Undo an unfinished publish recorded in ``root``'s journal: remove from ``out`` the new
    files that reached it (recognised by device and inode), put the moved-away ones back.
    Returns None when done (or nothing to do), else the OSError that stopped it (the journal then
    stays for another try)."""
    from edgenet.safe_json import load_file

    journal = root / JOURNAL
    try:
        record = load_file(journal, max_bytes=MANIFEST_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc
    except EdgenetError:
        record = None
    new = record.get("new") if isinstance(record, dict) else None
    if not isinstance(new, dict):
        return OSError(errno.EIO, f"unreadable journal {journal}")
    failure = None
    for name, ident in new.items():
        path = out / name
        try:
            if _plain(name) and isinstance(ident, list) and os.path.lexists(path) and identity(path) == ident:
                remove(path)
        except OSError as exc:
            failure = failure or exc
    backup = root / PREVIOUS
    for name in (sorted(os.listdir(backup)) if backup.is_dir() else []):
        try:
            if os.path.lexists(out / name):
                raise FileExistsError(errno.EEXIST, "in the way of an earlier file", str(out / name))
            os.rename(backup / name, out / name)
        except OSError as exc:
            failure = failure or exc
    if failure is None:
        sync_folder(out)
        os.unlink(journal)
    return failure
