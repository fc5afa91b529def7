"""The output folder of a conversion: checked and locked before the work, filled all at once after.

:class:`OutputFolder` wraps a whole conversion::

    with OutputFolder(out, force) as folder:      # checks, locks, probes; makes folder.staging
        ...write every output file into folder.staging...
        folder.publish()                          # all of them appear in ``out``, or none

Promises:

* Nothing is written anywhere but ``out``. The staging folder is a hidden folder *inside* ``out``
  (``.edgenet-staging-<pid>-<random>/files``), so it is on ``out``'s filesystem and publishing is a
  few ``rename(2)`` calls, never a copy (an ``out`` that is a mount point works).
* One conversion at a time per folder: ``flock(2)`` on ``out/.edgenet.lock``, taken at the start
  and held to the end; a second conversion fails at once (OutputBusyError). The lock file is
  removed again at the end.
* All or nothing: publishing first moves every file it replaces (and every file of the earlier
  conversion that this one does not write) into the staging folder, then moves the new files in.
  If any step fails, the new files are taken out and the earlier ones put back. A journal
  (``publish.json`` in the staging folder) lets the next conversion into ``out`` finish that
  rollback after a SIGKILL mid-publish; it also removes staging folders that killed runs left.
* ``--force`` replaces only what edgenet wrote: every publish records the files it published,
  each with its sha256, in ``out/.edgenet-manifest.json``. An earlier conversion's file is
  replaced or removed only while its content still matches the hash recorded: one the user has
  changed since is kept (and said, on the ``edgenet.outdir`` logger), a file of the user's that
  has the name of one edgenet writes is refused at the start, not overwritten, and any other file
  stays. report.json's ``files`` list is not a record of what to remove (it is the user's to
  edit). A folder an earlier edgenet wrote (report.json or ``.edgenet.json`` listing its files, no
  hashes) has nothing provably edgenet's: nothing there is removed, and a name in the way is
  refused with one line saying so.
* Every failure to write is one line (OutputError, UsageError) naming the path and what to do.
  A write probe at the start finds a read-only, full or unwritable ``out`` before the slow stages.
"""
from __future__ import annotations

import errno
import fcntl
import fnmatch
import logging
import os
import shutil
import tempfile
from pathlib import Path

from edgenet.errors import OutputBusyError, OutputError, OutputExistsError
from edgenet.pathcheck import check_location, immutable, os_error_message
from edgenet.manifest import (LEGACY_MANIFEST, LOCK, MANIFEST, STAGING_PREFIX,  # noqa: F401
                              _legacy, _plain, changed_files, digest, recorded_files)
from edgenet.publish_journal import (FILES, JOURNAL, PREVIOUS, identity, is_folder, rollback, sync_folder,
                                     write_json)
from edgenet.scratch import sweep_leftovers

PROBE_BYTES = 64 << 10
# names edgenet convert may write: a user's own file by one of these names is not overwritten
OUTPUT_PATTERNS = ("model*.onnx", "model*.tflite", "model_data.cc", "model_data.h", "model_op_resolver.h",
                   "preprocess.json", "labels.txt", "report.json", "report.md", "vela_summary.csv",
                   "*_edgetpu.tflite", "*_edgetpu.log", MANIFEST, LEGACY_MANIFEST)
# names every conversion writes: one of them changed by the user is refused at the start
ALWAYS_WRITTEN = ("report.json", "report.md", "model_float.tflite")
log = logging.getLogger(__name__)
before_commit: list = []
"""Callables run just before :meth:`OutputFolder.publish` reaches its commit point: `edgenet convert`'s
CLI holds Ctrl-C / SIGTERM there, so that a signal either rolls the folder back (before) or waits for
the command to finish with its files published (after), never exits 130 with the files in place."""


def _internal(name: str) -> bool:
    """edgenet's own bookkeeping in ``out``: not an output, not the user's."""
    return name == LOCK or name.startswith(STAGING_PREFIX)


def _entries(out: Path) -> list[str]:
    return sorted(n for n in os.listdir(out) if not _internal(n))


def _replace_problem(out: Path, name: str, recorded: frozenset[str]) -> str | None:
    path = out / name
    if is_folder(path):
        return f"--out {out}: {name} is a folder in the way of a file edgenet writes; move it away or choose another --out"
    if name not in recorded and name in changed_files(out):
        return (f"--out {out}: {name} changed since edgenet wrote it (its sha256 is not the one {MANIFEST} "
                "records) and --force replaces only edgenet's files as written; move it away or choose another --out")
    if name not in recorded and _legacy(out):
        return (f"--out {out}: {name} is in the way, and the folder was written by an earlier edgenet that recorded "
                f"no file hashes ({MANIFEST}), so its files cannot be told from yours; move them away or choose "
                "another --out")
    if name not in recorded:
        return (f"--out {out}: {name} is not a file of the earlier conversion there (report.json does not list it) "
                "and --force replaces only edgenet's files; move it away or choose another --out")
    if immutable(path):
        return (f"--out {out}: {name} is immutable or append-only (chattr +i/+a), so it cannot be replaced; "
                "run chattr -i on it or choose another --out")
    return None


