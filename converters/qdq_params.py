"""A QDQ graph's constants and each QuantizeLinear / DequantizeLinear's parameters, read and checked
(for :mod:`edgenet.converters.qdq`).

ONNX's QuantizeLinear / DequantizeLinear (opsets 10-21) take ``x, y_scale[, y_zero_point]``: a
scalar scale (per tensor) or a 1-D scale along ``axis`` (per axis, opset 13+; default axis 1),
a zero point of the same shape whose type is the integer type (int8 or uint8 here; int32 for a
bias DequantizeLinear, whose zero point must be 0); without a zero point the type is
``output_dtype`` (opset 21), uint8 by default. Blocked quantization (``block_size``, opset 21),
16-bit, 4-bit and float8 types are refused. Each problem is a ModelError naming the node.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenet.errors import ModelError

RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}

# the input of these ops that holds the weight, and its output-channel axis (None: depends on attributes)
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": -1}


def label(node) -> str:
    """A node's name for messages: its name, else its first output, else its op type."""
    return node.name or (node.output[0] if node.output else node.op_type)


# ops never folded into constants (their results vary from run to run, or are the pairs themselves)
_NOT_FOLDED = ("QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike",
               "RandomUniformLike", "Multinomial", "Bernoulli")


class Graph:
    """Constants (initializers, Constant nodes, and nodes computing on constants only: PyTorch's QAT
    export scales a conv's weights by its BatchNorm in the graph and passes zero points through
    Identity nodes) and producers / consumers of a graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        graph = model.graph
        self.protos = {t.name: t for t in graph.initializer}
        self.consts = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.output and node.attribute:
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    self.protos[node.output[0]] = attr.t
        self._np = numpy_helper
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.shapes = _value_shapes(model)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self._varying: set[str] = set()

    def const(self, name: str, depth: int = 0):
        """The value of ``name`` when it is constant (folded with ONNX's reference implementation
        where a node computes it from constants), else None."""
        if name in self.consts:
            return self.consts[name]
        if name in self.protos:
            try:
                self.consts[name] = self._np.to_array(self.protos[name])
            except Exception as exc:   # data that does not fit its dims or type
                raise ModelError(f"constant {name!r} cannot be read: {str(exc).splitlines()[0][:200]}") from None
            return self.consts[name]
        node = self.producer.get(name)
        if name in self._varying or node is None or node.op_type in _NOT_FOLDED or node.domain not in ("", "ai.onnx") \
                or depth > 32:
            return None
        arrays = [self.const(i, depth + 1) if i else None for i in node.input]
        if any(a is None for a, i in zip(arrays, node.input) if i):
            self._varying.add(name)
            return None
        try:
            values = _evaluate(node, arrays, self.opset)
        except Exception:   # the reference implementation cannot: treated as computed at run time
            self._varying.add(name)
            return None
        for out, value in zip(node.output, values):
            if out:
                self.consts[out] = value
        return self.consts.get(name)


def _evaluate(node, arrays, opset: int) -> list[np.ndarray]:
    """One node on constant inputs, by ONNX's reference implementation."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    feeds = {n: a for n, a in zip(node.input, arrays) if n}
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in feeds.items()]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    model = helper.make_model(helper.make_graph([node], "fold", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def _value_shapes(model) -> dict[str, tuple]:
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:   # shapes only refine the checks
        inferred = model
    g = inferred.graph
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


@dataclass(frozen=True)
class Params:
    scale: np.ndarray       # float64, scalar or 1-D
    zero_point: np.ndarray  # int64, same shape
    dtype: np.dtype         # int8 / uint8 (int32 for a bias DequantizeLinear)
    axis: int | None        # None: per tensor

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        shape = [1] * q.ndim
        if self.axis is not None:
            shape[self.axis] = -1
        s = self.scale.astype(np.float32).reshape(shape)
        z = self.zero_point.reshape(shape).astype(np.float32)
        return ((q.astype(np.float32) - z) * s).astype(np.float32)

    def interval(self) -> tuple[float, float]:
        lo, hi = RANGES[self.dtype]
        s, z = float(self.scale.reshape(-1)[0]), float(self.zero_point.reshape(-1)[0])
        return (lo - z) * s, (hi - z) * s

    def same(self, other: "Params") -> bool:
        return self.dtype == other.dtype and np.array_equal(self.scale, other.scale) \
            and np.array_equal(self.zero_point, other.zero_point)


def pair_params(node, g: Graph, data_shape: tuple | None) -> Params:
    """The scale, zero point, type and axis of a QuantizeLinear / DequantizeLinear, checked."""
    name = f"{node.op_type} node {label(node)!r}"
    attrs = {a.name: a for a in node.attribute}
    if "block_size" in attrs and attrs["block_size"].i:
        raise ModelError(f"{name}: blocked quantization (block_size {attrs['block_size'].i}) is not supported; "
                         "TFLite quantizes per tensor or per channel")
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        raise ModelError(f"{name}: its scale {node.input[1] if len(node.input) > 1 else ''!r} is not a constant")
    if scale.ndim > 1:
        raise ModelError(f"{name}: scale has shape {list(scale.shape)}; ONNX takes a scalar or a 1-D scale")
    scale = scale.astype(np.float64)
    if not np.isfinite(scale).all() or (scale <= 0).any():
        bad = scale.reshape(-1)[~(np.isfinite(scale.reshape(-1)) & (scale.reshape(-1) > 0))][0]
        raise ModelError(f"{name}: scale {bad:g} is not a positive finite number")
    axis = None
    if scale.ndim == 1 and scale.size > 1 or (scale.ndim == 1 and "axis" in attrs):
        rank = len(data_shape) if data_shape is not None else None
        axis = attrs["axis"].i if "axis" in attrs else 1
        if rank is not None:
            if not -rank <= axis < rank:
                raise ModelError(f"{name}: axis {axis} is outside its input's rank {rank}")
            axis %= rank
            size = data_shape[axis]
            if size is not None and size != scale.size:
                raise ModelError(f"{name}: {scale.size} scales for axis {axis} of size {size}")
        elif axis < 0:
            raise ModelError(f"{name}: axis {axis} on an input of unknown rank")
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zp_name is None:   # no zero point: 0 of output_dtype (opset 21), uint8 by default
        code = attrs["output_dtype"].i if "output_dtype" in attrs else 2
        dtype = {2: np.dtype(np.uint8), 3: np.dtype(np.int8), 6: np.dtype(np.int32)}.get(code)
        if dtype is None:
            raise ModelError(f"{name}: quantizes to ONNX type {code}; edgenet reads int8 and uint8 QDQ pairs")
        zp = np.zeros(scale.shape, np.int64)
    else:
        proto = g.protos.get(zp_name)
        zp_arr = g.const(zp_name)
        if zp_arr is None:
            raise ModelError(f"{name}: its zero point {zp_name!r} is not a constant")
        dtype = np.dtype(zp_arr.dtype)
        if dtype not in RANGES and not (dtype == np.int32 and node.op_type == "DequantizeLinear"):
            raise ModelError(f"{name}: zero point of type {dtype.name}; edgenet reads int8 and uint8 QDQ pairs "
                             "(int32 only for a bias)")
        raw = np.asarray(list(proto.int32_data), np.int64) if proto is not None and len(proto.int32_data) \
            else zp_arr.astype(np.int64)
        lo, hi = RANGES.get(dtype, (-2**31, 2**31 - 1))
        if raw.size and (raw.min() < lo or raw.max() > hi):
            bad = int(raw[(raw < lo) | (raw > hi)][0])
            raise ModelError(f"{name}: zero point {bad} is outside {dtype.name}'s range [{lo}, {hi}]")
        if dtype == np.int32 and raw.size and raw.any():
            raise ModelError(f"{name}: an int32 (bias) zero point must be 0, not {int(raw[raw != 0][0])}")
        if raw.size != scale.size or zp_arr.ndim > 1:
            raise ModelError(f"{name}: zero point has shape {list(zp_arr.shape)}, scale {list(scale.shape)}")
        zp = raw.reshape(scale.shape)
    return Params(scale, zp, dtype, axis)


def check_weight_axis(params: Params, dq, g: Graph) -> None:
    """A per-axis weight must be per output channel of the op reading it (what TFLite stores)."""
    if params.axis is None:
        return
    for user in g.consumers.get(dq.output[0], []):
        if user.op_type not in _WEIGHT_AXIS or len(user.input) < 2 or user.input[1] != dq.output[0]:
            continue
        rank = len(g.shapes.get(dq.input[0]) or ()) or None
        want = _WEIGHT_AXIS[user.op_type]
        if user.op_type == "Gemm":
            trans = next((a.i for a in user.attribute if a.name == "transB"), 0)
            want = 0 if trans else 1
        if want is not None and rank is not None and want % rank != params.axis:
            raise ModelError(f"DequantizeLinear node {label(dq)!r}: weight of {user.op_type} node {label(user)!r} "
                             f"quantized per axis {params.axis}; TFLite quantizes weights per output channel "
                             f"(axis {want % rank} here)")


def quantize_array(x: np.ndarray, p: Params) -> np.ndarray:
    """QuantizeLinear in numpy (round half to even, saturate), for a float constant behind a pair."""
    shape = [1] * x.ndim
    if p.axis is not None:
        shape[p.axis] = -1
    lo, hi = RANGES[p.dtype]
    q = np.rint(x.astype(np.float32) / p.scale.astype(np.float32).reshape(shape)) + p.zero_point.reshape(shape)
    return np.clip(q, lo, hi).astype(p.dtype)


@dataclass(frozen=True)
class Recentred:
    """An int8 weight stored with a zero point other than 0, or a uint8 weight. TFLite's int8 weights are
    symmetric (zero point 0, values in [-127, 127]: the TFLite 8-bit quantization specification), so
    the weight's real values ``(q - z) * s`` are stored re-centred on zero point 0: a channel whose
    ``q - z`` all lie in [-127, 127] keeps the producer's scale and every value exactly; any other is
    rescaled to ``max|w| / 127`` (each value moved by at most half of that step)."""

    node: str                     # the op reading the weight (for messages)
    zero_points: tuple[int, int]  # the smallest and largest zero point (per tensor: the same)
    dtype: str                    # "int8" or "uint8"
    exact: int                    # channels kept exactly on the producer's scale
    channels: int                 # channels (1 for a per-tensor weight)

    def to_dict(self) -> dict:
        return {"node": self.node, "type": self.dtype, "zero_points": list(self.zero_points),
                "exact_channels": self.exact, "channels": self.channels}


def recentred(q: np.ndarray, p: Params, reader: str) -> Recentred | None:
    """The :class:`Recentred` record of integer weight ``q`` read with ``p`` by the op ``reader``,
    or None when its zero point is 0 (int8) -- nothing to re-centre."""
    if p.dtype not in RANGES or (p.dtype == np.int8 and not p.zero_point.any()):
        return None
    shape = [1] * q.ndim
    if p.axis is not None:
        shape[p.axis] = -1
    r = np.abs(q.astype(np.int64) - p.zero_point.reshape(shape))
    per_channel = r.max(axis=tuple(d for d in range(q.ndim) if d != p.axis)) if p.axis is not None and q.ndim \
        else r.max(initial=0).reshape(1)
    zp = p.zero_point.reshape(-1)
    return Recentred(reader, (int(zp.min()), int(zp.max())), p.dtype.name, int((per_channel <= 127).sum()),
                     int(per_channel.size))

