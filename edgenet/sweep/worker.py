"""One cell, run where a worker is (a pool process here, a Ray worker on any node).

:func:`run_cell` converts the cell with ``edgenet.convert`` into a private temporary folder,
optionally benchmarks it with ``edgenet.bench``, reads its figures from report.json, and returns
them with the folder's files as bytes: the driver writes them under DIR/cells/<id>/ (on a
cluster the worker's disk is not the driver's, so the files travel back with the result).
Nothing is left in the temporary folder. The driver's data loading is :mod:`edgenet.sweep.preload`.

A worker imports torch and onnxruntime once (:func:`prepare`); the float models are written without
TensorFlow (converters/tflite_writer).
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from edgenet.errors import EdgenetError, TargetError
from edgenet.config import Precision
from edgenet.sweep.cells import Cell, convert_precisions, precision_numbers
from edgenet.sweep.preload import (cell_inputs, map_memory, memory_key, preload,  # noqa: F401 (re-exported)
                                  preload_budget, save_memory)

BENCH_SETTINGS = {"warmup": 5, "warmup_seconds": 0.2, "runs": 20, "min_seconds": 1.0, "window": 200,
                  "window_seconds": 0.25}
"""The short benchmark windows of ``--bench`` (edgenet.bench keyword arguments)."""


def prepare(cpus: int | None = None) -> None:
    """Import torch and onnxruntime in this process (once): every cell's convert then runs in it.

    ``cpus``: this process runs cells of that many CPUs (a pool worker, a Ray task's
    ``num_cpus``): :func:`limit_cpus`.
    """
    if cpus:
        limit_cpus(cpus)
    if "torch" in sys.modules:
        return
    from edgenet._allocator import keep_freed_memory
    from edgenet._deps import require

    keep_freed_memory()   # a worker process is the sweep's own: its cells reuse each other's memory

    torch = require("torch")
    ort = require("onnxruntime")
    if cpus:
        torch.set_num_threads(cpus)
        _limit_onnxruntime(ort, cpus)
    _import_conversion()


def _import_conversion() -> None:
    """What a convert imports on its first call (onnx, LiteRT, the LiteRT Quantizer with SciPy,
    edgenet's stages: about 0.6 s), imported while the worker starts: the first cell of each worker
    then takes as long as the others (it took 1.0 s where the next ones took 0.36 s)."""
    from edgenet._deps import require
    from edgenet.errors import MissingDependencyError

    import edgenet.converters.pipeline  # noqa: F401
    import edgenet.converters.verdict_stage  # noqa: F401
    import edgenet.targets.checks  # noqa: F401

    require("onnx")
    require("ai_edge_litert.interpreter")
    try:
        from edgenet.converters.quantize import preload

        preload()
    except MissingDependencyError:   # a float-only environment: its cells say so themselves
        pass


def _limit_onnxruntime(ort, cpus: int) -> None:
    """onnxruntime sizes a session's thread pool by the physical cores and lets its threads spin
    while waiting; convert's sessions (export parity, validation) take their options from
    ``ort.SessionOptions()``, so in a worker of ``cpus`` CPUs that class gives ``cpus`` threads
    that do not spin (two workers on two cores each spinning two threads cost 30% more CPU)."""
    base = ort.SessionOptions
    if getattr(base, "_edgenet_cpus", None) == cpus:
        return
    base = getattr(base, "_edgenet_base", base)

    class SessionOptions(base):
        _edgenet_cpus, _edgenet_base = cpus, base

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.intra_op_num_threads = cpus
            self.inter_op_num_threads = 1
            self.add_session_config_entry("session.intra_op.allow_spinning", "0")

    ort.SessionOptions = SessionOptions


def limit_cpus(cpus: int) -> None:
    """Size this process's thread pools for ``cpus`` CPUs, as Ray's OMP_NUM_THREADS does for a task:
    convert sizes its LiteRT/XNNPACK pools (calibration, validation) by ``os.cpu_count()``, so
    without this two workers on two cores would each run a thread per core and slow each other.
    (Python 3.13's PYTHON_CPU_COUNT does the same for ``os.cpu_count``.) Only in worker processes."""
    os.environ["OMP_NUM_THREADS"] = str(cpus)
    os.cpu_count = lambda: cpus


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first if isinstance(exc, EdgenetError) else f"{type(exc).__name__}: {first}"


current_work: Path | None = None
"""The folder of the cell being converted in this process (removed by a worker whose parent died)."""
orphaned = False
"""Set in a pool worker whose sweep is gone: a cell still queued to it is not started."""


def run_cell(cell: Cell, memory: dict | None = None, threads: int | None = None,
             keep_files: bool = True, workdir: str | os.PathLike | None = None) -> tuple[dict, dict[str, bytes]]:
    """Convert (and with ``cell.bench`` benchmark) ``cell``; return ``(record, files)``.

    ``memory``: preloaded datasets for :func:`edgenet.data.datasets.served_from` (the calibration
    and evaluation arrays, loaded once by the driver). ``record`` is one results.jsonl line (see
    :mod:`edgenet.sweep.results`); ``files`` maps each output file's path relative to the cell
    folder to its bytes. Never raises for a failing cell: the record says ``status: failed`` and
    the error's first line. ``keep_files=False``: the figures only (``files`` is empty).
    ``workdir``: where the cell's temporary folder goes (default: the system's temp folder); the
    local executor uses the sweep's DIR/cells/, where a crash's leftovers are removed on re-run.
    """
    global current_work
    if orphaned:
        return {"id": cell.id, "label": cell.label, "status": "failed", "error": "the sweep was stopped"}, {}
    prepare(threads)
    t0 = time.perf_counter()
    base = {"id": cell.id, "label": cell.label, **_cell_fields(cell), "host": socket.gethostname(),
            "pid": os.getpid(), "started_unix": round(time.time(), 3)}
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    scratch = None
    if workdir is None:   # the temp folder: a locked scratch folder, swept by the next run if this one is killed
        from edgenet.scratch import ScratchDir

        scratch = ScratchDir("edgenet-cell-")
        work = current_work = scratch.path
    else:
        # named after this process: a killed sweep's worker has its folders removed once it is gone
        work = current_work = Path(tempfile.mkdtemp(prefix=f".edgenet-work-{os.getpid()}-", dir=workdir))
    from edgenet.scratch import redirect_temp

    try:
        try:
            # the cell's own temp files (TFLite Micro's, the quantizer's ...) inside its folder: removed with
            # it, also by a worker whose sweep was killed (_watch_parent), which cannot reach the system's
            (work / "tmp").mkdir()
            with redirect_temp(work / "tmp"):
                record = {**base, **_convert(cell, work / "out", memory, threads)}
        except TargetError as exc:
            if getattr(exc, "estimate", None) is not None:   # refused before converting: lower bounds
                record = {**base, **_cannot_fit(exc)}
            elif getattr(exc, "report", None) is None:
                raise
            else:
                record = {**base, **_does_not_fit(exc)}
        record["seconds"] = round(time.perf_counter() - t0, 3)
        files = _read_files(work / "out") if keep_files else {}
    except Exception as exc:  # any failure of one cell is recorded; the sweep goes on
        record = {**base, "status": "failed", "error": one_line(exc), "seconds": round(time.perf_counter() - t0, 3)}
        files = {}
    finally:
        if scratch is not None:
            scratch.close()
        else:
            shutil.rmtree(work, ignore_errors=True)
        current_work = None
    return record, files


def cell_files(cell: Cell) -> tuple[str, ...]:
    """The driver's files a cell reads besides the calibration data: its model file and a target
    profile given as a path (a zoo model and a built-in target need none)."""
    from edgenet.sweep.cells import _is_profile_path

    return tuple(p for p in ((cell.model if cell.kind != "zoo" else None),
                             (cell.target if _is_profile_path(cell.target) else None)) if p)


def run_cell_anywhere(cell: Cell, memory: dict | None, files: dict[str, bytes] | None,
                      threads: int | None = None) -> tuple[dict, dict[str, bytes]]:
    """:func:`run_cell` on a node that may not share the driver's disk (a Ray worker).

    ``files``: the bytes of :func:`cell_files`; where this node has no file at that path with the
    same content, the bytes are written to a temporary folder and converted from there. A
    calibration folder need not exist here: the preloaded arrays in ``memory`` are all the cell
    reads, and they are served under a stand-in empty folder. The record names the driver's paths.
    """
    import dataclasses
    import hashlib

    from edgenet.scratch import ScratchDir

    # locked while in use: a node killed mid-cell leaves it, and the next cell on that machine removes it
    scratch = ScratchDir("edgenet-files-")
    local = scratch.path
    try:
        moved = {}
        for path, blob in (files or {}).items():
            here = Path(path)
            if not (here.is_file() and hashlib.sha256(here.read_bytes()).digest() == hashlib.sha256(blob).digest()):
                copy = local / str(len(moved)) / here.name
                copy.parent.mkdir()
                copy.write_bytes(blob)
                moved[path] = str(copy)
        changes = {k: moved[v] for k, v in (("model", cell.model), ("target", cell.target)) if v in moved}
        if cell.calib not in ("digits", "shapes") and not Path(cell.calib).is_dir() and memory:
            stand_in = local / "calib"
            stand_in.mkdir()
            memory = {(str(stand_in), *key[1:]) if key[0] == cell.calib else key: v for key, v in memory.items()}
            changes["calib"] = str(stand_in)
        record, out = run_cell(dataclasses.replace(cell, **changes, id=cell.id) if changes else cell, memory, threads)
        record.update({"model": cell.model, "target": cell.target, "calib": cell.calib, "label": cell.label})
        return record, out
    finally:
        scratch.close()


def _cell_fields(cell: Cell) -> dict:
    return {"model": cell.model, "kind": cell.kind, "alpha": cell.alpha, "resolution": cell.resolution,
            "num_classes": cell.num_classes, "target": cell.target, "precision": cell.precision.value,
            "calib": cell.calib, "calib_samples": cell.calib_samples, "eval_samples": cell.eval_samples,
            "bench": cell.bench, "model_sha256_in": cell.model_sha256, "version": cell.version}


def _convert(cell: Cell, out: Path, memory: dict | None, threads: int | None) -> dict:
    import edgenet
    from edgenet.data.datasets import served_from
    from edgenet.io import json_safe

    kwargs = {}
    if cell.kind == "zoo":
        kwargs = {"alpha": cell.alpha, "resolution": cell.resolution, "num_classes": cell.num_classes}
    with served_from({} if memory is None else dict(memory)):
        # a damaged model is a finding of the sweep, not a failure of it: written, its verdict recorded
        # (a float32 cell has no quantized model, hence no verdict to allow: convert refuses the option)
        if cell.precision is not Precision.FLOAT32:
            kwargs["allow_degraded"] = True
        result = edgenet.convert(cell.model, target=cell.target, precisions=convert_precisions(cell.precision),
                                 calib=cell.calib, calib_samples=cell.calib_samples, eval_samples=cell.eval_samples,
                                 seed=cell.seed, out=out, **kwargs, **dict(cell.options))
    report = json_safe(result.report.to_dict())
    numbers = precision_numbers(report, cell.precision)
    model_file = out / numbers["file"]
    enforced = numbers["verdict"] == "fail" and (report.get("model") or {}).get("trained", True)
    damage = next((f"{o['name']}: {'; '.join(o['failures'])}" for q in report["validation"]["quantized"]
                   for o in q["outputs"] if not o["passed"]), None) if enforced else None
    record = {"status": "degraded" if enforced else "ok", "error": damage, **numbers,
              "trained": (report.get("model") or {}).get("trained", True), "sha256": _sha256(model_file),
              **_target_numbers(report.get("target") or {}),
              "float_top1": (report.get("accuracy") or {}).get("float_top1"),
              "mult_adds": _mult_adds(cell), "convert_seconds": report.get("total_seconds"), "latency_ms": None}
    if cell.bench:
        record["latency_ms"] = _bench(out, model_file, threads)
    return record


def _target_numbers(target: dict) -> dict:
    keys = ("arena_bytes", "flash_bytes", "ram_budget", "flash_budget", "estimated_ms", "npu_ops", "cpu_ops",
            "edgetpu_mappable_ops", "edgetpu_cpu_ops")
    return {"fits": target.get("ok"), **{k: target.get(k) for k in keys},
            "target_summary": target.get("summary")}


def _cannot_fit(exc: TargetError) -> dict:
    """A model refused before conversion: its int8 weights or one node's activations alone exceed
    the target's flash or RAM (edgenet.targets.estimate); those lower bounds are its figures."""
    est = exc.estimate
    return {"status": "does_not_fit", "error": one_line(exc), "file": None, "size_bytes": est.weight_bytes,
            "sqnr_db": None, "top1_agreement": None, "top1": None, "sha256": None, "fits": False,
            "arena_bytes": est.peak_activation_bytes, "flash_bytes": est.weight_bytes, "target_summary": one_line(exc),
            "float_top1": None, "mult_adds": None, "convert_seconds": None, "latency_ms": None}


def _does_not_fit(exc: TargetError) -> dict:
    """A model that converted but fails the target's checks: the target's own figures, no files."""
    target = exc.report.to_dict()
    return {"status": "does_not_fit", "error": one_line(exc), "file": target.get("model"),
            "size_bytes": target.get("model_bytes"), "sqnr_db": None, "top1_agreement": None, "top1": None,
            "sha256": None, **_target_numbers(target), "fits": False, "target_summary": exc.report.summary_line(),
            "float_top1": None, "mult_adds": None, "convert_seconds": None, "latency_ms": None}


def _mult_adds(cell: Cell) -> int | None:
    """Mult-adds of a zoo model or of the zoo model inside a checkpoint (None for model files)."""
    from edgenet.zoo import info

    if cell.kind == "zoo":
        options = dict(cell.options)
        return int(info(cell.model, alpha=cell.alpha, resolution=cell.resolution, num_classes=cell.num_classes,
                        in_channels=int(options.get("in_channels", 3))).mult_adds)
    if cell.kind == "checkpoint":
        from edgenet.checkpoint import load_checkpoint

        ckpt = load_checkpoint(cell.model)
        return int(info(ckpt.model, alpha=ckpt.alpha, resolution=ckpt.resolution, num_classes=ckpt.num_classes,
                        in_channels=ckpt.in_channels).mult_adds)
    return None


def _bench(out: Path, model_file: Path, threads: int | None) -> float:
    """p50 latency (ms) of the cell's model on this host, short windows."""
    from edgenet.benchmark import bench

    result = bench(model_file, threads=threads or 1, **BENCH_SETTINGS)
    return float(result.to_dict()["models"][0]["latency"]["p50_ms"])


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_files(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


__all__ = ["run_cell", "run_cell_anywhere", "prepare", "limit_cpus", "preload", "memory_key", "cell_files", "cell_inputs",
           "save_memory", "map_memory"]