def check_out(out: str | os.PathLike, force: bool) -> None:
    """The checks of :class:`OutputFolder` that need no lock and write nothing: where ``out`` is
    (see :func:`edgenet.pathcheck.check_location`), and whether it already holds files.

    Raises UsageError, OutputExistsError (not empty, no ``force``) or OutputError.
    """
    check_location(out)
    out = Path(out)
    if not out.is_dir():
        return
    try:
        if any(n.startswith(STAGING_PREFIX) for n in os.listdir(out)):
            return     # a killed conversion's leftovers: judged once OutputFolder has cleaned them up
        entries = _entries(out)
    except OSError as exc:
        raise OutputError(os_error_message(exc, out)) from None
    if entries and not force:
        raise OutputExistsError(f"--out {out} exists and is not empty; pass --force to replace edgenet's earlier "
                                "files there (other files stay)")
    if force:
        recorded = recorded_files(out)
        changed = set(changed_files(out)) - set(ALWAYS_WRITTEN)   # kept if this conversion does not write them
        for name in entries:
            if name in changed and not is_folder(out / name):
                continue
            if name in recorded or any(fnmatch.fnmatchcase(name, p) for p in OUTPUT_PATTERNS):
                problem = _replace_problem(out, name, recorded)
                if problem:
                    raise OutputError(problem)


