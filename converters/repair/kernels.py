"""What a runtime can run an op in, from the kernel table beside the target profiles
(``targets/kernels.toml``: per runtime, the TFLite builtin ops with int16x8 kernels and whether float
ops run at all), and the promotion an op may get on a target.

An op of an int8 model can be *promoted*: to int16 activations (a16w8: int8 weights, int16
activations, int64 bias) where the target's runtime has that op's int16 kernel, or to float where the
runtime runs float ops (LiteRT on a CPU; never TFLite Micro, the Edge TPU or vela's NPU). The order of
the two is the profile's ``repair`` setting (``targets/profile.py``)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgenet.config import OpPrecision   # int16 (a16w8) or float: the quantizer's per-op choice
from edgenet.errors import TargetError


@dataclass(frozen=True)
class RuntimeKernels:
    """One runtime's row of the kernel table."""

    runtime: str
    int16: frozenset[str]     # TFLite builtin op names with an int16x8 kernel
    float: bool               # float ops run at all

    def allows(self, op: str, precision: OpPrecision) -> bool:
        return self.float if precision is OpPrecision.FLOAT else op in self.int16


@lru_cache(maxsize=None)
def kernel_table(path: str | None = None) -> Mapping[str, RuntimeKernels]:
    """The table read from ``path`` (default: targets/kernels.toml); TargetError when malformed."""
    from edgenet.targets.profile import KERNEL_TABLE

    src = str(path or KERNEL_TABLE)
    try:
        with open(src, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"{src}: cannot read the kernel table ({exc})") from exc
    table = {}
    for runtime, row in data.items():
        if not isinstance(row, dict) or not isinstance(row.get("float"), bool) \
                or not isinstance(row.get("int16"), list) or not all(isinstance(o, str) for o in row["int16"]):
            raise TargetError(f"{src}: [{runtime}] needs float = true/false and int16 = [op names]")
        table[runtime] = RuntimeKernels(runtime, frozenset(row["int16"]), row["float"])
    return table


def runtime_kernels(runtime: str) -> RuntimeKernels:
    table = kernel_table()
    if runtime not in table:
        raise TargetError(f"targets/kernels.toml has no row for runtime {runtime!r}")
    return table[runtime]


def promotions(ops: Iterable[str], kernels: RuntimeKernels, order: Iterable[str],
               supported: Iterable[OpPrecision]) -> tuple[tuple[OpPrecision, ...], str]:
    """The promotions in ``order`` (the profile's repair steps: "int16", "float", "split") that the
    quantizer ``supported`` and the runtime allows for every op type in ``ops`` (one group is
    promoted together), in that order; and why the others are not (one phrase, "" when none is
    refused)."""
    ops, supported = tuple(ops), set(supported)
    allowed, why = [], []
    for step in order:
        step = getattr(step, "value", step)
        if step not in (OpPrecision.INT16.value, OpPrecision.FLOAT.value):
            continue
        precision = OpPrecision(step)
        missing = [o for o in ops if not kernels.allows(o, precision)]
        if precision not in supported:
            why.append(f"the quantizer in use cannot make single ops {precision.value}")
        elif missing:
            why.append(f"{kernels.runtime} runs no float ops" if precision is OpPrecision.FLOAT else
                       f"{kernels.runtime} has no int16 kernel for {', '.join(sorted(set(missing)))}")
        else:
            allowed.append(precision)
    if not allowed and not why:
        why.append("the target's repair order allows no promotion")
    return tuple(allowed), "; ".join(why)


def promotion(ops: Iterable[str], kernels: RuntimeKernels, order: Iterable[str],
              supported: Iterable[OpPrecision]) -> tuple[OpPrecision | None, str]:
    """The first of :func:`promotions` (None, with why, when there is none)."""
    allowed, why = promotions(ops, kernels, order, supported)
    return (allowed[0], "") if allowed else (None, why)
