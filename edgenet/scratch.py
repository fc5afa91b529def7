"""Scratch folders that a killed process cannot leave behind for good.

A :class:`ScratchDir` is a folder named ``<prefix><pid>-<random>`` whose owner holds an exclusive
``flock`` on the ``.owner`` file inside it for as long as it uses the folder. The kernel drops that
lock when the owner ends, however it ends (SIGKILL included), so a later process can tell a
leftover from a folder in use without trusting process ids (which are reused, and differ between
PID namespaces that share /tmp or /dev/shm): :func:`sweep` removes the folders of a prefix whose
lock it can take. Every new ScratchDir sweeps its own prefix first, so the next run cleans up what
a killed one left.

Locks are ``flock(2)`` locks on an open file description: they work between processes and between
threads of one process, and are not inherited by programs this process starts.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:     # not POSIX (Windows): no scratch folders (the CLI does not make them there)
    fcntl = None

OWNER = ".owner"
# the scratch folders edgenet makes: the CLI's per-command folder, --fit's candidates, and (removed as
# leftovers of older versions) the TensorFlow worker's temp folder and its /dev/shm arrays
PREFIXES = ("edgenet-run-", "edgenet-worker-", "edgenet-tf-", "edgenet-fit-", "edgenet-cell-", "edgenet-files-")
SHARED_MEMORY = "/dev/shm"
_YOUNG = 60.0   # seconds: a folder without its .owner file yet may be being created right now


class ScratchDir:
    """A private folder ``<parent>/<prefix><pid>-<random>``, locked while in use.

    ``parent`` defaults to the temp folder (``tempfile.gettempdir()``). Use as a context manager,
    or call :meth:`close`; both remove the folder with everything in it. Raises OSError when the
    folder cannot be made.
    """

    def __init__(self, prefix: str, parent: str | os.PathLike | None = None) -> None:
        self._fd, self._owner = None, os.getpid()
        parent = Path(parent if parent is not None else tempfile.gettempdir())
        sweep(prefix, parent)
        self.path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
        try:
            self._fd = os.open(self.path / OWNER, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def close(self) -> None:
        """Remove the folder (then let go of its lock). Safe to call twice; does nothing in a
        forked child (the folder is its parent's)."""
        if self._fd is None or os.getpid() != self._owner:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:   # a forgotten close(): still no leftover
        try:
            self.close()
        except Exception:
            pass


_outer: str | None = None     # the temp folder from before :func:`redirect_temp` pointed it elsewhere


def system_tempdir() -> str:
    """The temp folder the environment names (TMPDIR, TEMP, TMP, else /tmp ...), even while
    :func:`redirect_temp` points this process's temp files elsewhere."""
    return _outer if _outer is not None else tempfile.gettempdir()


@contextlib.contextmanager
def redirect_temp(folder: str | os.PathLike):
    """Within the block, this process's temp files (``tempfile``) and those of native libraries
    and child processes (the TMPDIR variable) go into ``folder``."""
    global _outer
    saved = _outer, tempfile.tempdir, os.environ.get("TMPDIR")
    _outer = system_tempdir()
    tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
    try:
        yield
    finally:
        _outer, tempfile.tempdir = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[2]


def _owner_pid(name: str, prefix: str) -> int | None:
    m = re.fullmatch(re.escape(prefix) + r"(\d+)-[A-Za-z0-9_]+", name)
    return int(m.group(1)) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's process
        return True
    return True


def sweep(prefix: str, parent: str | os.PathLike | None = None) -> list[Path]:
    """Remove the folders ``<parent>/<prefix><pid>-<random>`` that no live process holds.

    A folder whose ``.owner`` lock can be taken is a leftover; one without an ``.owner`` file is
    one only when it is over a minute old and its process id is not running. Folders of other
    shapes (other programs', older edgenet versions') are never touched. Returns what was removed.
    """
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in names:
        pid = _owner_pid(name, prefix)
        if pid is None:
            continue
        folder = parent / name
        try:
            fd = os.open(folder / OWNER, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                young = time.time() - os.lstat(folder).st_mtime < _YOUNG
            except OSError:
                continue
            if young or _alive(pid) or not folder.is_dir() or folder.is_symlink():
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            continue
        except OSError:   # not a folder, not ours to read ...
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue          # in use
                raise
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def sweep_leftovers() -> list[Path]:
    """:func:`sweep` every edgenet prefix in the temp folder and /dev/shm: what killed runs left.
    Cheap (two directory listings); run at the start of every command and conversion."""
    removed = []
    try:
        parents = (system_tempdir(), tempfile.gettempdir(), SHARED_MEMORY)
    except OSError:     # no usable temp folder at all: nothing can have been left there
        parents = (SHARED_MEMORY,)
    for parent in dict.fromkeys(parents):
        if os.path.isdir(parent):
            for prefix in PREFIXES:
                removed += sweep(prefix, parent)
    return removed
