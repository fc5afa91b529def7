"""The conversion pipeline: the stages of `edgenet convert`, in order.

Each stage is a function from one artifact to the next (see the sibling modules); this module
runs them, records their times and findings in the report, and writes the outputs. Files are
staged in a hidden folder inside ``--out`` and published all at once (:mod:`edgenet.outdir`) only
after every stage, target checks included, has succeeded.
"""
from __future__ import annotations

import time
from typing import Callable

from edgenet.converters.model_data import DataKind, default_calib, load_data, to_onnx_layout
from edgenet.converters.sources import SourceKind, SourceModel, check_source, load_source, source_kind
from edgenet.config import ConvertOptions, Precision
from edgenet.errors import ConversionError, EdgenetError, ModelError, UsageError
from edgenet.report import StageTime
from edgenet.converters.data_notes import data_notes, is_zoo, labels_from_folders
from edgenet.converters.fit_stage import fit_to_target
from edgenet.converters.report_stage import conversion_report
from edgenet.converters.write_stage import write_and_publish
from edgenet.converters.verdict_stage import enforce, layer_errors, ops_left_in_float, validate_stage


class Stages:
    """Runs named stages, timing each and telling a progress callback."""

    def __init__(self, total: int, progress: Callable | None):
        self.times: list[StageTime] = []
        self.total = total
        self.progress = progress

    def add(self, count: int, why: str) -> None:
        """Stages not planned at the start (a repair after a failing verdict): the total grows, and
        the progress callback is told why (event "plan") before the counter shows the new total."""
        self.total += count
        if self.progress:
            self.progress("plan", len(self.times), self.total, why, str(count))

    def run(self, name: str, fn, *args, detail: str = "", **kwargs):
        self.total = max(self.total, len(self.times) + 1)   # a stage not planned for (a repair) counts too
        if self.progress:
            self.progress("start", len(self.times) + 1, self.total, name, detail)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        self.times.append(StageTime(name, round(dt, 3)))
        if self.progress:
            self.progress("done", len(self.times), self.total, name, f"{dt:.2f}")
        return result


_CHECK_MODULES = {"tflm": ("tflite_micro", "running the model in TensorFlow Lite Micro"),
                  "vela": ("ethosu.vela", "compiling for the Ethos-U NPU")}


def _check_target_tools(profile) -> None:
    """MissingDependencyError now, before any slow stage, when a check of the target needs a package
    that is not installed (cortex-m: tflite-micro; ethos-u55: vela), not after the conversion."""
    import importlib.util

    from edgenet._deps import _EXTRA_OF, install_hint
    from edgenet.errors import MissingDependencyError

    for check in profile.checks:
        module, purpose = _CHECK_MODULES.get(getattr(check, "value", check), (None, None))
        if module is None:
            continue
        extra = _EXTRA_OF[module.split(".")[0]]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):   # a parent package missing
            found = False
        if not found:
            raise MissingDependencyError(f"target {profile.name} needs {module.split('.')[0]} ({purpose}), which is "
                                         f"not installed; install it with: {install_hint(extra)}")


def check_inputs(opts: ConvertOptions) -> None:
    """Cheap checks of everything the user named, before any slow stage starts."""
    from edgenet.converters.model_data import check_calib_spec, check_counts

    check_source(opts)  # zoo name + hyper-parameters, model files, module:function + --input-shape
    check_counts(opts.calib_samples, opts.eval_samples)
    check_calib_spec(opts.calib)
    if opts.equalize and not opts.int8:
        raise UsageError("--equalize prepares the model for int8 quantization; it does nothing with --float")
    _refuse_unused_options(opts)


_FLAGS = {"calib_method": "--calib-method", "io_type": "--io-type", "per_tensor": "--per-tensor",
          "strict_int8": "--strict-int8", "allow_degraded": "--allow-degraded", "equalize_clip": "--equalize-clip",
          "fit_alphas": "--fit-alphas", "fit_resolutions": "--fit-resolutions", "c_name": "--c-name",
          "output_kinds": "--output-kind"}


