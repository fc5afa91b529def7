"""Embeddable C++ sources for TensorFlow Lite Micro firmware, every symbol prefixed so that several
models live in one firmware.

For a prefix ``p`` (``--c-name``; by default the model name made a C identifier) and its CamelCase
``P`` (``person_detect`` -> ``PersonDetect``):

``p_model_data.cc`` / ``p_model_data.h``: the .tflite bytes (TFLite metadata and labels.txt
included) as ``alignas(16) const unsigned char g_p_model_data[]`` plus ``g_p_model_data_len``
(TFLM reads the flatbuffer in place and needs it 16-byte aligned); ``kPTensorArenaSize`` (the
measured arena plus a stated margin, :class:`ArenaEstimate`); the input's shape, type, scale and
zero point and ``PQuantizePixel()``; the output's scale and zero point; the normalization the
model was trained with (``kPMean`` / ``kPStd``, 0..1 scale); the labels (``kPLabels``,
``kPLabelCount``).
``p_op_resolver.h``: a ``tflite::MicroMutableOpResolver<N>`` with exactly the model's ops
(``POpResolver``, ``RegisterPOps()``), so the firmware links only the kernels it needs.
"""
from __future__ import annotations

import hashlib
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgenet.data.preprocess import Preprocess
from edgenet.errors import ModelError, UsageError
from edgenet.io import atomic_write_text
from edgenet.targets.tflite_graph import TensorInfo, TfliteGraph, read_tflite

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

_C_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MAX_C_NAME = 48          # prefixes symbols such as g_<name>_model_data_len and files <name>_model_data.cc


def check_c_name(name: str) -> str:
    """``name`` if it can prefix C/C++ symbols (a letter, then letters, digits and single ``_``; no
    ``__``, which C++ reserves; at most MAX_C_NAME characters); raises UsageError with one line otherwise."""
    if not isinstance(name, str) or not _C_NAME_RE.match(name) or "__" in name or name.endswith("_"):
        raise UsageError(f"--c-name {name!r} is not a usable C identifier prefix (a letter, then letters, "
                         "digits and single underscores, e.g. person_detect)")
    if len(name) > MAX_C_NAME:
        raise UsageError(f"--c-name is {len(name)} characters; at most {MAX_C_NAME} (C compilers need only tell "
                         "the first 63 apart, and it names the firmware files)")
    return name


def c_name_from(model_name: str) -> str:
    """A C identifier prefix from a model name: ``mobilenet_v1`` stays, ``my-net 2.onnx`` -> ``my_net_2_onnx``."""
    text = re.sub(r"[^A-Za-z0-9]+", "_", model_name).strip("_").lower()
    if not text:
        return "model"
    return text if text[0].isalpha() else f"m_{text}"


def camel(c_name: str) -> str:
    """``person_detect`` -> ``PersonDetect`` (for ``k<Prefix>...`` constants and type names)."""
    return "".join(part[:1].upper() + part[1:] for part in c_name.split("_") if part)


def c_array_body(data: bytes, per_line: int = BYTES_PER_LINE) -> str:
    """The bytes as comma-separated hex literals, ``per_line`` to a line, indented by two spaces."""
    hexed = data.hex()
    lines = []
    step = 2 * per_line
    for start in range(0, len(hexed), step):
        chunk = hexed[start:start + step]
        lines.append("  " + ", ".join("0x" + chunk[i:i + 2] for i in range(0, len(chunk), 2)) + ",")
    return "\n".join(lines)


# -- tensor arena -------------------------------------------------------------------------------
ARENA_MARGIN_PERCENT = 10
ARENA_MARGIN_BYTES = 2048

