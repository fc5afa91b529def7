"""Capture what native code (TensorFlow's converter, TFLM) prints to the process's stderr/stdout.

The TFLite converter writes MLIR diagnostics straight to file descriptor 2; we keep them out of the
user's terminal and attach the useful lines to the error when a conversion fails.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


class Captured:
    text: str = ""


@contextlib.contextmanager
def captured_fd(fd: int = 2):
    """Redirect ``fd`` into a temp file for the duration of the block; ``.text`` holds what was written."""
    result = Captured()
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield result
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            result.text = tmp.read().decode("utf-8", "replace")