def _refuse_unused_options(opts: ConvertOptions) -> None:
    """UsageError for an option given where it cannot act (never silently ignored)."""
    given = opts.given
    integer = [p for p in opts.precisions if p.full_integer]
    quantized = [p for p in opts.precisions if p.quantized]
    unused = []
    if not integer:
        unused += [k for k in ("calib_method", "io_type", "per_tensor", "strict_int8") if k in given]
    if not quantized:
        unused += [k for k in ("allow_degraded", "output_kinds") if k in given]
    if "equalize_clip" in given and not opts.equalize:
        raise UsageError("--equalize-clip applies with --equalize")
    for key in ("fit_alphas", "fit_resolutions"):
        if key in given and not opts.fit:
            raise UsageError(f"{_FLAGS[key]} applies with --fit")
    if unused:
        what = "no int8 or int16x8 model is made" if not integer else "nothing is quantized"
        raise UsageError(f"{', '.join(_FLAGS[k] for k in unused)}: {what} "
                         f"(precisions {', '.join(p.value for p in opts.precisions)}); add --int8 or --precision")
    if "io_type" in given and opts.io_type is not None and Precision.INT8 not in opts.precisions \
            and opts.io_type.value in ("int8", "uint8"):
        raise UsageError(f"--io-type {opts.io_type.value} applies to int8 models; an int16x8 model takes int16 or "
                         "float32 I/O")


# -- the pipeline ---------------------------------------------------------------------------
def run(opts: ConvertOptions, progress: Callable | None = None, output=None):
    from edgenet.converters.tflite_writer.side import conversion_side
    from edgenet.targets import load_target

    if output is None:   # an edgenet.outdir.OutputFolder: --out checked, locked and probed
        from edgenet.outdir import OutputFolder

        with OutputFolder(opts.out, opts.force) as output:
            return run(opts, progress, output)

    from edgenet.targets.profile import check_precisions

    profile = load_target(opts.target)
    opts = opts.with_precisions(profile)
    # float32 is always made, as the reference; the target must run what was asked for besides
    deployable = [p for p in opts.precisions if p is not Precision.FLOAT32] or [Precision.FLOAT32]
    check_precisions(profile, deployable)
    if "c_name" in opts.given and not {"c_array", "vela_model"} & {p.value for p in profile.packagers}:
        raise UsageError(f"--c-name names the C sources of a firmware; target {profile.name} writes none")
    if opts.c_name is not None:   # refused now, not after every slow stage
        from edgenet.targets.c_array import check_c_name

        check_c_name(opts.c_name)
    check_inputs(opts)
    _check_target_tools(profile)
    if opts.model.module is None and source_kind(opts.model.source) in (SourceKind.KERAS, SourceKind.SAVED_MODEL):
        from edgenet.converters.keras_pipeline import run_keras   # TensorFlow's own road to the float model

        return run_keras(opts, progress, profile, output)
    # an .onnx file is read and its inputs, shapes and preprocessing checked now (onnx only, no torch
    # or TensorFlow): a wrong --input-shape or --mean is found in a moment, not after the imports
    preloaded = load_source(opts) if source_kind(opts.model.source) is SourceKind.ONNX and \
        opts.model.module is None else None
    if preloaded is not None and opts.normalize_in_model:
        _check_image_for_normalization(preloaded)
    # the TFLite writer makes the float models (no TensorFlow on the ONNX path)
    tf_side = conversion_side(profile.unfused_ops)
    try:
        result = _run(opts, progress, profile, tf_side, output, preloaded)
    except BaseException:
        tf_side.release(failed=True)
        raise
    tf_side.release()
    return result


