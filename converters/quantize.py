"""Quantization stage: a float32 .tflite + edgenet's activation ranges -> a full-integer model
(int8, int16x8, or int8 with chosen ops in int16 or float), written by Google's LiteRT Quantizer.

Why this engine: the LiteRT Quantizer (PyPI ``litert-quantizer``, module ``litert_quantizer``,
formerly AI Edge Quantizer) is Google's recommended way to quantize a converted LiteRT model
after conversion; TensorFlow's in-converter quantization (``TFLiteConverter.optimizations`` with
a representative dataset) is documented as deprecated in its favour. It needs no TensorFlow (it
runs in this process), and it takes a per-op recipe:
any op, named by a regular expression over its output tensor names, can get int8 activations
("a8w8"), int16 activations with int8 weights ("a16w8", TFLite's 16x8 kernels) or stay in float,
with the QUANTIZE / DEQUANTIZE ops between them added for us.

The quantizer's own calibration runs the model one sample at a time. We calibrate ourselves
(:class:`edgenet.converters.calibration.RangeCalibrator`: batched, all cores, minmax / percentile /
mse) and hand it the ranges as its calibration result, ``{tensor name: {"min", "max"}}``; from a
range ``[lo, hi]`` it makes

- int8 activations: ``scale = (max(hi, 0) - min(lo, 0)) / 255``, ``zero_point = -128 - round(min(lo, 0) / scale)``;
- int16 activations: symmetric, ``scale = max(|lo|, |hi|) / 32767``, zero point 0;
- weights: symmetric int8, per output channel (``per_channel=False``: one scale per tensor);
  biases int32 (int64 beside int16 activations).

Model I/O: int8 models take int8 (the quantizer's own), uint8 (a QUANTIZE at each end,
:func:`edgenet.converters.quant_io.uint8_io`) or float32 (the quantizer's QUANTIZE / DEQUANTIZE at
the ends); int16x8 models int16 or float32. Constant buffers are kept inside the flatbuffer (no
trailing buffers at offsets). The same float model, ranges and options give the same bytes
(``tests/test_precisions.py``).
"""
from __future__ import annotations

import functools
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from edgenet._deps import require
from edgenet.config import CalibMethod, IOType, OpPrecision, Precision
from edgenet.converters import _flatbuffer
from edgenet.converters.calibration import CalibrationStats, RangeCalibrator, pixel_input_range
from edgenet.data.preprocess import Preprocess
from edgenet.errors import ConversionError

# model I/O types each full-integer precision can have, by IOType value
_IO_TYPES = {
    Precision.INT8: ("int8", "uint8", "float32"),
    Precision.INT16X8: ("int16", "float32"),
}
_NATIVE_IO = {Precision.INT8: "int8", Precision.INT16X8: "int16"}
_ACTIVATION_BITS = {Precision.INT8: 8, Precision.INT16X8: 16, OpPrecision.INT16: 16}


@dataclass(frozen=True)
class QuantizedResult:
    """A full-integer model, how it was calibrated and quantized, and what :func:`requantize`
    needs to quantize it again with other op precisions (without calibrating again)."""

    model: bytes
    calibration: CalibrationStats
    precision: Precision = Precision.INT8
    op_precision: tuple[tuple[str, OpPrecision], ...] = ()   # ops not in the precision's own scheme
    io_type: str = "int8"
    per_channel: bool = True
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict, repr=False, compare=False)
    source: bytes = field(default=b"", repr=False, compare=False)   # the float model quantized

    @property
    def keep_float(self) -> tuple[str, ...]:
        """The ops left in float on request (by output tensor name)."""
        return tuple(name for name, p in self.op_precision if p is OpPrecision.FLOAT)


def _quantizer_api():
    return (require("litert_quantizer.quantizer", extra="onnx", purpose="int8 / int16x8 quantization"),
            require("litert_quantizer.qtyping"), require("litert_quantizer.algorithm_manager"),
            require("litert_quantizer.utils.tfl_flatbuffer_utils"))


def preload() -> None:
    """Import the LiteRT Quantizer now (it takes a second: scipy, ml_dtypes)."""
    _quantizer_api()


def io_type_name(precision: Precision, io_type) -> str:
    """The I/O type's name ("int8", "int16", ...) for ``precision``; ConversionError if it cannot have it."""
    precision = Precision(precision)
    if precision not in _IO_TYPES:
        raise ValueError(f"not a full-integer precision: {precision.value}")
    name = _NATIVE_IO[precision] if io_type is None else getattr(io_type, "value", io_type)
    if name not in _IO_TYPES[precision]:
        raise ConversionError(f"a {precision.value} model takes {' or '.join(_IO_TYPES[precision])} "
                              f"input and output, not {name}")
    return name


