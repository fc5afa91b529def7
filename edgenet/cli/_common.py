"""Shared pieces of the CLI: the command table, --debug/--json options, progress output."""
from __future__ import annotations

import contextlib

import importlib
import json
import os
import sys
import time

import click

from edgenet.errors import EdgenetError

# command name -> module under edgenet.cli (each module defines ``command``)
COMMANDS = {
    "convert": "convert",
    "info": "info",
    "models": "models",
    "targets": "targets_cmd",
    "bench": "bench",
    "predict": "predict",
    "train": "train",
    "sweep": "sweep",
}


def load_command(name: str) -> click.Command:
    module = importlib.import_module(f"edgenet.cli.{COMMANDS[name]}")
    return module.command


debug_option = click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


class StdoutClosedError(EdgenetError):
    """stdout is closed (``>&-``) or its reader went away (``| head``): the output cannot be delivered."""

    exit_code = 1


def write_stdout(data: str | bytes) -> None:
    """Write a command's output to stdout and flush it now, so a closed stdout is found here (one
    line, exit 1) rather than at interpreter exit (a traceback). Text or bytes (e.g. a PNG)."""
    stream = sys.stdout
    try:
        if stream is None:
            raise OSError("stdout is closed")
        if isinstance(data, bytes):
            stream.flush()
            stream.buffer.write(data)
            stream.buffer.flush()
        else:
            stream.write(data)
            stream.flush()
    except (OSError, ValueError, AttributeError) as exc:
        # later writes and the exit-time flush go nowhere instead of raising again
        sys.stdout = open(os.devnull, "w")
        if isinstance(exc, BrokenPipeError):
            raise StdoutClosedError("stdout was closed by its reader before all output was written") from None
        raise StdoutClosedError("cannot write the output: stdout is closed (or not writable)") from None


def echo_out(text: str = "") -> None:
    """One block of text and a newline on stdout, via :func:`write_stdout`."""
    write_stdout(text + "\n")


def print_json(obj) -> None:
    echo_out(json.dumps(obj, indent=2))


_OPEN: list = []     # the StderrProgress whose line is open (a stage started, not yet done)
_WRITING = [0]       # > 0 while a progress line and its open flag change (:func:`_line_change`)
_PENDING: list[int] = []   # a signal that arrived meanwhile
_HELD = [False]            # the command's output is being committed: signals wait for its end
raise_for_signal = None    # set by the CLI: raises its Interrupted for a signal number


def defer_signal(signum: int) -> bool:
    """The CLI's signal handler asks first: True (the signal kept, raised when the change is done)
    while a progress line is being written with its open flag, so that a signal cannot fall between
    the text and the flag and leave the line open under the command's last line; and from
    :func:`hold_signals` on (the signal is then dropped: the command is finishing)."""
    if _WRITING[0] or _HELD[0]:
        _PENDING.append(signum)
        return True
    return False


def hold_signals() -> None:
    """From now until the command returns, a signal does not interrupt it (its output folder is being
    committed: interrupting after the commit would exit 130 with every file published)."""
    _HELD[0] = True


def release_signals() -> None:
    _HELD[0] = False
    _PENDING.clear()


@contextlib.contextmanager
def _line_change():
    _WRITING[0] += 1
    try:
        yield
    finally:
        _WRITING[0] -= 1
        if not _WRITING[0] and not _HELD[0] and _PENDING and raise_for_signal is not None:
            raise_for_signal(_PENDING.pop())


def end_progress_line() -> None:
    """End a progress line left open (a stage cut short by a signal or an error nobody caught), so
    that the command's last line starts on a line of its own."""
    while _OPEN:
        progress = _OPEN.pop()
        if progress.open_line:
            click.echo("", err=True)
            progress.open_line = False


class StderrProgress:
    """Progress lines on stderr: ``[2/6] cleanup ... 0.41 s``. Quiet mode prints nothing."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._t0 = None
        self._open_line = False

    @property
    def open_line(self) -> bool:
        return self._open_line

    @open_line.setter
    def open_line(self, value: bool) -> None:
        self._open_line = value
        if value and self not in _OPEN:
            _OPEN.append(self)
        elif not value and self in _OPEN:
            _OPEN.remove(self)

    def start(self, index: int, total: int, name: str, detail: str = "") -> None:
        self._t0 = time.perf_counter()
        if not self.quiet:
            extra = f" ({detail})" if detail else ""
            with _line_change():
                click.echo(f"[{index}/{total}] {name}{extra} ...", err=True, nl=False)
                sys.stderr.flush()
                self.open_line = True

    def done(self, seconds: float, note: str = "") -> None:
        if not self.quiet:
            extra = f"  {note}" if note else ""
            with _line_change():
                click.echo(f" {seconds:.2f} s{extra}", err=True)
                self.open_line = False

    def failed(self) -> None:
        """End a progress line cut short by an error, so the error gets a line of its own."""
        if self.open_line:
            with _line_change():
                click.echo(" failed", err=True)
                self.open_line = False

    def message(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=True)
