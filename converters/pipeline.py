"""The conversion pipeline: the stages of `edgenet convert`, in order.

Each stage is a function from one artifact to the next (see the sibling modules); this module
runs them, records their times and findings in the report, and writes the outputs. Files are
staged in a hidden folder inside ``--out`` and published all at once (:mod:`edgenet.outdir`) only
after every stage, target checks included, has succeeded.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from converters.model_data import (EVAL_SET, DataKind, PipelineData, default_calib, load_data, to_onnx_layout,
                                   write_eval_set)
from converters.sources import SourceKind, SourceModel, check_source, load_source, source_kind
from edgenet.config import ConvertOptions, IOType, Precision
from edgenet.errors import ConversionError, DataError, UsageError
from edgenet.quality import judge
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
    from converters.model_data import check_calib_spec, check_counts

    check_source(opts)  # zoo name + hyper-parameters, model files, module:function + --input-shape
    check_counts(opts.calib_samples, opts.eval_samples)
    check_calib_spec(opts.calib)
    if opts.equalize and not opts.int8:
        raise UsageError("--equalize prepares the model for int8 quantization; it does nothing with --float")


# -- the pipeline ---------------------------------------------------------------------------
def run(opts: ConvertOptions, progress: Callable | None = None, output=None):
    from converters.tf_worker import tf_stages
    from targets import load_target

    if output is None:   # an edgenet.outdir.OutputFolder: --out checked, locked and probed
        from edgenet.outdir import OutputFolder

        with OutputFolder(opts.out, opts.force) as output:
            return run(opts, progress, output)

    profile = load_target(opts.target)
    check_inputs(opts)
    # an .onnx file is read and its inputs, shapes and preprocessing checked now (onnx only, no torch
    # or TensorFlow): a wrong --input-shape or --mean is found in a moment, not after the imports
    preloaded = load_source(opts) if source_kind(opts.model.source) is SourceKind.ONNX and \
        opts.model.module is None else None
    # TensorFlow starts loading now, in a child process, while this one loads torch and exports
    tf_side = tf_stages(in_process=opts.fit)   # --fit builds its candidates here: TF loads here anyway
    try:
        result = _run(opts, progress, profile, tf_side, output, preloaded)
    except BaseException:
        tf_side.release(failed=True)
        raise
    tf_side.release()
    return result


def _run(opts: ConvertOptions, progress: Callable | None, profile, tf_side, output,
         preloaded: SourceModel | None = None):
    from converters.passes import ONNX_PASSES
    from converters import validate
    from edgenet.api import ConvertResult
    from edgenet.inference import TFLiteModel, op_counts
    from edgenet.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    notes: list[str] = []
    int8 = opts.int8
    variants = tuple(v for v in profile.variants if v is Precision.FLOAT16)
    stages = Stages(7 - (preloaded is not None) + len(ONNX_PASSES) + int8 * (1 + opts.layer_report) + len(variants) + opts.fit
                     + 2 * opts.equalize, progress)
    from converters.tf_worker import InProcessTF

    stages.run("load libraries", _import_libraries, not opts.model.is_onnx_file, tf_side,
               detail="" if isinstance(tf_side, InProcessTF) else "TensorFlow in a worker process")
    fit = None
    if opts.fit:
        opts, fit = stages.run("fit", fit_to_target, opts, profile, detail=f"{profile.name} budgets")

    source = preloaded or stages.run("export", load_source, opts, detail=opts.model.source)
    notes.extend(source.notes)
    if int8:   # a model that cannot fit the target's RAM or flash at all is refused now, not after int8
        from targets.estimate import check_budgets

        check_budgets(profile, source.onnx)
    calib_spec = opts.calib or default_calib(source.info)
    data = stages.run("data", load_data, calib_spec, source.inputs, source.preprocess, int8=int8,
                      calib_samples=opts.calib_samples, eval_samples=opts.eval_samples, seed=opts.seed,
                      explicit=opts.calib is not None, detail=calib_spec)
    notes.extend(_data_notes(data, source, int8))
    if opts.equalize and source.image_input is None:
        raise UsageError("--equalize works on CNNs with one image input")
    model, pass_stats = source.onnx, {}
    for graph_pass in ONNX_PASSES:
        model, pass_stats[graph_pass.name] = stages.run(graph_pass.name.replace("_", " "), graph_pass.run, model)
    clean_stats, bn = pass_stats["cleanup"], pass_stats["bn_fold"]
    per_channel = profile.per_channel if opts.per_tensor is None else not opts.per_tensor
    graph = stages.run("onnx -> tf", tf_side.onnx_to_tf, model, opts.model.keep_layout)
    _check_graph_io(graph, source, model)
    float_bytes = stages.run("tflite float32", tf_side.float_tflite)
    variant_bytes = {v: stages.run(f"tflite {v.value}", tf_side.float_tflite, v) for v in variants}
    # the int8 model is quantized from this float model: the user's own, or with --equalize a
    # rescaled, bias-corrected twin (model_float.tflite and validation stay with the user's model)
    quant_source, equalized = float_bytes, None
    if opts.equalize:
        from converters.equalize import ClipPolicy, equalize

        eq_model, equalized = stages.run("equalize", equalize, model,
                                         [to_onnx_layout(data.calib[0], source.inputs[0])],
                                         per_channel=per_channel, clip=ClipPolicy(opts.equalize_clip))
        notes.extend(equalized.notes)
        quant_source = stages.run("tflite float32 (equalized)", tf_side.float_tflite_of, eq_model)
    int8_result = None
    if int8:
        int8_result = stages.run("tflite int8", tf_side.int8_tflite, quant_source, list(data.calib),
                                 io_type=opts.io_type if opts.io_type else profile.input_type,
                                 per_channel=per_channel, method=opts.calib_method, preprocess=source.preprocess,
                                 detail=f"{data.info['samples']} samples, {opts.calib_method.value}")

    def _validate():
        threads = os.cpu_count()
        f_outs = TFLiteModel(float_bytes, threads).predict_all(data.eval_x)
        onnx_outs = validate.onnx_outputs(model, data.eval_x, source.inputs)
        out_names = [info.name for info in graph.outputs]
        validate.check_finite_reference(onnx_outs, out_names)
        fcs = [validate.check_float(o, f, info.channels_last)
               for o, f, info in zip(onnx_outs, f_outs, graph.outputs)]
        verdict = validate.float_verdict(fcs, out_names, profile.float_tolerance)
        if not verdict.passed:
            verdict = _with_divergence(verdict, model, data, source, tf_side)
            if not opts.allow_mismatch:
                raise ConversionError(verdict.message())
            notes.append("--allow-mismatch: " + verdict.message().rsplit("; pass --allow-mismatch", 1)[0])
        q_outs = ics = qv = None
        if int8_result:
            q_outs = TFLiteModel(int8_result.model, threads).predict_all(data.eval_x)
            ics = [validate.check_int8(f, q) for f, q in zip(f_outs, q_outs)]
            qv = judge("int8", out_names, f_outs, q_outs, [info.channels_last for info in graph.outputs],
                       profile.thresholds)
            if not qv.passed:
                if not source.info.get("trained", True):   # random weights: a finding, not a deployable model
                    notes.append(f"verdict not enforced on untrained weights: {qv.message()}")
                elif not opts.allow_degraded:
                    raise ConversionError(qv.message() + "; pass --allow-degraded to write the files anyway")
                else:
                    notes.append("--allow-degraded: " + qv.message())
        acc = None
        if data.eval_labels is not None and source.class_names is not None:
            if data.class_names is not None and tuple(data.class_names) != tuple(source.class_names):
                raise DataError(f"evaluation data classes {list(data.class_names)[:10]} do not match the "
                                f"model's classes {list(source.class_names)[:10]}")
            acc = validate.accuracy(f_outs[0], None if q_outs is None else q_outs[0], data.eval_labels)
        outputs = tuple(validate.OutputCheck(info.name, fc.max_abs_err, fc.rel_err, ic.sqnr_db if ic else None)
                        for info, fc, ic in zip(graph.outputs, fcs, ics or [None] * len(fcs)))
        checked = Validation(max(fc.max_abs_err for fc in fcs), max(fc.rel_err for fc in fcs),
                             qv.outputs[0].top1_agreement if qv else None,
                             min(ic.sqnr_db for ic in ics) if ics else None, fcs[0].samples, outputs,
                             verdict.to_dict(), (qv.to_dict(),) if qv else ())
        return checked, acc

    checked, acc = stages.run("validate", _validate)
    layers = None
    if int8_result and opts.layer_report:
        # layer by layer against the float model it was quantized from (equalization rescales
        # channels inside the network, so the user's model has other intermediate values)
        layers = stages.run("per-layer error", tf_side.layer_sqnr, quant_source, int8_result.model,
                            [x[: 8 * max(1, spec.batch)] for x, spec in zip(data.eval_x, source.inputs)])

    staging = output.staging
    try:
        files = _write_outputs(staging, source, model, float_bytes, int8_result, data, opts)
        for v, blob in variant_bytes.items():
            atomic_write_bytes(staging / f"model_{v.value}.tflite", _with_metadata(blob, source))

        def _target():
            from targets.checks import run_target

            return run_target(profile, staging, staging / "model_int8.tflite" if int8_result else None,
                              staging / "model_float.tflite", source.class_names, c_name=opts.c_name)

        target_report = stages.run("target " + profile.name, _target)
        int8_ops = op_counts(int8_result.model) if int8_result else {}
        float_ops = op_counts(float_bytes)
        report = ConvertReport(
            model={**source.info, "name": source.name, "input_shape": list(source.input_shape),
                   "tflite_input_shape": list(graph.inputs[0].tf_shape),
                   "inputs": [{"name": spec.name, "shape": list(spec.shape), "tflite_shape": list(info.tf_shape),
                               "image": spec.image} for spec, info in zip(source.inputs, graph.inputs)],
                   "onnx_ops": dict(sorted(graph.op_counts.items()))},
            target={"name": profile.name, **target_report.to_dict(), "summary": target_report.summary_line()},
            bn_folded=bn.folded, bn_to_mul_add=bn.to_mul_add, bn_fold_max_abs_diff=bn.max_abs_diff,
            cleanup={"constants_folded": clean_stats.constants_folded, "nodes_removed": clean_stats.nodes_removed,
                     "initializer_inputs_dropped": clean_stats.initializer_inputs_dropped},
            export_max_abs_err=source.export_max_abs_err,
            data=data.info,
            calibration=None if not int8_result else {
                **data.info, "method": opts.calib_method.value, "batch_size": int8_result.calibration.batch_size,
                "tensors": int8_result.calibration.tensors, "seconds": round(int8_result.calibration.seconds, 3),
                "io_type": (opts.io_type or profile.input_type).value, "per_channel": per_channel,
                "equalization": None if equalized is None else equalized.to_dict()},
            validation=checked,
            accuracy=None if acc is None else {
                "float_top1": acc.float_top1, "int8_top1": acc.int8_top1, "float_top5": acc.float_top5,
                "int8_top5": acc.int8_top5, "n_eval": acc.n_eval, "top1_drop_points": acc.top1_drop_points},
            sizes=Sizes(len(model.SerializeToString()), (staging / "model_float.tflite").stat().st_size,
                        (staging / "model_int8.tflite").stat().st_size if int8_result else None),  # with metadata
            ops=int8_ops or float_ops, ops_float=float_ops,
            stages=tuple(stages.times),
            files=tuple(sorted({*files, *(p.name for p in staging.iterdir()), "report.json", "report.md"})),
            versions=versions(), notes=tuple(notes),
            fit=None if fit is None else {**fit.to_dict(), "lines": fit.report_lines()},
            layers=None if layers is None else [layer.to_dict() for layer in layers])

        atomic_write_json(staging / "report.json", report.to_dict())
        atomic_write_text(staging / "report.md", report.to_markdown())
        final = output.publish()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConvertResult(opts.out, tuple(final), report)


def build_int8(opts: ConvertOptions) -> bytes:
    """Only what an int8 model needs (no validation, no files): for trying candidates quickly."""
    from converters.onnx_to_tf import onnx_to_tf
    from converters.passes import run_passes
    from converters.tflite import to_float_tflite, to_int8_tflite

    source = load_source(opts)
    data = load_data(opts.calib or default_calib(source.info), source.inputs, source.preprocess, int8=True,
                     calib_samples=opts.calib_samples, eval_samples=opts.eval_samples, seed=opts.seed,
                     explicit=opts.calib is not None)
    model, _ = run_passes(source.onnx)
    return to_int8_tflite(to_float_tflite(onnx_to_tf(model)), list(data.calib), io_type=opts.io_type or IOType.INT8,
                          method=opts.calib_method).model


def fit_to_target(opts: ConvertOptions, profile) -> tuple[ConvertOptions, object]:
    """Search the zoo model's alpha x resolution grid for the largest model that fits ``profile``
    (TFLite Micro arena against RAM, model size against flash); return the options to convert it."""
    from dataclasses import replace

    from edgenet.io import atomic_write_bytes
    from edgenet.scratch import ScratchDir
    from edgenet.zoo import info
    from targets.fit import fit_model

    from converters.sources import SourceKind, source_kind

    if source_kind(opts.model.source) is not SourceKind.ZOO:
        raise UsageError("--fit searches a zoo model's width and resolution; it cannot resize a given model")
    from edgenet.zoo import validate_hparams

    for a in opts.fit_alphas:          # refused before any folder is made
        for r in opts.fit_resolutions:
            validate_hparams(a, r, opts.model.num_classes, opts.model.in_channels)
    quick = replace(opts, calib_samples=min(opts.calib_samples, 64), eval_samples=1, fit=False)

    def build(alpha: float, resolution: int) -> Path:
        spec = replace(opts.model, alpha=alpha, resolution=resolution)
        path = workdir / f"mobilenet_{alpha:g}_{resolution}.tflite"
        atomic_write_bytes(path, build_int8(replace(quick, model=spec, io_type=opts.io_type or profile.input_type)))
        return path

    def mult_adds(alpha: float, resolution: int) -> int:
        return info(opts.model.source, alpha=alpha, resolution=resolution, num_classes=opts.model.num_classes,
                    in_channels=opts.model.in_channels).mult_adds

    grid = [(a, r) for a in opts.fit_alphas for r in opts.fit_resolutions]
    scratch = ScratchDir("edgenet-fit-")   # removed by the next run if this process is killed
    workdir = scratch.path
    try:
        result = fit_model(profile, grid, build, mult_adds)
    finally:
        scratch.close()
    chosen = result.chosen
    spec = replace(opts.model, alpha=chosen.alpha, resolution=chosen.resolution)
    return replace(opts, model=spec, fit=False), result


def _check_graph_io(graph, source: SourceModel, model) -> None:
    """The converted graph takes exactly the inputs planned and gives outputs of the ONNX shapes
    (a batch or layout lost in conversion would otherwise hide inside the validation's
    concatenation over invocations)."""
    for spec, info in zip(source.inputs, graph.inputs):
        if tuple(info.tf_shape) != spec.tflite_shape:
            raise ConversionError(f"the converted model's input {spec.name!r} has shape {tuple(info.tf_shape)}, "
                                  f"not {spec.tflite_shape}")
    declared = {o.name: [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    for info in graph.outputs:
        want = declared.get(info.name)
        if want and None not in want and tuple(want) != tuple(info.onnx_shape):
            raise ConversionError(f"the converted model's output {info.name!r} has shape {tuple(info.onnx_shape)} "
                                  f"(in ONNX layout), not {tuple(want)}")


def _data_notes(data: PipelineData, source: SourceModel, int8: bool) -> list[str]:
    """What the user should know about the data the model was calibrated and validated on."""
    info, notes = data.info, []
    if not source.info.get("trained", True):
        notes.append("the zoo model's weights are untrained (seeded random): its accuracy and agreement figures "
                     "say nothing about a real model; pass --weights or convert a trained checkpoint")
    if info["kind"] == DataKind.RANDOM:
        notes.append(f"no data fits the model's inputs: the float model was validated on {info['eval_samples']} "
                     "seeded random examples (pass --calib FILE.npz with real examples for a meaningful check)")
    elif info.get("synthetic"):
        notes.append(f"calibration and validation images are synthetic (the built-in {info['dataset']!r} set, "
                     "procedurally generated): pass --calib with real images for a meaningful check")
    if int8 and info["kind"] != DataKind.RANDOM and info["samples"] < MIN_CALIB_WARN:
        notes.append(f"only {info['samples']} calibration examples (fewer than {MIN_CALIB_WARN}): "
                     "int8 ranges may not cover real inputs")
    if info["skipped_images"]:
        notes.append(f"{info['skipped_images']} image(s) could not be decoded and were skipped")
    return notes


def _with_divergence(verdict, model, data: PipelineData, source: SourceModel, tf_side):
    """The failing float verdict, completed with the first ONNX node whose output diverges."""
    from dataclasses import replace

    from converters.divergence import first_divergence

    try:
        found = first_divergence(model, data.eval_x, source.inputs, verdict.tolerance, tf_side.evaluate_values)
    except Exception as exc:  # the locator is a diagnosis: its failure must not hide the verdict
        return replace(verdict, divergence={"reason": f"the diverging node could not be located "
                                                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"})
    return replace(verdict, divergence=found.to_dict())


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


def _write_outputs(folder: Path, source: SourceModel, model, float_bytes: bytes, int8_result,
                   data: PipelineData, opts: ConvertOptions) -> list[str]:
    from edgenet.io import atomic_write_bytes, atomic_write_text

    atomic_write_bytes(folder / "model.onnx", model.SerializeToString())
    atomic_write_bytes(folder / "model_float.tflite", _with_metadata(float_bytes, source))
    written = ["model.onnx", "model_float.tflite"]
    if int8_result:
        atomic_write_bytes(folder / "model_int8.tflite", _with_metadata(int8_result.model, source))
        written.append("model_int8.tflite")
    if source.preprocess is not None:
        atomic_write_text(folder / "preprocess.json", source.preprocess.to_json())
        written.append("preprocess.json")
    if source.class_names:
        atomic_write_text(folder / "labels.txt", "\n".join(source.class_names) + "\n")
        written.append("labels.txt")
    labels = data.eval_labels if source.class_names is not None and data.class_names is not None \
        and tuple(data.class_names) == tuple(source.class_names) else None
    if write_eval_set(folder / EVAL_SET, source.inputs, data.eval_x, labels, data.info):
        written.append(EVAL_SET)
    return written


def _with_metadata(model: bytes, source: SourceModel) -> bytes:
    """The .tflite bytes with TFLite model metadata and labels.txt for apps (targets/metadata.py).
    Metadata describes image models (its input properties are an image's); other models are
    written as they are."""
    from targets.metadata import add_metadata

    if source.preprocess is None or source.image_input is None:
        return model
    return add_metadata(model, source.preprocess, source.class_names, name=source.name)