def _run(opts: ConvertOptions, progress: Callable | None, profile, tf_side, output,
         preloaded: SourceModel | None = None):
    from edgenet.converters.build import build, stage_count, start_graph
    from edgenet.converters.passes import ONNX_PASSES

    notes: list[str] = []
    int8 = opts.int8
    quantized = any(p.quantized for p in opts.precisions)
    stages = Stages(6 - (preloaded is not None) + len(ONNX_PASSES) + stage_count(opts)
                    + int8 * opts.layer_report + opts.fit + 2 * opts.equalize, progress)
    stages.run("load libraries", _import_libraries, not opts.model.is_onnx_file, quantized)
    fit = None
    if opts.fit:
        opts, fit = stages.run("fit", fit_to_target, opts, profile, detail=f"{profile.name} budgets")

    source = preloaded or stages.run("export", load_source, opts, detail=opts.model.source)
    notes.extend(source.notes)
    if quantized:   # a model that cannot fit the target's RAM or flash at all is refused now, not after int8
        from edgenet.targets.estimate import check_budgets

        check_budgets(profile, source.onnx, zoo=is_zoo(opts))
    if opts.equalize and source.image_input is None:
        raise UsageError("--equalize works on CNNs with one image input")
    model, pass_stats = source.onnx, {}
    for graph_pass in ONNX_PASSES:
        model, pass_stats[graph_pass.name] = stages.run(graph_pass.name.replace("_", " "), graph_pass.run, model)
    if profile.probabilities and source.image_input is not None:
        from edgenet.converters.app_outputs import append_softmax

        model, appended = append_softmax(model)
        if appended is not None:
            notes.append(appended.note())
            if source.qdq is not None:   # the int8 verdict's reference gets the same outputs
                from dataclasses import replace

                source = replace(source, qdq=replace(source.qdq, model=append_softmax(source.qdq.model)[0]))
    if opts.normalize_in_model:
        model, source = _normalize_in_model(model, source, notes)
    # the float models, written when the build stage asks for them
    started = start_graph(tf_side, model, opts, opts.model.keep_layout)
    calib_spec = opts.calib or default_calib(source.info)
    needs_calibration = any(p.full_integer for p in opts.precisions)
    data = stages.run("data", load_data, calib_spec, source.inputs, source.preprocess, int8=needs_calibration,
                      calib_samples=opts.calib_samples, eval_samples=opts.eval_samples, seed=opts.seed,
                      explicit=opts.calib is not None, detail=calib_spec)
    # a QDQ model's int8 ranges are its producer's: its calibration count matters only for int16x8
    calibrated = needs_calibration if source.qdq is None else Precision.INT16X8 in opts.precisions
    notes.extend(data_notes(data, source, calibrated))
    normalization = [flag for flag in ("--mean", "--std") if flag in opts.preprocess.given]
    if data.info.get("pixels"):
        notes.append(f"--calib {opts.calib} holds uint8 arrays: read as camera pixels (0..255) and normalized as "
                     f"images are, (x / 255 - mean) / std with mean {list(source.preprocess.mean)} and std "
                     f"{list(source.preprocess.std)}; float arrays go into the model as they are")
    elif normalization and data.info["kind"] == DataKind.ARRAYS:
        notes.append(f"--calib {opts.calib} holds arrays already preprocessed: {' and '.join(normalization)} "
                     "were not applied to them (only to images: they are in preprocess.json and the metadata, for "
                     "the images the deployed model will get)")
    source = labels_from_folders(source, data, opts, notes)
    per_channel = profile.per_channel if opts.per_tensor is None else not opts.per_tensor
    if source.qdq is not None and opts.per_tensor is None and source.qdq.info.per_channel is False:
        per_channel = False   # the producer's per-tensor weights, kept per tensor

    def equalize(graph_model):
        """The equalized twin of ``graph_model`` -- the model being built (a split head's too, not
        the user's original: its outputs must be the ones judged)."""
        from edgenet.converters.equalize import ClipPolicy, equalize as cle

        try:
            eq_model, equalized = stages.run("equalize", cle, graph_model,
                                             [to_onnx_layout(data.calib[0], source.inputs[0])],
                                             per_channel=per_channel, clip=ClipPolicy(opts.equalize_clip))
        except EdgenetError:
            raise
        except Exception as exc:   # a graph equalization does not handle (a batch-dependent reshape ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"--equalize could not equalize this model ({first[:200]}); convert it "
                                  "without --equalize") from exc
        notes.extend(equalized.notes)
        return stages.run("tflite float32 (equalized)", tf_side.float_tflite_of, eq_model), equalized

    def twin_of(graph_model):
        if opts.equalize:
            return lambda: equalize(graph_model)
        if balanced:
            from edgenet.converters.act_balance import balanced_twin

            return lambda: stages.run("balance activations", balanced_twin, graph_model,
                                      [to_onnx_layout(data.calib[0], source.inputs[0])], tf_side.float_tflite_of, notes,
                                      float_hard_swish=float_hard_swish)
        return None

    qat_hook = None
    if source.info.get("qat") and opts.int8 and data.calib and opts.equalize:
        notes.append("--equalize: the QAT ranges in the checkpoint describe the model as trained, not its "
                     "equalized twin: the int8 model's activations are calibrated instead")
    elif source.info.get("qat") and opts.int8 and data.calib:
        from edgenet.converters.qat_ranges import qat_ranges_hook

        qat_hook = qat_ranges_hook(source.info["source"], data.calib[0], notes)

    # activation balancing: int8 with per-channel weights from calibration data, where nothing else
    # decides the ranges (a QAT checkpoint's or a QDQ model's) and the model has one input
    balanced = (opts.int8 and per_channel and qat_hook is None and source.qdq is None and len(source.inputs) == 1
                and bool(data.calib))
    float_hard_swish = "HARD_SWISH" in (getattr(profile, "int8_float_ops", ()) or ()) and not opts.strict_int8

    def make(graph_model, started=None, balance: bool = True):   # balance=False: balancing was undone
        built = build(stages.run, tf_side, graph_model, opts, profile, data.calib, source.preprocess,
                      opts.model.keep_layout, per_channel,
                      f"{data.info['samples']} samples, {opts.calib_method.value}",
                      twin_of(graph_model) if balance or opts.equalize else None, started, qat_hook, qdq=source.qdq)
        _check_graph_io(built.graph, source, graph_model)
        return built

    built = make(model, started)
    if built.qdq:
        from edgenet.converters.qdq_quantize import qdq_notes

        notes.extend(qdq_notes(built.qdq, data.info))
        if opts.calib_method.value != "minmax":
            left = built.qdq.get("tensors_calibrated", 0)
            notes.append(f"--calib-method {opts.calib_method.value} decides only the {left} tensor(s) without a QDQ "
                         "pair; the others keep the QDQ model's ranges" if left else
                         f"--calib-method {opts.calib_method.value} is not used: every tensor keeps the QDQ model's "
                         "range")
    checked = stages.run("validate", validate_stage, opts, profile, model, built, source, data, tf_side, notes)
    split = repair = None
    int8_verdict = checked.verdicts.get(Precision.INT8)
    if int8_verdict is not None and not int8_verdict.passed and source.qdq is not None:
        notes.append("the int8 model departs from the QDQ model it was read from: no repair is tried (promoting ops "
                     "would move it toward the float graph, not toward the producer's quantized model)")
    elif int8_verdict is not None and not int8_verdict.passed and source.info.get("trained", True):
        from edgenet.converters.repair_stage import repair_int8

        model, built, checked, repair, split = repair_int8(model, built, checked, stages, make, opts, profile, source,
                                                           data, tf_side, notes)
    enforce(checked, source, opts, notes, profile, repair)
    float_ops = ops_left_in_float(built, profile, opts, notes, tf_side)
    if Precision.DYNAMIC in built.models:
        from edgenet.converters.op_precision import model_precision

        if model_precision(built.models[Precision.DYNAMIC]) is Precision.FLOAT32:
            notes.append("model_dynamic.tflite is float32: no weight tensor has the 1,024 values the dynamic-range "
                         "quantizer needs (TensorFlow's rule, kept by the LiteRT Quantizer's recipe), so none was "
                         "quantized")
    layers = None
    if Precision.INT8 in built.models and opts.layer_report:
        layers = stages.run("per-layer error", layer_errors, built, data, source, tf_side)

    return write_and_publish(output, source, model, built, data, layers, opts, profile, stages,
                             lambda staging, files, target: conversion_report(
                                 opts, profile, source, model, built, checked, data, pass_stats, per_channel,
                                 staging, files, target, stages, notes, fit, layers, repair, split, float_ops))


