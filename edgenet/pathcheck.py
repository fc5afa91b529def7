"""Is this a place for an output folder? Checks of a path made before anything is written there,
and one-line messages for the errors writing to it can still raise.

:func:`check_location` refuses what cannot work (a path under a file, a dangling symbolic link, a
kernel pseudo-filesystem such as /proc) and what is dangerous to fill with generated files (the
filesystem root, a home folder, a system folder, the root of a git working tree).
:func:`os_error_message` turns an OSError met while writing into one line naming the path and what
to do about it. Linux facts used: /proc/self/mountinfo (proc(5)) for filesystem types,
FS_IOC_GETFLAGS (ioctl_iflags(2)) for immutable and append-only files.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:     # not POSIX (Windows): no inode flags to read
    fcntl = None

from edgenet.errors import UsageError

# kernel pseudo-filesystems: nothing written there is a file on a disk
PSEUDO_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs",
    "pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "efivarfs", "binfmt_misc", "autofs",
    "rpc_pipefs", "nsfs", "selinuxfs"})
# folders that hold other things (or the system itself) and must not receive outputs
SYSTEM_FOLDERS = frozenset(Path(p) for p in (
    "/home", "/tmp", "/var", "/var/tmp", "/run", "/mnt", "/media", "/opt", "/srv", "/root", "/usr/local",
    "/Users", "/Volumes", "/private", "/private/tmp", "/private/var"))
# folders whose whole subtree belongs to the system (and the exceptions inside them)
SYSTEM_TREES = tuple(Path(p) for p in (
    "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/etc", "/usr", "/proc", "/sys", "/dev",
    "/System", "/Library"))
ALLOWED_TREES = tuple(Path(p) for p in ("/usr/local", "/dev/shm"))

FS_IOC_GETFLAGS = 0x80086601          # _IOR('f', 1, long)
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type (ext4, tmpfs, proc ...) of the filesystem holding ``path`` (which must exist), from
    /proc/self/mountinfo; None where that is not available (not Linux)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields = line.split(" ")
        try:
            point, fstype = _unescape(fields[4]), fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def immutable(path: str | os.PathLike) -> bool:
    """Whether ``path`` carries the immutable or append-only attribute (``chattr +i`` / ``+a``):
    then not even root can rename or replace it. False where the attribute cannot be read."""
    if not sys.platform.startswith("linux") or fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder)
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags & (FS_IMMUTABLE_FL | FS_APPEND_FL))


def _homes() -> set[Path]:
    homes = {Path(os.path.realpath(Path.home()))}
    try:
        import pwd

        homes |= {Path(os.path.realpath(p.pw_dir)) for p in pwd.getpwall() if p.pw_dir}
    except (ImportError, OSError):
        pass
    return homes - {Path("/")}


def _git_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if os.path.lexists(folder / ".git"):
            return folder
    return None


def _danger(path: Path) -> str | None:
    """Why ``path`` (absolute) is no place for generated files, or None."""
    if path == Path(path.anchor):
        return "the filesystem root"
    if path in _homes():
        return "a home folder"
    try:
        cwd = Path(os.path.realpath(os.getcwd()))
    except OSError:
        cwd = None
    if cwd is not None and path == _git_root(cwd):
        return "the root of the git working tree you are in"
    if os.path.lexists(path / ".git"):
        return "the root of a git working tree"
    if path in SYSTEM_FOLDERS:
        return "a system folder"
    for tree in SYSTEM_TREES:
        if _within(path, tree) and not any(_within(path, ok) for ok in ALLOWED_TREES):
            return f"inside the system folder {tree}"
    return None


def check_location(out: str | os.PathLike) -> None:
    """Refuse an output folder that cannot work or is dangerous, before anything is written.

    Raises UsageError (one line naming ``out``) for: a literal ``~`` (not expanded by a shell), a
    path under a file, a dangling symbolic link, a symbolic link loop, an existing file, a kernel
    pseudo-filesystem (/proc, /sys ...), the filesystem root, a home folder, the root of a git
    working tree (the current one, or any with a .git inside), and system folders.
    """
    text = os.fspath(out)
    if not text.strip():
        raise UsageError("--out is empty; give the output folder's path")
    if text.startswith("~"):
        raise UsageError(f"--out {text}: '~' was not expanded (it was quoted?); write the folder's path in full, "
                         f"e.g. --out {os.path.expanduser(text)}")
    absolute = Path(os.path.abspath(text))
    try:
        os.stat(absolute)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise UsageError(f"--out {text[:80]}...: the path (or a name in it) is too long; choose a shorter "
                             "--out") from None
    existing = absolute
    try:
        while not os.path.lexists(existing):
            existing = existing.parent
        os.stat(existing)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"--out {text}: {existing} is a loop of symbolic links; choose another --out") from None
        if os.path.islink(existing):
            target = os.readlink(existing)
            raise UsageError(f"--out {text}: {existing} is a symbolic link to {target}, which does not exist; "
                             "create that folder or choose another --out") from None
        raise UsageError(f"--out {text}: cannot look at {existing}: {exc.strerror}") from None
    if not os.path.isdir(existing):
        if existing == absolute:
            raise UsageError(f"--out {text} exists and is not a folder")
        raise UsageError(f"--out {text}: {existing} is a file, not a folder; choose another --out")
    fstype = filesystem_type(existing)
    if fstype in PSEUDO_FS:
        raise UsageError(f"--out {text} is on {fstype}, a kernel pseudo-filesystem, not a disk; "
                         "choose a folder on a disk")
    real = Path(os.path.realpath(absolute))
    for candidate in dict.fromkeys((absolute, real)):
        why = _danger(candidate)
        if why:
            shown = "" if candidate == absolute else f" ({candidate})"
            raise UsageError(f"--out {text}{shown} is {why}; edgenet writes several files into --out: "
                             "give it a folder of its own (e.g. --out out)")


_WHAT = {
    errno.EROFS: ("read-only filesystem", "choose a folder on a writable disk"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose another --out"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another --out"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or change its permissions"),
    errno.EPERM: ("operation not permitted", "look for immutable or append-only files (lsattr) or choose "
                                             "another --out"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another --out"),
    errno.ENOENT: ("no such file or folder (removed while edgenet was writing?)", "try again"),
    errno.EISDIR: ("a folder is in the way", "move it away or choose another --out"),
    errno.ELOOP: ("a loop of symbolic links", "choose another --out"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter --out"),
    errno.EIO: ("input/output error (a failing disk or a lost network share?)", "check the device"),
    errno.EMLINK: ("too many links", "choose another --out"),
}


def os_error_message(exc: OSError, out: str | os.PathLike, where: str | os.PathLike | None = None) -> str:
    """One line for an OSError met writing ``out``: the path (``where``, else the error's own
    file name, else ``out``), what went wrong, what to do."""
    what, todo = _WHAT.get(exc.errno, (exc.strerror or str(exc), "choose another --out"))
    if where is None:
        where = exc.filename if exc.filename is not None else out
    where = os.fsdecode(where) if isinstance(where, bytes) else str(where)
    place = "" if os.path.abspath(where) == os.path.abspath(out) else f" {where}:"
    return f"--out {out}:{place} {what}; {todo}".replace("\n", "\\n")