_ARENA_WHY = {
    "tflm": (
        "{n} bytes were measured by TFLite Micro's reference kernels on a 64-bit host. The activations "
        "('head') are the same on the MCU; the bookkeeping ('tail') is smaller there, with 32-bit pointers in "
        "every tensor and node struct. The margin is for what the host run does not see: optimized kernels "
        "(CMSIS-NN) ask for scratch buffers the reference kernels do not, in proportion to the layers (the "
        "percentage), and every buffer and the arena's start are aligned to 16 bytes (the fixed part)."),
    "vela": (
        "{n} bytes of SRAM hold the NPU's tensors in vela's own offline layout. TFLite Micro adds its "
        "bookkeeping (tensor and node structs, the ethos-u op's data: the fixed part) and any op left on the "
        "CPU asks for CMSIS-NN scratch buffers (the percentage)."),
}


@dataclass(frozen=True)
class ArenaEstimate:
    """A tensor arena size to declare: ``measured_bytes`` plus ``percent`` % plus ``fixed_bytes``,
    rounded up to the next KiB. ``source`` says where the measurement comes from: "tflm" (the TFLM
    interpreter's "Arena allocation total" on the host) or "vela" (vela's SRAM use)."""

    measured_bytes: int
    source: str = "tflm"
    percent: int = ARENA_MARGIN_PERCENT
    fixed_bytes: int = ARENA_MARGIN_BYTES

    @property
    def size(self) -> int:
        with_margin = self.measured_bytes + -(-self.measured_bytes * self.percent // 100) + self.fixed_bytes
        return -(-with_margin // ARENA_ALIGN) * ARENA_ALIGN

    def comment(self) -> str:
        why = _ARENA_WHY.get(self.source, "{n} bytes measured.").format(n=f"{self.measured_bytes:,}")
        text = (f"Tensor arena for tflite::MicroInterpreter. {why} Declared: {self.measured_bytes:,} + "
                f"{self.percent}% + {self.fixed_bytes:,} bytes, rounded up to the next KiB. On the board, "
                "interpreter.arena_used_bytes() after AllocateTensors() is what the model really needs with "
                "your kernels: set the arena to that plus about 1 KiB to reclaim the rest.")
        return textwrap.fill(text, 100, initial_indent="// ", subsequent_indent="// ") + "\n"


def arena_size_constant(arena_bytes: int) -> int:
    """The arena size to declare for ``arena_bytes`` measured by TFLM (see :class:`ArenaEstimate`)."""
    return ArenaEstimate(arena_bytes).size


# -- model_data.cc / .h ---------------------------------------------------------------------------
def _float(v: float) -> str:
    text = f"{float(v):.9g}"
    return text + ("f" if any(c in text for c in ".en") else ".0f")


def _c_string(text: str) -> str:
    """A C string literal: printable ASCII as is, every other byte of the UTF-8 as a 3-digit octal escape."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if 32 <= byte < 127 and ch not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


_C_TYPES = {"int8": "signed char", "uint8": "unsigned char", "int16": "short", "float32": "float"}


def _tensor_lines(P: str, role: str, t: TensorInfo) -> list[str]:
    dims = ", ".join(str(d) for d in t.shape)
    lines = [f"// {role}: {'x'.join(str(d) for d in t.shape)} {t.dtype}"
             + (" (NHWC)" if role == "Input" and len(t.shape) == 4 else ""),
             f"constexpr int k{P}{role}Dims = {len(t.shape)};",
             f"constexpr int k{P}{role}Shape[k{P}{role}Dims] = {{{dims}}};"]
    if role == "Input" and len(t.shape) == 4:
        lines += [f"constexpr int k{P}InputHeight = {t.shape[1]};", f"constexpr int k{P}InputWidth = {t.shape[2]};",
                  f"constexpr int k{P}InputChannels = {t.shape[3]};"]
    if role == "Output":
        lines.append(f"constexpr int k{P}OutputSize = {t.num_elements};")
    if t.scales:
        lines += [f"// real value = ({role.lower()} value - zero point) * scale",
                  f"constexpr float k{P}{role}Scale = {_float(t.scales[0])};",
                  f"constexpr int k{P}{role}ZeroPoint = {t.zero_points[0]};"]
    return lines


def _normalization_lines(P: str, pre: Preprocess, t: TensorInfo | None) -> list[str]:
    n = len(pre.mean)
    lines = [f"// Normalization the model was trained with, per channel: x = (pixel / 255 - mean) / std",
             f"constexpr int k{P}NormChannels = {n};",
             f"constexpr float k{P}Mean[k{P}NormChannels] = {{{', '.join(_float(m) for m in pre.mean)}}};",
             f"constexpr float k{P}Std[k{P}NormChannels] = {{{', '.join(_float(s) for s in pre.std)}}};"]
    if t is None or not t.scales or t.dtype not in ("int8", "uint8"):
        return lines
    ctype, (lo, hi) = _C_TYPES[t.dtype], ((-128, 127) if t.dtype == "int8" else (0, 255))
    exact = ""
    if len(set(pre.mean)) == 1 and len(set(pre.std)) == 1:
        zero = int(255 * pre.mean[0] + 0.5) - (128 if t.dtype == "int8" else 0)
        if abs(t.scales[0] * 255 * pre.std[0] - 1) < 1e-5 and t.zero_points[0] == zero:
            exact = (" The input's scale and zero point\n// are fixed from this normalization: the result is "
                     f"the pixel value{' - 128' if t.dtype == 'int8' else ''}, exactly.")
    lines += [
        f"// One pixel value (0..255) of channel c -> the model's {t.dtype} input: normalize, then quantize."
        + exact,
        f"inline {ctype} {P}QuantizePixel(unsigned char pixel, int c) {{",
        f"  const float x = (pixel / 255.0f - k{P}Mean[c]) / k{P}Std[c];",
        f"  const float q = x / k{P}InputScale + k{P}InputZeroPoint;",
        "  const int r = static_cast<int>(q >= 0.0f ? q + 0.5f : q - 0.5f);",
        f"  return static_cast<{ctype}>(r < {lo} ? {lo} : (r > {hi} ? {hi} : r));",
        "}"]
    return lines


def model_data_sources(data: bytes, source_name: str, *, c_name: str = "model", arena: ArenaEstimate | None = None,
                       preprocess: Preprocess | None = None, labels: Sequence[str] | None = None) -> tuple[str, str]:
    """(``.cc`` text, ``.h`` text) embedding ``data`` (a .tflite model) under the prefix ``c_name``,
    with the arena size, the I/O quantization, ``preprocess``'s normalization and ``labels`` as constants."""
    check_c_name(c_name)
    P, symbol, basename = camel(c_name), f"g_{c_name}_model_data", f"{c_name}_model_data"
    guard = f"EDGENET_{basename.upper()}_H_"
    digest = hashlib.sha256(data).hexdigest()
    origin = f"// Generated by edgenet from {source_name} ({len(data):,} bytes, sha256 {digest[:16]}). Do not edit."
    graph = read_tflite(data)
    consts: list[str] = []
    if arena is not None:
        consts += [arena.comment() + f"constexpr unsigned int k{P}TensorArenaSize = {arena.size};", ""]
    if len(graph.inputs) == 1:
        consts += _tensor_lines(P, "Input", graph.input_tensors[0]) + [""]
    if len(graph.outputs) >= 1:
        consts += _tensor_lines(P, "Output", graph.output_tensors[0]) + [""]
    if preprocess is not None:
        tensor = graph.input_tensors[0] if len(graph.inputs) == 1 else None
        consts += _normalization_lines(P, preprocess, tensor) + [""]
    labels_cc = ""
    if labels and graph.outputs and len(labels) != graph.output_tensors[0].num_elements:
        raise ModelError(f"{len(labels)} labels for an output of {graph.output_tensors[0].num_elements} values")
    if labels:
        consts += [f"// Class names: output element k is k{P}Labels[k].",
                   f"constexpr int k{P}LabelCount = {len(labels)};",
                   f"extern const char* const k{P}Labels[k{P}LabelCount];", ""]
        labels_cc = (f"\nconst char* const k{P}Labels[k{P}LabelCount] = {{\n"
                     + "".join(f"  {_c_string(n)},\n" for n in labels) + "};\n")
    header = (
        f"{origin}\n#ifndef {guard}\n#define {guard}\n\n"
        "// The .tflite flatbuffer (TFLite metadata and labels.txt included). TFLite Micro reads it in place;\n"
        "// it is 16-byte aligned.\n"
        f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n\n"
        + "\n".join(consts) + f"\n#endif  // {guard}\n"
    )
    source = (
        f"{origin}\n#include \"{basename}.h\"\n\n"
        f"alignas(16) const unsigned char {symbol}[] = {{\n{c_array_body(data)}\n}};\n\n"
        f"const unsigned int {symbol}_len = {len(data)};\n{labels_cc}"
    )
    return source, header


def write_model_data(model_path: str | Path, out_dir: str | Path, *, c_name: str = "model",
                     arena: ArenaEstimate | None = None, preprocess: Preprocess | None = None,
                     labels: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write ``<c_name>_model_data.cc`` and ``.h`` for the model into ``out_dir``."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    source, header = model_data_sources(model_path.read_bytes(), model_path.name, c_name=c_name, arena=arena,
                                        preprocess=preprocess, labels=labels)
    return (atomic_write_text(out_dir / f"{c_name}_model_data.cc", source),
            atomic_write_text(out_dir / f"{c_name}_model_data.h", header))


# -- op resolver ----------------------------------------------------------------------------------
def op_registrations(graph: TfliteGraph) -> tuple[list[str], list[str]]:
    """(Add* method names for the model's ops in first-use order, ops with no known registration)."""
    methods, unknown = [], []
    for name in graph.op_names():
        method = TFLM_REGISTRATION.get(name)
        (methods if method else unknown).append(method or name)
    return list(dict.fromkeys(methods)), unknown


def op_resolver_source(graph: TfliteGraph, source_name: str, c_name: str = "model") -> str:
    """A header defining ``<P>OpResolver`` and ``Register<P>Ops()`` for exactly the model's ops."""
    check_c_name(c_name)
    P = camel(c_name)
    methods, unknown = op_registrations(graph)
    guard = f"EDGENET_{c_name.upper()}_OP_RESOLVER_H_"
    adds = "\n".join(f"  if (resolver.{m}() != kTfLiteOk) return kTfLiteError;" for m in methods)
    todo = "".join(f"  // TODO: no MicroMutableOpResolver method known for {n}; register it by hand.\n"
                   for n in unknown)
    count = len(methods) + len(unknown)
    return (
        f"// Generated by edgenet from {source_name}: the TFLite Micro ops this model uses. Do not edit.\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        "#include \"tensorflow/lite/micro/micro_mutable_op_resolver.h\"\n\n"
        f"constexpr int k{P}OpCount = {count};\n"
        f"using {P}OpResolver = tflite::MicroMutableOpResolver<k{P}OpCount>;\n\n"
        "// Usage:\n"
        f"//   #include \"{c_name}_model_data.h\"\n"
        f"//   alignas(16) static uint8_t tensor_arena[k{P}TensorArenaSize];\n"
        f"//   static {P}OpResolver resolver;\n"
        f"//   if (Register{P}Ops(resolver) != kTfLiteOk) {{ /* error */ }}\n"
        f"//   static tflite::MicroInterpreter interpreter(tflite::GetModel(g_{c_name}_model_data), resolver,\n"
        f"//                                               tensor_arena, k{P}TensorArenaSize);\n"
        f"inline TfLiteStatus Register{P}Ops({P}OpResolver& resolver) {{\n"
        f"{adds}\n{todo}  return kTfLiteOk;\n}}\n\n#endif  // {guard}\n"
    )


def write_op_resolver(graph: TfliteGraph, source_name: str, out_dir: str | Path, c_name: str = "model") -> Path:
    """Write ``<c_name>_op_resolver.h`` into ``out_dir``."""
    return atomic_write_text(Path(out_dir) / f"{c_name}_op_resolver.h",
                             op_resolver_source(graph, source_name, c_name))
