"""The conversion pipeline: the stages of `edgenet convert`, in order.

Each stage is a function from one artifact to the next (see the sibling modules); this module
runs them, records their times and findings in the report, and writes the outputs. Files are
staged in a hidden folder beside ``--out`` and moved in (one atomic rename per file) only after
every stage, target checks included, has succeeded.
"""
from __future__ import annotations

import os
import shutil
import time
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from converters.sources import SourceModel, check_source, load_source
from edgenet.config import ConvertOptions, IOType, Precision
from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError, UsageError
from edgenet.report import ConvertReport, Sizes, StageTime, Validation

MIN_CALIB_WARN = 100


class Stages:
    """Runs named stages, timing each and telling a progress callback."""

    def __init__(self, total: int, progress: Callable | None):
        self.times: list[StageTime] = []
        self.total = total
        self.progress = progress

    def run(self, name: str, fn, *args, detail: str = "", **kwargs):
        if self.progress:
            self.progress("start", len(self.times) + 1, self.total, name, detail)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        self.times.append(StageTime(name, round(dt, 3)))
        if self.progress:
            self.progress("done", len(self.times), self.total, name, f"{dt:.2f}")
        return result


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("edgenet", "torch", "onnx", "onnxruntime", "tensorflow-cpu", "tensorflow", "ai-edge-litert"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def check_inputs(opts: ConvertOptions) -> None:
    """Cheap checks of everything the user named, before any slow stage starts."""
    check_source(opts)  # zoo name + hyper-parameters, model files, module:function + --input-shape
    if opts.calib not in ("digits", "shapes"):
        folder = Path(opts.calib)
        if not folder.is_dir():
            raise DataError(f"--calib {opts.calib}: not a built-in dataset (digits, shapes) and no such folder "
                            "(the folder is missing)")
    if opts.calib_samples < 1:
        raise UsageError("--calib-samples must be at least 1")
    if opts.eval_samples < 1:
        raise UsageError("--eval-samples must be at least 1")
    if opts.equalize and not opts.int8:
        raise UsageError("--equalize prepares the model for int8 quantization; it does nothing with --float")


# -- data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineData:
    calib: np.ndarray
    eval_x: np.ndarray
    eval_labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    info: dict


def load_data(opts: ConvertOptions, pre: Preprocess) -> PipelineData:
    from edgenet.data.datasets import load_dataset

    if opts.calib_samples < 1:
        raise UsageError("--calib-samples must be at least 1")
    spec = opts.calib
    builtin = spec in ("digits", "shapes")
    if builtin:
        calib = load_dataset(spec, pre, split="calib", limit=opts.calib_samples, seed=opts.seed)
        held = load_dataset(spec, pre, split="test", limit=opts.eval_samples, seed=opts.seed)
        calib_x, ev = calib.x, held
        eval_x, eval_y, skipped = held.x, held.labels, calib.skipped
    else:
        whole = load_dataset(spec, pre, split="calib", limit=None, seed=opts.seed)
        n = len(whole.x)
        n_eval = min(opts.eval_samples, n // 4)
        order = np.random.default_rng(opts.seed).permutation(n)
        eval_idx, calib_idx = np.sort(order[:n_eval]), np.sort(order[n_eval:])[: opts.calib_samples]
        calib_x, eval_x = whole.x[calib_idx], whole.x[eval_idx]
        eval_y = None if whole.labels is None else whole.labels[eval_idx]
        ev, skipped = whole, whole.skipped
    if len(calib_x) == 0:
        raise DataError(f"calibration data {spec!r} holds no usable image")
    if len(eval_x) == 0:  # a tiny folder: validate on the calibration images rather than on nothing
        eval_x, eval_y = calib_x[: opts.eval_samples], None
    info = {"dataset": spec, "samples": int(len(calib_x)), "eval_samples": int(len(eval_x)),
            "skipped_images": int(skipped)}
    return PipelineData(calib_x, eval_x, eval_y, ev.class_names, info)


# -- the pipeline ---------------------------------------------------------------------------
def run(opts: ConvertOptions, progress: Callable | None = None):
    from converters.tf_worker import tf_stages
    from targets import load_target

    profile = load_target(opts.target)
    check_inputs(opts)
    # TensorFlow starts loading now, in a child process, while this one loads torch and exports
    tf_side = tf_stages(in_process=opts.fit)   # --fit builds its candidates here: TF loads here anyway
    try:
        result = _run(opts, progress, profile, tf_side)
    except BaseException:
        tf_side.release(failed=True)
        raise
    tf_side.release()
    return result


def _run(opts: ConvertOptions, progress: Callable | None, profile, tf_side):
    from converters.passes import ONNX_PASSES
    from converters import validate
    from edgenet.api import ConvertResult
    from edgenet.inference import TFLiteModel, op_counts
    from edgenet.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    notes: list[str] = []
    int8 = opts.int8
    variants = tuple(v for v in profile.variants if v is Precision.FLOAT16)
    stages = Stages(7 + len(ONNX_PASSES) + int8 * (1 + opts.layer_report) + len(variants) + opts.fit
                     + 2 * opts.equalize, progress)
    from converters.tf_worker import InProcessTF

    stages.run("load libraries", _import_libraries, not opts.model.is_onnx_file, tf_side,
               detail="" if isinstance(tf_side, InProcessTF) else "TensorFlow in a worker process")
    fit = None
    if opts.fit:
        opts, fit = stages.run("fit", fit_to_target, opts, profile, detail=f"{profile.name} budgets")

    source = stages.run("export" if not opts.model.is_onnx_file else "load onnx", load_source, opts,
                        detail=opts.model.source)
    data = stages.run("data", load_data, opts, source.preprocess, detail=opts.calib)
    if int8 and data.info["samples"] < MIN_CALIB_WARN:
        notes.append(f"only {data.info['samples']} calibration images (fewer than {MIN_CALIB_WARN}): "
                     "int8 ranges may not cover real inputs")
    if data.info["skipped_images"]:
        notes.append(f"{data.info['skipped_images']} image(s) could not be decoded and were skipped")
    model, pass_stats = source.onnx, {}
    for graph_pass in ONNX_PASSES:
        model, pass_stats[graph_pass.name] = stages.run(graph_pass.name.replace("_", " "), graph_pass.run, model)
    clean_stats, bn = pass_stats["cleanup"], pass_stats["bn_fold"]
    per_channel = profile.per_channel if opts.per_tensor is None else not opts.per_tensor
    graph = stages.run("onnx -> tf", tf_side.onnx_to_tf, model)
    float_bytes = stages.run("tflite float32", tf_side.float_tflite)
    variant_bytes = {v: stages.run(f"tflite {v.value}", tf_side.float_tflite, v) for v in variants}
    # the int8 model is quantized from this float model: the user's own, or with --equalize a
    # rescaled, bias-corrected twin (model_float.tflite and validation stay with the user's model)
    quant_source, equalized = float_bytes, None
    if opts.equalize:
        from converters.equalize import ClipPolicy, equalize

        eq_model, equalized = stages.run("equalize", equalize, model, [_to_onnx_layout(data.calib, source)],
                                         per_channel=per_channel, clip=ClipPolicy(opts.equalize_clip))
        notes.extend(equalized.notes)
        quant_source = stages.run("tflite float32 (equalized)", tf_side.float_tflite_of, eq_model)
    int8_result = None
    if int8:
        int8_result = stages.run("tflite int8", tf_side.int8_tflite, quant_source, [data.calib],
                                 io_type=opts.io_type if opts.io_type else profile.input_type,
                                 per_channel=per_channel, method=opts.calib_method,
                                 detail=f"{data.info['samples']} samples, {opts.calib_method.value}")

    def _validate():
        threads = os.cpu_count()
        f_outs = TFLiteModel(float_bytes, threads).predict_all(data.eval_x)
        onnx_outs = validate.onnx_outputs(model, data.eval_x, graph.inputs[0].channels_last)
        fcs = [validate.check_float(o, f, info.channels_last)
               for o, f, info in zip(onnx_outs, f_outs, graph.outputs)]
        q_outs = ics = None
        if int8_result:
            q_outs = TFLiteModel(int8_result.model, threads).predict_all(data.eval_x)
            ics = [validate.check_int8(f, q) for f, q in zip(f_outs, q_outs)]
        acc = None
        if data.eval_labels is not None and source.class_names is not None:
            if data.class_names is not None and tuple(data.class_names) != tuple(source.class_names):
                raise DataError(f"evaluation data classes {list(data.class_names)[:10]} do not match the "
                                f"model's classes {list(source.class_names)[:10]}")
            acc = validate.accuracy(f_outs[0], None if q_outs is None else q_outs[0], data.eval_labels)
        outputs = tuple(validate.OutputCheck(info.name, fc.max_abs_err, fc.rel_err, ic.sqnr_db if ic else None)
                        for info, fc, ic in zip(graph.outputs, fcs, ics or [None] * len(fcs)))
        checked = Validation(max(fc.max_abs_err for fc in fcs), max(fc.rel_err for fc in fcs),
                             ics[0].top1_agreement if ics else None,
                             min(ic.sqnr_db for ic in ics) if ics else None, fcs[0].samples, outputs)
        return checked, acc

    checked, acc = stages.run("validate", _validate)
    layers = None
    if int8_result and opts.layer_report:
        # layer by layer against the float model it was quantized from (equalization rescales
        # channels inside the network, so the user's model has other intermediate values)
        layers = stages.run("per-layer error", tf_side.layer_sqnr, quant_source, int8_result.model,
                            data.eval_x[:8])

    staging = Path(tempfile.mkdtemp(prefix=".edgenet-", dir=_parent(opts.out)))
    try:
        files = _write_outputs(staging, source, model, float_bytes, int8_result, data, opts)
        for v, blob in variant_bytes.items():
            atomic_write_bytes(staging / f"model_{v.value}.tflite", blob)

        def _target():
            from targets.checks import run_target

            return run_target(profile, staging, staging / "model_int8.tflite" if int8_result else None,
                              staging / "model_float.tflite", source.class_names)

        target_report = stages.run("target " + profile.name, _target)
        int8_ops = op_counts(int8_result.model) if int8_result else {}
        float_ops = op_counts(float_bytes)
        report = ConvertReport(
            model={**source.info, "name": source.name, "input_shape": list(source.input_shape),
                   "tflite_input_shape": list(graph.inputs[0].tf_shape),
                   "onnx_ops": dict(sorted(graph.op_counts.items()))},
            target={"name": profile.name, **target_report.to_dict(), "summary": target_report.summary_line()},
            bn_folded=bn.folded, bn_to_mul_add=bn.to_mul_add, bn_fold_max_abs_diff=bn.max_abs_diff,
            cleanup={"constants_folded": clean_stats.constants_folded, "nodes_removed": clean_stats.nodes_removed,
                     "initializer_inputs_dropped": clean_stats.initializer_inputs_dropped},
            export_max_abs_err=source.export_max_abs_err,
            calibration=None if not int8_result else {
                **data.info, "method": opts.calib_method.value, "batch_size": int8_result.calibration.batch_size,
                "tensors": int8_result.calibration.tensors, "seconds": round(int8_result.calibration.seconds, 3),
                "io_type": (opts.io_type or profile.input_type).value, "per_channel": per_channel,
                "equalization": None if equalized is None else equalized.to_dict()},
            validation=checked,
            accuracy=None if acc is None else {
                "float_top1": acc.float_top1, "int8_top1": acc.int8_top1, "float_top5": acc.float_top5,
                "int8_top5": acc.int8_top5, "n_eval": acc.n_eval, "top1_drop_points": acc.top1_drop_points},
            sizes=Sizes(len(model.SerializeToString()), len(float_bytes),
                        len(int8_result.model) if int8_result else None),
            ops=int8_ops or float_ops, ops_float=float_ops,
            stages=tuple(stages.times),
            files=tuple(sorted({*files, *(p.name for p in staging.iterdir()), "report.json", "report.md"})),
            versions=versions(), notes=tuple(notes),
            fit=None if fit is None else {**fit.to_dict(), "lines": fit.report_lines()},
            layers=None if layers is None else [layer.to_dict() for layer in layers])

        atomic_write_json(staging / "report.json", report.to_dict())
        atomic_write_text(staging / "report.md", report.to_markdown())
        final = _publish(staging, opts.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConvertResult(opts.out, tuple(final), report)


def build_int8(opts: ConvertOptions) -> bytes:
    """Only what an int8 model needs (no validation, no files): for trying candidates quickly."""
    from converters.onnx_to_tf import onnx_to_tf
    from converters.passes import run_passes
    from converters.tflite import to_float_tflite, to_int8_tflite

    source = load_source(opts)
    data = load_data(opts, source.preprocess)
    model, _ = run_passes(source.onnx)
    return to_int8_tflite(to_float_tflite(onnx_to_tf(model)), [data.calib], io_type=opts.io_type or IOType.INT8,
                          method=opts.calib_method).model


def fit_to_target(opts: ConvertOptions, profile) -> tuple[ConvertOptions, object]:
    """Search the zoo model's alpha x resolution grid for the largest model that fits ``profile``
    (TFLite Micro arena against RAM, model size against flash); return the options to convert it.

    Each candidate is an ``edgenet sweep`` cell (converted and checked for the target as a sweep
    does), one at a time in this process or EDGENET_FIT_WORKERS at once on the sweep's process
    pool; each is logged to the ``edgenet.fit`` logger as it is decided."""
    from dataclasses import replace

    from edgenet.sweep.fitting import CellMeasure, log_candidate
    from edgenet.zoo import info, validate_hparams
    from targets.fit import fit_model

    from converters.sources import SourceKind, source_kind

    if source_kind(opts.model.source) is not SourceKind.ZOO:
        raise UsageError("--fit searches a zoo model's width and resolution; it cannot resize a given model")

    def mult_adds(alpha: float, resolution: int) -> int:
        return info(opts.model.source, alpha=alpha, resolution=resolution, num_classes=opts.model.num_classes,
                    in_channels=opts.model.in_channels).mult_adds

    for a in opts.fit_alphas:
        for r in opts.fit_resolutions:
            validate_hparams(a, r, opts.model.num_classes, opts.model.in_channels)
    grid = [(a, r) for a in opts.fit_alphas for r in opts.fit_resolutions]
    measure = CellMeasure(opts, profile)
    try:
        result = fit_model(profile, grid, None, mult_adds, measure=measure, batch=measure.workers,
                           progress=log_candidate)
    finally:
        measure.close()
    chosen = result.chosen
    spec = replace(opts.model, alpha=chosen.alpha, resolution=chosen.resolution)
    return replace(opts, model=spec, fit=False), result


def _to_onnx_layout(x_nhwc: np.ndarray, source: SourceModel) -> np.ndarray:
    """Calibration samples in the ONNX model's own input layout (NCHW for image models)."""
    return np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2))) if len(source.input_shape) == 4 else x_nhwc


