"""Running converted models outside edgenet: LiteRT interpreters on the .tflite files, onnxruntime on
the original .onnx, the precision of every op of a .tflite, and ``edgenet convert`` as a user runs it."""
from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

CONVERT_OPS = {"QUANTIZE", "DEQUANTIZE"}
PRECISION_OF = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "int8", np.dtype(np.int16): "int16",
                np.dtype(np.float32): "float", np.dtype(np.float16): "float"}


def _interpreter(path: Path, delegate: bool = True):
    """LiteRT interpreter; ``delegate=False``: the builtin kernels only (no XNNPACK, whose DELEGATE node
    would replace the ops it takes in the op listing)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(path), num_threads=2, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    return it


def op_precisions(path: Path) -> dict:
    """Precision of every op of a .tflite, by the type of its first output tensor.

    Returns {"ops": total, "int8": n, "int16": n, "float": n, "convert": n (QUANTIZE/DEQUANTIZE),
    "other": n (integer index outputs etc.), "not_int8": {"SOFTMAX:float": n, ...}}.
    """
    it = _interpreter(path, delegate=False)
    dtype = {t["index"]: np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    counts: Counter = Counter()
    not_int8: Counter = Counter()
    ops = it._get_ops_details()   # noqa: SLF001 (the interpreter's only per-op listing)
    for op in ops:
        if op["op_name"] in CONVERT_OPS:
            counts["convert"] += 1
            continue
        outs = [o for o in op["outputs"] if o >= 0]
        kind = PRECISION_OF.get(dtype.get(outs[0]) if outs else None, "other")
        counts[kind] += 1
        if kind != "int8":
            not_int8[f"{op['op_name']}:{kind}"] += 1
    return {"ops": len(ops), **{k: counts.get(k, 0) for k in ("int8", "int16", "float", "convert", "other")},
            "not_int8": dict(sorted(not_int8.items()))}


def run_tflite(path: Path, x: np.ndarray, onnx_shape: Sequence[int], join_axis: int | None = None
               ) -> tuple[list[np.ndarray], float]:
    """Run a one-input, one-output .tflite on each example of ``x`` (N, C, H, W float32, ONNX layout),
    quantizing an integer input and dequantizing an integer output with their scale and zero point.
    ``join_axis``: the model's one output was written as parts (edgenet's split head, report.json's
    ``split_outputs``): its outputs, dequantized, are concatenated along this axis, as the app does.

    Returns (outputs in ONNX layout ``onnx_shape``, one per example; mean seconds per invoke).
    Raises ValueError when the output cannot be brought to ``onnx_shape``.
    """
    it = _interpreter(path)
    inp, outs = it.get_input_details()[0], it.get_output_details()
    if join_axis is None:
        outs = outs[:1]
    nhwc = len(inp["shape"]) == 4 and tuple(inp["shape"][1:]) == tuple(x.shape[2:]) + (x.shape[1],)
    results, seconds = [], 0.0
    for example in x:
        a = example[None].transpose(0, 2, 3, 1) if nhwc else example[None]
        if np.dtype(inp["dtype"]) != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / scale) + zero, info.min, info.max)
        it.set_tensor(inp["index"], a.astype(inp["dtype"]))
        t0 = time.perf_counter()
        it.invoke()
        seconds += time.perf_counter() - t0
        parts = []
        for out in outs:
            y = it.get_tensor(out["index"])
            if np.dtype(out["dtype"]) != np.float32:
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            parts.append(y)
        y = parts[0] if join_axis is None else np.concatenate(parts, axis=join_axis)
        results.append(_onnx_layout(y, tuple(onnx_shape)))
    return results, seconds / max(len(x), 1)


def _onnx_layout(y: np.ndarray, shape: tuple) -> np.ndarray:
    if y.shape == shape:
        return y
    if y.ndim == 4 and y.transpose(0, 3, 1, 2).shape == shape:
        return y.transpose(0, 3, 1, 2)
    raise ValueError(f"a .tflite output of shape {list(y.shape)} does not match ONNX's {list(shape)}")


def run_onnx(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """The original .onnx in onnxruntime (CPU), one example at a time: the float reference's reference."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: example[None]})[0] for example in x]


def convert(model: Path, input_shape: Sequence[int], args: Sequence[str], calib: Path, out: Path, *,
            target: str, calib_samples: int, eval_samples: int, extra: Sequence[str]) -> tuple[dict | None, str, float]:
    """``python -m edgenet convert`` (the CLI a user runs) with --int8 --allow-degraded.

    Returns (report.json as a dict or None on failure, the last stderr line on failure else "", wall seconds).
    """
    cmd = [sys.executable, "-m", "edgenet", "convert", str(model), "--input-shape", ",".join(map(str, input_shape)),
           *args, "--int8", "--target", target, "--calib", str(calib), "--calib-samples", str(calib_samples),
           "--eval-samples", str(eval_samples), "--allow-degraded", "--out", str(out), "--force", "-q", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode or not (out / "report.json").is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"edgenet convert exited with {done.returncode}", wall
    import json

    return json.loads((out / "report.json").read_text()), "", wall
