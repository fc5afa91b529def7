"""`edgenet models`: list the model zoo."""
from __future__ import annotations

import click

from edgenet.cli._common import debug_option, echo_out, json_option, print_json


@click.command("models")
@json_option
@debug_option
def command(as_json, debug):
    """List the architectures in the model zoo.

    \b
    Example:
      edgenet models --json
    """
    from edgenet.zoo import list_models

    entries = list_models()
    if as_json:
        print_json([{"name": e.name, "paper": e.paper} for e in entries])
        return
    width = max(len(e.name) for e in entries)
    echo_out("\n".join(f"{e.name.ljust(width)}  {e.paper}" for e in entries))
