"""The recorded (and fused) graph as .tflite bytes: one subgraph, a ``serving_default`` signature.

Written with the TFLite schema's generated object API as ``ai-edge-litert`` ships it
(``schema_py_generated`` ``ModelT`` ... packed by ``tools.flatbuffer_utils``, through
:mod:`edgenet.converters._flatbuffer`): the classes and packer the LiteRT Quantizer itself reads and
writes models with (``litert_quantizer.model_modifier``), so the native model and the quantized one
go through the same code. Decided by measurement (MobileNetV1 1.0/224, a 16.9 MB float32 model, this
2-core machine): the whole write takes 0.05-0.07 s, nearly all of it the weights going through the
flatbuffers builder (the same model packed without them: 0.007 s). Writing the weights after the
flatbuffer (offset/size buffers, the quantizer's path for models over 2 GB) would save about 0.05 s
of a conversion of several seconds, at the price of a second packer to keep in step with the schema:
not worth it. Constant buffers are handed over as numpy uint8 views (no copy before packing).

Tensor names: the ONNX value name where an ONNX value maps to the tensor (set by the caller),
``<node>/<op>`` for the intermediates an ONNX node lowers to, ``<node>/<op>/<role>`` for constants; a
name taken already gets a ``_<k>`` suffix, and each written tensor's ``name`` is set to the name it got
(the divergence finder reads tensors by it: :attr:`~.convert.NativeGraph.values`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgenet.converters import _flatbuffer
from edgenet.converters.tflite_writer.tensors import NotNative, Op, RTensor

SIGNATURE_KEY = "serving_default"
DESCRIPTION = "edgenet native TFLite writer"
_TYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32", "uint8": "UINT8", "int64": "INT64",
          "bool": "BOOL", "int16": "INT16", "int8": "INT8"}
# options types of ops whose options TensorFlow's converter writes although they hold no field
_EMPTY_OPTIONS = {"PAD": "PadOptions", "PADV2": "PadV2Options", "TRANSPOSE": "TransposeOptions",
                  "MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions", "SLICE": "SliceOptions",
                  "TILE": "TileOptions", "HARD_SWISH": "HardSwishOptions", "EXP": "ExpOptions",
                  "LOG_SOFTMAX": "LogSoftmaxOptions", "BROADCAST_TO": "BroadcastToOptions"}
# the lowest version of a builtin that has the float kernel (the runtime refuses BROADCAST_TO v1)
_VERSIONS = {"BROADCAST_TO": 2, "TRANSPOSE_CONV": 3}  # TRANSPOSE_CONV v3: the bias input


def _version(op: Op) -> int:
    """The builtin version ``op`` needs: TRANSPOSE_CONV with a fused activation is v4 (TFLite's
    op_version table), else :data:`_VERSIONS` or 1."""
    if op.code == "TRANSPOSE_CONV" and op.options is not None and op.options[1].get("fusedActivationFunction"):
        return 4
    return _VERSIONS.get(op.code, 1)
_ROLES = {"CONV_2D": ("", "filter", "bias"), "DEPTHWISE_CONV_2D": ("", "filter", "bias"),
          "FULLY_CONNECTED": ("", "weights", "bias"), "TRANSPOSE_CONV": ("output_shape", "filter", "", "bias")}


def _options(schema, op: Op):
    name, fields = op.options if op.options is not None else (_EMPTY_OPTIONS.get(op.code), {})
    if name is None:
        return 0, None
    obj = getattr(schema, f"{name}T")()
    for key, value in fields.items():
        if not hasattr(obj, key):
            raise AttributeError(f"{name} has no field {key!r}")
        setattr(obj, key, value)
    return getattr(schema.BuiltinOptions, name), obj


def serialize(ops: Sequence[Op], inputs: Sequence[RTensor], outputs: Sequence[RTensor]) -> bytes:
    """The model's flatbuffer; ``inputs`` / ``outputs`` in signature order (outputs ``output_<k>``)."""
    schema = _flatbuffer.schema()
    model = schema.ModelT()
    model.version = 3
    model.description = DESCRIPTION
    empty = schema.BufferT()
    model.buffers = [empty]
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors, graph.operators = [], []
    index: dict[int, int] = {}
    used_names: dict[str, int] = {}
    codes: dict[str, int] = {}
    model.operatorCodes = []

    def unique(name: str) -> str:
        count = used_names.get(name, 0)
        used_names[name] = count + 1
        return name if count == 0 else f"{name}_{count}"

    same: dict[tuple, list[tuple[np.ndarray, int]]] = {}   # constants by (dtype, shape): one tensor per content

    def tensor(t: RTensor | None, fallback: str) -> int:
        if t is None:
            return -1
        hit = index.get(id(t))
        if hit is not None:
            return hit
        if t.const is not None:
            # an unrolled recurrence (LSTM, GRU: one FULLY_CONNECTED per time step) reads the same weights
            # at every step: one tensor for them all, not a copy per step (PaddleOCR/ddddocr's CRNN:
            # 238.8 MB -> 54 MB float), as TensorFlow's converter deduplicates its constants
            key = (np.asarray(t.const).dtype.str, tuple(np.shape(t.const)))
            for array, k in same.get(key, ()):
                if array is t.const or np.array_equal(array, t.const):
                    index[id(t)] = k
                    return k
        kind = _TYPES.get(t.dtype_.name)
        if kind is None:
            raise NotNative(f"a {t.dtype_.name} tensor")
        entry = schema.TensorT()
        entry.shape = np.asarray(t.shape_, np.int32)
        entry.type = getattr(schema.TensorType, kind)
        entry.name = t.name = unique(t.name or fallback)   # the name the model gives it, kept on the tensor
        entry.buffer = 0
        if t.const is not None:
            buffer = schema.BufferT()
            buffer.data = np.ascontiguousarray(t.const).reshape(-1).view(np.uint8)   # a view, no copy
            model.buffers.append(buffer)
            entry.buffer = len(model.buffers) - 1
        graph.tensors.append(entry)
        index[id(t)] = len(graph.tensors) - 1
        if t.const is not None:
            same.setdefault((np.asarray(t.const).dtype.str, tuple(np.shape(t.const))), []).append(
                (np.asarray(t.const), index[id(t)]))
        return index[id(t)]

    for t in inputs:
        tensor(t, "input")
    versions: dict[str, int] = {}   # one operator code per builtin: the highest version its ops need
    for op in ops:
        versions[op.code] = max(versions.get(op.code, 1), _version(op))
    for op in ops:
        if op.code not in codes:
            code = getattr(schema.BuiltinOperator, op.code)
            entry = schema.OperatorCodeT()
            entry.builtinCode = code
            entry.deprecatedBuiltinCode = min(code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            entry.version = versions[op.code]
            codes[op.code] = len(model.operatorCodes)
            model.operatorCodes.append(entry)
        base = op.outputs[0].name or op.code.lower()
        roles = _ROLES.get(op.code, ())
        entry = schema.OperatorT()
        entry.opcodeIndex = codes[op.code]
        entry.inputs = [tensor(t, f"{base}/{roles[i] if i < len(roles) and roles[i] else f'input{i}'}")
                        for i, t in enumerate(op.inputs)]
        entry.outputs = [tensor(t, f"{base}/output{i}") for i, t in enumerate(op.outputs)]
        entry.builtinOptionsType, entry.builtinOptions = _options(schema, op)
        graph.operators.append(entry)
    graph.inputs = [index[id(t)] for t in inputs]
    graph.outputs = [tensor(t, f"output_{k}") for k, t in enumerate(outputs)]
    model.subgraphs = [graph]

    def entry_of(name: str, i: int):
        m = schema.TensorMapT()
        m.name, m.tensorIndex = name, i
        return m

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [entry_of(graph.tensors[i].name, i) for i in graph.inputs]
    sig.outputs = [entry_of(f"output_{k}", i) for k, i in enumerate(graph.outputs)]
    model.signatureDefs = [sig]
    return _flatbuffer.write(model)
