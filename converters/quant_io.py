"""The input and output tensors of a quantized .tflite model, rewritten in its flatbuffer (the TFLite
schema as LiteRT ships it, :mod:`edgenet.converters._flatbuffer`; no TensorFlow).

- :func:`uint8_io`: an int8 model's int8 inputs and outputs become uint8. MediaPipe, the Edge TPU
  and many Android apps feed uint8 camera pixels. The LiteRT Quantizer writes int8 (or float) I/O
  only, so a QUANTIZE op is added at each end: ``q_u8 = q_i8 + 128`` with the same scale, which
  TFLite's QUANTIZE kernel computes exactly (a requantization whose scales are equal is an integer
  shift). This is what TensorFlow's converter does for ``inference_input_type = tf.uint8``.
- :func:`float_outputs`: chosen outputs of a mixed-precision model made float32, taking away the
  QUANTIZE ops after a float op that produces them.
- :func:`float_readers_read_float`: an op kept in float reads the float tensor, not the integer
  model output the quantizer made of it.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from edgenet.converters import _flatbuffer

_FLOAT32, _UINT8, _INT8 = 0, 3, 9       # TensorType
_QUANTIZE = 114                         # BuiltinOperator.QUANTIZE
_DEQUANTIZE = 6                         # BuiltinOperator.DEQUANTIZE


def _opcode(obj, code: int) -> int:
    """Index of builtin op ``code`` in the model's operator codes (added when missing)."""
    for k, c in enumerate(obj.operatorCodes):
        if max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) == code:
            return k
    schema = _flatbuffer.schema()
    c = schema.OperatorCodeT()
    c.builtinCode = c.deprecatedBuiltinCode = code
    c.version = 1
    obj.operatorCodes.append(c)
    return len(obj.operatorCodes) - 1


def _uint8_twin(graph, index: int, name: str) -> int:
    """A new uint8 tensor shaped and scaled like int8 tensor ``index``, zero point + 128."""
    schema = _flatbuffer.schema()
    src = graph.tensors[index]
    q = schema.QuantizationParametersT()
    q.scale = np.array(src.quantization.scale, dtype=np.float32)
    q.zeroPoint = np.array(src.quantization.zeroPoint, dtype=np.int64) + 128
    q.quantizedDimension = 0
    t = schema.TensorT()
    t.shape = None if src.shape is None else np.array(src.shape, dtype=np.int32)
    t.shapeSignature = None if src.shapeSignature is None else np.array(src.shapeSignature, dtype=np.int32)
    t.type, t.buffer, t.name, t.quantization = _UINT8, 0, name.encode(), q
    graph.tensors.append(t)
    return len(graph.tensors) - 1


def uint8_io(model: bytes) -> bytes:
    """``model`` (int8 inputs and outputs, per-tensor quantized) with uint8 inputs and outputs:
    each input keeps its name and signature key and gets a QUANTIZE (uint8 -> int8, the int8 tensor
    renamed ``<name>_int8``) before the ops that read it; each output a QUANTIZE (int8 -> uint8)
    after the op that makes it, into a tensor named ``<name>_uint8`` under the same signature key
    (op outputs keep the float model's names, by which layers are compared and ops chosen). Inputs and
    outputs of another type are left as they are. Raises ValueError on a per-channel I/O tensor."""
    schema = _flatbuffer.schema()
    obj = _flatbuffer.read(model)
    graph = obj.subgraphs[0]
    quantize = _opcode(obj, _QUANTIZE)
    renamed: dict[int, int] = {}
    head, tail = [], []

    def op(i: int, o: int):
        x = schema.OperatorT()
        x.opcodeIndex, x.inputs, x.outputs = quantize, [i], [o]
        x.builtinOptionsType = schema.BuiltinOptions.QuantizeOptions
        x.builtinOptions = schema.QuantizeOptionsT()
        return x

    for index in list(graph.inputs):
        t = graph.tensors[index]
        if t.type != _INT8 or index in renamed:
            continue
        if len(t.quantization.scale) != 1:
            raise ValueError(f"input {_flatbuffer.tensor_name(t)!r} is quantized per channel")
        name = _flatbuffer.tensor_name(t)
        new = _uint8_twin(graph, index, name)
        t.name = (name + "_int8").encode()
        renamed[index] = new
        head.append(op(new, index))
    for index in list(graph.outputs):
        t = graph.tensors[index]
        if t.type != _INT8 or index in renamed:
            continue
        if len(t.quantization.scale) != 1:
            raise ValueError(f"output {_flatbuffer.tensor_name(t)!r} is quantized per channel")
        new = _uint8_twin(graph, index, _flatbuffer.tensor_name(t) + "_uint8")
        renamed[index] = new
        tail.append(op(index, new))
    graph.operators = [*head, *graph.operators, *tail]
    graph.inputs = [renamed.get(int(i), int(i)) for i in graph.inputs]
    graph.outputs = [renamed.get(int(i), int(i)) for i in graph.outputs]
    for sig in obj.signatureDefs or []:
        for entry in [*(sig.inputs or []), *(sig.outputs or [])]:
            entry.tensorIndex = renamed.get(int(entry.tensorIndex), int(entry.tensorIndex))
    return _flatbuffer.write(obj)


