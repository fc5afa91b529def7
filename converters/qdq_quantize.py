"""Quantization of a stripped QDQ graph with the producer's ranges (:mod:`edgenet.converters.qdq`).

The float .tflite made from the stripped graph is quantized by edgenet's engine (the LiteRT
Quantizer, :func:`edgenet.converters.quantize.quantize`) with the QDQ pairs' intervals handed to it
as its calibration result. For an int8 pair ``(scale s, zero point z)`` the interval
``[(-128 - z) s, (127 - z) s]`` gives back ``scale = (max - min) / 255 = s`` and
``zero point = -128 - round(min / s) = z`` (uint8: ``z - 128``, the same grid), so the int8 model
computes on the producer's grid. Tensors of the .tflite that hold no quantized ONNX value
(values the producer left in float) are calibrated as usual on the calibration data, and
counted; tensors the conversion added inside an ONNX node that only move values (a Conv's
explicit Pad, a layout Transpose, a Reshape) take their input's range.

ONNX value names are the TFLite tensor names (edgenet's writer names each tensor after the ONNX
value it holds); graph outputs are matched by position.

Weights: the LiteRT Quantizer derives each weight scale from the float weights it is given
(symmetric int8, ``max|w| / 127`` per output channel or per tensor). Given the producer's
dequantized weights ``q * s`` with ``max|q| = 127`` in each channel (what onnxruntime, and any
symmetric max-based quantizer, stores), that gives back ``s`` and ``q`` exactly. Where it cannot
(an asymmetric or uint8 weight, a channel whose largest value is not +-127, a per-tensor weight
quantized per channel) the values differ: :func:`edgenet.converters.qdq_weights.keep_stored_grid`
puts channels back on the producer's grid where it finds one, and
:func:`edgenet.converters.qdq_weights.weight_fidelity` measures the share of weight values of the
int8 model equal to the QDQ model's; the pipeline says it when any differ.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from edgenet.config import CalibMethod, IOType, Precision
from edgenet.converters import _flatbuffer

_FLOAT32 = 0                           # tflite TensorType
_SAME_RANGE = ("PAD", "PADV2", "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS")
QDQ_REFERENCE = "the QDQ model (onnxruntime)"   # what the int8 verdict of a QDQ source compares against


@dataclass(frozen=True)
class QDQRanges:
    """The float .tflite's activation tensors: those with a producer's range, and those without."""

    ranges: Mapping[str, tuple[float, float]]   # TFLite tensor name -> (min, max)
    missing: tuple[str, ...]                    # activation tensors no QDQ pair covers
    unused: tuple[str, ...]                     # ONNX values with a range no tensor holds

    @property
    def total(self) -> int:
        return len(self.ranges) + len(self.missing)


def _has_data(buffer) -> bool:
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def tflite_ranges(float_model: bytes, onnx_ranges: Mapping[str, tuple[float, float]],
                  output_names: Sequence[str]) -> QDQRanges:
    """The producer's ranges by the TFLite tensor names of ``float_model`` (a float32 .tflite of
    the stripped graph, its tensors named by ONNX values); ``output_names``: the ONNX names of the
    model outputs, in order."""
    obj = _flatbuffer.read(float_model)
    graph = obj.subgraphs[0]
    outputs = {int(i): name for i, name in zip(graph.outputs, output_names)}
    found, used = {}, set()
    activations = [i for i, t in enumerate(graph.tensors)
                   if t.type == _FLOAT32 and not _has_data(obj.buffers[t.buffer])]
    for i in activations:
        name = _flatbuffer.tensor_name(graph.tensors[i])
        value = outputs.get(i) or name
        if value in onnx_ranges:
            found[i] = tuple(float(v) for v in onnx_ranges[value])
            used.add(value)
    # ops the conversion added inside a node (a Conv's explicit Pad, a layout Transpose, a Reshape)
    # move values without changing them: their output takes their input's range
    codes = _flatbuffer.schema().BuiltinOperator
    same = {getattr(codes, n) for n in _SAME_RANGE}
    for op in graph.operators:
        if len(op.outputs) and len(op.inputs) and int(op.outputs[0]) not in found and int(op.inputs[0]) in found \
                and _flatbuffer.builtin_code(obj, op) in same:
            found[int(op.outputs[0])] = found[int(op.inputs[0])]
    _split_concat_ranges(obj, graph, found, codes)
    name = [_flatbuffer.tensor_name(t) for t in graph.tensors]
    missing = tuple(name[i] for i in activations if i not in found)
    unused = tuple(sorted(set(onnx_ranges) - used))
    return QDQRanges({name[i]: r for i, r in found.items()}, missing, unused)


def _split_concat_ranges(obj, graph, found: dict, codes) -> None:
    """Ranges of the tensors a grouped Conv's lowering adds (SPLIT of its input, one CONV_2D per group,
    CONCATENATION of their outputs), in place: each piece of a SPLIT / SPLIT_V takes its input's range
    (a split moves values), and a CONCATENATION input without a range, read by the concatenation alone,
    takes the concatenation's (the one ONNX value it is part of: the producer quantized the whole
    output on one grid, which the int8 model then computes each group's part on, with no requantizing);
    a RESHAPE's range goes back to a concatenation it reshapes (a 1-D grouped Conv)."""
    data_input = {codes.SPLIT: 1, codes.SPLIT_V: 0}
    readers: dict[int, int] = {}
    for op in graph.operators:
        for i in op.inputs:
            readers[int(i)] = readers.get(int(i), 0) + 1
    outputs = {int(i) for i in graph.outputs}
    for op in graph.operators:       # in order: a split's input may itself be a concatenation's piece
        code = _flatbuffer.builtin_code(obj, op)
        if code in data_input and len(op.inputs) > data_input[code] and int(op.inputs[data_input[code]]) in found:
            for o in op.outputs:
                found.setdefault(int(o), found[int(op.inputs[data_input[code]])])
    for op in reversed(list(graph.operators)):   # backwards: a concatenation's range reaches its pieces
        code = _flatbuffer.builtin_code(obj, op)
        if code in (codes.CONCATENATION, codes.RESHAPE) and len(op.outputs) and int(op.outputs[0]) in found:
            pieces = op.inputs if code == codes.CONCATENATION else op.inputs[:1]   # (a 1-D conv reshapes it)
            for i in pieces:
                if int(i) not in found and readers.get(int(i)) == 1 and int(i) not in outputs \
                        and (code == codes.CONCATENATION or _is_concatenation(obj, graph, int(i), codes)):
                    found[int(i)] = found[int(op.outputs[0])]


