"""Helpers for the output-folder tests: exact snapshots of a folder, real mounts (tmpfs,
read-only), immutable files. Mounting needs root (CAP_SYS_ADMIN); tests skip where it fails."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (hidden ones too): kind, permission bits, bytes or link target."""
    if not os.path.lexists(folder):
        return {}
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            st = os.lstat(path)
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir", st.st_mode & 0o7777)
            else:
                state[rel] = ("file", st.st_mode & 0o7777, path.read_bytes())
    return state


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m"):
    """A fresh tmpfs mounted at ``path`` (made if missing): another filesystem than the test's."""
    path.mkdir(parents=True, exist_ok=True)
    proc = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


def remount_read_only(path: Path) -> None:
    proc = _run("mount", "-o", "remount,ro", str(path))
    if proc.returncode:
        pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")


@contextlib.contextmanager
def immutable(path: Path):
    """``chattr +i`` on ``path`` (not even root can rename it), undone afterwards."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    proc = _run("chattr", "+i", str(path))
    if proc.returncode:
        pytest.skip(f"chattr +i does not work here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        _run("chattr", "-i", str(path))


def leftovers(folder: Path, baseline: set[str] = frozenset()) -> list[str]:
    """What is in ``folder`` besides ``baseline``."""
    return sorted(set(os.listdir(folder)) - set(baseline)) if folder.is_dir() else []


def shm_of(pid: int) -> list[str]:
    """/dev/shm entries of process ``pid`` (edgenet puts the owner's pid in their names)."""
    if not os.path.isdir("/dev/shm"):
        return []
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("edgenet") and f"-{pid}-" in n)
