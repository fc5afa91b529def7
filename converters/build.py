"""From the cleaned ONNX graph to a .tflite per requested precision.

    ONNX (static shapes) -> TF graph (NHWC) -> float32 .tflite -> float16 / dynamic (from the graph)
                                             -> int8 / int16x8 (calibrated from the float32 model,
                                                or from its equalized twin with --equalize)

Every step runs on the TensorFlow side (:mod:`converters.tf_worker`); this module decides what is
built, with which I/O types, and names each step for the progress output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgenet.config import ConvertOptions, IOType, Precision

_GRAPH_PRECISIONS = (Precision.FLOAT16, Precision.DYNAMIC)


@dataclass
class Built:
    """What :func:`build` made: the graph's inputs/outputs and one model per precision."""

    graph: Any                                  # converters.tf_worker.GraphInfo
    models: dict[Precision, bytes]              # float32 first, then every other requested precision
    quantized: dict[Precision, Any] = field(default_factory=dict)   # full-integer: QuantizedResult
    quant_source: bytes = b""                   # the float model int8/int16x8 were calibrated from
    equalized: Any = None                       # converters.equalize result with --equalize


def io_type_for(precision: Precision, opts: ConvertOptions, profile) -> IOType | str | None:
    """The I/O type of a full-integer model: int8 models take --io-type or the profile's type;
    int16x8 models take int16 (their own), or float32 when that is what was asked for."""
    asked = opts.io_type or profile.input_type
    if precision is Precision.INT8:
        return asked
    return IOType.FLOAT32 if asked is IOType.FLOAT32 else None


def build(run: Callable, tf_side, model, opts: ConvertOptions, profile, calib, preprocess, keep_layout,
          per_channel: bool, calib_detail: str, equalize: Callable | None = None) -> Built:
    """Convert ``model`` to every precision in ``opts.precisions``; ``run(name, fn, *args, detail=...)``
    runs and times each step (the pipeline's Stages.run)."""
    graph = run("onnx -> tf", tf_side.onnx_to_tf, model, keep_layout)
    float32 = run("tflite float32", tf_side.float_tflite)
    built = Built(graph, {Precision.FLOAT32: float32}, quant_source=float32)
    for p in opts.precisions:
        if p in _GRAPH_PRECISIONS:
            built.models[p] = run(f"tflite {p.value}", tf_side.float_tflite, p)
    wanted = [p for p in opts.precisions if p.full_integer]
    if wanted and equalize is not None:
        built.quant_source, built.equalized = equalize()
    for p in wanted:
        result = run(f"tflite {p.value}", tf_side.quantized_tflite, built.quant_source, list(calib), precision=p,
                     io_type=io_type_for(p, opts, profile), per_channel=per_channel, method=opts.calib_method,
                     preprocess=preprocess, detail=calib_detail)
        built.quantized[p] = result
        built.models[p] = result.model
    return built


def stage_count(opts: ConvertOptions) -> int:
    """Steps :func:`build` runs (for the progress output's [k/n])."""
    return 2 + sum(p in _GRAPH_PRECISIONS or p.full_integer for p in opts.precisions)