def _import_libraries(need_torch: bool, tf_side) -> None:
    """Import the heavy libraries up front (quietly: TensorFlow's C++ start-up chatter goes to fd 2),
    so that each later stage's time is its own work. TensorFlow loads here only when the TF-side
    stages run in this process; a worker process is loading it meanwhile otherwise."""
    from converters._capture import captured_fd
    from converters.tf_worker import InProcessTF
    from edgenet._deps import require

    with captured_fd(2):
        for name in (("torch",) if need_torch else ()) + ("onnx", "onnxruntime"):
            require(name)
        if isinstance(tf_side, InProcessTF):
            tf_side.ready()


def _parent(out: Path) -> Path:
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _write_outputs(folder: Path, source: SourceModel, model, float_bytes: bytes, int8_result,
                   data: PipelineData, opts: ConvertOptions) -> list[str]:
    from edgenet.io import atomic_write_bytes, atomic_write_text

    atomic_write_bytes(folder / "model.onnx", model.SerializeToString())
    atomic_write_bytes(folder / "model_float.tflite", float_bytes)
    written = ["model.onnx", "model_float.tflite", "preprocess.json"]
    if int8_result:
        atomic_write_bytes(folder / "model_int8.tflite", int8_result.model)
        written.append("model_int8.tflite")
    atomic_write_text(folder / "preprocess.json", source.preprocess.to_json())
    if source.class_names:
        atomic_write_text(folder / "labels.txt", "\n".join(source.class_names) + "\n")
        written.append("labels.txt")
    return written


def _publish(staging: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    final = []
    for item in sorted(staging.iterdir()):
        dest = out / item.name
        if item.is_dir():
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(item, dest)
        else:
            os.replace(item, dest)
        final.append(dest)
    return final
