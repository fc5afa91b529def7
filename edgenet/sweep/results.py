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
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from edgenet.errors import EdgenetError, OutputError, UsageError
from edgenet.io import file_sha256

RESULTS = "results.jsonl"
CELLS = "cells"
CELL_RECORD = "cell.json"
MARKER = ".edgenet-sweep.json"
LOCK = ".lock"
WRITTEN = "written_files"      # cell.json: {relative path: sha256} of the files edgenet wrote there
SWEEP_NAMES = frozenset({RESULTS, CELLS, MARKER, LOCK, "pareto.md", "pareto.png"})
_CELL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")      # a record's id is a folder name in cells/
STAGING_PREFIX, WORK_PREFIX = ".edgenet-cell-", ".edgenet-work-"
# edgenet's own hidden folders in cells/ (also the names earlier versions gave them; mkdtemp adds 8 characters)
_OURS_HIDDEN = re.compile(r"(\.edgenet-(cell|work|data)-.+|\.(work|data)-[a-z0-9_]{8}|\.[0-9a-f]{16}-[a-z0-9_]{8})")
MAX_LINE = 1 << 20             # a results.jsonl line longer than this is not edgenet's: skipped


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STATUSES = frozenset({"ok", "degraded", "does_not_fit", "failed"})
_TEXT = ("label", "target", "precision", "model", "kind", "calib", "file", "sha256", "host", "finished",
         "target_summary", "version")
_NUMBERS = ("sqnr_db", "top1_agreement", "top1", "float_top1", "alpha")
_AMOUNTS = ("size_bytes", "arena_bytes", "flash_bytes", "ram_budget", "flash_budget", "latency_ms", "estimated_ms",
            "seconds", "convert_seconds", "mult_adds", "npu_ops", "cpu_ops", "edgetpu_mappable_ops",
            "edgetpu_cpu_ops", "resolution", "num_classes", "calib_samples", "eval_samples")
