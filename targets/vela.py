"""Compile an int8 model for an Arm Ethos-U NPU with vela and read its summary.

``vela --accelerator-config ethos-u55-128 --output-dir D model.tflite`` (PyPI ``ethos-u-vela``)
writes ``D/<model>_vela.tflite`` (the NPU part becomes one ``ethos-u`` custom op) and
``D/<model>_summary_<system>.csv``, and prints a network summary with the NPU and CPU operator
counts. Operators vela cannot place on the NPU stay as TFLite ops that the Cortex-M runs. The
optimised model gets the source model's TFLite metadata and associated files back
(:func:`edgenet.targets.metadata.copy_metadata`).
"""
from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgenet._deps import require
from edgenet.errors import ModelError, TargetError
from edgenet.io import atomic_write_bytes, atomic_write_text
from edgenet.targets.metadata import copy_metadata
from edgenet.targets.tflite_graph import read_tflite
from edgenet.targets.tflm import kib

VELA_CONFIG_FILE = "Arm/vela.ini"  # ships with ethos-u-vela
_COUNT_RE = {
    "cpu_ops": re.compile(r"^CPU operators = (\d+)", re.M),
    "npu_ops": re.compile(r"^NPU operators = (\d+)", re.M),
}
_CPU_WARNING_RE = re.compile(r"Warning \(supported operators\) operator: (\w+), ofm: '([^']*)'\s*\nReason: ([^\n]+)")
_SRAM_RE = re.compile(r"^Total SRAM used\s+([\d.]+) KiB", re.M)
_FLASH_RE = re.compile(r"^Total (?:Off-chip|On-chip) Flash used\s+([\d.]+) KiB", re.M)


@dataclass(frozen=True)
class CpuFallback:
    op: str          # TFLite operator type, e.g. "SIN"
    tensor: str      # its output tensor's name
    reason: str      # vela's reason, e.g. "Unsupported opType"


@dataclass(frozen=True)
class VelaReport:
    """vela's verdict on one model, judged against a target's budgets."""

    accelerator: str
    system_config: str | None
    memory_mode: str | None
    npu_ops: int
    cpu_ops: int
    cpu_fallbacks: tuple[CpuFallback, ...]
    sram_bytes: int             # peak SRAM (tensor arena) vela allocated
    flash_bytes: int            # weights + command stream in flash, by vela's count
    model_bytes: int            # size of the vela-optimised .tflite (what the firmware embeds)
    macs: int | None
    cycles: int | None
    estimated_ms: float | None  # vela's performance estimate for one inference
    model_ops: int = 0          # TFLite operators in the input model (vela counts its own, finer ops)
    ram_budget: int | None = None
    flash_budget: int | None = None
    allow_cpu_ops: bool = False

    @property
    def ok(self) -> bool:
        return self.failure() is None

    def failure(self) -> str | None:
        problems = []
        if self.cpu_ops and not self.allow_cpu_ops:
            names = ", ".join(dict.fromkeys(f.op for f in self.cpu_fallbacks)) or "see vela's log"
            problems.append(f"{self.cpu_ops} op(s) fall back to the CPU ({names})")
        if self.ram_budget is not None and self.sram_bytes > self.ram_budget:
            problems.append(f"SRAM {kib(self.sram_bytes)} > RAM budget {kib(self.ram_budget)}")
        if self.flash_budget is not None and self.model_bytes > self.flash_budget:
            problems.append(f"model {kib(self.model_bytes)} > flash budget {kib(self.flash_budget)}")
        return "; ".join(problems) or None

    def to_dict(self) -> dict:
        return {
            "accelerator": self.accelerator, "system_config": self.system_config,
            "memory_mode": self.memory_mode, "npu_ops": self.npu_ops, "cpu_ops": self.cpu_ops,
            "cpu_fallbacks": [{"op": f.op, "tensor": f.tensor, "reason": f.reason} for f in self.cpu_fallbacks],
            "sram_bytes": self.sram_bytes, "flash_bytes": self.flash_bytes, "model_bytes": self.model_bytes,
            "macs": self.macs, "cycles": self.cycles, "estimated_ms": self.estimated_ms,
            "model_ops": self.model_ops,
            "ram_budget": self.ram_budget, "flash_budget": self.flash_budget, "ok": self.ok,
        }


@dataclass(frozen=True)
class VelaOutput:
    report: VelaReport
    optimized_model: bytes
    summary_csv: str
    log: str


