"""Run a model in the real TensorFlow Lite Micro interpreter and measure its tensor arena.

TFLM (PyPI ``tflite-micro``) prints from C++ straight to the process's stderr, and a kernel that
trips can take the process down, so each run happens in a child Python process: inputs go in and
outputs come back as .npz files, and the child's output is parsed for ``Arena allocation total N
bytes`` and for TFLM's own error lines (``Didn't find op for builtin opcode 'X'``, ``Failed to
resize buffer ... missing: N``). The arena is measured on the host, whose pointers are 64-bit;
on a 32-bit Cortex-M the arena's bookkeeping (tail) is a little smaller, the activations (head)
the same.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgenet._deps import require
from edgenet.errors import ModelError, TargetError
from edgenet.targets.tflite_graph import TfliteGraph, read_tflite

DEFAULT_ARENA = 8 * 1024 * 1024
MAX_ARENA = 1024 * 1024 * 1024

_CHILD = r"""
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model, arena, inputs_npz, outputs_npz = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
data = np.load(inputs_npz)
n_in, n_out, n_samples = int(data["n_inputs"]), int(data["n_outputs"]), int(data["n_samples"])
interp = runtime.Interpreter.from_file(model, arena_size=arena)
outs = [[] for _ in range(n_out)]
for s in range(n_samples):
    for i in range(n_in):
        interp.set_input(data["in%d" % i][s], i)
    interp.invoke()
    for j in range(n_out):
        outs[j].append(np.array(interp.get_output(j)))
np.savez(outputs_npz, **{"out%d" % j: np.stack(v) for j, v in enumerate(outs)})
sys.stdout.flush()
sys.stderr.flush()
interp.print_allocations()
"""

_NO_OUTPUT = "TFLM exited without output"
_ARENA_RE = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD_RE = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL_RE = re.compile(r"Arena allocation tail (\d+) bytes")
_MISSING_OP_RE = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_MISSING_CUSTOM_RE = re.compile(r"Didn't find op for custom opcode '([^']+)'")
_ARENA_SHORT_RE = re.compile(
    r"Failed to (?:resize buffer|allocate temp memory|allocate tail memory)\. "
    r"Requested: (\d+), available (\d+), missing: (\d+)")


@dataclass(frozen=True)
class TflmRun:
    """What one run in the TFLM interpreter showed."""

    ok: bool
    arena_bytes: int | None              # "Arena allocation total": what the model needs
    arena_head_bytes: int | None         # activations (non-persistent)
    arena_tail_bytes: int | None         # persistent: tensor structs, kernel buffers
    arena_size_given: int
    missing_ops: tuple[str, ...]         # ops with no TFLM kernel
    error: str | None                    # one line when not ok
    inputs: tuple[np.ndarray, ...]       # per model input: (samples, *shape)
    outputs: tuple[np.ndarray, ...]      # per model output: (samples, *shape)


def random_inputs(graph: TfliteGraph, samples: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Uniformly random inputs over each input's full integer range (floats in [-1, 1])."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in graph.input_tensors:
        dtype = np.dtype(t.dtype)
        shape = (samples, *t.shape)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype))
        else:
            arrays.append(rng.uniform(-1, 1, size=shape).astype(dtype))
    return tuple(arrays)


def _first_error_line(text: str) -> str:
    for pattern in (_MISSING_OP_RE, _MISSING_CUSTOM_RE):
        m = pattern.search(text)
        if m:
            return m.group(0)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("[RecordingMicroAllocator]")]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln):
            return ln
    return lines[-1] if lines else _NO_OUTPUT


def _run_child(model: Path, arena: int, inputs: Sequence[np.ndarray], n_outputs: int, tmp: Path,
               timeout: float) -> tuple[int, str, dict | None]:
    in_npz, out_npz = tmp / "inputs.npz", tmp / "outputs.npz"
    np.savez(in_npz, n_inputs=len(inputs), n_outputs=n_outputs, n_samples=len(inputs[0]) if inputs else 1,
             **{f"in{i}": a for i, a in enumerate(inputs)})
    out_npz.unlink(missing_ok=True)
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(arena), str(in_npz), str(out_npz)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{model}: TFLite Micro did not finish within {timeout:.0f} s") from None
    text = proc.stdout + "\n" + proc.stderr
    outputs = dict(np.load(out_npz)) if proc.returncode == 0 and out_npz.is_file() else None
    return proc.returncode, text, outputs


def run_tflm(model_path: str | Path, inputs: Sequence[np.ndarray] | None = None, *, samples: int = 4,
             seed: int = 0, arena_size: int | None = None, timeout: float = 120.0) -> TflmRun:
    """Run ``model_path`` in TFLite Micro on ``inputs`` (per input: ``(samples, *shape)``; random when
    None) and return the arena it allocated, the outputs, or why it could not run."""
    require("tflite_micro", purpose="running models in TensorFlow Lite Micro")
    model_path = Path(model_path)
    graph = read_tflite(model_path)
    inputs = tuple(inputs) if inputs is not None else random_inputs(graph, samples, seed)
    if len(inputs) != len(graph.inputs):
        raise ModelError(f"{model_path}: model has {len(graph.inputs)} input(s), got {len(inputs)}")
    arena = int(arena_size or max(DEFAULT_ARENA, 4 * graph.size_bytes))
    with tempfile.TemporaryDirectory(prefix="edgenet_tflm_") as tmp:
        while True:
            code, text, outs = _run_child(model_path, arena, inputs, len(graph.outputs), Path(tmp), timeout)
            short = _ARENA_SHORT_RE.search(text)
            if code != 0 and short and arena_size is None and arena < MAX_ARENA:
                arena = min(MAX_ARENA, max(2 * arena, arena + 2 * int(short.group(3))))
                continue
            break
    total, head, tail = (_int(r.search(text)) for r in (_ARENA_RE, _HEAD_RE, _TAIL_RE))
    missing = tuple(dict.fromkeys(_MISSING_OP_RE.findall(text) + _MISSING_CUSTOM_RE.findall(text)))
    if code == 0 and outs is not None:
        outputs = tuple(outs[f"out{j}"] for j in range(len(graph.outputs)))
        return TflmRun(True, total, head, tail, arena, (), None, inputs, outputs)
    error = _first_error_line(text)
    if code < 0:
        last = "" if error == _NO_OUTPUT else f"; last output: {error}"
        error = f"TFLite Micro crashed ({_signal_name(-code)}) while loading or running the model{last}"
    if short and not missing:
        error = f"tensor arena too small even at {arena:,} bytes ({short.group(0)})"
    return TflmRun(False, total, head, tail, arena, missing, error, inputs, ())


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _int(match) -> int | None:
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class TflmCheck:
    """The ``tflm`` check of a target: does the model run in TFLM and fit the RAM and flash budgets?"""

    runs: bool
    arena_bytes: int | None
    model_bytes: int
    ram_budget: int | None
    flash_budget: int | None
    ops: tuple[str, ...]
    missing_ops: tuple[str, ...]
    samples: int
    litert_top1_agreement: float | None  # fraction of samples where TFLM and LiteRT agree on top-1
    litert_max_abs_diff: int | None      # largest output difference, in quantized steps
    error: str | None

    @property
    def fits_ram(self) -> bool:
        return self.arena_bytes is not None and (self.ram_budget is None or self.arena_bytes <= self.ram_budget)

    @property
    def fits_flash(self) -> bool:
        return self.flash_budget is None or self.model_bytes <= self.flash_budget

    @property
    def ok(self) -> bool:
        return self.runs and self.fits_ram and self.fits_flash

    def failure(self) -> str | None:
        """One line saying why the model does not run or fit, or None."""
        if not self.runs:
            if self.missing_ops:
                return f"TFLite Micro has no kernel for {', '.join(self.missing_ops)}"
            return f"TFLite Micro could not run the model: {self.error}"
        problems = []
        if not self.fits_ram:
            problems.append(f"tensor arena {kib(self.arena_bytes)} > RAM budget {kib(self.ram_budget)}")
        if not self.fits_flash:
            problems.append(f"model {kib(self.model_bytes)} > flash budget {kib(self.flash_budget)}")
        return "; ".join(problems) or None

    def to_dict(self) -> dict:
        return {
            "runs": self.runs, "fits_ram": self.fits_ram, "fits_flash": self.fits_flash,
            "arena_bytes": self.arena_bytes, "model_bytes": self.model_bytes, "ram_budget": self.ram_budget,
            "flash_budget": self.flash_budget, "ops": list(self.ops), "missing_ops": list(self.missing_ops),
            "samples": self.samples, "litert_top1_agreement": self.litert_top1_agreement,
            "litert_max_abs_diff": self.litert_max_abs_diff, "error": self.error,
        }


def kib(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.2f} MiB"


def litert_outputs(model_path: Path, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...] | None:
    """The same inputs through LiteRT's built-in kernels (no XNNPACK), or None without a runtime."""
    from edgenet.errors import RuntimeNotFoundError
    from edgenet.runtime import make_interpreter

    try:
        interp = make_interpreter(model_path, num_threads=1, use_xnnpack=False)
    except RuntimeNotFoundError:
        return None
    ins, outs = interp.get_input_details(), interp.get_output_details()
    collected = [[] for _ in outs]
    for s in range(len(inputs[0])):
        for d, arr in zip(ins, inputs):
            interp.set_tensor(d["index"], arr[s])
        interp.invoke()
        for j, d in enumerate(outs):
            collected[j].append(np.array(interp.get_tensor(d["index"])))
    return tuple(np.stack(c) for c in collected)


