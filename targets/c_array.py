"""Embeddable C++ sources for TensorFlow Lite Micro firmware.

``model_data.cc`` / ``model_data.h``: the .tflite bytes as ``alignas(16) const unsigned char
g_model_data[]`` plus ``g_model_data_len`` (TFLM reads the flatbuffer in place and needs it
16-byte aligned), and, when measured, ``kTensorArenaSize``.
``model_op_resolver.h``: a ``tflite::MicroMutableOpResolver<N>`` with exactly the model's ops, so
the firmware links only the kernels it needs.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from edgenet.errors import UsageError
from edgenet.io import atomic_write_text
from targets.tflite_graph import TfliteGraph

BYTES_PER_LINE = 12
ARENA_ALIGN = 1024

# TFLite builtin operator (or "CUSTOM:<code>") -> MicroMutableOpResolver method that registers it.
# Checked name by name against tflite-micro's micro_mutable_op_resolver.h (2025 revision).
TFLM_REGISTRATION: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "ELU": "AddElu", "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul",
    "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose", "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
    "CUSTOM:ethos-u": "AddEthosU", "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess",
}

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_identifier(name: str, what: str) -> None:
    if not _IDENT_RE.match(name):
        raise UsageError(f"{what} {name!r} is not a valid C identifier")


def c_array_body(data: bytes, per_line: int = BYTES_PER_LINE) -> str:
    """The bytes as comma-separated hex literals, ``per_line`` to a line, indented by two spaces."""
    hexed = data.hex()
    lines = []
    step = 2 * per_line
    for start in range(0, len(hexed), step):
        chunk = hexed[start:start + step]
        lines.append("  " + ", ".join("0x" + chunk[i:i + 2] for i in range(0, len(chunk), 2)) + ",")
    return "\n".join(lines)


def arena_size_constant(arena_bytes: int) -> int:
    """The arena size to declare: the measured bytes rounded up to the next KiB."""
    return -(-arena_bytes // ARENA_ALIGN) * ARENA_ALIGN


TFLM_ARENA_NOTE = ("TFLite Micro allocated {n} bytes for this model\n// (measured on a 64-bit host; "
                   "a 32-bit MCU needs slightly less)")
VELA_ARENA_NOTE = ("vela placed {n} bytes of tensors in SRAM\n// (add a few KiB for TFLite Micro's "
                   "own bookkeeping)")


def model_data_sources(data: bytes, source_name: str, *, symbol: str = "g_model_data",
                       basename: str = "model_data", arena_bytes: int | None = None,
                       arena_note: str = TFLM_ARENA_NOTE) -> tuple[str, str]:
    """(``.cc`` text, ``.h`` text) embedding ``data``; ``arena_note`` says where the arena size comes from."""
    _check_identifier(symbol, "symbol")
    _check_identifier(basename, "file base name")
    guard = f"EDGENET_{basename.upper()}_H_"
    digest = hashlib.sha256(data).hexdigest()
    origin = f"// Generated by edgenet from {source_name} ({len(data):,} bytes, sha256 {digest[:16]}). Do not edit."
    arena = ""
    if arena_bytes is not None:
        arena = (
            "\n// Tensor arena for tflite::MicroInterpreter: "
            f"{arena_note.format(n=f'{arena_bytes:,}')}. Rounded up to the next KiB.\n"
            f"constexpr unsigned int kTensorArenaSize = {arena_size_constant(arena_bytes)};\n"
        )
    header = (
        f"{origin}\n#ifndef {guard}\n#define {guard}\n\n"
        "// The .tflite flatbuffer. TFLite Micro reads it in place; it is 16-byte aligned.\n"
        f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n"
        f"{arena}\n#endif  // {guard}\n"
    )
    source = (
        f"{origin}\n#include \"{basename}.h\"\n\n"
        f"alignas(16) const unsigned char {symbol}[] = {{\n{c_array_body(data)}\n}};\n\n"
        f"const unsigned int {symbol}_len = {len(data)};\n"
    )
    return source, header


def write_model_data(model_path: str | Path, out_dir: str | Path, *, symbol: str = "g_model_data",
                     basename: str = "model_data", arena_bytes: int | None = None,
                     arena_note: str = TFLM_ARENA_NOTE) -> tuple[Path, Path]:
    """Write ``<basename>.cc`` and ``<basename>.h`` for the model into ``out_dir``."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    source, header = model_data_sources(model_path.read_bytes(), model_path.name, symbol=symbol,
                                        basename=basename, arena_bytes=arena_bytes, arena_note=arena_note)
    return (atomic_write_text(out_dir / f"{basename}.cc", source),
            atomic_write_text(out_dir / f"{basename}.h", header))


def op_registrations(graph: TfliteGraph) -> tuple[list[str], list[str]]:
    """(Add* method names for the model's ops in first-use order, ops with no known registration)."""
    methods, unknown = [], []
    for name in graph.op_names():
        method = TFLM_REGISTRATION.get(name)
        (methods if method else unknown).append(method or name)
    return list(dict.fromkeys(methods)), unknown


def op_resolver_source(graph: TfliteGraph, source_name: str, basename: str = "model_op_resolver") -> str:
    """A header defining ``ModelOpResolver`` and ``RegisterModelOps()`` for exactly the model's ops."""
    methods, unknown = op_registrations(graph)
    guard = f"EDGENET_{basename.upper()}_H_"
    adds = "\n".join(f"  if (resolver.{m}() != kTfLiteOk) return kTfLiteError;" for m in methods)
    todo = "".join(f"  // TODO: no MicroMutableOpResolver method known for {n}; register it by hand.\n"
                   for n in unknown)
    count = len(methods) + len(unknown)
    return (
        f"// Generated by edgenet from {source_name}: the TFLite Micro ops this model uses. Do not edit.\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        "#include \"tensorflow/lite/micro/micro_mutable_op_resolver.h\"\n\n"
        f"constexpr int kModelOpCount = {count};\n"
        "using ModelOpResolver = tflite::MicroMutableOpResolver<kModelOpCount>;\n\n"
        "// Usage:\n"
        "//   static ModelOpResolver resolver;\n"
        "//   if (RegisterModelOps(resolver) != kTfLiteOk) { /* error */ }\n"
        "//   static tflite::MicroInterpreter interpreter(tflite::GetModel(g_model_data), resolver,\n"
        "//                                               tensor_arena, kTensorArenaSize);\n"
        "inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {\n"
        f"{adds}\n{todo}  return kTfLiteOk;\n}}\n\n#endif  // {guard}\n"
    )


def write_op_resolver(graph: TfliteGraph, source_name: str, out_dir: str | Path,
                      basename: str = "model_op_resolver") -> Path:
    _check_identifier(basename, "file base name")
    return atomic_write_text(Path(out_dir) / f"{basename}.h", op_resolver_source(graph, source_name, basename))
