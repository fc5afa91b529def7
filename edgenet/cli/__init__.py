"""The ``edgenet`` command line: one thin file per command over a library call.

Errors from the library (``edgenet.errors.EdgenetError``) become one line on stderr and the
error's exit code; ``--debug`` (anywhere on the line) shows the traceback instead.
"""
from __future__ import annotations

import os
import sys

import click

from edgenet.cli._common import COMMANDS, load_command


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps --help fast and light)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        try:
            return load_command(name)
        except ImportError as exc:  # a command whose optional parts are missing still shows up
            return click.Command(name, help=f"(unavailable: {exc})")


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgenet", prog_name="edgenet")
def cli():
    """edgenet: PyTorch vision models to phones and microcontrollers.

    \b
    On the workstation (pip install "edgenet[convert]"):
      edgenet convert --target rpi --int8          MobileNetV1 -> out/model_int8.tflite
      edgenet info mobilenet_v1 --alpha 0.5        per-layer parameters and mult-adds
    On the device (pip install edgenet):
      edgenet bench out/                           int8 vs float latency and accuracy

    Add --debug to any command to see a traceback instead of a one-line error.
    """


def main(argv: list[str] | None = None) -> int:
    from edgenet.errors import EdgenetError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        cli.main(args=argv, prog_name="edgenet", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgenet: interrupted", err=True)
        return 130
    except click.ClickException as exc:  # usage errors: click's own one-line message
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except EdgenetError as exc:
        if debug:
            raise
        click.echo(f"edgenet: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("edgenet: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(
            f"edgenet: internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
            err=True,
        )
        return 70
    return 0


_NATIVE_RUNTIMES = ("tensorflow", "torch", "onnxruntime")


def run() -> None:
    """The console entry point: :func:`main`, then exit.

    Once TensorFlow or torch is loaded, the interpreter's normal shutdown (module teardown, thread
    pools, allocator) takes about 2 s after the work is done. Every file is already written and
    closed by then, so the process flushes its output and leaves without it.
    """
    code = main()
    if any(name in sys.modules for name in _NATIVE_RUNTIMES):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):   # a closed pipe (`edgenet ... | head`): nothing to deliver
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