def _op_scopes(float_model: bytes) -> dict[str, tuple[str, str]]:
    """{first output tensor name: (the op's scope as the quantizer matches it, its TFLite op name)}.
    The last two models' are kept: the int8 stage asks for them three times (target float ops, op
    names checked, the signed model's), and unpacking a 5,500-op model takes seconds."""
    return dict(_op_scopes_kept(bytes(float_model)))


@functools.lru_cache(maxsize=2)
def _op_scopes_kept(float_model: bytes) -> tuple[tuple[str, tuple[str, str]], ...]:
    return tuple(_read_op_scopes(float_model).items())


def _read_op_scopes(float_model: bytes) -> dict[str, tuple[str, str]]:
    _, _, _, tfu = _quantizer_api()
    obj = _flatbuffer.read(float_model)
    graph = obj.subgraphs[0]
    found = {}
    for op in graph.operators:
        if not len(op.outputs):
            continue
        code = _flatbuffer.builtin_code(obj, op)
        name = tfu.TFL_OP_CODE_TO_NAME.get(code)
        found[_flatbuffer.tensor_name(graph.tensors[op.outputs[0]])] = (tfu.get_op_scope(op, graph.tensors), name)
    return found


@functools.lru_cache(maxsize=1)
def _signed_scopes(float_model: bytes) -> tuple[bytes, tuple[tuple[str, tuple[str, str]], ...]]:
    from edgenet.converters.tflite import with_signature

    signed = with_signature(float_model)
    return signed, tuple(_op_scopes(signed).items())


def _signed(float_model: bytes) -> tuple[bytes, dict[str, tuple[str, str]]]:
    """``float_model`` with its signature (:func:`edgenet.converters.tflite.with_signature`) and its op
    scopes (:func:`_op_scopes`): the same for every requantization of one model (a repair makes dozens),
    so the last model's are kept (unpacking a 3 M-parameter model's flatbuffer takes ~0.03 s a time)."""
    signed, scopes = _signed_scopes(float_model)
    return signed, dict(scopes)


_ENGINE_LOCK = threading.Lock()


def _skip_empty_op_id_updates() -> None:
    """The quantizer's graph rewrite, after each of its transformations (one or more per tensor:
    ~6,000 for a 5,500-op model), shifts its table of op positions by the ops that transformation
    added, converting the whole table to numpy and back: O(ops x transformations), a third of a
    round on an unrolled LSTM. Most transformations (a tensor's new quantization parameters) add no
    op, and shifting by zero changes nothing: those calls return at once. Installed once; the calls
    that add ops run the quantizer's own code."""
    performer = require("litert_quantizer.transformation_performer").TransformationPerformer
    original = getattr(performer, "_update_op_id_map", None)
    if original is None or getattr(original, "_edgenet_skips_zero", False):
        return

    def update(self, subgraph_id, original_op_id, num_ops_added):
        if num_ops_added:
            original(self, subgraph_id, original_op_id, num_ops_added)

    update._edgenet_skips_zero = True
    performer._update_op_id_map = update


@functools.lru_cache(maxsize=1)
def _engine(signed_model: bytes):
    """The LiteRT Quantizer of ``signed_model``, kept for the next call: its construction unpacks the
    whole model with the flatbuffer object API (~2 s for a 5,500-op unrolled LSTM), and a repair
    quantizes one float model dozens of times. Each quantization starts from a cleared recipe; the
    quantizer does not change its float model when it quantizes (it works on a copy,
    ``ModelModifier.modify_model``), so each call gives the bytes a new quantizer would
    (``tests/test_precisions.py``)."""
    quantizer, _, _, _ = _quantizer_api()
    _skip_empty_op_id_updates()
    engine = quantizer.Quantizer(signed_model)
    # Quantizer.quantize first checks that no tensor's calibration entry is empty, building an
    # interpreter of the whole float model (all tensors kept, XNNPACK) to find the tensors of each
    # signature, on every call: ~0.3 s of a 5,500-op model's round. It raises only for an empty entry,
    # and quantize() gives every tensor a min and a max: the check can never fail here.
    if hasattr(engine, "_ensure_model_qsv_sufficient"):
        engine._ensure_model_qsv_sufficient = lambda calibration_result: None
    return engine