def inline_buffers(model: bytes) -> bytes:
    """``model`` with every constant buffer inside the flatbuffer. The LiteRT Quantizer appends
    large buffers after it and points to them by offset (valid TFLite, but tools that rewrite the
    flatbuffer by its object API, such as the metadata writers, drop what is appended)."""
    model = bytes(model)
    root = _flatbuffer.schema().Model.GetRootAsModel(model, 0)   # read in place: no object unpacked
    if not any(root.Buffers(k).Offset() for k in range(root.BuffersLength())):
        return model
    return _flatbuffer.write(_flatbuffer.read(model))


def _output_order(obj, graph) -> list[int]:
    """The model's output tensors in the order of its signature's ``output_<k>`` keys (else the graph's)."""
    order = [int(i) for i in graph.outputs]
    sig = obj.signatureDefs[0] if obj.signatureDefs else None
    if sig is not None:
        keyed = {(m.name.decode() if isinstance(m.name, bytes) else m.name): m for m in sig.outputs}
        named = [keyed[k] for k in sorted((k for k in keyed if re.fullmatch(r"output_\d+", k)),
                                          key=lambda k: int(k.rsplit("_", 1)[1]))]
        if len(named) == len(order):
            order = [int(m.tensorIndex) for m in named]
    return order


def float_outputs(model: bytes, positions: Sequence[int]) -> bytes:
    """``model`` whose outputs at ``positions`` (in the model's order: the ``output_<k>`` keys of
    its signature) are float32: an output produced by QUANTIZE ops from a float tensor (what the
    quantizer puts after an op kept in float; two of them with uint8 I/O) becomes that float
    tensor, and the QUANTIZE ops go. Outputs not made that way are left as they are. Mixed
    precision uses it for an output whose values one int8 scale cannot hold (boxes in pixels
    beside 0..1 scores): the op is kept in float, and so is its output."""
    obj = _flatbuffer.read(model)
    graph = obj.subgraphs[0]
    sig = obj.signatureDefs[0] if obj.signatureDefs else None
    order = _output_order(obj, graph)
    drop: set[int] = set()
    producer = {int(op.outputs[0]): i for i, op in enumerate(graph.operators) if len(op.outputs)}
    for k in positions:
        tensor, chain = order[k], []
        while tensor in producer and _flatbuffer.builtin_code(obj, graph.operators[producer[tensor]]) == _QUANTIZE:
            chain.append(producer[tensor])
            tensor = int(graph.operators[producer[tensor]].inputs[0])
            if graph.tensors[tensor].type == _FLOAT32:     # the kept op's own output
                break
        if not chain or graph.tensors[tensor].type != _FLOAT32:
            continue
        produced = {int(graph.operators[i].outputs[0]) for i in chain}
        used = [int(t) for i, op in enumerate(graph.operators) if i not in chain for t in op.inputs]
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
    return _flatbuffer.write(obj)


def _misread_inputs(model: bytes) -> list[tuple[int, int, int]]:
    """``(op, input position, float tensor)`` for each input of an op with a float32 output (an op
    kept in float; QUANTIZE and DEQUANTIZE aside) that reads the result of a QUANTIZE of a float32
    tensor. Read in place (no object unpacked): 0.01 s on an 881-op model."""
    root = _flatbuffer.schema().Model.GetRootAsModel(bytes(model), 0)
    graph = root.Subgraphs(0)
    codes = [max(root.OperatorCodes(k).BuiltinCode(), root.OperatorCodes(k).DeprecatedBuiltinCode())
             for k in range(root.OperatorCodesLength())]
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    quantized_from: dict[int, int] = {}      # QUANTIZE output -> its float32 input
    for op in ops:
        if codes[op.OpcodeIndex()] == _QUANTIZE and op.InputsLength() and op.OutputsLength():
            src = int(op.Inputs(0))
            if src >= 0 and graph.Tensors(src).Type() == _FLOAT32:
                quantized_from[int(op.Outputs(0))] = src
    found = []
    if not quantized_from:
        return found
    for i, op in enumerate(ops):
        if codes[op.OpcodeIndex()] in (_QUANTIZE, _DEQUANTIZE):
            continue
        if not any(int(op.Outputs(k)) >= 0 and graph.Tensors(int(op.Outputs(k))).Type() == _FLOAT32
                   for k in range(op.OutputsLength())):
            continue
        for k in range(op.InputsLength()):
            if int(op.Inputs(k)) in quantized_from:
                found.append((i, k, quantized_from[int(op.Inputs(k))]))
    return found


def float_readers_read_float(model: bytes) -> bytes:
    """``model`` in which every op kept in float reads float tensors.

    The LiteRT Quantizer, making a model output integer (int8 I/O), puts a QUANTIZE after the float
    op that produces it and points every reader of that tensor to the QUANTIZE's result: an op it
    left in float that also reads the output (a CUMSUM of TopK values that are an output) is handed
    int8, which LiteRT cannot prepare ("cumsum.cc ... input->type == kTfLiteInt32 || ... Float32").
    Such an input is pointed back to the float tensor; the model is returned unchanged when there is
    none."""
    model = bytes(model)
    misread = _misread_inputs(model)
    if not misread:
        return model
    obj = _flatbuffer.read(model)
    graph = obj.subgraphs[0]
    for i, k, src in misread:
        inputs = [int(t) for t in graph.operators[i].inputs]
        inputs[k] = src
        graph.operators[i].inputs = inputs
    return _flatbuffer.write(obj)
