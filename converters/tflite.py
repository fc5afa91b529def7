"""TFLite stage: a channels-last TF graph -> float32 / float16 / dynamic-range .tflite bytes.

TensorFlow's TFLiteConverter on the frozen concrete function. The converter's default route for
concrete functions first writes a SavedModel to disk and reads it back (~1.5 s for MobileNetV1
1.0/224, and the model that comes out differs only in tensor names), so we take the direct route
and add the ``serving_default`` signature ourselves: inputs under their names, outputs as
``output_0``, ``output_1`` ... in the function's order. float16 (weights stored as float16) and
dynamic (weights stored as int8, activations float) are the converter's own post-training modes
(``Optimize.DEFAULT`` with ``supported_types = [float16]``, resp. without representative data).

Full-integer models (int8, int16x8) are not made here: :mod:`edgenet.converters.quantize` quantizes
the float32 model with the LiteRT Quantizer, in the main process, without TensorFlow.
"""
from __future__ import annotations

import re

from edgenet._deps import import_tensorflow
from edgenet.config import Precision
from edgenet.converters import _flatbuffer
from edgenet.converters._capture import captured_fd
from edgenet.errors import ConversionError

SIGNATURE_KEY = "serving_default"


def _tf():
    return import_tensorflow(purpose="TFLite conversion")


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
    schema = _flatbuffer.schema()
    obj = _flatbuffer.read(model)
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
    return _flatbuffer.write(obj)


FLOAT_PRECISIONS = (Precision.FLOAT32, Precision.FLOAT16, Precision.DYNAMIC)


def to_float_tflite(graph, precision: Precision = Precision.FLOAT32) -> bytes:
    """A converters.onnx_to_tf.TFGraph as a .tflite model with float32 activations and input/output:
    float32 weights, float16 weights (``Precision.FLOAT16``: DEQUANTIZE ops turn them into float32
    when the model is prepared) or int8 weights (``Precision.DYNAMIC``: TFLite dynamic range
    quantization; ops with hybrid kernels quantize their input on the fly, the others get float
    weights). Raises ValueError for a full-integer precision, ConversionError when TensorFlow fails."""
    precision = Precision(precision)
    if precision not in FLOAT_PRECISIONS:
        raise ValueError(f"{precision.value} needs calibration: use edgenet.converters.quantize")
    conv = _converter(graph)
    if precision is not Precision.FLOAT32:
        tf = _tf()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision is Precision.FLOAT16:
            conv.target_spec.supported_types = [tf.float16]
    return with_signature(_run(precision.value, conv.convert))
