"""`edgenet convert` of a Keras model (``.keras``, ``.h5``) or a SavedModel folder.

    model.keras -> TensorFlow's converter -> float32 .tflite (+ float16 / dynamic, the converter's own)
                -> int8 / int16x8 (LiteRT Quantizer, :mod:`edgenet.converters.quantize`, calibrated)
                -> verdicts -> mixed-precision repair -> target checks -> out/

No ONNX on this road: the float model comes from TensorFlow (:mod:`edgenet.converters.keras_source`,
in this process: no worker), and from there it takes the stages every other source takes, with one
difference: the float verdict compares the float .tflite with the Keras model itself (run by
TensorFlow on the same held-out examples); every other precision is judged against the float
.tflite as for other sources. The output folder is the same, but for ``model.onnx``.

Options that act on the ONNX graph (--equalize, --normalize-in-model, --keep-layout, the split
of a head into outputs) are refused for Keras models; --input-shape is N,H,W,C.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from edgenet.config import ConvertOptions, Precision
from edgenet.converters.keras_source import KerasModel, KerasTensor, is_saved_model, load_keras, preload
from edgenet.converters.model_inputs import ModelInput
from edgenet.converters.image_preprocess import image_preprocess
from edgenet.converters.class_names import read_class_names
from edgenet.converters.sources import SourceModel
from edgenet.errors import DataError, UsageError


@dataclass(frozen=True)
class KerasGraph:
    """The converted model's inputs and outputs (as the verdicts read them) and its TFLite ops."""

    inputs: tuple[KerasTensor, ...]
    outputs: tuple[KerasTensor, ...]
    op_counts: dict[str, int]


class KerasSide:
    """What the repair and the per-layer error ask of the conversion side: no ONNX nodes to name."""

    def onnx_nodes(self, names) -> dict:
        return {}

    def layer_sqnr(self, float_model: bytes, int8_model: bytes, samples):
        from edgenet.converters.layer_error import layer_sqnr

        return layer_sqnr(float_model, int8_model, samples)


def _refuse(opts: ConvertOptions) -> None:
    for flag, on in (("--equalize", opts.equalize), ("--normalize-in-model", opts.normalize_in_model)):
        if on:
            raise UsageError(f"{flag} works on the ONNX graph of a model; a Keras model is converted by TensorFlow "
                             "(fold the normalization into the Keras model instead)")


def source_model(model: KerasModel, opts: ConvertOptions) -> SourceModel:
    """The pipeline's view of ``model``: its input (rank 4: an NHWC image, held as N,C,H,W like every
    source's :class:`ModelInput`), the preprocessing of --mean/--std/--preprocess (edgenet's default
    otherwise), and what the report records."""
    shape = model.shape
    image = len(shape) == 4
    spec = ModelInput(model.input_name, (shape[0], shape[3], shape[1], shape[2]) if image else shape, image)
    pre, notes = image_preprocess(spec if image else None, opts.preprocess)
    info = {"source": str(model.source), "name": model.source.stem if model.kind == "keras" else model.source.name,
            "format": "SavedModel" if model.kind == "saved_model" else model.source.suffix.lstrip("."),
            "converter": "TensorFlow TFLiteConverter (float); LiteRT Quantizer (int8 / int16x8)",
            "input_shape_nhwc": list(shape), "trained": True}
    return SourceModel(None, info["name"], (spec,), pre, None, None, info, tuple(notes))


def _labels(source: SourceModel, graph: KerasGraph, path) -> SourceModel:
    """``source`` with the class names of --labels, one per class of its first output."""
    names = read_class_names(path)
    shape = graph.outputs[0].tf_shape
    if len([d for d in shape[1:] if d != 1]) != 1:
        raise UsageError(f"--labels names classes, but the model's first output {graph.outputs[0].name!r} has "
                         f"shape {list(shape)}, not one score per class")
    if shape[-1] != len(names):
        raise DataError(f"{path}: {len(names)} class names, but the model's output {graph.outputs[0].name!r} has "
                        f"{shape[-1]} classes")
    return replace(source, class_names=names)


def _labels_from_folders(source: SourceModel, graph: KerasGraph, data, opts: ConvertOptions, notes: list[str]
                         ) -> SourceModel:
    """The class subfolders of a --calib folder name the classes of a model without --labels, when
    their number is its first output's class count (as for every source:
    :func:`edgenet.converters.data_notes.labels_from_folders`)."""
    if source.class_names is not None or data.class_names is None or opts.calib is None \
            or data.info.get("synthetic"):
        return source
    shape = graph.outputs[0].tf_shape
    if shape[-1] != len(data.class_names) or len([d for d in shape[1:] if d != 1]) != 1:
        return source
    notes.append(f"class names from the {len(data.class_names)} class subfolders of --calib "
                 f"({', '.join(list(data.class_names)[:4])}{' ...' if len(data.class_names) > 4 else ''}); "
                 "--labels FILE gives them explicitly")
    return replace(source, class_names=tuple(data.class_names))


