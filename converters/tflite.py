"""TFLite stage: a channels-last TF graph -> float32 / float16 .tflite bytes; a float .tflite -> int8.

Float: TensorFlow's TFLiteConverter on the frozen concrete function. The converter's default route
for concrete functions first writes a SavedModel to disk and reads it back (~1.5 s for MobileNetV1
1.0/224, and the model that comes out differs only in tensor names), so we take the direct route
and add the ``serving_default`` signature ourselves: inputs under their names, outputs as
``output_0``, ``output_1`` ... in the function's order.

int8: post-training full-integer quantization of that float model: per-channel weights (per-tensor
selectable), int8 activations, int8 (or uint8 / float32) model input and output. TF's converter
would convert the graph a second time to get the very same float model, calibrate it one sample at
a time on one thread, and hand it to its MLIR quantizer. We calibrate the float model we already
have (:mod:`converters.calibration`: batched, all cores) and call that same quantizer with the same
arguments; the result is byte for byte the converter's own int8 model, less its
CONVERSION_METADATA entry (``tests/test_calibration.py`` checks the quantization against the stock
converter's).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from converters._capture import captured_fd
from converters.calibration import CalibrationStats, RangeCalibrator, pixel_input_range
from edgenet._deps import import_tensorflow, require
from edgenet.config import CalibMethod, IOType, Precision
from edgenet.data.preprocess import Preprocess
from edgenet.errors import ConversionError

SIGNATURE_KEY = "serving_default"
_CONVERSION_METADATA = b"CONVERSION_METADATA"


@dataclass(frozen=True)
class Int8Result:
    model: bytes
    calibration: CalibrationStats


def _tf():
    return import_tensorflow(purpose="TFLite conversion")


def _flatbuffers():
    _tf()
    return require("tensorflow.lite.tools.flatbuffer_utils"), require("tensorflow.lite.python.schema_py_generated")


def _converter(graph):
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([graph.concrete_function], graph.module)
    conv.experimental_lower_to_saved_model = False   # convert the frozen function, no SavedModel on disk
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv


def explain_failure(text: str) -> str:
    """One readable line out of the TFLite converter's MLIR diagnostics."""
    flex = re.search(r"TF Select ops: ([^\n]+)", text)
    if flex:
        return (f"TFLite's builtin op set has no kernel for {flex.group(1).strip()} (an ONNX op that maps to it "
                "cannot run on the device runtimes edgenet targets)")
    for line in text.splitlines():
        m = re.search(r"error: (.+)$", line)
        if m and "failed while converting" not in m.group(1):
            return m.group(1).strip()[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:300] if lines else "unknown error"


def _run(what: str, fn, *args, **kwargs) -> bytes:
    """Call a TensorFlow conversion function with its native diagnostics captured; one line on failure."""
    with captured_fd(2) as log:
        try:
            model = fn(*args, **kwargs)
        except Exception as exc:
            raise ConversionError(f"TFLite {what} conversion failed: "
                                  f"{explain_failure(str(exc) + chr(10) + log.text)}") from exc
    return bytes(model)


def with_signature(model: bytes) -> bytes:
    """``model`` with a ``serving_default`` signature over its main subgraph, if it has none: each
    input under its tensor name, outputs as ``output_<k>`` in subgraph order (the function's order)."""
    fbu, schema = _flatbuffers()
    obj = fbu.convert_bytearray_to_object(model)
    if obj.signatureDefs:
        return model
    graph = obj.subgraphs[0]

    def entry(name: str, index: int):
        t = schema.TensorMapT()
        t.name, t.tensorIndex = name, int(index)
        return t

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [entry(graph.tensors[i].name.decode().split(":")[0], i) for i in graph.inputs]
    sig.outputs = [entry(f"output_{k}", i) for k, i in enumerate(graph.outputs)]
    obj.signatureDefs = [sig]
    return bytes(fbu.convert_object_to_bytearray(obj))


