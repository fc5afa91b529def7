"""The write stage of `edgenet convert`: the files into the staging folder, then the target's checks.

Models (with TFLite metadata and labels for apps, :mod:`edgenet.targets.metadata`), preprocess.json,
labels.txt, the held-out set that travels with the model, and the per-layer error as a Model
Explorer overlay; the ONNX pipeline and the Keras one write the same way (a Keras source has no
model.onnx).
"""
from __future__ import annotations

from pathlib import Path

from edgenet.config import Precision
from edgenet.converters.data_notes import is_zoo
from edgenet.converters.model_data import EVAL_SET, PipelineData, write_eval_set
from edgenet.converters.sources import SourceModel


def write_and_check(staging: Path, source: SourceModel, model, built, data: PipelineData, layers, opts, profile,
                    stages) -> tuple[list[str], object]:
    """The files into ``staging`` (models, preprocessing, labels, held-out set, the per-layer error as
    a Model Explorer overlay), then the target's checks on them as a stage: (files, target report).
    ``model``: the ONNX graph converted (None for a Keras source)."""
    from edgenet.io import atomic_write_json

    files = stages.run("write files", _write_outputs, staging, source, model, built, data)
    if layers:   # the per-layer error as a Model Explorer overlay (converters/node_data.py)
        from edgenet.converters.node_data import FILE_NAME, node_data

        atomic_write_json(staging / FILE_NAME, node_data(layers))
        files.append(FILE_NAME)

    def _target():
        from edgenet.targets.checks import run_target

        deployed = next((p for p in (Precision.INT8, Precision.INT16X8) if p in built.models), None)
        return run_target(profile, staging, staging / deployed.file_name if deployed else None,
                          staging / Precision.FLOAT32.file_name, source.class_names, c_name=opts.c_name,
                          zoo=is_zoo(opts))

    return files, stages.run("target " + profile.name, _target)


def _write_outputs(folder: Path, source: SourceModel, model, built, data: PipelineData) -> list[str]:
    """The model files, preprocess.json, labels.txt and the held-out set into ``folder``; ``model``:
    the ONNX graph converted (None for a Keras source: no model.onnx)."""
    from edgenet.io import atomic_write_bytes, atomic_write_text

    written = []
    if model is not None:
        if not source.info.get("trained", True):
            from edgenet.converters.sources import mark_untrained

            model = mark_untrained(model)
        atomic_write_bytes(folder / "model.onnx", model.SerializeToString())
        written.append("model.onnx")
    for precision, blob in built.models.items():
        atomic_write_bytes(folder / precision.file_name, _with_metadata(blob, source))
        written.append(precision.file_name)
    if source.preprocess is not None:
        atomic_write_text(folder / "preprocess.json", source.preprocess.to_json())
        written.append("preprocess.json")
    if source.class_names:
        atomic_write_text(folder / "labels.txt", "\n".join(source.class_names) + "\n")
        written.append("labels.txt")
    labels = data.eval_labels if source.class_names is not None and data.class_names is not None \
        and tuple(data.class_names) == tuple(source.class_names) else None
    if write_eval_set(folder / EVAL_SET, source.inputs, data.eval_x, labels, data.info, source.preprocess):
        written.append(EVAL_SET)
    return written


def _with_metadata(model: bytes, source: SourceModel) -> bytes:
    """The .tflite bytes with TFLite model metadata and labels.txt for apps (targets/metadata.py).
    Metadata describes image models (its input properties are an image's); other models are
    written as they are."""
    from edgenet.targets.metadata import add_metadata

    if source.preprocess is None or source.image_input is None:
        return model
    return add_metadata(model, source.preprocess, source.class_names, name=source.name)


def write_and_publish(output, source: SourceModel, model, built, data: PipelineData, layers, opts, profile, stages,
                      report_of):
    """Everything into ``output``'s staging folder (:func:`write_and_check`), then the report
    (``report_of(staging, files, target_report)``: the pipeline's report) as report.json and
    report.md, then published all at once; the staging folder is removed whatever happens.
    Returns the :class:`edgenet.report.ConvertResult`."""
    import shutil

    from edgenet.io import atomic_write_json, atomic_write_text
    from edgenet.report import ConvertResult

    staging = output.staging
    try:
        files, target_report = write_and_check(staging, source, model, built, data, layers, opts, profile, stages)
        report = report_of(staging, files, target_report)
        atomic_write_json(staging / "report.json", report.to_dict())
        atomic_write_text(staging / "report.md", report.to_markdown())
        final = output.publish()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConvertResult(opts.out, tuple(final), report)
