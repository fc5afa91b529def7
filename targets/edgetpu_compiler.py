"""Run Coral's ``edgetpu_compiler`` when it is on PATH, and parse what it says.

The compiler exists only for x86-64 Linux (Debian package ``edgetpu-compiler`` from Coral's apt
repository); elsewhere :func:`compiler_command` gives the exact line to run on such a host.
``edgetpu_compiler -s -o OUT model.tflite`` writes ``OUT/model_edgetpu.tflite`` and
``OUT/model_edgetpu.log`` (a table: Operator, Count, Status) and prints a summary (Edge TPU
subgraphs, on-chip and off-chip memory for the parameters).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgenet.errors import TargetError
from edgenet.io import atomic_write_bytes, atomic_write_text

COMPILER = "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"
_ROW_RE = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
_VERSION_RE = re.compile(r"Edge TPU Compiler version (\S+)")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


@dataclass(frozen=True)
class CompilerRow:
    op: str
    count: int
    status: str  # "Mapped to Edge TPU" or the reason it is not

    @property
    def mapped(self) -> bool:
        return self.status == MAPPED


@dataclass(frozen=True)
class CompilerResult:
    version: str | None
    rows: tuple[CompilerRow, ...]
    subgraphs: int | None
    total_ops: int | None
    on_chip_bytes: int | None      # parameters cached in the Edge TPU's 8 MB SRAM
    off_chip_bytes: int | None     # parameters streamed from the host at every inference
    compiled_model: str | None     # file name written into the output folder
    files: tuple[str, ...] = ()    # every file written into the output folder

    @property
    def mapped_ops(self) -> int:
        return sum(r.count for r in self.rows if r.mapped)

    @property
    def cpu_ops(self) -> int:
        return sum(r.count for r in self.rows if not r.mapped)

    def to_dict(self) -> dict:
        return {
            "version": self.version, "mapped_ops": self.mapped_ops, "cpu_ops": self.cpu_ops,
            "subgraphs": self.subgraphs, "total_ops": self.total_ops, "on_chip_bytes": self.on_chip_bytes,
            "off_chip_bytes": self.off_chip_bytes, "compiled_model": self.compiled_model,
            "files": list(self.files),
            "rows": [{"op": r.op, "count": r.count, "status": r.status} for r in self.rows],
        }


def _size(text: str | None) -> int | None:
    if not text:
        return None
    m = re.match(r"([\d.]+)\s*(B|KiB|MiB|GiB)", text.strip())
    return round(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def _field(text: str, label: str) -> str | None:
    m = re.search(rf"^{re.escape(label)}:\s*(.+?)\s*$", text, re.M)
    return m.group(1) if m else None


def parse_compiler_output(log: str, stdout: str = "") -> CompilerResult:
    """Parse the operation log table (and the printed summary, when given)."""
    rows = []
    in_table = False
    for line in log.splitlines():
        if line.strip().startswith("Operator") and "Status" in line:
            in_table = True
            continue
        m = _ROW_RE.match(line.strip()) if in_table else None
        if m:
            rows.append(CompilerRow(m.group(1), int(m.group(2)), m.group(3)))
    text = stdout + "\n" + log
    version = _VERSION_RE.search(text)
    subgraphs, total = _field(text, "Number of Edge TPU subgraphs"), _field(text, "Total number of operations")
    output = _field(text, "Output model") or _field(text, "Output")
    return CompilerResult(
        version=version.group(1) if version else None, rows=tuple(rows),
        subgraphs=int(subgraphs) if subgraphs and subgraphs.isdigit() else None,
        total_ops=int(total) if total and total.isdigit() else None,
        on_chip_bytes=_size(_field(text, "On-chip memory used for caching model parameters")),
        off_chip_bytes=_size(_field(text, "Off-chip memory used for streaming uncached model parameters")),
        compiled_model=Path(output).name if output else None,
    )


def compiler_command(model_path: str | Path, out_dir: str | Path) -> str:
    """The command that compiles the model for the Edge TPU (run it on an x86-64 Linux host)."""
    return shlex.join([COMPILER, "--show_operations", "--out_dir", str(out_dir), str(model_path)])


def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def run_compiler(model_path: str | Path, out_dir: str | Path, *, executable: str | None = None,
                 timeout: float = 300.0) -> CompilerResult:
    """Compile into a temporary folder, copy the Edge TPU model and log into ``out_dir`` atomically."""
    exe = executable or find_compiler()
    if exe is None:
        raise TargetError(f"{COMPILER} is not on PATH; run on an x86-64 Linux host: "
                          f"{compiler_command(model_path, out_dir)}")
    model_path, out_dir = Path(model_path), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="edgenet_edgetpu_") as tmp:
        try:
            proc = subprocess.run([exe, "--show_operations", "--out_dir", tmp, str(model_path)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{COMPILER} did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise TargetError(f"{COMPILER} could not start ({exc.strerror or exc})") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise TargetError(f"{COMPILER} failed on {model_path.name}: {lines[-1] if lines else 'no output'}")
        logs = sorted(Path(tmp).glob("*_edgetpu.log"))
        models = sorted(Path(tmp).glob("*_edgetpu.tflite"))
        log = logs[0].read_text(errors="replace") if logs else proc.stdout
        result = parse_compiler_output(log, proc.stdout)
        written = [atomic_write_bytes(out_dir / src.name, src.read_bytes()) for src in models]
        if logs:
            written.append(atomic_write_text(out_dir / logs[0].name, log))
    name = models[0].name if models else result.compiled_model
    return CompilerResult(result.version, result.rows, result.subgraphs, result.total_ops,
                          result.on_chip_bytes, result.off_chip_bytes, name, tuple(p.name for p in written))
