"""`edgenet targets`: the device profiles, as a table or one in detail."""
from __future__ import annotations

import click

from edgenet.cli._common import debug_option, echo_out, json_option, print_json


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:g} MiB"
    return f"{n / 1024:g} KiB"


def _budget(profile) -> str:
    if profile.ram_bytes is None and profile.flash_bytes is None:
        return "-"
    return f"RAM {_size(profile.ram_budget)} / flash {_size(profile.flash_budget)}"


def _delegate(profile) -> str:
    d = profile.delegate.value
    return "" if d in ("none", profile.runtime.value) else f" + {d}"


def _table(profiles) -> str:
    head = ("target", "device", "runtime", "precision", "I/O", "budget (model)")
    rows = [(p.name, p.device, p.runtime.value + _delegate(p),
             "+".join([p.precision.value, *(v.value for v in p.variants)]),
             f"{p.input_type.value}/{p.output_type.value}", _budget(p)) for p in profiles]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (head, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n\nDetails: edgenet targets NAME    Your own board: --target path/to/board.toml"


def _detail(p) -> str:
    d = p.to_dict()
    lines = [f"{p.name}: {p.description}", ""]
    order = ("device", "runtime", "delegate", "num_threads", "precision", "variants", "input_type",
             "output_type", "per_channel", "static_shapes", "ram_bytes", "ram_reserved_bytes",
             "flash_bytes", "flash_reserved_bytes", "accelerator", "vela_system_config", "vela_memory_mode",
             "allow_cpu_ops", "checks", "packagers", "source")
    width = max(len(k) for k in order)
    for key in order:
        value = d[key]
        if value is None or value == [] or (key.endswith("reserved_bytes") and not value):
            continue
        if key == "allow_cpu_ops" and not {"vela", "edgetpu"} & set(d["checks"]):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, int) and key.endswith("_bytes"):
            value = f"{value:,} ({_size(value)})"
        lines.append(f"  {key.ljust(width)}  {value}")
    if p.ram_budget is not None or p.flash_budget is not None:
        lines.append(f"  {'model budget'.ljust(width)}  {_budget(p)}")
    return "\n".join(lines)


@click.command("targets")
@click.argument("name", required=False)
@json_option
@debug_option
def command(name, as_json, debug):
    """List the target devices, or show one (NAME, or a path to your own .toml profile).

    \b
    Examples:
      edgenet targets
      edgenet targets cortex-m
      edgenet targets boards/my_board.toml --json
    """
    from edgenet.targets import available_targets, load_target

    if name:
        profile = load_target(name)
        if as_json:
            print_json({**profile.to_dict(), "ram_budget": profile.ram_budget,
                        "flash_budget": profile.flash_budget})
        else:
            echo_out(_detail(profile))
        return
    profiles = [load_target(n) for n in available_targets()]
    if as_json:
        print_json([{**p.to_dict(), "ram_budget": p.ram_budget, "flash_budget": p.flash_budget}
                    for p in profiles])
    else:
        echo_out(_table(profiles))