class OutputFolder:
    """``out`` for one conversion; see the module docstring. ``staging`` (a Path) is where the
    conversion writes its files, from ``__enter__`` until :meth:`publish`.

    ``__enter__`` raises UsageError (a refused place), OutputExistsError (not empty without
    ``force``; a user's file in the way with it), OutputBusyError (another conversion holds the
    lock) or OutputError (cannot write: read-only, full, permission ...). ``__exit__`` removes the
    staging folder, the lock file and, after a failure, the folders it created; an OSError
    raised inside the ``with`` about a path in ``out`` comes out as one-line OutputError.
    """

    def __init__(self, out: str | os.PathLike, force: bool = False) -> None:
        self.out = Path(out)
        self.force = force
        self.staging: Path | None = None
        self.published: list[Path] | None = None
        self._root: Path | None = None
        self._fd: int | None = None
        self._created: list[Path] = []
        self._recorded: frozenset[str] = frozenset()

    # -- start --------------------------------------------------------------------------------
    def __enter__(self) -> "OutputFolder":
        check_out(self.out, self.force)
        sweep_leftovers()                        # temp folders of killed runs (a library caller has no CLI to do it)
        try:
            self._make_out()
            self._lock()
            self._recover()
            check_out(self.out, self.force)      # again, now that no other conversion can write
            self._recorded = recorded_files(self.out)
            self._root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.out))
            self.staging = self._root / FILES
            self.staging.mkdir()
            self._probe()
        except BaseException as exc:
            self._finish(failed=True)
            if isinstance(exc, OSError):   # about out itself, unless one of edgenet's files in it is in the way
                where = exc.filename if exc.errno in (errno.EISDIR, errno.ELOOP, errno.ENOTDIR) else self.out
                raise OutputError(os_error_message(exc, self.out, where=where)) from None
            raise
        return self

    def _make_out(self) -> None:
        missing, folder = [], Path(os.path.abspath(self.out))
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                continue
            self._created.append(folder)

    def _lock(self) -> None:
        path = self.out / LOCK
        for _ in range(5):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                who = f" (process {owner})" if owner.isdigit() else ""
                raise OutputBusyError(f"--out {self.out}: another edgenet conversion{who} is writing there; wait "
                                      "for it to finish or choose another --out") from None
            # the holder before us may have removed the file after we opened it: lock the file in place
            mine = os.fstat(fd)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                self._fd = fd
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return
            os.close(fd)
        raise OutputBusyError(f"--out {self.out}: other edgenet conversions keep taking it; try again")

    def _recover(self) -> None:
        """Remove the staging folders of killed conversions (finishing an interrupted publish's
        rollback first). Only the lock holder makes staging folders, so every one found is stale."""
        for name in os.listdir(self.out):
            root = self.out / name
            if not name.startswith(STAGING_PREFIX) or not is_folder(root):
                continue
            failure = rollback(root, self.out)
            if failure is not None:
                raise OutputError(f"--out {self.out}: an earlier conversion was killed while publishing and its "
                                  f"files cannot be put back ({failure.filename}: {failure.strerror}); move them "
                                  f"back from {root / PREVIOUS} by hand or choose another --out")
            shutil.rmtree(root, ignore_errors=True)

    def _probe(self) -> None:
        """Write (and sync) a small file where the outputs will go: a read-only, full or
        unwritable ``out`` fails here, before the slow stages."""
        probe = self._root / "probe"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            data = memoryview(bytes(PROBE_BYTES))
            while data:                            # a nearly full disk takes part, then fails
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)

    # -- publish ------------------------------------------------------------------------------
    def publish(self) -> list[Path]:
        """Move every file of ``staging`` into ``out`` at once: all of them, or (on failure) none,
        with ``out`` as it was. Removes the earlier conversion's files this one did not write
        (``force``). Returns the published paths; raises OutputExistsError, OutputError."""
        if self._fd is None or self.staging is None:
            raise RuntimeError("OutputFolder.publish() outside its with-block")
        out, root = self.out, self._root
        names = sorted(os.listdir(self.staging))
        bad = [n for n in names if not _plain(n) or n in (MANIFEST, LEGACY_MANIFEST)]
        if bad:
            raise OutputError(f"--out {out}: edgenet cannot publish a file named {bad[0]!r}")
        present = _entries(out)
        if present and not self.force:
            raise OutputExistsError(f"--out {out}: files appeared in it during the conversion ({present[0]} ...); "
                                    "pass --force to replace edgenet's earlier files there")
        for name in names:
            if os.path.lexists(out / name):
                problem = _replace_problem(out, name, self._recorded)
                if problem:
                    raise OutputError(problem)
        hashes = {n: digest(self.staging / n) for n in names}
        write_json(self.staging / MANIFEST, {"written_by": "edgenet",
                                              "files": {n: h for n, h in hashes.items() if h is not None}})
        moving = [*names, MANIFEST]
        # the earlier conversion's files this one does not write: removed if still as edgenet wrote them
        stale = sorted(n for n in self._recorded - set(moving) if os.path.lexists(out / n) and not is_folder(out / n))
        kept = changed_files(out)
        if kept:
            log.warning("--out %s: kept %s: changed since edgenet wrote %s (not as %s records)", out,
                        ", ".join(kept[:5]) + (" ..." if len(kept) > 5 else ""), "it" if len(kept) == 1 else "them",
                        MANIFEST)
        journal = {"out": os.path.abspath(out), "new": {n: identity(self.staging / n) for n in moving},
                   "replaced": stale}
        current = None
        try:
            write_json(root / f"{JOURNAL}.tmp", journal)
            os.rename(root / f"{JOURNAL}.tmp", root / JOURNAL)   # from here on, a rollback is possible
            (root / PREVIOUS).mkdir()
            for current in [*moving, *stale]:
                if os.path.lexists(out / current):
                    os.rename(out / current, root / PREVIOUS / current)
            for current in moving:
                os.rename(self.staging / current, out / current)
            current = None
            sync_folder(out)
            for hook in before_commit:
                hook()
            os.unlink(root / JOURNAL)                 # the commit point
        except BaseException as exc:
            failure = rollback(root, out)
            if isinstance(exc, OSError):
                kept = ("--out is as it was before" if failure is None else
                        f"putting the earlier files back failed too ({failure.strerror}); the next conversion "
                        "into --out finishes that")
                where = out / current if current else None
                raise OutputError(f"{os_error_message(exc, out, where)} ({kept})") from None
            raise
        sync_folder(out)
        self.published = [out / n for n in names]
        return self.published

    # -- end ----------------------------------------------------------------------------------
    def __exit__(self, exc_type, exc, tb) -> None:
        self._finish(failed=exc_type is not None)
        if isinstance(exc, OSError) and self._concerns(exc):
            raise OutputError(os_error_message(exc, self.out)) from None

    def _concerns(self, exc: OSError) -> bool:
        out = os.path.abspath(self.out)
        for name in (exc.filename, exc.filename2):
            if name is not None and os.path.abspath(os.fsdecode(name)).startswith(out + os.sep):
                return True
        return False

    def _finish(self, failed: bool) -> None:
        """Remove the staging folder (unless it holds an unfinished rollback's journal), the lock
        file, and after a failure the folders made for ``out``; then let go of the lock. Each
        step runs even when a signal cuts the one before short."""
        try:
            if self._root is not None and not (self._root / JOURNAL).exists():
                shutil.rmtree(self._root, ignore_errors=True)
        finally:
            self.staging = None
            if self._fd is not None:
                try:
                    self._unlock(failed)
                finally:
                    os.close(self._fd)
                    self._fd = None

    def _unlock(self, failed: bool) -> None:
        try:
            os.unlink(self.out / LOCK)                # while still holding it: see _lock
        except OSError:
            pass
        if failed and self.published is None:
            for folder in reversed(self._created):
                try:
                    os.rmdir(folder)                  # only if empty: nothing of the user's is removed
                except OSError:
                    break
