"""TFLite stage: a channels-last TF graph -> float32 / float16 / dynamic-range .tflite bytes; a
float32 .tflite + calibration arrays -> full-integer int8 or int16x8.

Float: TensorFlow's TFLiteConverter on the frozen concrete function. The converter's default route
for concrete functions first writes a SavedModel to disk and reads it back (~1.5 s for MobileNetV1
1.0/224, and the model that comes out differs only in tensor names), so we take the direct route
and add the ``serving_default`` signature ourselves: inputs under their names, outputs as
``output_0``, ``output_1`` ... in the function's order. float16 (weights stored as float16) and
dynamic (weights stored as int8, activations float) are the converter's own post-training modes
(``Optimize.DEFAULT`` with ``supported_types = [float16]``, resp. without representative data).

Full integer: post-training quantization of that float model: per-channel weights (per-tensor
selectable), int8 or int16 activations. TF's converter would convert the graph a second time to
get the very same float model, calibrate it one sample at a time on one thread, and hand it to its
quantizer. We calibrate the float model we already have (:mod:`edgenet.converters.calibration`: batched,
all cores) and call the quantizer the converter calls, with its arguments:

- int8: the MLIR quantizer (``tensorflow.lite.python.convert.mlir_quantize``); int8, uint8 or
  float32 model I/O; ``keep_float`` names ops to leave in float (its ``denylisted_nodes``, what
  TF's QuantizationDebugger uses for selective quantization);
- int16x8 (``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``): the converter does not
  use the MLIR quantizer for 16-bit activations (its int16 mode writes int32 biases, which LiteRT's
  16x8 DEPTHWISE_CONV_2D refuses) but the older quantizer behind its calibration wrapper
  (``Calibrator.calibrate_and_quantize``: int64 biases, symmetric int16 activations). We hand that
  quantizer the model annotated with our ranges; int16 or float32 model I/O; no ``keep_float``
  (that quantizer has no per-op choice).

Given the same ranges, the result is byte for byte the converter's own model, less its
CONVERSION_METADATA entry (``tests/test_calibration.py``, ``tests/test_precisions.py``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from edgenet.converters._capture import captured_fd
from edgenet.converters.calibration import CalibrationStats, RangeCalibrator, pixel_input_range
from edgenet._deps import import_tensorflow, require
from edgenet.config import CalibMethod, IOType, Precision
from edgenet.data.preprocess import Preprocess
from edgenet.errors import ConversionError

SIGNATURE_KEY = "serving_default"
_CONVERSION_METADATA = b"CONVERSION_METADATA"


@dataclass(frozen=True)
class QuantizedResult:
    """A full-integer model and how it was calibrated."""

    model: bytes
    calibration: CalibrationStats
    precision: Precision = Precision.INT8
    keep_float: tuple[str, ...] = ()      # ops (by output tensor name) left in float on request
    ranged: bytes | None = field(default=None, repr=False, compare=False)   # the calibrated float model:
    # quantize it again (quantize_calibrated) with other ops kept in float, without calibrating again


Int8Result = QuantizedResult   # its former name

# model I/O types each full-integer precision can have (TF's converter accepts the same);
# by IOType value, so that an IOType.INT16 (if added) is taken as it is
_IO_TYPES = {
    Precision.INT8: ("int8", "uint8", "float32"),
    Precision.INT16X8: ("int16", "float32"),
}
_NATIVE_IO = {Precision.INT8: "int8", Precision.INT16X8: "int16"}


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


FLOAT_PRECISIONS = (Precision.FLOAT32, Precision.FLOAT16, Precision.DYNAMIC)


def to_float_tflite(graph, precision: Precision = Precision.FLOAT32) -> bytes:
    """A converters.onnx_to_tf.TFGraph as a .tflite model with float32 activations and input/output:
    float32 weights, float16 weights (``Precision.FLOAT16``: DEQUANTIZE ops turn them into float32
    when the model is prepared) or int8 weights (``Precision.DYNAMIC``: TFLite dynamic range
    quantization; ops with hybrid kernels quantize their input on the fly, the others get float
    weights). Raises ValueError for a full-integer precision, ConversionError when TensorFlow fails."""
    precision = Precision(precision)
    if precision not in FLOAT_PRECISIONS:
        raise ValueError(f"{precision.value} needs calibration: use to_quantized_tflite")
    conv = _converter(graph)
    if precision is not Precision.FLOAT32:
        tf = _tf()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision is Precision.FLOAT16:
            conv.target_spec.supported_types = [tf.float16]
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


def to_quantized_tflite(float_model: bytes, calib_inputs: Sequence[np.ndarray], *,
                        precision: Precision = Precision.INT8, io_type: IOType | None = None,
                        per_channel: bool = True, method: CalibMethod = CalibMethod.MINMAX,
                        keep_float: Sequence[str] = (), batch_size: int = 16,
                        num_threads: int | None = None, preprocess: Preprocess | None = None) -> QuantizedResult:
    """Full-integer model (``Precision.INT8`` or ``Precision.INT16X8``) of a float32 .tflite model
    (as :func:`to_float_tflite` makes it).

    ``calib_inputs`` holds one float32 array (N, ...) per model input, already preprocessed and in
    the model's layout (NHWC for images). ``io_type`` is the model's input and output type: int8,
    uint8 or float32 for int8; int16 or float32 for int16x8; None: the precision's own integer type.
    ``keep_float`` names ops, by their output tensor name in ``float_model``, to leave in float
    (int8 only): each gets DEQUANTIZE before and QUANTIZE after it, and the model's input and output
    types stay ``io_type`` even when a kept op produces a model output.
    With ``preprocess`` (an image model's normalization) the input's range is not calibrated but
    fixed to the pixel range (:func:`edgenet.converters.calibration.pixel_input_range`): a uint8 input then
    takes camera pixels as they are.
    Raises ConversionError (bad calibration shapes, an I/O type or ``keep_float`` the precision
    cannot have, an unknown op name, the quantizer failing)."""
    precision = Precision(precision)
    keep = tuple(dict.fromkeys(str(n) for n in keep_float))
    io = _io_type(precision, io_type)   # refused before any calibration work
    _check_keep_float(float_model, keep, precision)
    _check_calibration_shapes(float_model, calib_inputs)
    optimize = require("tensorflow.lite.python.optimize.calibrator")
    bits = 16 if precision is Precision.INT16X8 else 8
    input_range = None if preprocess is None else pixel_input_range(preprocess.mean, preprocess.std)
    calibrator = RangeCalibrator(calib_inputs, method, batch_size, num_threads or os.cpu_count(),
                                 input_range=input_range, activation_bits=bits)
    plain = optimize.add_intermediate_tensors(without_conversion_metadata(float_model))
    ranged = calibrator.annotate(bytes(plain))
    model = quantize_calibrated(ranged, precision=precision, io_type=io, per_channel=per_channel,
                                keep_float=keep)
    return QuantizedResult(model, calibrator.last_stats, precision, keep, ranged)


def quantize_calibrated(ranged_model: bytes, *, precision: Precision = Precision.INT8,
                        io_type: IOType | str | None = None, per_channel: bool = True,
                        keep_float: Sequence[str] = ()) -> bytes:
    """TensorFlow's quantizer on a float model whose activation tensors carry ``quantization.min/max``
    (what :meth:`RangeCalibrator.annotate` and TF's own ``Calibrator.calibrate`` write), called as
    TF's converter calls it for ``precision``; then the converter's read-only buffer deduplication."""
    tf = _tf()
    precision = Precision(precision)
    io = _io_type(precision, io_type)
    dtype = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16, "float32": tf.float32}[io]
    lite = require("tensorflow.lite.python.lite")
    if precision is Precision.INT8:
        convert = require("tensorflow.lite.python.convert")
        model = _run("int8", convert.mlir_quantize, ranged_model, disable_per_channel=not per_channel,
                     input_data_type=dtype, output_data_type=dtype, enable_variable_quantization=False,
                     disable_per_channel_for_dense_layers=False, debug_options_str=b"",
                     denylisted_nodes=list(keep_float) or None)
    elif precision is Precision.INT16X8:
        if keep_float:
            raise ConversionError(_NO_KEEP_FLOAT_16X8)
        model = _run("int16x8", _legacy_quantize, ranged_model, dtype, per_channel)
        if io == "int16":   # what the converter does after this quantizer for int16 I/O
            model = _run("int16x8", lite._modify_model_io_type, model, dtype, dtype)
    else:
        raise ValueError(f"not a full-integer precision: {precision.value}")
    dedupe = getattr(lite, "_deduplicate_readonly_buffers", None)   # what the converter does last
    if dedupe is not None:
        model = bytes(dedupe(model))
    return model


_NO_KEEP_FLOAT_16X8 = ("keep_float is not available for int16x8: TensorFlow quantizes 16-bit activations with "
                       "its older quantizer, which has no per-op choice (and its MLIR quantizer's int16 mode "
                       "writes models LiteRT refuses)")


def _legacy_quantize(ranged_model: bytes, io_dtype, per_channel: bool) -> bytes:
    """The quantizer TF's converter calls for 16x8 (``Calibrator.calibrate_and_quantize``), on a model
    that already holds its ranges: with nothing fed to the calibrator it has no statistics of its
    own to write over them. Ops with no int16 kernel stay in float (as with TFLITE_BUILTINS allowed)."""
    tf = _tf()
    optimize = require("tensorflow.lite.python.optimize.calibrator")
    wrapper = optimize._calibration_wrapper.CalibrationWrapper(ranged_model, [], [])
    num = lambda dtype: np.dtype(dtype.as_numpy_dtype).num   # noqa: E731
    return wrapper.QuantizeModel(num(io_dtype), num(io_dtype), True, num(tf.int16), num(tf.int64),
                                 not per_channel, False)


def _io_type(precision: Precision, io_type) -> str:
    """The I/O type's name ("int8", "int16", ...) for ``precision``; ConversionError if it cannot have it."""
    if precision not in _IO_TYPES:
        raise ValueError(f"not a full-integer precision: {precision.value}")
    name = _NATIVE_IO[precision] if io_type is None else getattr(io_type, "value", io_type)
    if name not in _IO_TYPES[precision]:
        raise ConversionError(f"a {precision.value} model takes {' or '.join(_IO_TYPES[precision])} "
                              f"input and output, not {name}")
    return name


def _check_keep_float(float_model: bytes, keep: tuple[str, ...], precision: Precision) -> None:
    if not keep:
        return
    if precision is not Precision.INT8:
        raise ConversionError(_NO_KEEP_FLOAT_16X8)
    from edgenet.targets.tflite_graph import read_tflite

    graph = read_tflite(float_model)
    names = {graph.tensors[op.outputs[0]].name for op in graph.operators if op.outputs}
    unknown = [n for n in keep if n not in names]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(names), n=2)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConversionError(f"keep_float: no op of the float model outputs {unknown[0]!r}{hint}")


def to_int8_tflite(float_model: bytes, calib_inputs: Sequence[np.ndarray], *, io_type: IOType = IOType.INT8,
                   per_channel: bool = True, method: CalibMethod = CalibMethod.MINMAX,
                   batch_size: int = 16, num_threads: int | None = None,
                   keep_float: Sequence[str] = (), preprocess: Preprocess | None = None) -> QuantizedResult:
    """:func:`to_quantized_tflite` with ``precision=Precision.INT8`` (the pipeline's call)."""
    return to_quantized_tflite(float_model, calib_inputs, precision=Precision.INT8, io_type=io_type,
                               per_channel=per_channel, method=method, keep_float=keep_float,
                               batch_size=batch_size, num_threads=num_threads, preprocess=preprocess)


_QUANTIZE_OP = "QUANTIZE"


def float_outputs(model: bytes, positions: Sequence[int]) -> bytes:
    """``model`` whose outputs at ``positions`` (in the model's order: the ``output_<k>`` keys of
    its signature) are float32: an output produced by a QUANTIZE of a float tensor (what the
    quantizer puts after an op kept in float) becomes that float tensor, and the QUANTIZE goes.
    Mixed precision uses it for an output whose values one int8 scale cannot hold (boxes in pixels
    beside 0..1 scores): the op is kept in float, and so is its output."""
    fbu, schema = _flatbuffers()
    schema_util = require("tensorflow.lite.python.schema_util")
    obj = fbu.convert_bytearray_to_object(model)
    graph = obj.subgraphs[0]
    codes = [schema_util.get_builtin_code_from_operator_code(c) for c in obj.operatorCodes]
    quantize = schema.BuiltinOperator.QUANTIZE
    sig = obj.signatureDefs[0] if obj.signatureDefs else None
    order = [int(i) for i in graph.outputs]
    if sig is not None:
        keyed = {(m.name.decode() if isinstance(m.name, bytes) else m.name): m for m in sig.outputs}
        named = [keyed[k] for k in sorted(keyed, key=lambda k: int(k.rsplit("_", 1)[1]))
                 if re.fullmatch(r"output_\d+", k)]
        if len(named) == len(order):
            order = [int(m.tensorIndex) for m in named]
    drop = set()
    producer = {int(op.outputs[0]): i for i, op in enumerate(graph.operators) if len(op.outputs)}
    for k in positions:
        tensor, chain = order[k], []
        # back through the QUANTIZE ops after the float op (int8, then uint8 for uint8 I/O ...)
        while tensor in producer and codes[graph.operators[producer[tensor]].opcodeIndex] == quantize:
            chain.append(producer[tensor])
            tensor = int(graph.operators[producer[tensor]].inputs[0])
            if graph.tensors[tensor].type == 0:     # 0: FLOAT32 -- the kept op's own output
                break
        if not chain or graph.tensors[tensor].type != 0:
            continue
        produced = {int(graph.operators[i].outputs[0]) for i in chain}
        used = [t for i, op in enumerate(graph.operators) if i not in chain for t in (int(x) for x in op.inputs)]
        if produced & set(used):
            continue                                 # a QUANTIZE's result feeds other ops too: leave it
        old = order[k]
        graph.outputs = [tensor if int(i) == old else int(i) for i in graph.outputs]
        if sig is not None:
            for m in sig.outputs:
                if int(m.tensorIndex) == old:
                    m.tensorIndex = tensor
        drop.update(chain)
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in drop]
    graph.outputs = np.array(graph.outputs, dtype=np.int32)
    return bytes(fbu.convert_object_to_bytearray(obj))
