"""Parsing and validating a target profile (TOML) into a frozen dataclass."""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgenet.config import IOType, Precision
from edgenet.errors import TargetError, UsageError

PROFILE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    device: str                                   # e.g. "Raspberry Pi 4/5 (aarch64)"
    runtime: str = "litert"                       # litert | tflm | edgetpu | vela
    precision: Precision = Precision.INT8         # default precision of `edgenet convert --target`
    input_type: IOType = IOType.INT8
    output_type: IOType = IOType.INT8
    num_threads: int = 4
    delegate: str = "xnnpack"                     # xnnpack | none | gpu | edgetpu | ethos-u
    per_channel: bool = True                      # per-channel weight quantization
    static_shapes: bool = True
    variants: tuple[Precision, ...] = ()          # extra artifacts, e.g. float16 for a GPU delegate
    ram_bytes: int | None = None                  # memory budget for the tensor arena (MCUs)
    flash_bytes: int | None = None                # budget for the model file (MCUs)
    accelerator: str | None = None                # e.g. vela's "ethos-u55-128"
    packagers: tuple[str, ...] = ()               # artifacts to emit: "labels", "c_array", ...
    checks: tuple[str, ...] = ()                  # checks to run: "tflm", "vela", "edgetpu"
    source: str = ""                              # file the profile was read from

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [x.value if hasattr(x, "value") else x for x in v]
            elif hasattr(v, "value"):
                v = v.value
            out[f.name] = v
        return out


def available_targets() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def _enum(cls, value, key, src):
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise TargetError(f"{src}: {key} = {value!r} is not one of: {choices}") from None


def _parse(data: dict, src: str) -> TargetProfile:
    known = {f.name for f in fields(TargetProfile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TargetError(f"{src}: unknown key(s) {', '.join(unknown)}")
    for key in ("name", "description", "device"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise TargetError(f"{src}: missing required string key '{key}'")
    kw = dict(data)
    for key, cls in (("precision", Precision), ("input_type", IOType), ("output_type", IOType)):
        if key in kw:
            kw[key] = _enum(cls, kw[key], key, src)
    if "variants" in kw:
        kw["variants"] = tuple(_enum(Precision, v, "variants", src) for v in kw["variants"])
    for key in ("packagers", "checks"):
        if key in kw:
            kw[key] = tuple(str(v) for v in kw[key])
    for key in ("ram_bytes", "flash_bytes", "num_threads"):
        if key in kw and (not isinstance(kw[key], int) or kw[key] <= 0):
            raise TargetError(f"{src}: {key} must be a positive integer")
    kw["source"] = src
    return TargetProfile(**kw)


def load_target(name_or_path: str | Path) -> TargetProfile:
    """A built-in profile by name, or a user's profile by path to a .toml file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"{path}: no such target profile file")
    else:
        path = PROFILE_DIR / f"{text}.toml"
        if not path.is_file():
            names = available_targets()
            close = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UsageError(f"unknown target {text!r}{hint} (available: {', '.join(names)})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: invalid TOML ({exc})") from exc
    return _parse(data, str(path))