def _check_op_names(scopes: Mapping[str, tuple[str, str]], names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in scopes]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(scopes), n=2)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConversionError(f"op_precision: no op of the float model outputs {unknown[0]!r}{hint}")


def _recipe_regexes(op_precision: Mapping[str, OpPrecision], scopes: Mapping[str, tuple[str, str]]
                    ) -> list[tuple[tuple[str, OpPrecision], str]]:
    """``[((TFLite op name, promotion), scope regex)]``: one regex per op type and promotion, matching
    exactly the scopes of the ops of ``op_precision`` that get it (ops the quantizer does not know left
    out: they stay in float anyway).

    The quantizer looks every op's scope up in every regex of its recipe (``re.search``, whose cache
    holds 512 patterns): with one regex per op, a repair promoting 1,500 of an unrolled LSTM's 5,500 ops
    compiled millions of patterns, minutes a round. The alternation ``^(?:s1|s2|...)$`` matches what
    the regexes ``^s1$``, ``^s2$`` ... match, and for each scope and op type the one promotion the
    quantizer would have kept (the last of ``op_precision`` in name order, as it overwrites an op type's
    recipe under the same regex): the same recipe, the same model."""
    final: dict[tuple[str, str], OpPrecision] = {}
    for name, wanted in sorted(op_precision.items()):
        scope, op_name = scopes[name]
        if op_name is not None:
            final[(scope, op_name)] = OpPrecision(wanted)
    groups: dict[tuple[str, OpPrecision], list[str]] = {}
    for (scope, op_name), wanted in final.items():
        groups.setdefault((op_name, wanted), []).append(scope)
    return [(key, "^(?:" + "|".join(re.escape(s) for s in found) + ")$") for key, found in groups.items()]


def _op_config(qtyping, activation_bits: int, per_channel: bool):
    tensor = qtyping.TensorQuantizationConfig
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    return qtyping.OpQuantizationConfig(
        activation_tensor_config=tensor(num_bits=activation_bits, symmetric=activation_bits == 16,
                                        granularity=qtyping.QuantGranularity.TENSORWISE),
        weight_tensor_config=tensor(num_bits=8, symmetric=True, granularity=granularity),
        compute_precision=qtyping.ComputePrecision.INTEGER, explicit_dequantize=False)


def quantize(float_model: bytes, ranges: Mapping[str, tuple[float, float]], *, precision: Precision,
             io_type: IOType | str | None = None, per_channel: bool = True,
             op_precision: Mapping[str, OpPrecision] = {},   # noqa: B006 (read only)
             _rewritten: bool = False) -> bytes:
    """The full-integer model of ``float_model`` (a float32 .tflite, as
    :func:`edgenet.converters.tflite.to_float_tflite` makes it) with the activation ranges ``ranges``.

    ``ranges``: ``{tensor name: (min, max)}`` for the float activation tensors, model inputs and
    outputs included (:meth:`RangeCalibrator.ranges`). ``precision``: ``Precision.INT8`` (a8w8) or
    ``Precision.INT16X8`` (a16w8 everywhere). ``io_type``: the model's input and output type (int8,
    uint8 or float32 for int8; int16 or float32 for int16x8; None: the precision's own integer type).
    ``per_channel``: one weight scale per output channel (False: per tensor). ``op_precision``: ops,
    named by their (first) output tensor name in ``float_model``, computed in int16 (a16w8) or left
    in float instead; an op the quantizer has no a16w8 kernel recipe for stays in the model's
    scheme, an op it cannot quantize at all stays in float (see
    :func:`edgenet.converters.op_precision.ops_not_in`). Model inputs and outputs keep ``io_type``
    whatever the op next to them computes in.
    Raises ConversionError: an I/O type the precision cannot have, an unknown op name, a missing
    range, the quantizer failing."""
    from edgenet.converters.quant_io import float_readers_read_float, inline_buffers, uint8_io

    precision = Precision(precision)
    io = io_type_name(precision, io_type)
    _, qtyping, algorithms, _ = _quantizer_api()
    no_quantize = algorithms.AlgorithmName.NO_QUANTIZE
    float_model, scopes = _signed(bytes(float_model))   # the quantizer works signature by signature
    _check_op_names(scopes, list(op_precision))

    qsvs = {name: {"min": np.array([lo], np.float32), "max": np.array([hi], np.float32)}
            for name, (lo, hi) in sorted(ranges.items())}
    from edgenet.converters._capture import captured_fd

    import warnings

    with _ENGINE_LOCK:    # one quantizer object per float model, used by one call at a time
        engine = _engine(float_model)
        engine.load_quantization_recipe([])   # the recipe of an earlier call gone
        engine.update_quantization_recipe(".*", qtyping.TFLOperationName.ALL_SUPPORTED,
                                          _op_config(qtyping, _ACTIVATION_BITS[precision], per_channel),
                                          algorithms.AlgorithmName.MIN_MAX_UNIFORM_QUANT)
        if io == "float32":
            for end in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                engine.update_quantization_recipe(".*", end, None, no_quantize)
        for (op_name, wanted), regex in _recipe_regexes(op_precision, scopes):
            if wanted is OpPrecision.FLOAT:
                engine.update_quantization_recipe(regex, op_name, None, no_quantize)
            else:
                engine.update_quantization_recipe(regex, op_name, _op_config(qtyping, 16, per_channel),
                                                  algorithms.AlgorithmName.MIN_MAX_UNIFORM_QUANT)
        with captured_fd(2) as log, warnings.catch_warnings():
            warnings.simplefilter("ignore")   # its check of the ranges builds a debug interpreter, and says so
            try:
                model = bytes(engine.quantize(qsvs, enable_progress_bar=False,
                                              enable_progress_report=False).quantized_model)
            except Exception as exc:
                text = (str(exc).strip() or log.text.strip() or type(exc).__name__).splitlines()[0]
                _engine.cache_clear()   # a quantizer that failed midway is not used again
                raise ConversionError(f"LiteRT Quantizer: {precision.value} quantization failed: {text[:300]}") from exc
    model = float_readers_read_float(model)
    if io == "uint8":
        return uint8_io(model)
    # _rewritten: the caller rewrites the model with the object API next, which inlines the buffers too,
    # or only runs it (a repair's trial model, requantize(trial=True))
    return model if _rewritten else inline_buffers(model)


