"""Before converting for a microcontroller: can this model fit at all?

The TFLite Micro check measures the real arena and flash use, but only after calibration,
quantization and validation have run (tens of seconds for a large model). Two lower bounds from the
ONNX graph decide the hopeless cases at once:

* flash: an int8 model holds at least one byte per weight (plus a little per op);
* RAM: while a layer runs, its input and output activations are both in the arena, so the arena is
  at least the largest (inputs + output) of any node, at one byte per int8 value.

Both are bounds from below: a model that passes may still not fit, which the real check then says.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from edgenet.errors import TargetError


@dataclass(frozen=True)
class Estimate:
    weight_bytes: int          # int8: one byte per weight value
    peak_activation_bytes: int  # int8: the largest inputs + output of one node
    peak_node: str


def lower_bounds(model: Any) -> Estimate:
    """Lower bounds of an int8 model's flash and arena from a static-shaped ONNX graph."""
    from edgenet._deps import require

    onnx = require("onnx")
    inits = {i.name: prod(i.dims) for i in model.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    sizes: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim] if vi.type.tensor_type.HasField("shape") else []
        if dims and all(d > 0 for d in dims):
            sizes[vi.name] = prod(dims)
    peak, where = 0, ""
    for node in inferred.graph.node:
        live = sum(sizes.get(n, 0) for n in node.input if n and n not in inits) + sum(sizes.get(n, 0) for n in node.output)
        if live > peak:
            peak, where = live, node.name or node.op_type
    return Estimate(sum(n for name, n in inits.items()), peak, where)


SMALLER_ZOO = "choose a smaller model: a lower --alpha or --resolution, or --fit"
SMALLER_OWN = ("export a smaller model (fewer channels, or a smaller input with --input-shape where the model "
               "allows it); --alpha, --resolution and --fit resize zoo models only")


def smaller_hint(zoo: bool) -> str:
    """What to do about a model over a target's budget: zoo models can be resized here, others not."""
    return SMALLER_ZOO if zoo else SMALLER_OWN


def check_budgets(profile, model: Any, zoo: bool = True) -> Estimate | None:
    """TargetError when the model cannot fit the profile's RAM or flash budget whatever the
    conversion does; None for profiles without budgets. ``zoo``: the model is a zoo model, which
    --alpha/--resolution/--fit can resize (the hint says so only then)."""
    if profile.ram_budget is None and profile.flash_budget is None:
        return None
    est = lower_bounds(model)
    error = None
    if profile.flash_budget is not None and est.weight_bytes > profile.flash_budget:
        error = TargetError(f"{profile.name}: the model cannot fit: its weights alone are {est.weight_bytes / 1024:,.0f} "
                            f"KiB as int8, over the {profile.flash_budget / 1024:,.0f} KiB flash budget (found before "
                            f"converting; {smaller_hint(zoo)})")
    elif profile.ram_budget is not None and est.peak_activation_bytes > profile.ram_budget:
        error = TargetError(f"{profile.name}: the model cannot fit: node {est.peak_node!r} alone needs "
                            f"{est.peak_activation_bytes / 1024:,.0f} KiB of int8 activations, over the "
                            f"{profile.ram_budget / 1024:,.0f} KiB RAM budget (found before converting; "
                            f"{smaller_hint(zoo)})")
    if error is not None:
        error.estimate = est          # the lower bounds, for callers that compare candidates (--fit, sweep)
        raise error
    return est