_FLAGS = ("fits", "trained", "bench")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def valid_record(record) -> bool:
    """Whether ``record`` has the shape of a cell's line: ``id`` a folder name, ``label`` and
    ``target`` text, ``status`` one of :data:`STATUSES`, and every known figure of its type (text,
    a finite number, a non-negative amount, a flag, or null). Other keys are not looked at."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not _CELL_ID.fullmatch(record["id"]):
        return False
    if not isinstance(record.get("label"), str) or not isinstance(record.get("target"), str) \
            or record.get("status") not in STATUSES:
        return False
    for key in _TEXT:
        if record.get(key) is not None and not isinstance(record[key], str):
            return False
    if record.get("error") is not None and not isinstance(record["error"], str):
        return False
    if record.get("verdict") not in (None, "pass", "fail"):
        return False
    for key in _NUMBERS:
        if record.get(key) is not None and not _number(record[key]):
            return False
    for key in _AMOUNTS:
        if record.get(key) is not None and not (_number(record[key]) and record[key] >= 0):
            return False
    return all(record.get(key) is None or isinstance(record[key], bool) for key in _FLAGS)


def _record(line: str) -> dict | None:
    from edgenet.safe_json import loads

    if len(line) > MAX_LINE:
        return None
    try:
        record = loads(line, RESULTS, max_depth=8)
    except EdgenetError:     # a torn, crafted or unreadable line
        return None
    return record if valid_record(record) else None


def read_results(folder: str | os.PathLike) -> dict[str, dict]:
    """id -> the last complete line for that id (a torn, unreadable or foreign line is skipped:
    a line is a JSON object, within edgenet.safe_json's limits, that :func:`valid_record` takes)."""
    return read_results_counted(folder)[0]


def read_results_counted(folder: str | os.PathLike) -> tuple[dict[str, dict], int]:
    """:func:`read_results` and the number of non-blank lines it skipped."""
    path = Path(folder) / RESULTS
    records: dict[str, dict] = {}
    skipped = 0
    if not path.is_file():
        return records, skipped
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        record = _record(line)
        if record is not None:
            records[record["id"]] = record
        elif line.strip():
            skipped += 1
    return records, skipped


def _real_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _written_by_edgenet(folder: Path) -> bool:
    """Whether cell folder ``folder`` holds only what edgenet wrote there: its cell.json names the
    folder's id and lists every other file with its sha256, and no file was changed or added since
    (no symbolic link either: edgenet makes none)."""
    from edgenet.safe_json import load_file

    if not _real_folder(folder) or not (folder / CELL_RECORD).is_file() or (folder / CELL_RECORD).is_symlink():
        return False
    try:
        record = load_file(folder / CELL_RECORD, max_bytes=MAX_LINE)
    except Exception:
        return False
    if not isinstance(record, dict) or record.get("id") != folder.name or not isinstance(record.get(WRITTEN), dict):
        return False
    listed = record[WRITTEN]
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                return False
            if name in files:
                rel = str(path.relative_to(folder))
                if rel == CELL_RECORD:
                    continue
                if listed.get(rel) != file_sha256(path):
                    return False
                found.add(rel)
    return found == set(listed)


def _is_marker(path: Path) -> bool:
    from edgenet.safe_json import load_file

    if path.is_symlink() or not path.is_file():
        return False
    try:
        marker = load_file(path, max_bytes=1 << 16)
    except Exception:
        return False
    return isinstance(marker, dict) and marker.get("written_by") == "edgenet" and marker.get("kind") == "sweep"


def _legacy_sweep(folder: Path, entries: list[str]) -> bool:
    """A sweep folder an earlier edgenet wrote (before the marker): only a sweep's names, and a
    results.jsonl (a plain file) every line of which is a cell's record."""
    results = folder / RESULTS
    if not set(entries) <= SWEEP_NAMES or results.is_symlink() or not results.is_file():
        return False
    lines = [x for x in results.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    parsed = [_record(x) is not None for x in lines]
    # the last line may be torn by a crash; at least one whole record must say it is a sweep's file
    return any(parsed) and all(parsed[:-1])


class SweepStore:
    """The folder of one sweep, locked while open.

    edgenet owns the folder the way ``convert`` owns its ``--out`` (:mod:`edgenet.outdir`): it
    creates it (or takes an empty one) and marks it with ``.edgenet-sweep.json``; a folder with
    other content is refused unless it has that marker (or is a sweep an earlier edgenet wrote:
    only a sweep's files, a results.jsonl of cell records). No symbolic link in it is followed
    (``cells``, results.jsonl, the lock or a pareto file that is one is refused), and tidying up
    after a crash removes only what edgenet wrote: its hidden staging and work folders, and cell
    folders without a line whose files still match the hashes their cell.json recorded. Anything
    else found in cells/ is kept and named in :attr:`notes`.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.results = self.folder / RESULTS
        self.cells = self.folder / CELLS
        self.notes: list[str] = []
        self._lock = None

    # -- opening: check, lock, then tidy what a crash left ---------------------------------------
    def check(self, option: str = "--out") -> bool:
        """Refuse a folder that is not edgenet's sweep (writes nothing), naming it as ``option``.
        True: it needs the marker."""
        from edgenet.pathcheck import check_location

        check_location(self.folder)
        folder = self.folder
        if not os.path.lexists(folder):
            return True
        if not folder.is_dir():
            raise UsageError(f"{option} {folder} exists and is not a folder")
        try:
            entries = sorted(os.listdir(folder))
        except OSError as exc:
            raise OutputError(f"{option} {folder}: cannot be read ({exc.strerror})") from None
        needs_marker = False
        if MARKER in entries:
            if not _is_marker(folder / MARKER):
                raise UsageError(f"{option} {folder}: {MARKER} is not the marker edgenet writes: choose another folder")
        elif not entries:
            needs_marker = True
        elif _legacy_sweep(folder, entries):
            needs_marker = True
            self.notes.append(f"{folder} is a sweep folder of an earlier edgenet: marked as one ({MARKER})")
        else:
            raise UsageError(f"{option} {folder} is not empty and is not an edgenet sweep folder (no {MARKER}, "
                             f"it holds {entries[0]!r}): choose another folder, edgenet changes nothing in it")
        for name in sorted(SWEEP_NAMES):
            path = folder / name
            if path.is_symlink():
                raise UsageError(f"{option} {folder}: {name} is a symbolic link edgenet did not make (it follows "
                                 "none): remove it or choose another folder")
        if os.path.lexists(self.cells) and not self.cells.is_dir():
            raise UsageError(f"{option} {folder}: {CELLS} is not a folder: choose another folder")
        return needs_marker

    def open(self) -> "SweepStore":
        needs_marker = self.check()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self._lock = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise UsageError(f"another sweep is writing to {self.folder} right now") from None
        if needs_marker:
            from edgenet.io import atomic_write_json
            from edgenet.sweep.cells import edgenet_version

            atomic_write_json(self.folder / MARKER, {"written_by": "edgenet", "kind": "sweep",
                                                     "version": edgenet_version()})
        try:
            self.cells.mkdir()
        except FileExistsError:
            if not _real_folder(self.cells):
                self.close()
                raise UsageError(f"--out {self.folder}: {CELLS} is not a folder edgenet made: choose another "
                                 "folder") from None
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
        """Cut a torn last line; remove edgenet's staging and work folders, and the cell folders
        edgenet wrote that have no line (a crash between the two). Keep (and note) anything else."""
        if self.results.is_file():
            data = self.results.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                with open(self.results, "r+b") as fh:
                    fh.truncate(keep)
                    fh.flush()
                    os.fsync(fh.fileno())
        done = read_results(self.folder)
        kept = []
        for item in sorted(self.cells.iterdir()):
            name = item.name
            if item.is_symlink():
                kept.append(name)
                continue
            if name in done:
                continue
            if _real_folder(item) and _OURS_HIDDEN.fullmatch(name):
                shutil.rmtree(item, ignore_errors=True)      # edgenet's unfinished cell: never renamed in
            elif _written_by_edgenet(item):
                shutil.rmtree(item, ignore_errors=True)      # written, but its line never was
            else:
                kept.append(name)
        if kept:
            self.notes.append(f"{self.cells} holds {len(kept)} item(s) edgenet did not write or that changed since "
                              f"({', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}): kept, not used")

    # -- reading and committing ------------------------------------------------------------------
    def finished(self) -> dict[str, dict]:
        return read_results(self.folder)

    def commit(self, record: dict, files: dict[str, bytes]) -> dict:
        """Write the cell's folder, then append its line (flush + fsync). Returns the record as written."""
        record = {**record, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        cell_id = record["id"]
        if not isinstance(cell_id, str) or not _CELL_ID.fullmatch(cell_id):
            raise UsageError(f"cell id {cell_id!r} is not a folder name")
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.cells))
        written = {}
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
                written[str(dest.relative_to(staging.resolve()))] = hashlib.sha256(blob).hexdigest()
            with open(staging / CELL_RECORD, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({**record, WRITTEN: written}, indent=2) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            final = self.cells / cell_id
            if os.path.lexists(final):      # a failed cell run again: replaced only if edgenet wrote it
                if not _written_by_edgenet(final):
                    raise OutputError(f"{final} is in the way of a cell's folder and edgenet did not write it "
                                      "(or it changed since): move it away and run the sweep again")
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