def check_calibration_shapes(model: bytes, calib_inputs: Sequence[np.ndarray]) -> None:
    """ConversionError unless ``calib_inputs`` has one (N, ...) array per model input, shaped as it."""
    graph = _flatbuffer.schema().Model.GetRootAsModel(bytes(model), 0).Subgraphs(0)   # read in place
    inputs = [int(graph.Inputs(k)) for k in range(graph.InputsLength())]
    if len(calib_inputs) != len(inputs):
        raise ConversionError(f"calibration data has {len(calib_inputs)} input(s), the model {len(inputs)}")
    for arr, index in zip(calib_inputs, inputs):
        tensor = graph.Tensors(index)
        shape = [int(tensor.Shape(k)) for k in range(tensor.ShapeLength())]
        want = tuple(shape[1:] if len(shape) >= 2 else shape)
        if tuple(arr.shape[1:]) != want:
            raise ConversionError(f"calibration samples have shape {tuple(arr.shape[1:])}, "
                                  f"model input '{(tensor.Name() or b'').decode()}' wants {want}")


def quantize_calibrated(float_model: bytes, calib_inputs: Sequence[np.ndarray], *,
                        precision: Precision = Precision.INT8, io_type: IOType | str | None = None,
                        per_channel: bool = True, method: CalibMethod = CalibMethod.MINMAX,
                        op_precision: Mapping[str, OpPrecision] = {},   # noqa: B006 (read only)
                        batch_size: int = 16, num_threads: int | None = None,
                        preprocess: Preprocess | None = None, ranges_hook=None) -> QuantizedResult:
    """Calibrate ``float_model`` on ``calib_inputs`` and :func:`quantize` it: the pipeline's
    int8 / int16x8 stage.

    ``calib_inputs`` holds one float32 array (N, ...) per model input, already preprocessed and in
    the model's layout (NHWC for images). With ``preprocess`` (an image model's normalization) the
    input's range is not calibrated but fixed to the pixel range
    (:func:`edgenet.converters.calibration.pixel_input_range`): a uint8 input then takes camera
    pixels as they are. int16x8 with ``CalibMethod.MSE`` searches the symmetric int16 grid.
    Raises ConversionError (bad calibration shapes, an I/O type the precision cannot have, an
    unknown op name, a range reaching NaN or infinity, the quantizer failing)."""
    precision = Precision(precision)
    io = io_type_name(precision, io_type)   # refused before any calibration work
    _check_op_names(_op_scopes(float_model), list(op_precision))
    check_calibration_shapes(float_model, calib_inputs)
    input_range = None if preprocess is None else pixel_input_range(preprocess.mean, preprocess.std)
    calibrator = RangeCalibrator(calib_inputs, method, batch_size, num_threads or os.cpu_count(),
                                 input_range=input_range, activation_bits=_ACTIVATION_BITS[precision])
    ranges = calibrator.ranges(float_model)
    if ranges_hook is not None:
        ranges = ranges_hook(float_model, ranges)
    model = quantize(float_model, ranges, precision=precision, io_type=io, per_channel=per_channel,
                     op_precision=op_precision)
    return QuantizedResult(model, calibrator.last_stats, precision, _ops(op_precision), io, per_channel,
                           ranges, bytes(float_model))