def without_conversion_metadata(model: bytes) -> bytes:
    """``model`` without the converter's CONVERSION_METADATA entry (and the buffer that holds it):
    exactly the float model TF's converter hands to calibration when it quantizes."""
    fbu, _ = _flatbuffers()
    obj = fbu.convert_bytearray_to_object(model)
    entries = [m for m in (obj.metadata or []) if m.name == _CONVERSION_METADATA]
    if not entries:
        return model
    dropped = {m.buffer for m in entries}
    if dropped != {len(obj.buffers) - 1}:   # not the converter's layout (one trailing buffer): leave it
        return model
    obj.buffers.pop()
    obj.metadata = [m for m in obj.metadata if m.name != _CONVERSION_METADATA]
    return bytes(fbu.convert_object_to_bytearray(obj))


def to_float_tflite(graph, precision: Precision = Precision.FLOAT32) -> bytes:
    """float32 (or float16-weights) TFLite model of a converters.onnx_to_tf.TFGraph."""
    conv = _converter(graph)
    if precision is Precision.FLOAT16:
        tf = _tf()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision is not Precision.FLOAT32:
        raise ValueError(f"not a float precision: {precision}")
    return with_signature(_run(precision.value, conv.convert))


def _check_calibration_shapes(model: bytes, calib_inputs: Sequence[np.ndarray]) -> None:
    fbu, _ = _flatbuffers()
    graph = fbu.convert_bytearray_to_object(model).subgraphs[0]
    if len(calib_inputs) != len(graph.inputs):
        raise ConversionError(f"calibration data has {len(calib_inputs)} input(s), the model {len(graph.inputs)}")
    for arr, index in zip(calib_inputs, graph.inputs):
        tensor = graph.tensors[index]
        shape = [int(d) for d in tensor.shape]
        want = tuple(shape[1:] if len(shape) >= 2 else shape)
        if tuple(arr.shape[1:]) != want:
            raise ConversionError(f"calibration samples have shape {tuple(arr.shape[1:])}, "
                                  f"model input '{tensor.name.decode()}' wants {want}")


def to_int8_tflite(float_model: bytes, calib_inputs: Sequence[np.ndarray], *, io_type: IOType = IOType.INT8,
                   per_channel: bool = True, method: CalibMethod = CalibMethod.MINMAX,
                   batch_size: int = 16, num_threads: int | None = None,
                   preprocess: Preprocess | None = None) -> Int8Result:
    """Full-integer int8 model of a float32 .tflite model (as :func:`to_float_tflite` makes it);
    ``calib_inputs`` holds one float32 array (N, ...) per model input, already preprocessed and in
    the model's layout (NHWC for images). With ``preprocess`` (an image model's normalization) the
    input's range is not calibrated but fixed to the pixel range
    (:func:`converters.calibration.pixel_input_range`): a uint8 input then takes camera pixels as
    they are."""
    tf = _tf()
    _check_calibration_shapes(float_model, calib_inputs)
    convert = require("tensorflow.lite.python.convert")
    optimize = require("tensorflow.lite.python.optimize.calibrator")
    lite = require("tensorflow.lite.python.lite")

    input_range = None if preprocess is None else pixel_input_range(preprocess.mean, preprocess.std)
    calibrator = RangeCalibrator(calib_inputs, method, batch_size, num_threads or os.cpu_count(), input_range)
    plain = optimize.add_intermediate_tensors(without_conversion_metadata(float_model))
    ranged = calibrator.annotate(bytes(plain))
    io = {IOType.INT8: tf.int8, IOType.UINT8: tf.uint8, IOType.FLOAT32: tf.float32}[IOType(io_type)]
    model = _run("int8", convert.mlir_quantize, ranged, disable_per_channel=not per_channel,
                 input_data_type=io, output_data_type=io, enable_variable_quantization=False,
                 disable_per_channel_for_dense_layers=False, debug_options_str=b"")
    dedupe = getattr(lite, "_deduplicate_readonly_buffers", None)   # what the converter does last
    if dedupe is not None:
        model = bytes(dedupe(model))
    return Int8Result(model, calibrator.last_stats)
