"""Read the operators and tensors of a .tflite flatbuffer without TensorFlow.

Uses the flatbuffer schema module that ships with ai-edge-litert (the base install); falls back to
the copies in tflite-micro and TensorFlow. Only the main subgraph's operators are listed (the
models edgenet produces have one subgraph); ``num_subgraphs`` says how many there are.
"""
from __future__ import annotations

import importlib
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

from edgenet.errors import MissingDependencyError, ModelError

_SCHEMA_MODULES = (
    "ai_edge_litert.schema_py_generated",
    "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)
_SMALL_CONSTANT = 64  # constant int tensors up to this many elements are decoded (axes, paddings ...)


@lru_cache(maxsize=1)
def schema() -> ModuleType:
    """The generated TFLite flatbuffer schema module."""
    for name in _SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingDependencyError(
        "no TFLite flatbuffer schema found (needed to read .tflite files); "
        "install it with: pip install ai-edge-litert")


@lru_cache(maxsize=1)
def builtin_op_names() -> dict[int, str]:
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


@lru_cache(maxsize=1)
def _type_names() -> dict[int, str]:
    types = schema().TensorType
    return {v: k.lower() for k, v in vars(types).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dimension whose size is only known at run time
    dtype: str                        # "int8", "uint8", "int32", "float32" ...
    is_constant: bool                 # weights, biases, axes: data stored in the model
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class OpInfo:
    index: int                        # position in the subgraph's execution order
    name: str                         # builtin name ("CONV_2D") or "CUSTOM:<code>"
    builtin_code: int
    version: int
    inputs: tuple[int, ...]           # tensor indices (-1 = optional input left out)
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict, compare=False)  # the few options the checks need


@dataclass(frozen=True)
class TfliteGraph:
    size_bytes: int
    num_subgraphs: int
    tensors: tuple[TensorInfo, ...]
    operators: tuple[OpInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    constants: dict = field(default_factory=dict, compare=False)  # index -> small int ndarray

    def tensor(self, index: int) -> TensorInfo:
        return self.tensors[index]

    @property
    def input_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in self.inputs)

    @property
    def output_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in self.outputs)

    def op_names(self) -> list[str]:
        """Distinct operator names in order of first use."""
        return list(dict.fromkeys(op.name for op in self.operators))

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts


def _options(s, op) -> dict:
    """Decode the builtin options the device checks look at."""
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if table is None:
        return {}
    opts = s.BuiltinOptions
    readers = {
        opts.Conv2DOptions: s.Conv2DOptions,
        opts.DepthwiseConv2DOptions: s.DepthwiseConv2DOptions,
        opts.Pool2DOptions: s.Pool2DOptions,
        opts.FullyConnectedOptions: s.FullyConnectedOptions,
        opts.ConcatenationOptions: s.ConcatenationOptions,
        opts.StridedSliceOptions: s.StridedSliceOptions,
        opts.ReducerOptions: s.ReducerOptions,
        opts.PackOptions: s.PackOptions,
    }
    cls = readers.get(kind)
    if cls is None:
        return {}
    o = cls()
    o.Init(table.Bytes, table.Pos)
    out = {}
    for attr, key in (("FusedActivationFunction", "fused_activation"), ("DilationHFactor", "dilation_h"),
                      ("DilationWFactor", "dilation_w"), ("StrideH", "stride_h"), ("StrideW", "stride_w"),
                      ("WeightsFormat", "weights_format"), ("KeepDims", "keep_dims"),
                      ("EllipsisMask", "ellipsis_mask"), ("NewAxisMask", "new_axis_mask"),
                      ("FilterHeight", "filter_h"), ("FilterWidth", "filter_w"), ("Axis", "axis")):
        if hasattr(o, attr):
            out[key] = getattr(o, attr)()
    return out


def read_tflite(model: str | Path | bytes) -> TfliteGraph:
    """Parse a .tflite file (path or bytes). Raises ModelError when it is not a TFLite model."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        buf, where = bytes(model), "model"
    else:
        path = Path(model)
        try:
            buf = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{path}: no such model file") from None
        where = str(path)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{where}: not a .tflite model (no TFL3 identifier)")
    s = schema()
    try:
        return _parse(s, buf)
    except (IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError, struct.error) as exc:
        raise ModelError(f"{where}: corrupt .tflite flatbuffer ({type(exc).__name__}: {exc})") from exc


def _parse(s, buf: bytes) -> TfliteGraph:
    model = s.Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraph")
    graph = model.Subgraphs(0)
    names, types = builtin_op_names(), _type_names()
    tensors, constants = [], {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        buffer = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        has_data = buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1)
        q = t.Quantization()
        scales = tuple(float(v) for v in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
        zps = tuple(int(v) for v in q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else ()
        dtype = types.get(t.Type(), f"type{t.Type()}")
        name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor{i}"
        tensors.append(TensorInfo(i, name, shape, sig, dtype, has_data, scales, zps))
        if has_data and dtype in ("int32", "int64") and buffer.DataLength() > 0:
            count = int(np.prod(shape)) if shape else 1
            if count <= _SMALL_CONSTANT:
                raw = buffer.DataAsNumpy().tobytes()
                constants[i] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == s.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            name = "CUSTOM:" + (custom.decode("utf-8", "replace") if custom else "?")
        else:
            name = names.get(builtin, f"BUILTIN_{builtin}")
        ins = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        ops.append(OpInfo(i, name, builtin, int(code.Version()), ins, outs, _options(s, op)))
    inputs = tuple(int(v) for v in graph.InputsAsNumpy()) if graph.InputsLength() else ()
    outputs = tuple(int(v) for v in graph.OutputsAsNumpy()) if graph.OutputsLength() else ()
    return TfliteGraph(len(buf), model.SubgraphsLength(), tuple(tensors), tuple(ops), inputs, outputs,
                       constants)
