"""Where the benchmark ran: CPU, cores, governor, temperature, runtime, memory, file hashes.

Everything is read from /proc and /sys where they exist (Linux, Raspberry Pi, Android with
Termux); what cannot be read is None, never an error.
"""
from __future__ import annotations

from edgenet.io import file_sha256  # noqa: F401  (re-exported: the benchmark's model hashes)

import os
import platform
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

# ARM "CPU part" numbers of /proc/cpuinfo -> core names (the Pi's 64-bit kernels print no model name)
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd4d": "Cortex-A715", "0xc07": "Cortex-A7",
    "0xc0f": "Cortex-A15",
}


# CPU features that decide how fast int8 (and float) kernels can be
_FEATURES = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
             "neon", "asimd", "asimdhp", "asimddp", "i8mm", "sve", "sve2", "bf16")
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True)
class Environment:
    hostname: str
    os: str
    machine: str
    cpu_model: str | None
    board: str | None
    cpu_features: tuple[str, ...]   # SIMD features that matter for the kernels (subset of _FEATURES)
    cpu_cores: int
    cpus_usable: int
    governor: str | None
    cpu_mhz_max: float | None
    temperature_c_start: float | None
    temperature_c_end: float | None
    load_average_1m: float | None    # at the start of the run
    load_average_1m_end: float | None  # at the end of the run (includes the benchmark's own threads)
    python: str
    numpy: str
    runtime: str
    runtime_version: str
    edgenet: str
    peak_rss_bytes: int | None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["cpu_features"] = list(self.cpu_features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Environment":
        known = {k: d.get(k) for k in cls.__dataclass_fields__}   # a newer writer's extra fields are ignored
        return cls(**{**known, "cpu_features": tuple(d.get("cpu_features") or ())})


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def cpu_model() -> str | None:
    """``model name`` from /proc/cpuinfo, else the ARM core name from ``CPU part``."""
    text = _read("/proc/cpuinfo")
    if text:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        if fields.get("model name"):
            return fields["model name"]
        part = fields.get("CPU part", "").lower()
        if part in _ARM_PARTS:
            return f"ARM {_ARM_PARTS[part]}"
        if fields.get("Hardware"):
            return fields["Hardware"]
    return platform.processor() or None


def cpu_features() -> tuple[str, ...]:
    """The SIMD features of /proc/cpuinfo (x86 ``flags``, ARM ``Features``) that matter for inference."""
    text = _read("/proc/cpuinfo") or ""
    found: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            found.update(value.split())
    return tuple(f for f in _FEATURES if f in found)


def board_model() -> str | None:
    """The board's name from the device tree (e.g. "Raspberry Pi 4 Model B Rev 1.4")."""
    return _read("/sys/firmware/devicetree/base/model") or None


def governor() -> str | None:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or None


def cpu_mhz_max() -> float | None:
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(khz) / 1000.0 if khz else None
    except ValueError:
        return None


def cpu_temperature_c() -> float | None:
    """The CPU's temperature from the thermal zone named like a CPU/SoC one (else zone 0)."""
    zones = sorted(Path("/sys/class/thermal").glob("thermal_zone*"))
    chosen = None
    for zone in zones:
        kind = (_read(str(zone / "type")) or "").lower()
        if any(word in kind for word in ("cpu", "soc", "x86_pkg", "coretemp")):
            chosen = zone
            break
    chosen = chosen or (zones[0] if zones else None)
    if chosen is None:
        return None
    raw = _read(str(chosen / "temp"))
    try:
        return round(int(raw) / 1000.0, 1) if raw else None
    except ValueError:
        return None


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB


def current_rss_bytes() -> int | None:
    statm = _read("/proc/self/statm")
    if not statm:
        return None
    try:
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, IndexError, OSError):
        return None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def collect(runtime_name: str, runtime_version: str, temperature_start: float | None,
            load_start: float | None) -> Environment:
    """The environment at the end of a run; temperature and load average at its start passed in."""
    import numpy

    from edgenet import __version__

    return Environment(
        hostname=socket.gethostname(), os=platform.platform(), machine=platform.machine(),
        cpu_model=cpu_model(), board=board_model(), cpu_features=cpu_features(), cpu_cores=os.cpu_count() or 1,
        cpus_usable=usable_cpus(), governor=governor(), cpu_mhz_max=cpu_mhz_max(),
        temperature_c_start=temperature_start, temperature_c_end=cpu_temperature_c(),
        load_average_1m=load_start, load_average_1m_end=load_average(), python=platform.python_version(), numpy=numpy.__version__,
        runtime=runtime_name, runtime_version=runtime_version, edgenet=__version__,
        peak_rss_bytes=peak_rss_bytes(),
    )