def run_keras(opts: ConvertOptions, progress: Callable | None, profile, output):
    """Convert the Keras model / SavedModel ``opts.model.source`` (checked by ``check_inputs``) and
    publish the folder; the :class:`edgenet.report.ConvertResult`."""
    from edgenet.converters.build import Built, graph_precisions, int8_float_ops, io_type_for
    from edgenet.converters.data_notes import data_notes
    from edgenet.converters.model_data import default_calib, load_data
    from edgenet.converters.pipeline import Stages
    from edgenet.converters.repair_stage import strict_profile as _strict
    from edgenet.converters.quantize import quantize_calibrated
    from edgenet.converters.mixed_precision_stage import mixed_precision
    from edgenet.converters.verdict_stage import enforce, ops_left_in_float
    from edgenet.inference import op_counts

    _refuse(opts)
    notes: list[str] = []
    wanted = [p for p in opts.precisions if p.full_integer]
    floats = graph_precisions(opts)
    stages = Stages(6 + len(floats) + len(wanted) + (bool(wanted) and opts.layer_report), progress)
    path = Path(opts.model.source)
    stages.run("load libraries", preload, is_saved_model(path), detail="TensorFlow")
    model = stages.run("load", load_keras, path, opts.model.input_shape, detail=str(path))
    source = source_model(model, opts)
    notes.extend(source.notes)
    models = {p: stages.run(f"tflite {p.value}", model.float_tflite, p) for p in floats}
    f32 = models[Precision.FLOAT32]
    spec = source.inputs[0]
    graph = KerasGraph((KerasTensor(spec.name, spec.tflite_shape, spec.image),), model.outputs(f32), op_counts(f32))
    if opts.model.labels is not None:
        source = _labels(source, graph, opts.model.labels)
    calib_spec = opts.calib or default_calib(source.info)
    data = stages.run("data", load_data, calib_spec, source.inputs, source.preprocess, int8=bool(wanted),
                      calib_samples=opts.calib_samples, eval_samples=opts.eval_samples, seed=opts.seed,
                      explicit=opts.calib is not None, detail=calib_spec)
    notes.extend(data_notes(data, source, bool(wanted)))
    source = _labels_from_folders(source, graph, data, opts, notes)
    per_channel = profile.per_channel if opts.per_tensor is None else not opts.per_tensor
    built = Built(graph, dict(models), quant_source=f32)
    for p in wanted:
        result = stages.run(f"tflite {p.value}", quantize_calibrated, f32, list(data.calib), precision=p,
                            io_type=io_type_for(p, opts, profile), per_channel=per_channel, method=opts.calib_method,
                            op_precision=int8_float_ops(f32, p, opts, profile),
                            preprocess=source.preprocess, detail=f"{data.info['samples']} samples, "
                                                                  f"{opts.calib_method.value}")
        built.quantized[p], built.models[p] = result, result.model
    side = KerasSide()
    checked = stages.run("validate", validate_keras, opts, profile, built, source, data, model, notes)
    repair = None
    int8_verdict = checked.verdicts.get(Precision.INT8)
    if int8_verdict is not None and not int8_verdict.passed and \
            any(step.value in ("int16", "float") for step in profile.repair_order):
        stages.add(1, f"the int8 verdict failed ({int8_verdict.worst.name}): mixed precision added")
        repair = stages.run("mixed precision", mixed_precision, built, checked, data, source, side, opts,
                            _strict(profile, opts), notes, detail=int8_verdict.worst.name)
        if repair is not None:
            if repair.passed:
                built.models[Precision.INT8] = repair.model
                checked.verdicts[Precision.INT8] = repair.verdict
            notes.append(repair.summary())
    enforce(checked, source, opts, notes, profile, repair)
    float_ops = ops_left_in_float(built, profile, opts, notes)
    layers = None
    if Precision.INT8 in built.models and opts.layer_report:
        samples = [x[: 8 * max(1, s.batch)] for x, s in zip(data.eval_x, source.inputs)]
        layers = stages.run("per-layer error", side.layer_sqnr, built.quant_source, built.models[Precision.INT8],
                            samples)
    return _publish(opts, profile, source, model, built, checked, data, per_channel, stages, notes, layers, repair,
                    float_ops, output)


