"""The ``edgenet`` command line: one thin file per command over a library call.

Errors from the library (``edgenet.errors.EdgenetError``) become one line on stderr and the
error's exit code; ``--debug`` (anywhere on the line) shows the traceback instead.

SIGTERM and SIGHUP end a command like Ctrl-C does: every cleanup runs (staging folders, the
temp folders), then one line ``edgenet: interrupted`` (``edgenet: interrupted (SIGTERM)`` /
``(SIGHUP)`` for those) and the shell's exit code for the signal (130 SIGINT, 143 SIGTERM, 129
SIGHUP). Once `edgenet convert` commits its output folder, a signal waits for the command's end
(exit 0, the files published), never exits with the files in place. The temp files of
``edgenet convert`` live in one folder of the process's own (:class:`edgenet.scratch.ScratchDir`),
which the next command removes if this one is killed.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys

import click

from edgenet.cli._common import COMMANDS, load_command


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps --help fast and light)."""

    def format_commands(self, ctx, formatter):
        """Each command with the first sentence of its help, whole (click would cut it at ~45 characters)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=200)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def list_commands(self, ctx):
        return list(COMMANDS)

    def resolve_command(self, ctx, args):
        """An unknown command gets the closest known names ('edgenet conver' -> did you mean 'convert'?)."""
        name = click.utils.make_str(args[0]) if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            import difflib

            close = difflib.get_close_matches(name, list(COMMANDS), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"no such command {name!r}{hint} (commands: {', '.join(COMMANDS)})")
        return super().resolve_command(ctx, args)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        try:
            return load_command(name)
        except ImportError as exc:  # a command whose optional parts are missing still shows up
            return click.Command(name, help=f"(unavailable: {exc})")


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110,
                                               "terminal_width": 110})
@click.version_option(package_name="edgenet", prog_name="edgenet")
def cli():
    """edgenet: PyTorch vision models to phones and microcontrollers.

    \b
    On the workstation (in edgenet's source folder: pip install torch==2.13.0 && pip install ".[convert]"):
      edgenet convert --target rpi --int8          MobileNetV1 -> out/model_int8.tflite
      edgenet info mobilenet_v1 --alpha 0.5        per-layer parameters and mult-adds
    On the device (pip wheel --no-deps -w dist . here, then on the device: pip install edgenet-*.whl):
      edgenet bench out/                           int8 vs float latency and accuracy

    Add --debug to any command to see a traceback instead of a one-line error.
    """


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP: like Ctrl-C, so that every
    ``finally`` and ``except BaseException`` cleanup runs. ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


_RECEIVED: list[int] = []
"""The signals this command received: a library may turn the Interrupted raised in its call into a
plain KeyboardInterrupt (Ray's ray.wait does), and the command still says which signal stopped it."""


def _on_signal(signum, frame) -> None:
    from edgenet.cli._common import defer_signal

    _RECEIVED.append(signum)
    for sig in _SIGNALS:            # the first signal wins: a second one must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    if not defer_signal(signum):    # a progress line half written: raised when it is whole
        _raise_interrupted(signum)


def _raise_interrupted(signum: int) -> None:
    raise Interrupted(signum)


def _install_handlers() -> dict | None:
    if sys.platform == "win32":
        return None
    from edgenet.cli import _common

    _common.raise_for_signal = _raise_interrupted
    try:
        return {sig: signal.signal(sig, _on_signal) for sig in _SIGNALS}
    except ValueError:              # not the main thread: leave signals alone
        return None


def _say(text: str) -> None:
    """One line on stderr, whatever state stderr is in (a progress line left open is ended first)."""
    try:
        from edgenet.cli._common import end_progress_line

        end_progress_line()
        click.echo(text, err=True)
    except (OSError, ValueError):
        pass


def _os_error_line(exc: OSError) -> str:
    from edgenet.pathcheck import _WHAT

    what = _WHAT.get(exc.errno, (exc.strerror or type(exc).__name__,))[0]
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"edgenet: error: {where}{what}".replace("\n", "\\n")


# commands whose temp files (their libraries' and child processes' too) all go into one folder of
# the command's own; the others keep the usual temp folder (e.g. Ray's socket paths under TMPDIR
# must stay short)
OWN_TEMP_FOLDER = frozenset({"convert"})


def _scratch(argv: list[str]):
    """A temp folder for this command, or None (another command; an unwritable temp folder: then
    each temp file goes where it would have gone anyway)."""
    if sys.platform == "win32":          # scratch folders rely on POSIX file locks
        return None
    from edgenet.scratch import ScratchDir, sweep_leftovers

    sweep_leftovers()                    # what killed runs left behind
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in OWN_TEMP_FOLDER:
        return None
    try:
        return ScratchDir("edgenet-run-")
    except OSError:
        return None


def _debug_after_command(argv: list[str]) -> list[str]:
    """``--debug`` is accepted anywhere on the line (``edgenet --debug convert ...`` too): each
    command has the option, so it is moved after the command name."""
    if "--debug" not in argv:
        return argv
    rest = [a for a in argv if a != "--debug"]
    command = next((i for i, a in enumerate(rest) if not a.startswith("-")), None)
    return rest if command is None else rest[:command + 1] + ["--debug"] + rest[command + 1:]


def main(argv: list[str] | None = None) -> int:
    from edgenet.errors import EdgenetError
    from edgenet.scratch import redirect_temp

    argv = _debug_after_command(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in argv
    _RECEIVED.clear()
    previous = _install_handlers()
    try:
        scratch = _scratch(argv)
        try:
            # every temp file of this command (its libraries' and child processes' too) goes there
            with redirect_temp(scratch.path) if scratch is not None else contextlib.nullcontext():
                # not cli.main(): it turns KeyboardInterrupt (and so Interrupted) into Abort after
                # printing an empty line
                with cli.make_context("edgenet", argv) as ctx:
                    cli.invoke(ctx)
        finally:
            if scratch is not None:
                scratch.close()
    except click.exceptions.Abort:
        _say("edgenet: interrupted")
        return 130
    except click.ClickException as exc:  # usage errors: one line, with where to look
        command = getattr(getattr(exc, "ctx", None), "command_path", "edgenet")
        hint = f" (see '{command} --help')" if isinstance(exc, click.UsageError) else ""
        _say(f"edgenet: error: {exc.format_message()}{hint}".replace("\n", " "))
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except EdgenetError as exc:
        if debug:
            raise
        _say(f"edgenet: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else (_RECEIVED[0] if _RECEIVED else signal.SIGINT)
        name = f" ({signal.Signals(signum).name})" if signum != signal.SIGINT else ""
        _say(f"edgenet: interrupted{name}")
        return 128 + signum
    except OSError as exc:
        if debug:
            raise
        if _stdout_unusable(exc):
            _say("edgenet: error: standard output is closed: the output could not be written in full")
        else:
            _say(_os_error_line(exc))
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _say(f"edgenet: internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)")
        return 70
    finally:
        if previous is not None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0


def _stdout_unusable(exc: OSError) -> bool:
    """Whether ``exc`` comes from writing to a standard output that nobody reads (EPIPE) or that
    was closed when the command started (see :func:`_guard_standard_fds`)."""
    if exc.errno == errno.EPIPE:
        return True
    if exc.errno != errno.EBADF:
        return False
    try:
        import fcntl

        return fcntl.fcntl(1, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    except (OSError, ImportError):
        return True


def _guard_standard_fds() -> None:
    """A closed fd 0, 1 or 2 (``edgenet ... >&-``) would be reused by the first file this
    process opens, and output meant for the terminal would land in it. Put /dev/null there
    instead: read-only on 0 and 1 (so writing the output fails, and is reported), write-only on 2."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_RDONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, mode)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    # Python starts with sys.stdout None when fd 1 was closed; click then drops output silently
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def _quiet_streams() -> None:
    """Flush stdout and stderr; a stream that cannot take it (closed pipe) is pointed at
    /dev/null so that the interpreter's own flush at exit has nothing to complain about."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):
                pass


_NATIVE_RUNTIMES = ("tensorflow", "torch", "onnxruntime")
# the workstation commands that allocate and free large arrays over and over (edgenet/_allocator.py);
# not bench, which runs on the device, where memory is scarcer than time
KEEP_FREED_MEMORY = frozenset({"convert", "sweep"})


def run() -> None:
    """The console entry point: :func:`main`, then exit.

    Once TensorFlow or torch is loaded, the interpreter's normal shutdown (module teardown, thread
    pools, allocator) takes about 2 s after the work is done. Every file is already written and
    closed by then, so the process flushes its output and leaves without it.
    """
    _guard_standard_fds()
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command in KEEP_FREED_MEMORY:
        from edgenet._allocator import keep_freed_memory

        keep_freed_memory()             # freed arrays stay in the heap for the next ones (see there)
    code = main()                       # every temp folder is removed by now
    if any(name in sys.modules for name in _NATIVE_RUNTIMES):
        _quiet_streams()
        os._exit(code)
    _quiet_streams()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
