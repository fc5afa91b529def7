"""From the cleaned ONNX graph to a .tflite per requested precision.

    ONNX (static shapes) -> TF graph (NHWC) -> float32 .tflite -> float16 / dynamic (from the graph)
                                             -> int8 / int16x8 (calibrated from the float32 model,
                                                or from its equalized twin with --equalize)

The graph and float steps run on the TensorFlow side (:mod:`edgenet.converters.tf_worker`); int8 and
int16x8 run here, with the LiteRT Quantizer (:mod:`edgenet.converters.quantize`, no TensorFlow). This
module decides what is built, with which I/O types, and names each step for the progress output.
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
    quantized: dict[Precision, Any] = field(default_factory=dict)   # full-integer: quantize.QuantizedResult
    quant_source: bytes = b""                   # the float model int8/int16x8 were calibrated from
    equalized: Any = None                       # converters.equalize result with --equalize


def io_type_for(precision: Precision, opts: ConvertOptions, profile) -> IOType | str | None:
    """The I/O type of a full-integer model: int8 models take --io-type or the profile's type;
    int16x8 models take int16 (their own), or float32 when that is what was asked for."""
    asked = opts.io_type or profile.input_type
    if precision is Precision.INT8:
        return asked
    return IOType.FLOAT32 if asked is IOType.FLOAT32 else None


def graph_precisions(opts: ConvertOptions) -> tuple[Precision, ...]:
    """The precisions made from the TF graph itself: float32 and any float16 / dynamic asked for."""
    return (Precision.FLOAT32, *(p for p in opts.precisions if p in _GRAPH_PRECISIONS))


def start_graph(tf_side, model, opts: ConvertOptions, keep_layout):
    """Begin ONNX -> TF and the float models on the TensorFlow side; with a worker process it goes on
    while this process loads the calibration data (``.result()``: (GraphInfo, {precision: bytes}))."""
    return tf_side.start("graph_and_floats", model, tuple(keep_layout), graph_precisions(opts))


def build(run: Callable, tf_side, model, opts: ConvertOptions, profile, calib, preprocess, keep_layout,
          per_channel: bool, calib_detail: str, equalize: Callable | None = None, started=None) -> Built:
    """Convert ``model`` to every precision in ``opts.precisions``; ``run(name, fn, *args, detail=...)``
    runs and times each step (the pipeline's Stages.run). ``started``: :func:`start_graph` already
    called for ``model``."""
    started = started or start_graph(tf_side, model, opts, keep_layout)
    wanted = [p for p in opts.precisions if p.full_integer]
    if wanted:   # its import (~1 s) while the TensorFlow side still builds the graph, not after
        from edgenet.converters.quantize import preload

        preload()
    first = "onnx -> tflite (native)" if getattr(tf_side, "NATIVE", False) else "onnx -> tf"
    names = " + ".join([first, *(f"tflite {p.value}" for p in graph_precisions(opts))])
    graph, floats = run(names, started.result)
    built = Built(graph, dict(floats), quant_source=floats[Precision.FLOAT32])
    if wanted and equalize is not None:
        built.quant_source, built.equalized = equalize()
    from edgenet.converters.quantize import quantize_calibrated

    for p in wanted:
        result = run(f"tflite {p.value}", quantize_calibrated, built.quant_source, list(calib), precision=p,
                     io_type=io_type_for(p, opts, profile), per_channel=per_channel, method=opts.calib_method,
                     preprocess=preprocess, detail=calib_detail)
        built.quantized[p] = result
        built.models[p] = result.model
    return built


def stage_count(opts: ConvertOptions) -> int:
    """Steps :func:`build` runs (for the progress output's [k/n])."""
    return 1 + sum(p.full_integer for p in opts.precisions)