def _is_concatenation(obj, graph, tensor: int, codes) -> bool:
    """True when ``tensor`` is made by a CONCATENATION."""
    return any(int(op.outputs[0]) == tensor and _flatbuffer.builtin_code(obj, op) == codes.CONCATENATION
               for op in graph.operators if len(op.outputs))


def quantize_qdq(float_model: bytes, calib_inputs: Sequence[np.ndarray], qdq: QDQRanges, *,
                 precision: Precision = Precision.INT8, io_type: IOType | str | None = None,
                 per_channel: bool = True, method: CalibMethod = CalibMethod.MINMAX,
                 batch_size: int = 16, num_threads: int | None = None, op_precision=None):
    """The full-integer model of ``float_model`` with the producer's ranges ``qdq``; tensors they
    do not cover calibrated on ``calib_inputs`` (as :func:`edgenet.converters.quantize.quantize_calibrated`
    does; not run at all when every tensor is covered). Returns a
    :class:`edgenet.converters.quantize.QuantizedResult` (its ``ranges`` the merged ranges, so that
    a repair can quantize again). Raises ConversionError as :func:`~edgenet.converters.quantize.quantize`."""
    from edgenet.converters.calibration import CalibrationStats, RangeCalibrator
    from edgenet.converters.quantize import QuantizedResult, _ops, check_calibration_shapes, io_type_name, quantize

    precision = Precision(precision)
    io = io_type_name(precision, io_type)
    ranges = dict(qdq.ranges)
    t0 = time.perf_counter()
    if qdq.missing:
        check_calibration_shapes(float_model, calib_inputs)
        calibrator = RangeCalibrator(calib_inputs, method, batch_size, num_threads or os.cpu_count())
        measured = calibrator.ranges(float_model)
        ranges.update({name: measured[name] for name in qdq.missing if name in measured})
        stats = CalibrationStats(method, calibrator.last_stats.samples, calibrator.last_stats.batch_size,
                                 len(qdq.missing), calibrator.last_stats.seconds)
    else:
        stats = CalibrationStats(method, 0, 0, 0, time.perf_counter() - t0)
    op_precision = dict(op_precision or {})    # ops the target computes in float between int8 tensors
    model = quantize(float_model, ranges, precision=precision, io_type=io, per_channel=per_channel,
                     op_precision=op_precision)
    return QuantizedResult(model, stats, precision, _ops(op_precision), io, per_channel, ranges,
                           bytes(float_model))