def _normalize_in_model(model, source: SourceModel, notes: list[str]):
    """--normalize-in-model: the image input's (x - mean) / std moved into the graph
    (converters/normalize_input.py); the source's preprocessing becomes pixels / 255."""
    from dataclasses import replace

    from edgenet.converters.normalize_input import fold_normalization, is_identity

    _check_image_for_normalization(source)
    pre = source.preprocess
    if is_identity(pre):
        notes.append("--normalize-in-model: the model already takes pixels in [0, 1] (mean 0, std 1): nothing moved")
        return model, source
    model, inside = fold_normalization(model, source.image_input.name, pre)
    notes.append(f"normalization (x - mean) / std with mean {_fmt(pre.mean)} and std {_fmt(pre.std)} is inside the "
                 f"model: it takes pixels scaled to [0, 1] (preprocess.json: mean 0, std 1)")
    info = {**source.info, "normalization_in_model": {"mean": list(pre.mean), "std": list(pre.std)}}
    return model, replace(source, preprocess=inside, info=info)


def _check_image_for_normalization(source: SourceModel) -> None:
    if source.image_input is None or source.preprocess is None:
        raise UsageError("--normalize-in-model applies to a model with one image input (rank 4, 1, 3 or 4 "
                         "channels)")


def _fmt(values) -> str:
    return ",".join(f"{v:g}" for v in values)


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
            if _onnxruntime_shape(model, info.name) == tuple(info.onnx_shape):
                raise ModelError(f"the ONNX file declares output {info.name!r} as {tuple(want)}, but its graph "
                                 f"computes {tuple(info.onnx_shape)} (onnxruntime agrees with the conversion): the "
                                 "declaration is wrong; fix it in the file")
            raise ConversionError(f"the converted model's output {info.name!r} has shape {tuple(info.onnx_shape)} "
                                  f"(in ONNX layout), not {tuple(want)}")


def _onnxruntime_shape(model, name: str) -> tuple[int, ...] | None:
    """The shape onnxruntime computes for output ``name`` of ``model`` on seeded random inputs (None
    when it cannot run it): who is right when the converted shape differs from the declared one."""
    from edgenet.converters.export import random_inputs, run_onnxruntime

    try:
        outs = run_onnxruntime(model, random_inputs(model))
    except Exception:   # onnxruntime cannot run it (or refuses the declared shape): no arbitration
        return None
    names = [o.name for o in model.graph.output]
    return tuple(outs[names.index(name)].shape) if name in names else None


def _import_libraries(need_torch: bool, quantizer: bool = False) -> None:
    """Import the heavy libraries up front (quietly: native start-up chatter goes to fd 2), so that
    each later stage's time is its own work; ``quantizer``: the LiteRT Quantizer too (its SciPy
    import is not the int8 stage's work)."""
    from edgenet.converters._capture import captured_fd
    from edgenet._deps import require

    with captured_fd(2):
        for name in (("torch",) if need_torch else ()) + ("onnx", "onnxruntime"):
            require(name)
        if quantizer:
            from edgenet.converters.quantize import preload

            preload()
