"""A sweep's folder: DIR/results.jsonl (one line per finished cell) and DIR/cells/<id>/.

The line is the commit point. A cell's files are written to a hidden folder in DIR/cells/, each
file fsynced, the folder renamed to <id>, and only then its line appended to results.jsonl and
fsynced. So after a crash (even SIGKILL, or a power cut once the disk has the line) every line
stands for a complete folder; a folder without a line, a hidden staging folder, or a torn last
line is what the crash interrupted: :meth:`SweepStore.open` removes them and the cell is redone.

One sweep at a time per folder (an advisory lock on DIR/.lock, released by the kernel when the
process dies, however it dies).

A line is a JSON object: the cell's parameters (``id``, ``label``, ``model``, ``kind``, ``alpha``,
``resolution``, ``num_classes``, ``target``, ``precision``, ``calib`` ...), ``status`` (``ok``;
``degraded``: converted, but the quantized model fails its verdict (an output or channel lost its
signal; ``error`` says where): not a candidate;
``does_not_fit``: converted but over the target's budgets or not runnable there; ``failed``:
``error`` has the one-line reason), and its figures: ``file``/``sha256``/``size_bytes`` of the
model at the cell's precision, ``sqnr_db`` and ``top1_agreement`` against float32, ``top1`` and
``float_top1`` (held-out accuracy when the images' labels are the model's classes), the target's
``fits``, ``arena_bytes``, ``flash_bytes``, ``estimated_ms`` (vela), ``npu_ops``/``cpu_ops``,
``edgetpu_mappable_ops``/``edgetpu_cpu_ops``, ``mult_adds`` (zoo models), ``latency_ms`` (p50
on the worker's host, with --bench), ``seconds`` (wall time of the cell), ``host``, ``finished``.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from edgenet.errors import UsageError

RESULTS = "results.jsonl"
CELLS = "cells"
CELL_RECORD = "cell.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(folder: str | os.PathLike) -> dict[str, dict]:
    """id -> the last complete line for that id (a torn or unreadable line is skipped)."""
    path = Path(folder) / RESULTS
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records[record["id"]] = record
    return records


class SweepStore:
    """The folder of one sweep, locked while open."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.results = self.folder / RESULTS
        self.cells = self.folder / CELLS
        self._lock = None

    # -- opening: lock, then tidy what a crash left ----------------------------------------------
    def open(self) -> "SweepStore":
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"--out {self.folder} exists and is not a folder")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not (self.results.exists() or self.cells.exists()):
            raise UsageError(f"--out {self.folder} is not empty and holds no sweep (no {RESULTS}): "
                             "choose another folder")
        self.cells.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.folder / ".lock", "a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise UsageError(f"another sweep is writing to {self.folder} right now") from None
        self._repair()
        return self

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()   # releases the lock
            self._lock = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _repair(self) -> None:
        """Cut a torn last line; remove staging folders and cell folders that have no line."""
        if self.results.is_file():
            data = self.results.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                with open(self.results, "r+b") as fh:
                    fh.truncate(keep)
                    fh.flush()
                    os.fsync(fh.fileno())
        done = read_results(self.folder)
        for item in self.cells.iterdir():
            if item.name.startswith(".") or item.name not in done:
                if item.is_dir():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)

    # -- reading and committing ------------------------------------------------------------------
    def finished(self) -> dict[str, dict]:
        return read_results(self.folder)

    def commit(self, record: dict, files: dict[str, bytes]) -> dict:
        """Write the cell's folder, then append its line (flush + fsync). Returns the record as written."""
        record = {**record, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        cell_id = record["id"]
        staging = Path(tempfile.mkdtemp(prefix=f".{cell_id}-", dir=self.cells))
        try:
            for rel, blob in files.items():
                dest = (staging / rel).resolve()
                if staging.resolve() not in dest.parents:
                    raise UsageError(f"cell {cell_id}: refusing to write {rel!r} outside its folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "wb") as fh:
                    fh.write(blob)
                    fh.flush()
                    os.fsync(fh.fileno())
            with open(staging / CELL_RECORD, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(record, indent=2) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            final = self.cells / cell_id
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            _fsync_dir(self.cells)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.results, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return record
