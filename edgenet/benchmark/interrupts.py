"""SIGTERM and SIGHUP as KeyboardInterrupt while a remote benchmark runs, so its ``finally`` and
``except BaseException`` blocks clean the device up whichever way the run is stopped.

Composes with a caller that already handles these signals (e.g. a CLI that turns them into its own
KeyboardInterrupt subclass): a handler is installed only where the signal still has its default
action, only in the main thread, and the previous one is put back afterwards. SIGINT already
raises KeyboardInterrupt in Python; it is left alone.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM/SIGHUP; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


def _raise(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (if not handled by anyone yet) raise :class:`Terminated`."""
    installed: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
                installed[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)
