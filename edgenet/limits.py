"""Bounds on every number a user or a file can hand to bench, info, train and the target profiles,
and the check that a path is a regular file before anything opens it.

Why these numbers: a thread count in the tens of thousands makes XNNPACK's thread pool crash the
process (100,000 did), and one past 2**31 - 1 overflows the runtime's C ``int``; 256 is above any
phone, Pi or workstation this runs on. A .tflite file is a FlatBuffer, which cannot exceed 2 GiB.
A model input of 2**26 elements is a 4,096 x 4,096 x 4 image (256 MB as float32); anything larger
is a mistake, not a vision model for an edge device. Resolutions stop at 2,048 px and class
counts at 100,000 (ImageNet-21k has 21,841). FIFOs, devices and sockets are refused before they
are opened: reading /dev/zero or an unconnected FIFO never ends.
"""
from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path

from edgenet.errors import EdgenetError, UsageError

MAX_THREADS = 256
MAX_RESOLUTION = 2048
MAX_NUM_CLASSES = 100_000
MAX_MODEL_BYTES = 2 ** 31            # FlatBuffers' own limit
MAX_TENSOR_BYTES = 2 ** 31           # one tensor of a model we open
MAX_INPUT_ELEMENTS = 2 ** 26         # one model input sample
MAX_DATA_BYTES = 2 ** 31             # evaluation samples held in memory at once
MAX_TEXT_BYTES = 16 * 2 ** 20        # labels.txt, preprocess.json
MAX_SAMPLES = 1_000_000              # --limit
MAX_RUNS = 10_000_000                # --runs (each run's time is kept)
MAX_WARMUP = 1_000_000
MAX_WINDOW = 100_000
MAX_SECONDS = 86_400.0               # --min-seconds; a day
MAX_WARMUP_SECONDS = 3_600.0
MAX_WINDOW_SECONDS = 60.0
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_LR = 10.0
MAX_SEED = 2 ** 32 - 1
MAX_BUDGET_BYTES = 2 ** 40           # RAM/flash of a target profile: 1 TiB


def check_int(option: str, value, low: int, high: int) -> int:
    """``value`` as an int in [low, high], else UsageError naming ``option`` and the range."""
    if isinstance(value, bool):
        raise UsageError(f"{option} must be an integer in [{low}, {high}] (got {value!r})")
    if not isinstance(value, int):
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{option} must be an integer in [{low}, {high}] (got {value!r})") from None
        if not as_float.is_integer():
            raise UsageError(f"{option} must be an integer in [{low}, {high}] (got {value!r})")
        value = int(as_float)
    if not low <= value <= high:
        raise UsageError(f"{option} must be in [{low}, {high}] (got {value})")
    return int(value)


def check_float(option: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or (low, high]), else UsageError naming the range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    bracket = "(" if low_open else "["
    if not math.isfinite(number) or number > high or number < low or (low_open and number == low):
        raise UsageError(f"{option} must be a finite number in {bracket}{low:g}, {high:g}] (got {value!r})")
    return number


def _kind(mode: int) -> str | None:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def regular_file(path: str | os.PathLike, what: str, error: type[EdgenetError],
                 max_bytes: int | None = None) -> Path:
    """``path`` if it is a readable regular file of at most ``max_bytes``; else ``error`` (one line).

    Opened with O_NONBLOCK and checked with fstat, so a FIFO or a device is refused without blocking.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        if os.path.lexists(path):
            raise error(f"{path}: {what} is a broken symbolic link (its target does not exist)") from None
        raise error(f"{path}: no such {what}") from None
    except PermissionError:
        raise error(f"{path}: permission denied (cannot read the {what})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{path}: symbolic link loop (cannot read the {what})") from None
        if exc.errno == errno.ENXIO:   # a socket, or a FIFO's other end
            raise error(f"{path}: {what} is not a regular file") from None
        raise error(f"{path}: cannot open the {what} ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    kind = _kind(info.st_mode)
    if kind is not None:
        raise error(f"{path}: {what} is {kind}, not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise error(f"{path}: {what} is {info.st_size:,} bytes, more than the {max_bytes:,} allowed")
    return path
