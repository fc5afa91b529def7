"""Reading and writing .tflite flatbuffers as objects, without TensorFlow: the TFLite schema's
generated Python classes and object API as LiteRT ships them (``ai_edge_litert.schema_py_generated``,
``ai_edge_litert.tools.flatbuffer_utils``, what the LiteRT Quantizer itself uses)."""
from __future__ import annotations

from edgenet._deps import require


def utils():
    return require("ai_edge_litert.tools.flatbuffer_utils", purpose="reading .tflite flatbuffers")


def schema():
    return require("ai_edge_litert.schema_py_generated", purpose="reading .tflite flatbuffers")


def read(model: bytes):
    """The model as a mutable ``ModelT`` (buffers held at an offset resolved; index lists as lists)."""
    return utils().read_model_from_bytearray(bytes(model))


def write(obj) -> bytes:
    return bytes(utils().convert_object_to_bytearray(obj))


def builtin_code(obj, op) -> int:
    """The BuiltinOperator code of ``op`` in model ``obj``."""
    return int(utils().get_builtin_code_from_operator_code(obj.operatorCodes[op.opcodeIndex]))


def tensor_name(tensor) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name or "")