def validate_keras(opts, profile, built, source: SourceModel, data, model: KerasModel, notes: list[str]):
    """The float32 .tflite against the Keras model on the held-out examples (a failing verdict stops
    here unless --allow-mismatch), then every other precision against float32
    (:func:`edgenet.converters.verdict_stage.judge_quantized`)."""
    import os

    import numpy as np

    from edgenet.converters import validate
    from edgenet.converters.model_data import DataKind
    from edgenet.converters.verdict_stage import judge_quantized
    from edgenet.errors import ConversionError
    from edgenet.inference import TFLiteModel

    graph = built.graph
    f_outs = TFLiteModel(built.models[Precision.FLOAT32], os.cpu_count()).predict_all(data.eval_x)
    reference = model.predict(data.eval_x[0])
    names = [o.name for o in graph.outputs]
    if data.info["kind"] != DataKind.RANDOM:
        validate.check_finite_reference(reference, names, "Keras model")
    # channels-last outputs compared channel by channel: the reference in the layout check_float reads
    fcs = [validate.check_float(np.transpose(r, (0, 3, 1, 2)) if o.channels_last else r, f, o.channels_last)
           for r, f, o in zip(reference, f_outs, graph.outputs)]
    verdict = replace(validate.float_verdict(fcs, names, profile.float_tolerance), reference=model.kind)
    if not verdict.passed:
        if not opts.allow_mismatch:
            raise ConversionError(verdict.message())
        notes.append("--allow-mismatch: " + verdict.message().rsplit("; pass --allow-mismatch", 1)[0])
    return judge_quantized(opts, profile, built, source, data, f_outs, fcs, verdict, notes, names)


def _publish(opts, profile, source, model, built, checked, data, per_channel, stages, notes, layers, repair,
             float_ops, output):
    from edgenet.converters.write_stage import write_and_publish

    return write_and_publish(output, source, None, built, data, layers, opts, profile, stages,
                             lambda staging, files, target: keras_report(
                                 opts, profile, source, model, built, checked, data, per_channel, staging, files,
                                 target, stages, notes, layers, repair, float_ops))


def _source_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def keras_report(opts, profile, source, model: KerasModel, built, checked, data, per_channel, staging, files,
                 target_report, stages, notes, layers, repair, float_ops) -> Any:
    """The conversion report of a Keras source: the same record as every source's, with no ONNX
    figures (no BN folding or cleanup: TensorFlow's converter folds what it folds)."""
    from edgenet.converters.report_stage import versions
    from edgenet.inference import op_counts
    from edgenet.report import ConvertReport, Sizes

    quant = built.quantized.get(Precision.INT8) or built.quantized.get(Precision.INT16X8)
    deployed = Precision.INT8 if Precision.INT8 in built.models else None
    ops_float = op_counts(built.models[Precision.FLOAT32])
    acc = checked.accuracy
    sizes = {p: (staging / p.file_name).stat().st_size for p in built.models}
    precisions = [{"precision": p.value, "file": p.file_name, "bytes": sizes[p],
                   "verdict": None if p is Precision.FLOAT32 else checked.verdicts[p].to_dict(),
                   "ops_in_other_precision": float_ops.get(p.value, [])} for p in built.models]
    spec, tensor = source.inputs[0], built.graph.inputs[0]
    return ConvertReport(
        model={**source.info, "name": source.name, "input_shape": list(model.shape),
               "tflite_input_shape": list(tensor.tf_shape),
               "inputs": [{"name": spec.name, "shape": list(model.shape), "tflite_shape": list(tensor.tf_shape),
                           "image": spec.image}],
               "outputs": [{"name": o.name, "tflite_shape": list(o.tf_shape)} for o in built.graph.outputs]},
        target={"name": profile.name, **target_report.to_dict(), "summary": target_report.summary_line()},
        bn_folded=0, bn_to_mul_add=0, bn_fold_max_abs_diff=None, cleanup={}, export_max_abs_err=None,
        data=data.info,
        calibration=None if quant is None else {
            **data.info, "method": opts.calib_method.value, "batch_size": quant.calibration.batch_size,
            "tensors": quant.calibration.tensors, "seconds": round(quant.calibration.seconds, 3),
            "io_type": (opts.io_type or profile.input_type).value, "per_channel": per_channel,
            "equalization": None},
        validation=checked.validation,
        accuracy=None if acc is None else {
            "float_top1": acc.float_top1, "int8_top1": acc.int8_top1, "float_top5": acc.float_top5,
            "int8_top5": acc.int8_top5, "n_eval": acc.n_eval, "top1_drop_points": acc.top1_drop_points},
        sizes=Sizes(_source_bytes(Path(model.source)), sizes[Precision.FLOAT32], sizes.get(Precision.INT8)),
        ops=op_counts(built.models[deployed]) if deployed else ops_float, ops_float=ops_float,
        stages=tuple(stages.times),
        files=tuple(sorted({*files, *(p.name for p in staging.iterdir()), "report.json", "report.md"})),
        versions={**versions(), **_keras_version()}, notes=tuple(notes),
        layers=None if layers is None else [layer.to_dict() for layer in layers],
        precisions=tuple(precisions),
        mixed_precision=None if repair is None else repair.to_dict())


def _keras_version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"keras": version("keras")}
    except PackageNotFoundError:
        return {}
