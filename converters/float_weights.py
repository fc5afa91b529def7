"""float16 and dynamic-range models from a float32 .tflite, with the LiteRT Quantizer (no TensorFlow).

Both change only how weights are stored; activations stay float32 (TFLite's "float16 quantization"
and "dynamic range quantization"):

- ``float16``: the quantizer's float-casting recipe (``AlgorithmName.FLOAT_CASTING``, weight-only,
  16-bit float weights, explicit DEQUANTIZE): every CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
  TRANSPOSE_CONV and EMBEDDING_LOOKUP weight is stored as float16 and a DEQUANTIZE op feeds the
  float op with it, the structure TensorFlow's converter makes (LiteRT folds the DEQUANTIZE at
  prepare time; a GPU delegate can read the float16 weights as they are). Biases and the constants
  of other ops stay float32 (TensorFlow casts those too): on MobileNetV1 8.48 MB against TensorFlow's
  8.44 MB, half of 16.9 MB.
- ``dynamic``: int8 weights, symmetric, one scale per output channel, in the op itself
  (``compute_precision=INTEGER``, no DEQUANTIZE): hybrid kernels that quantize the float input on the
  fly, the same op types and weight types as TensorFlow's dynamic-range model. As in TensorFlow's
  quantizer, a weight under 1,024 values stays float32 (the quantizer's ``min_weight_elements``,
  which its own "legacy" recipe sets to 1,024 for the same reason): small weights save little and a
  hybrid op on them costs more than it saves.

Why the quantizer and not the native writer (:mod:`edgenet.converters.tflite_writer`), measured on
MobileNetV1 1.0/224 (``python benchmarks/float_weights.py``; LiteRT 2.3, 1 thread, paired and
interleaved against the TensorFlow-made models): it makes each model in 20-40 ms and already runs in
this process for int8, and its models are TensorFlow's op for op (same op types and counts, same
weight types; float16 has 28 DEQUANTIZE, TensorFlow's 34 with the biases), so the writer needs no
second code path for weight storage. Sizes: float16 8.48 MB (TensorFlow's 8.44 MB), dynamic 4.42 MB
(4.38 MB), of 16.9 MB. Agreement with float32 is the same (float16 100%, dynamic 96.3% top-1 on the
untrained zoo weights; dynamic SQNR 31.25 dB vs TensorFlow's 31.28 dB on the YOLOv8n detector, the
quantizer's dynamic model of TensorFlow's float model gives 31.25 dB too). Latency: float16 5.10 vs
5.11 ms (XNNPACK takes the whole graph: the DEQUANTIZE of constant weights is folded at prepare);
dynamic 5.37 vs 5.37 ms. XNNPACK runs hybrid CONV_2D and FULLY_CONNECTED (its dynamically
quantized kernels) but not hybrid DEPTHWISE_CONV_2D, which LiteRT's own hybrid kernel runs: the
MobileNetV1 dynamic model is 12 XNNPACK partitions, TensorFlow's as well; on this shared machine
it was between as fast as float32 and 1.5x slower, run to run.
The same float model gives the same bytes.
"""
from __future__ import annotations

import contextlib
import io
import warnings

from edgenet._deps import require
from edgenet.config import Precision
from edgenet.errors import ConversionError

# TensorFlow's dynamic-range quantizer leaves weights of fewer values in float (tflite's
# kWeightsMinNumElementsDefault); model_dynamic.tflite keeps that rule.
DYNAMIC_MIN_WEIGHT_ELEMENTS = 1024

WEIGHT_PRECISIONS = (Precision.FLOAT16, Precision.DYNAMIC)


def _op_config(qtyping, algorithms, precision: Precision):
    """(OpQuantizationConfig, algorithm) of ``precision``'s recipe, applied to every supported op."""
    tensor = qtyping.TensorQuantizationConfig
    if precision is Precision.FLOAT16:
        config = qtyping.OpQuantizationConfig(
            weight_tensor_config=tensor(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
        return config, algorithms.AlgorithmName.FLOAT_CASTING
    config = qtyping.OpQuantizationConfig(
        weight_tensor_config=tensor(num_bits=8, symmetric=True, granularity=qtyping.QuantGranularity.CHANNELWISE),
        compute_precision=qtyping.ComputePrecision.INTEGER, explicit_dequantize=False,
        min_weight_elements=DYNAMIC_MIN_WEIGHT_ELEMENTS)
    return config, algorithms.AlgorithmName.MIN_MAX_UNIFORM_QUANT


def weight_model(float_model: bytes, precision: Precision) -> bytes:
    """``float_model`` (a float32 .tflite with a signature, as the native writer makes it) with its
    weights stored as ``precision`` says: ``Precision.FLOAT16`` or ``Precision.DYNAMIC`` (see the
    module docstring). Activations, inputs and outputs stay float32; tensor names are kept.
    A model with no weight the recipe takes (dynamic: none of 1,024 values or more) comes back
    with the same ops as ``float_model`` (:func:`edgenet.converters.op_precision.model_precision`
    then says float32).
    Raises ValueError for another precision, ConversionError when the quantizer fails."""
    precision = Precision(precision)
    if precision not in WEIGHT_PRECISIONS:
        raise ValueError(f"not a weight-only precision: {precision.value}")
    from edgenet.converters._capture import captured_fd
    from edgenet.converters.quant_io import inline_buffers
    from edgenet.converters.tflite import with_signature

    quantizer = require("litert_quantizer.quantizer", extra="onnx", purpose=f"{precision.value} models")
    qtyping = require("litert_quantizer.qtyping")
    algorithms = require("litert_quantizer.algorithm_manager")
    engine = quantizer.Quantizer(with_signature(bytes(float_model)))
    config, algorithm = _op_config(qtyping, algorithms, precision)
    engine.update_quantization_recipe(".*", qtyping.TFLOperationName.ALL_SUPPORTED, config, algorithm)
    # it prints sizes and timings to stdout; keep ours clean
    with captured_fd(2) as log, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = bytes(engine.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)
        except Exception as exc:
            text = (str(exc).strip() or log.text.strip() or type(exc).__name__).splitlines()[0]
            raise ConversionError(f"LiteRT Quantizer: {precision.value} model failed: {text[:300]}") from exc
    return inline_buffers(model)
