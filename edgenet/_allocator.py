"""Keep the memory a command frees for its next arrays (glibc's malloc, Linux).

A conversion allocates and frees arrays of tens of MB many times over (calibration batches,
activations read back from LiteRT, serialized ONNX and TFLite models). glibc serves every block
above its mmap threshold (at most 32 MB, adjusted at run time) with a fresh ``mmap`` and returns it
with ``munmap`` when freed, so the next array of that size faults its pages in again: on the
development VMs that is 0.2-0.3 s for 120 MB when the host has to back the pages, and a zoo
MobileNetV1 ``convert --int8`` spends about 0.4 s of its 5 s there
(``benchmarks/convert_speed.py``). Raising the threshold and the trim threshold keeps freed blocks
in the heap, where the next array reuses them. The cost is memory: freed blocks are not handed
back until the command ends, and the heap fragments, so the peak grows -- YOLOv8n at 800x608
(`convert --int8`) peaked at 1.52-1.56 GB against 1.18-1.35 GB, and took 15.3 s against 18.5 s; the
zoo MobileNetV1 0.25/96, 422 MB against 410 MB. That suits a workstation's command: only
``edgenet convert`` and ``edgenet sweep`` (edgenet.cli.run) and the sweep's worker processes ask for
it, never ``import edgenet`` and not ``edgenet bench``, which runs on the device.

The same settings as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment
(glibc's mallopt(3)); a C library without ``mallopt`` (musl, macOS) is left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30     # blocks below 1 GiB come from the heap (and go back to it when freed)
TRIM_THRESHOLD = 2**31 - 1  # the heap's free top is kept (2 GiB, mallopt's largest: in practice never trimmed)
TOP_PAD = 64 << 20           # grow the heap 64 MiB at a time (fewer brk calls)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse; True when it accepted (False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    return mallopt(_M_TOP_PAD, TOP_PAD) == 1 and ok
