"""What the user should know about a conversion's data and its class names (notes for the report
and console), and whether the model is a zoo model that edgenet can resize."""
from __future__ import annotations

from pathlib import Path

from edgenet.config import ConvertOptions
from edgenet.converters.model_data import DataKind, PipelineData
from edgenet.converters.sources import SourceKind, SourceModel, source_kind

MIN_CALIB_WARN = 100


def is_zoo(opts: ConvertOptions) -> bool:
    """The model is a zoo model (which --alpha, --resolution and --fit can resize)."""
    return opts.model.module is None and source_kind(opts.model.source) is SourceKind.ZOO


def labels_from_folders(source: SourceModel, data: PipelineData, opts: ConvertOptions, notes: list[str]
                         ) -> SourceModel:
    """A model with no class names of its own takes the class subfolders of --calib as its labels
    (labels.txt, metadata, top-1) when their number is its first output's class count."""
    from dataclasses import replace

    if source.class_names is not None or data.class_names is None or opts.calib is None \
            or data.info.get("synthetic"):
        return source
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in source.onnx.graph.output[0].type.tensor_type.shape.dim]
    if not dims or dims[-1] != len(data.class_names) or len([d for d in dims[1:] if d != 1]) != 1:
        return source
    notes.append(f"class names from the {len(data.class_names)} class subfolders of --calib "
                 f"({', '.join(list(data.class_names)[:4])}{' ...' if len(data.class_names) > 4 else ''}); "
                 "--labels FILE gives them explicitly")
    return replace(source, class_names=tuple(data.class_names))


def data_notes(data: PipelineData, source: SourceModel, int8: bool) -> list[str]:
    """What the user should know about the data the model was calibrated and validated on."""
    info, notes = data.info, []
    if not source.info.get("trained", True) and source.info.get("source") == "zoo":
        notes.append("the zoo model's weights are untrained (seeded random): its accuracy and agreement figures "
                     "say nothing about a real model; pass --weights or convert a trained checkpoint")
    elif not source.info.get("trained", True):
        notes.append(f"{Path(str(source.info.get('source'))).name} holds an edgenet zoo model's untrained (seeded "
                     "random) weights (its metadata says so): its accuracy and agreement figures say nothing about "
                     "a real model")
    if info["kind"] == DataKind.RANDOM:
        notes.append(f"no data fits the model's inputs: the float model was validated on {info['eval_samples']} "
                     "seeded random examples (pass --calib FILE.npz with real examples for a meaningful check)")
    elif info.get("synthetic"):
        notes.append(f"calibration and validation images are synthetic (the built-in {info['dataset']!r} set, "
                     "procedurally generated): pass --calib with real images for a meaningful check")
    if int8 and info["kind"] != DataKind.RANDOM and info["samples"] < MIN_CALIB_WARN:
        notes.append(f"only {info['samples']} calibration example{'s' if info['samples'] != 1 else ''} (fewer than {MIN_CALIB_WARN}): "
                     "int8 ranges may not cover real inputs")
    if info["skipped_images"]:
        notes.append(f"{info['skipped_images']} image(s) could not be decoded and were skipped")
    if info.get("eval_is_calibration"):
        notes.append(f"too few examples to hold some out: the {info['eval_samples']} validation examples are "
                     "calibration examples too (the verdicts are optimistic)")
    notes.extend(_clipped_input_notes(data, source, int8))
    return notes


CLIP_SHARE_NOTE = 1e-3     # share of an array's values outside the fixed input range worth a note


def _clipped_input_notes(data: PipelineData, source: SourceModel, int8: bool) -> list[str]:
    """A note when preprocessed ``--calib`` arrays (FILE.npz/.npy) reach outside the range the int8
    model's image input is fixed to (the pixel range ``--mean``/``--std`` give, :func:`edgenet.converters.
    calibration.pixel_input_range`): those values clip at the int8 input, whatever the ops after it do,
    and the arrays contradict the normalization (a wrong --mean/--std, or arrays not made from pixels)."""
    if not int8 or info_kind(data) != DataKind.ARRAYS or source.image_input is None or source.preprocess is None \
            or not data.calib:
        return []
    import numpy as np

    from edgenet.converters.calibration import pixel_input_range
    from edgenet.converters.verdict_stage import CLIPPED_INPUT_ADVICE, CLIPPED_INPUT_ADVICE_IN_MODEL

    lo, hi = pixel_input_range(source.preprocess.mean, source.preprocess.std)
    x = np.asarray(data.calib[0], dtype=np.float64)
    step = (hi - lo) / 255.0
    outside = float(np.mean((x < lo - step) | (x > hi + step))) if x.size else 0.0   # a step of slack: rounding
    if outside < CLIP_SHARE_NOTE:
        return []
    mean, std = (",".join(dict.fromkeys(f"{v + 0.0:g}" for v in values))
                 for values in (source.preprocess.mean, source.preprocess.std))
    inside = "normalization_in_model" in source.info     # --normalize-in-model: the input takes pixels / 255
    what = ("the pixel range the model takes (pixels / 255)" if inside
            else f"the pixel range of --mean {mean} --std {std}")
    return [f"--calib arrays span [{x.min():.3g}, {x.max():.3g}] but the int8 model's input is fixed to "
            f"[{lo + 0.0:.3g}, {hi + 0.0:.3g}], {what}: {100 * outside:.1f}% of their values "
            "clip at the int8 input; " + (CLIPPED_INPUT_ADVICE_IN_MODEL if inside else CLIPPED_INPUT_ADVICE)]


def info_kind(data: PipelineData) -> str:
    return data.info.get("kind", "")
