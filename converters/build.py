"""From the cleaned ONNX graph to a .tflite per requested precision.

    ONNX (static shapes) -> float32 .tflite (NHWC) -> float16 / dynamic (weights only)
                                                  -> int8 / int16x8 (calibrated from the float32 model,
                                                     or from its equalized twin with --equalize)

The float steps run on the conversion side: the TFLite writer, with float16 / dynamic made from its
float32 model by the LiteRT Quantizer (:mod:`edgenet.converters.tflite_writer.side`,
:mod:`edgenet.converters.float_weights`). int8 and int16x8 run here, with the LiteRT Quantizer
(:mod:`edgenet.converters.quantize`). No TensorFlow on this path. This
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

    graph: Any                                  # converters.tflite_writer.side.GraphInfo
    models: dict[Precision, bytes]              # float32 first, then every other requested precision
    quantized: dict[Precision, Any] = field(default_factory=dict)   # full-integer: quantize.QuantizedResult
    quant_source: bytes = b""                   # the float model int8/int16x8 were calibrated from
    equalized: Any = None                       # converters.equalize result with --equalize
    qdq: dict = field(default_factory=dict)     # a QDQ source: what its ranges covered (report.json)


def io_type_for(precision: Precision, opts: ConvertOptions, profile) -> IOType | str | None:
    """The I/O type of a full-integer model: int8 models take --io-type or the profile's type;
    int16x8 models take int16 (their own), or float32 when that is what was asked for."""
    asked = opts.io_type or profile.input_type
    if precision is Precision.INT8:
        return asked
    return IOType.FLOAT32 if asked is IOType.FLOAT32 else None


def graph_precisions(opts: ConvertOptions) -> tuple[Precision, ...]:
    """The precisions the conversion side makes: float32 and any float16 / dynamic asked for."""
    return (Precision.FLOAT32, *(p for p in opts.precisions if p in _GRAPH_PRECISIONS))


def start_graph(tf_side, model, opts: ConvertOptions, keep_layout):
    """The float models of ``model``, made when ``.result()`` is first asked for: (GraphInfo,
    {precision: bytes})."""
    return tf_side.start("graph_and_floats", model, tuple(keep_layout), graph_precisions(opts))


def build(run: Callable, tf_side, model, opts: ConvertOptions, profile, calib, preprocess, keep_layout,
          per_channel: bool, calib_detail: str, equalize: Callable | None = None, started=None,
          int8_ranges_hook: Callable | None = None, qdq=None) -> Built:
    """Convert ``model`` to every precision in ``opts.precisions``; ``run(name, fn, *args, detail=...)``
    runs and times each step (the pipeline's Stages.run). ``started``: :func:`start_graph` already
    called for ``model``. ``equalize()``: the twin the int8 model is calibrated from (--equalize's, or
    activation balancing's), or None to quantize the float model as it is. ``int8_ranges_hook``:
    replaces the int8 model's calibrated ranges (a ``--qat`` checkpoint's learned ones); not used when
    ``equalize()`` gives a twin (the ranges describe the model as trained, not its twin). ``qdq``: a :class:`edgenet.converters.qdq.QDQSource`
    whose ranges the int8 model takes (:mod:`edgenet.converters.qdq_quantize`; tensors they miss
    are calibrated)."""
    started = started or start_graph(tf_side, model, opts, keep_layout)
    wanted = [p for p in opts.precisions if p.full_integer]
    if wanted:   # its import (~1 s) while the TensorFlow side still builds the graph, not after
        from edgenet.converters.quantize import preload

        preload()
    names = " + ".join(["onnx -> tflite (native)", *(f"tflite {p.value}" for p in graph_precisions(opts))])
    graph, floats = run(names, started.result)
    built = Built(graph, dict(floats), quant_source=floats[Precision.FLOAT32])
    twinned = False
    if wanted and equalize is not None:
        twin = equalize()      # None: nothing to change, the float model is quantized as it is
        if twin is not None:
            built.quant_source, built.equalized = twin
            twinned = True
    from edgenet.converters.quantize import quantize_calibrated

    for p in wanted:
        if qdq is not None and p is Precision.INT8:
            result = run(f"tflite {p.value}", _quantize_qdq, built, qdq, calib, opts, profile, per_channel,
                         detail="the QDQ model's ranges")
            built.quantized[p] = result
            built.models[p] = result.model
            continue
        result = run(f"tflite {p.value}", quantize_calibrated, built.quant_source, list(calib), precision=p,
                     io_type=io_type_for(p, opts, profile), per_channel=per_channel, method=opts.calib_method,
                     op_precision=int8_float_ops(built.quant_source, p, opts, profile),
                     preprocess=preprocess, detail=calib_detail,
                     ranges_hook=int8_ranges_hook if p is Precision.INT8 and not twinned else None)
        built.quantized[p] = result
        built.models[p] = result.model
    for p in wanted:
        check_written(built.models[p], p)
    return built


def check_written(model: bytes, precision: Precision) -> None:
    """ConversionError when the runtime refuses ``model``, a .tflite edgenet wrote (invalid quantization
    parameters, an op handed a tensor type it has no kernel for), at load or at allocation: a fault of
    the conversion, not of the user's model, said as such before any stage reads it (the verdict's
    interpreter would call it a bad model file)."""
    from edgenet.errors import ConversionError, ModelError
    from edgenet.runtime import make_interpreter

    try:
        make_interpreter(model, 1, use_xnnpack=False)
    except ModelError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ConversionError(f"the {precision.value} .tflite edgenet wrote is not valid ({detail}): a fault of the "
                              "conversion, not of your model (please report it with the model)") from None


def _quantize_qdq(built: Built, qdq, calib, opts: ConvertOptions, profile, per_channel: bool):
    """The int8 model with the QDQ pairs' ranges (what they miss calibrated on ``calib``); what was
    covered and how many weight values are kept as stored go to ``built.qdq``."""
    from edgenet.converters.qdq_quantize import quantize_qdq, tflite_ranges
    from edgenet.converters.qdq_weights import weight_fidelity

    ranges = tflite_ranges(built.quant_source, qdq.ranges,
                           [o.name for o in built.graph.outputs])
    result = quantize_qdq(built.quant_source, list(calib), ranges, precision=Precision.INT8,
                          io_type=io_type_for(Precision.INT8, opts, profile), per_channel=per_channel,
                          method=opts.calib_method,
                          op_precision=int8_float_ops(built.quant_source, Precision.INT8, opts, profile))
    fidelity = weight_fidelity(built.quant_source, result.model)
    if fidelity.equal < fidelity.total:   # channels the quantizer moved off the producer's grid put back
        from dataclasses import replace

        from edgenet.converters.qdq_weights import keep_stored_grid

        regridded, channels = keep_stored_grid(built.quant_source, result.model)
        again = weight_fidelity(built.quant_source, regridded, regridded=channels)
        if again.equal > fidelity.equal:
            result, fidelity = replace(result, model=regridded), again
    built.qdq = {**qdq.info.to_dict(), "tensors_with_qdq_range": len(ranges.ranges),
                 "tensors_calibrated": len(ranges.missing), "ranges_not_in_tflite": len(ranges.unused),
                 "weights_as_stored": fidelity.to_dict(), "per_channel": per_channel}
    return result


def int8_float_ops(float_model: bytes, precision: Precision, opts: ConvertOptions, profile) -> dict:
    """The ops of an int8 model that the target computes in float between int8 tensors (its
    profile's ``int8_float_ops``: ops its delegate has no int8 kernel for); none with --strict-int8
    or for another precision."""
    ops = tuple(getattr(profile, "int8_float_ops", ()) or ())
    if precision is not Precision.INT8 or not ops or getattr(opts, "strict_int8", False):
        return {}
    from edgenet.converters.hswish_balance import MARK
    from edgenet.converters.quantize import float_ops_named, float_ops_of_types

    found = float_ops_of_types(float_model, ops)
    if "HARD_SWISH" in ops:   # hard-swish balancing's multiplies and adds, computed in float beside it
        found.update(float_ops_named(float_model, MARK))
    return found


def stage_count(opts: ConvertOptions) -> int:
    """Steps :func:`build` runs (for the progress output's [k/n])."""
    return 1 + sum(p.full_integer for p in opts.precisions)