def qdq_notes(found: Mapping, data_info: Mapping) -> list[str]:
    """The user's notes on an int8 model made with QDQ ranges (``found``: ``Built.qdq``)."""
    notes = []
    calibrated = found["tensors_calibrated"]
    total = calibrated + found["tensors_with_qdq_range"]
    data = data_info.get("dataset", "the calibration data")
    if calibrated:
        notes.append(f"{calibrated} of {total} activation tensors of the int8 model have no QDQ pair (the producer "
                     f"left them in float, or the conversion made them): calibrated on {data}")
    else:
        notes.append(f"all {total} activation tensors of the int8 model take the QDQ model's ranges: no calibration")
    weights = found["weights_as_stored"]
    if weights["total"] and weights["equal"] < weights["total"]:
        notes.append(f"weights: {weights['total'] - weights['equal']} of {weights['total']} values "
                     f"({100 * (1 - weights['share']):.2f}%, in {weights['tensors_differing']} tensor(s)) differ from "
                     "the QDQ model's stored int8 values: TFLite stores int8 weights symmetric on [-127, 127] "
                     f"{'per output channel' if found['per_channel'] else 'per tensor'}, and these "
                     f"{'channels' if found['per_channel'] else 'tensors'} hold a value the producer's scale cannot "
                     "put there (a -128, a q - zero point outside [-127, 127], per-channel weights stored per "
                     "tensor), so they were rescaled to max|w| / 127, each value moved by at most half a step")
    elif weights["total"]:
        notes.append(f"weights: all {weights['total']} values equal the QDQ model's stored int8 values")
    if weights.get("channels_regridded"):
        notes[-1] += (f" ({weights['channels_regridded']} channel(s) put back on the producer's grid -- its scale or a "
                      "whole fraction of it --, where TFLite's max|w| / 127 would have moved them: a largest |q| below "
                      "127)")
    return notes


def within_one_step(reference: Sequence[np.ndarray], got: Sequence[np.ndarray],
                    ranges: Sequence[tuple[float, float] | None], names: Sequence[str]) -> dict[str, float]:
    """Per output (``names``) with a QDQ range (``ranges``, by position): the share of values of
    ``got`` within one quantization step (``(max - min) / 255`` of the output's QDQ range) of
    ``reference`` (same layout)."""
    out = {}
    for name, ref, val, rng in zip(names, reference, got, ranges):
        if rng is None or np.shape(ref) != np.shape(val):
            continue
        step = (rng[1] - rng[0]) / 255.0
        diff = np.abs(np.asarray(ref, np.float64) - np.asarray(val, np.float64))
        out[name] = float(np.mean(diff <= step * (1 + 1e-4)))
    return out