def _ops(op_precision: Mapping[str, OpPrecision]) -> tuple[tuple[str, OpPrecision], ...]:
    return tuple(sorted((str(k), OpPrecision(v)) for k, v in op_precision.items()))


def requantize(result: QuantizedResult, op_precision: Mapping[str, OpPrecision],
               float_outputs: Sequence[int] = (), *, io_type: IOType | str | None = None,
               per_channel: bool | None = None, trial: bool = False) -> bytes:
    """``result``'s model quantized again from the same float model and ranges, with the ops in
    ``op_precision`` (by output tensor name) in ``OpPrecision.INT16`` or ``OpPrecision.FLOAT``
    (replacing ``result``'s own choice; the other ops in the precision's scheme), and the model
    outputs at ``float_outputs`` (positions, the signature's ``output_<k>`` order) float32 where a
    float op makes them (:func:`edgenet.converters.quant_io.float_outputs`). ``io_type`` and
    ``per_channel`` default to ``result``'s. No calibration: a search over op precisions
    (mixed-precision repair) calls this once per candidate. ``trial``: a model only to be run and
    judged, not written: the quantizer's large buffers stay appended after the flatbuffer (valid
    TFLite; the same values, the same outputs) instead of being inlined, which unpacks and packs the
    whole model (~5 s a model for a 5,500-op unrolled LSTM); :func:`edgenet.converters.quant_io.inline_buffers`
    of a trial model gives the bytes ``trial=False`` gives. Raises ConversionError as :func:`quantize`."""
    from edgenet.converters.quant_io import float_outputs as dequantized_outputs

    if not result.source or not result.ranges:
        raise ConversionError(f"no calibrated {result.precision.value} model to quantize again")
    # with float outputs, their rewrite (read and written with the object API) inlines the buffers
    # the quantizer appended: the same bytes as inlining first, one unpack and pack fewer
    model = quantize(result.source, result.ranges, precision=result.precision,
                     io_type=result.io_type if io_type is None else io_type,
                     per_channel=result.per_channel if per_channel is None else per_channel,
                     op_precision=op_precision, _rewritten=bool(float_outputs) or trial)
    return dequantized_outputs(model, tuple(float_outputs)) if float_outputs else model


def float_ops_of_types(float_model: bytes, op_types: Sequence[str]) -> dict[str, OpPrecision]:
    """``op_precision`` that computes every op of ``float_model`` whose TFLite builtin name is in
    ``op_types`` (e.g. "HARD_SWISH") in float between int8 tensors: a target profile's
    ``int8_float_ops``, the ops its delegate has no int8 kernel for (XNNPACK runs HARD_SWISH in
    float only: int8 ones fall back to LiteRT's single-threaded kernel and cut XNNPACK's graph
    there; as float ops between a DEQUANTIZE and a QUANTIZE, which XNNPACK runs, they cost a tenth).
    The values are those of the ideal int8 kernel: the op is exact on the dequantized input, and its
    output is quantized with the scale and zero point it would have had."""
    wanted = set(op_types)
    if not wanted:
        return {}
    from edgenet.targets.tflite_graph import read_tflite

    if not wanted & set(read_tflite(float_model).op_names()):   # a quick look first (no op of those types:
        return {}                                                # the model is not unpacked at all)
    return {name: OpPrecision.FLOAT for name, (_, op) in sorted(_op_scopes(float_model).items()) if op in wanted}


def float_ops_named(float_model: bytes, marker: str) -> dict[str, OpPrecision]:
    """``op_precision`` that computes in float every op of ``float_model`` whose output tensor name
    holds ``marker`` (the ops a rewrite before quantization made to run in float)."""
    return {name: OpPrecision.FLOAT for name in sorted(_op_scopes(float_model)) if marker in name}


def keep_float(ops: Sequence[str]) -> dict[str, OpPrecision]:
    """``op_precision`` that leaves ``ops`` in float (the mixed-precision repair's choice)."""
    return {str(name): OpPrecision.FLOAT for name in ops}