def compare_top1(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Top-1 agreement and max |a - b| of two (samples, ...) output batches."""
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    agree = float(np.mean(a2.argmax(axis=1) == b2.argmax(axis=1)))
    diff = int(np.abs(a2.astype(np.int64) - b2.astype(np.int64)).max()) if a2.size else 0
    return agree, diff


def check_tflm(model_path: str | Path, ram_budget: int | None, flash_budget: int | None, *,
               samples: int = 4, seed: int = 0, compare_litert: bool = True) -> TflmCheck:
    """Run the model in TFLM, compare it with LiteRT on the same inputs, check the budgets."""
    model_path = Path(model_path)
    graph = read_tflite(model_path)
    run = run_tflm(model_path, samples=samples, seed=seed)
    error = run.error
    if not run.ok and "crashed" in (error or ""):
        error += _degenerate_scale_hint(graph)
    agreement = max_diff = None
    if run.ok and compare_litert and run.outputs:
        reference = litert_outputs(model_path, run.inputs)
        if reference is not None:
            agreement, max_diff = compare_top1(run.outputs[0], reference[0])
    return TflmCheck(run.ok, run.arena_bytes, graph.size_bytes, ram_budget, flash_budget,
                     tuple(graph.op_names()), run.missing_ops, samples, agreement, max_diff, error)


def _degenerate_scale_hint(graph: TfliteGraph) -> str:
    """TFLM's int8 kernels abort on activation scales that calibration collapsed to ~0."""
    tiny = [t for t in graph.tensors if not t.is_constant and t.scales and 0 < min(t.scales) < 1e-6]
    if not tiny:
        return ""
    t = min(tiny, key=lambda t: min(t.scales))
    return (f"; activation '{t.name}' has a collapsed quantization scale {min(t.scales):.2g} "
            "(calibrate with real data)")