def parse_summary_csv(text: str) -> dict:
    """The first row of vela's summary CSV as a dict of strings."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise TargetError("vela wrote an empty summary CSV")
    return rows[0]


def parse_stdout(text: str) -> dict:
    """NPU/CPU operator counts, CPU fallbacks and memory use from vela's printed summary."""
    out: dict = {}
    for key, pattern in _COUNT_RE.items():
        m = pattern.search(text)
        if m:
            out[key] = int(m.group(1))
    out["cpu_fallbacks"] = tuple(CpuFallback(op, tensor, reason.strip())
                                 for op, tensor, reason in _CPU_WARNING_RE.findall(text))
    m = _SRAM_RE.search(text)
    if m:
        out["sram_bytes"] = round(float(m.group(1)) * 1024)
    flash = [float(v) for v in _FLASH_RE.findall(text)]
    if flash:
        out["flash_bytes"] = round(sum(flash) * 1024)
    return out


def _float(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def _error_line(stderr: str, stdout: str) -> str:
    lines = [ln.strip() for ln in (stderr or stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    line = (errors or lines or ["vela failed without output"])[-1]
    line = re.sub(r"^[\w.]*(Error|Exception):\s*", "", line).strip().strip("'\"")
    return re.sub(r"^Error:\s*", "", line).strip()


def run_vela(model_path: str | Path, accelerator: str, *, system_config: str | None = None,
             memory_mode: str | None = None, timeout: float = 600.0) -> VelaOutput:
    """Compile ``model_path`` with vela; the optimised model, the CSV and the parsed report."""
    require("ethosu.vela", extra="mcu", purpose="compiling for the Ethos-U NPU")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: no such model file")
    with tempfile.TemporaryDirectory(prefix="edgenet_vela_") as tmp:
        cmd = [sys.executable, "-m", "ethosu.vela", str(model_path.resolve()),
               "--accelerator-config", accelerator, "--output-dir", tmp, "--show-cpu-operations"]
        if system_config or memory_mode:  # vela accepts --config only with both of these
            cmd += ["--config", VELA_CONFIG_FILE]
        if system_config:
            cmd += ["--system-config", system_config]
        if memory_mode:
            cmd += ["--memory-mode", memory_mode]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise TargetError(f"vela did not finish within {timeout:.0f} s") from None
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise TargetError(f"vela failed on {model_path.name}: {_error_line(proc.stderr, proc.stdout)}")
        optimized = sorted(Path(tmp).glob("*_vela.tflite"))
        summaries = sorted(Path(tmp).glob("*_summary_*.csv"))
        if not optimized or not summaries:
            raise TargetError(f"vela wrote no optimised model or summary for {model_path.name}")
        csv_text = summaries[0].read_text()
        # vela rewrites the flatbuffer: the source's TFLite metadata and labels.txt are put back
        # (its input and output tensors are the source's), so the firmware's copy carries them too
        model_bytes = copy_metadata(model_path.read_bytes(), optimized[0].read_bytes())
    parsed, row = parse_stdout(proc.stdout), parse_summary_csv(csv_text)
    sram_kib, flash_kib = _float(row, "sram_memory_used"), _float(row, "off_chip_flash_memory_used")
    on_chip_kib = _float(row, "on_chip_flash_memory_used") or 0.0
    inference_s, macs, cycles = _float(row, "inference_time"), _float(row, "nn_macs"), _float(row, "cycles_total")
    report = VelaReport(
        accelerator=accelerator,
        system_config=row.get("system_config") or system_config,
        memory_mode=row.get("memory_mode") or memory_mode,
        npu_ops=parsed.get("npu_ops", 0),
        cpu_ops=parsed.get("cpu_ops", 0),
        cpu_fallbacks=parsed["cpu_fallbacks"],
        sram_bytes=round(sram_kib * 1024) if sram_kib is not None else parsed.get("sram_bytes", 0),
        flash_bytes=round(((flash_kib or 0.0) + on_chip_kib) * 1024) if flash_kib is not None
        else parsed.get("flash_bytes", 0),
        model_bytes=len(model_bytes),
        macs=int(macs) if macs is not None else None,
        cycles=int(cycles) if cycles is not None else None,
        estimated_ms=round(inference_s * 1000, 4) if inference_s is not None else None,
        model_ops=len(read_tflite(model_path).operators),
    )
    return VelaOutput(report, model_bytes, csv_text, log)


def save_vela_output(output: VelaOutput, out_dir: Path, model_name: str = "model_int8_vela.tflite") -> list[Path]:
    """Write the vela-optimised model and vela's summary CSV into ``out_dir`` (atomically)."""
    return [atomic_write_bytes(out_dir / model_name, output.optimized_model),
            atomic_write_text(out_dir / "vela_summary.csv", output.summary_csv)]
