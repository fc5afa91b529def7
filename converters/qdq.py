"""Quantized ONNX in: a QDQ graph read as the float graph plus the ranges its producer chose.

A QDQ ("quantize-dequantize") ONNX graph, as onnxruntime's ``quantize_static(...,
quant_format=QuantFormat.QDQ)``, PyTorch's QAT / PT2E export, NNCF or Brevitas write it, keeps
float operators and marks each quantized tensor with a ``QuantizeLinear -> DequantizeLinear`` pair
(ONNX operators, opsets 10-21):

    y = (saturate(round(x / scale) + zero_point) - zero_point) * scale

with ``saturate`` clamping to the integer type's [qmin, qmax] (int8: [-128, 127], uint8: [0, 255]).
The pair therefore says which real interval the tensor is represented on:

    min = (qmin - zero_point) * scale,  max = (qmax - zero_point) * scale

:func:`strip_qdq` removes the pairs and returns the float graph, ``{ONNX value name: (min, max)}``
for every activation the producer quantized, and a :class:`QDQInfo`. Weights stored as integers
behind a ``DequantizeLinear`` become float initializers holding exactly ``(q - zero_point) * scale``
(the values the QDQ model computes with). Where the producer folded an activation into the
quantization (onnxruntime removes a Relu / Clip whose output is quantized with the range starting
at 0: the saturation at qmin does the clamping), a Relu is put back so that the float graph computes
what the QDQ graph does.

QOperator graphs (QLinearConv, ConvInteger, ...: integer operators instead of pairs) are refused by
:func:`refuse_qoperator`, naming the operators. A malformed pair (scale <= 0 or not finite, a
per-axis scale whose length or axis does not fit the tensor, a zero point outside its type's range
or of another type than int8 / uint8, per-axis activations, blocked quantization) is a ModelError
naming the node.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenet.errors import ModelError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                 "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid",
                 "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "QGemm", "QLinearWhere",
                 "QLinearConvTranspose", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention")
_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}
# the input of these ops that holds the weight, and its output-channel axis (None: depends on attributes)
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": -1}
# producers whose output is already >= 0: no Relu is put back behind them
_NON_NEGATIVE = ("Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp")
# ops whose output is >= 0 when their (first; Concat: every) input is
_KEEPS_SIGN = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
               "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Resize", "Concat", "Identity", "Pad")


@dataclass(frozen=True)
class QDQInfo:
    """What :func:`strip_qdq` found and did (counts over the graph)."""

    pairs: int                    # QuantizeLinear -> DequantizeLinear pairs on activations, removed
    weights: int                  # integer initializers behind a DequantizeLinear, dequantized
    weight_granularity: str       # "per-channel", "per-tensor", "mixed" or "none"
    weights_symmetric: bool       # every weight's zero point is 0 (int8): TFLite's own weight scheme
    activation_types: tuple[str, ...]   # "int8" / "uint8" of the activation pairs
    relu_restored: int            # Relus put back where the producer folded one into a pair
    conflicting: int = 0          # tensors quantized twice with different parameters (the first kept)
    unfolded_bn: int = 0          # BatchNormalizations after a Conv whose weights the producer quantized

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "weights": self.weights, "weight_granularity": self.weight_granularity,
                "weights_symmetric": self.weights_symmetric, "activation_types": list(self.activation_types),
                "relu_restored": self.relu_restored, "conflicting": self.conflicting,
                "unfolded_bn": self.unfolded_bn}

    @property
    def per_channel(self) -> bool | None:
        """The weight granularity the int8 model should use (None: no quantized weights)."""
        return {"per-channel": True, "mixed": True, "per-tensor": False}.get(self.weight_granularity)


@dataclass(frozen=True)
class QDQSource:
    """A QDQ model as the pipeline carries it: the graph as given (the int8 verdict's reference,
    run by onnxruntime), its float graph and the producer's ranges by ONNX value name."""

    model: object                                   # onnx.ModelProto, with its QDQ pairs
    float_model: object                             # onnx.ModelProto, pairs stripped
    ranges: dict                                    # ONNX value name -> (min, max)
    info: QDQInfo

    @staticmethod
    def read(model) -> "QDQSource":
        """:func:`strip_qdq` of ``model``; ModelError for a malformed pair."""
        float_model, ranges, info = strip_qdq(model)
        return QDQSource(model, float_model, ranges, info)

    def notes(self, quantized: bool) -> list[str]:
        """What the user is told when the model is read."""
        info = self.info
        kinds = "/".join(info.activation_types) or "no"
        text = (f"quantized ONNX (QDQ): {info.pairs} activation range(s) ({kinds}) and {info.weights} "
                f"{info.weight_granularity} weight(s) read from its QuantizeLinear/DequantizeLinear pairs")
        if info.relu_restored:
            text += (f"; {info.relu_restored} Relu(s) put back where the producer folded the activation into a "
                     "range starting at 0")
        out = [text]
        if info.conflicting:
            out.append(f"{info.conflicting} tensor(s) are quantized twice with different scales in the QDQ graph: "
                       "the first pair's range is used")
        if info.unfolded_bn:
            out.append(f"{info.unfolded_bn} BatchNormalization(s) follow a Conv whose weights were quantized before "
                       "folding: TFLite computes the folded Conv, so its int8 weights and outputs cannot be the QDQ "
                       "model's; fold first (onnxruntime: quant_pre_process before quantize_static)")
        if not quantized:
            out.append("no --int8: the QDQ pairs were stripped and the float graph converted; add --int8 for the "
                       "full-integer model with the producer's scales")
        return out


def qoperator_ops(model) -> list[str]:
    """The QOperator-format op types of ``model`` (sorted; empty for float and QDQ graphs)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type in QOPERATOR_OPS})


def is_qdq(model) -> bool:
    """True when ``model`` holds a QuantizeLinear or DequantizeLinear node."""
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def refuse_qoperator(model, source: str) -> None:
    """ModelError naming the QOperator-format ops of ``model`` and what to do instead."""
    found = qoperator_ops(model)
    if found:
        raise ModelError(f"{source}: a QOperator-format quantized graph ({', '.join(found)}): its integer "
                         "operators have no float graph to convert; export it in QDQ format instead "
                         "(onnxruntime: quantize_static(..., quant_format=QuantFormat.QDQ)) and convert that")


def _label(node) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


class _Graph:
    """Constants (initializers and Constant nodes) and producers / consumers of a graph."""

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

    def const(self, name: str):
        if name not in self.consts and name in self.protos:
            try:
                self.consts[name] = self._np.to_array(self.protos[name])
            except Exception as exc:   # data that does not fit its dims or type
                raise ModelError(f"constant {name!r} cannot be read: {str(exc).splitlines()[0][:200]}") from None
        return self.consts.get(name)


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
class _Params:
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
        lo, hi = _RANGES[self.dtype]
        s, z = float(self.scale.reshape(-1)[0]), float(self.zero_point.reshape(-1)[0])
        return (lo - z) * s, (hi - z) * s

    def same(self, other: "_Params") -> bool:
        return self.dtype == other.dtype and np.array_equal(self.scale, other.scale) \
            and np.array_equal(self.zero_point, other.zero_point)


def _params(node, g: _Graph, data_shape: tuple | None) -> _Params:
    """The scale, zero point, type and axis of a QuantizeLinear / DequantizeLinear, checked."""
    name = f"{node.op_type} node {_label(node)!r}"
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
        if dtype not in _RANGES and not (dtype == np.int32 and node.op_type == "DequantizeLinear"):
            raise ModelError(f"{name}: zero point of type {dtype.name}; edgenet reads int8 and uint8 QDQ pairs "
                             "(int32 only for a bias)")
        raw = np.asarray(list(proto.int32_data), np.int64) if proto is not None and len(proto.int32_data) \
            else zp_arr.astype(np.int64)
        lo, hi = _RANGES.get(dtype, (-2**31, 2**31 - 1))
        if raw.size and (raw.min() < lo or raw.max() > hi):
            bad = int(raw[(raw < lo) | (raw > hi)][0])
            raise ModelError(f"{name}: zero point {bad} is outside {dtype.name}'s range [{lo}, {hi}]")
        if dtype == np.int32 and raw.size and raw.any():
            raise ModelError(f"{name}: an int32 (bias) zero point must be 0, not {int(raw[raw != 0][0])}")
        if raw.size != scale.size or zp_arr.ndim > 1:
            raise ModelError(f"{name}: zero point has shape {list(zp_arr.shape)}, scale {list(scale.shape)}")
        zp = raw.reshape(scale.shape)
    return _Params(scale, zp, dtype, axis)


def _check_weight_axis(params: _Params, dq, g: _Graph) -> None:
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
            raise ModelError(f"DequantizeLinear node {_label(dq)!r}: weight of {user.op_type} node {_label(user)!r} "
                             f"quantized per axis {params.axis}; TFLite quantizes weights per output channel "
                             f"(axis {want % rank} here)")


def strip_qdq(model) -> tuple[object, dict[str, tuple[float, float]], QDQInfo]:
    """(float model, ``{ONNX value name: (min, max)}``, :class:`QDQInfo`) of a QDQ ``model``
    (an ``onnx.ModelProto``, left unchanged). Ranges are per tensor, in real units.

    Raises:
        ModelError: a QOperator graph, or a malformed pair (named by its node).
    """
    import onnx
    from onnx import helper, numpy_helper

    refuse_qoperator(model, "the model")
    g = _Graph(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    rename: dict[str, str] = {}          # DequantizeLinear output -> the float value it stands for
    ranges: dict[str, tuple[float, float]] = {}
    params_of: dict[str, _Params] = {}
    new_inits, drop = [], set()
    weights, per_axis, per_tensor, symmetric, conflicting = 0, 0, 0, True, 0
    act_types: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            p = _params(node, g, g.shapes.get(node.input[0]))
            users = g.consumers.get(node.output[0], [])
            if node.output[0] in g.outputs or not users or any(u.op_type != "DequantizeLinear" for u in users):
                what = "a graph output" if node.output[0] in g.outputs else \
                    f"{users[0].op_type} node {_label(users[0])!r}" if users else "nothing"
                raise ModelError(f"QuantizeLinear node {_label(node)!r}: its integer output feeds {what}, not a "
                                 "DequantizeLinear; edgenet reads QDQ graphs (integer operators: QOperator format)")
            if p.dtype not in _RANGES:
                raise ModelError(f"QuantizeLinear node {_label(node)!r}: quantizes to {p.dtype.name}; edgenet reads "
                                 "int8 and uint8 QDQ pairs")
            for dq in users:
                q2 = _params(dq, g, g.shapes.get(node.input[0]))
                if not q2.same(p) or q2.axis != p.axis:
                    raise ModelError(f"DequantizeLinear node {_label(dq)!r}: scale or zero point differ from its "
                                     f"QuantizeLinear node {_label(node)!r}")
            x = node.input[0]
            drop.add(id(node))
            drop.update(id(u) for u in users)
            if g.const(x) is not None:      # Q -> DQ of a float constant: the dequantized values
                q = _quantize(g.const(x), p)
                for dq in users:
                    new_inits.append(numpy_helper.from_array(p.dequantize(q), dq.output[0]))
                continue
            if p.axis is not None:
                raise ModelError(f"QuantizeLinear node {_label(node)!r}: activation {x!r} quantized per axis "
                                 f"{p.axis}; TFLite quantizes activations per tensor")
            for dq in users:
                rename[dq.output[0]] = x
            act_types.add(p.dtype.name)
            if x in params_of and not params_of[x].same(p):
                conflicting += 1
                continue
            params_of[x] = p
            ranges[x] = p.interval()
        elif node.op_type == "DequantizeLinear":
            src = g.producer.get(node.input[0])
            if src is not None and src.op_type == "QuantizeLinear":
                continue                     # handled with its QuantizeLinear
            q = g.const(node.input[0])
            if q is None:
                raise ModelError(f"DequantizeLinear node {_label(node)!r}: reads {node.input[0]!r}, neither a "
                                 "QuantizeLinear output nor a stored integer tensor")
            p = _params(node, g, tuple(q.shape))
            if q.dtype != p.dtype:
                raise ModelError(f"DequantizeLinear node {_label(node)!r}: data of type {q.dtype.name}, zero point "
                                 f"of type {p.dtype.name}")
            if p.dtype in _RANGES:
                _check_weight_axis(p, node, g)
                weights += 1
                per_axis += p.axis is not None
                per_tensor += p.axis is None
                symmetric = symmetric and p.dtype == np.int8 and not p.zero_point.any()
            new_inits.append(numpy_helper.from_array(p.dequantize(q), node.output[0]))
            drop.add(id(node))
    kept = [n for n in model.graph.node if id(n) not in drop]
    # values read by their QuantizeLinear alone: a Relu put back behind them changes no other reader
    only_q = {x for x in params_of if x not in g.outputs
              and all(u.op_type == "QuantizeLinear" for u in g.consumers.get(x, []))}
    # a graph output made by a DequantizeLinear keeps its name: the float value takes it
    outputs = {o.name for o in graph.output}
    for dq_out, x in list(rename.items()):
        if dq_out in outputs and x not in outputs and x not in {i.name for i in graph.input}:
            rename = {k: (dq_out if v == x else v) for k, v in rename.items()}
            rename[x] = dq_out
            del rename[dq_out]
            if x in ranges:
                ranges[dq_out] = ranges.pop(x)
                params_of[dq_out] = params_of.pop(x)
                if x in only_q:
                    only_q.add(dq_out)
    relu = 0
    nodes = []
    nonneg: set[str] = set()    # values known to be >= 0 (no Relu needed behind them)
    for node in kept:
        node = _renamed(node, rename)
        nodes.append(node)
        data = [i for i in node.input[:1 if node.op_type != "Concat" else None] if i]
        if node.op_type in _NON_NEGATIVE or _clips_at_zero(node, g) or (
                node.op_type in _KEEPS_SIGN and data and all(i in nonneg for i in data)):
            nonneg.update(node.output)
            continue
        for k, o in enumerate(node.output):
            p = params_of.get(o)
            if p is None or o not in only_q or p.interval()[0] != 0.0:
                continue
            nonneg.add(o)
            pre = f"{o}__before_qdq_relu"
            node.output[k] = pre
            nodes.append(helper.make_node("Relu", [pre], [o], name=f"{o}__qdq_relu"))
            relu += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    inits = [t for t in graph.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    granularity = "none" if not weights else "mixed" if per_axis and per_tensor else \
        "per-channel" if per_axis else "per-tensor"
    producers = {o: n for n in nodes for o in n.output}
    quantized_w = {t.name for t in new_inits}
    unfolded_bn = sum(1 for n in nodes if n.op_type == "BatchNormalization" and n.input[0] in producers
                      and producers[n.input[0]].op_type in ("Conv", "ConvTranspose")
                      and producers[n.input[0]].input[1] in quantized_w)
    info = QDQInfo(len(ranges), weights, granularity, symmetric, tuple(sorted(act_types)), relu, conflicting,
                   unfolded_bn)
    return out, ranges, info


def _renamed(node, rename: dict[str, str]):
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for k, i in enumerate(copy.input):
        if i in rename:
            copy.input[k] = rename[i]
    for k, o in enumerate(copy.output):
        if o in rename:
            copy.output[k] = rename[o]
    return copy


def _clips_at_zero(node, g: _Graph) -> bool:
    """A Clip whose minimum is >= 0 (Relu6 and the like): already non-negative."""
    if node.op_type != "Clip":
        return False
    low = next((a.f for a in node.attribute if a.name == "min"), None)
    if low is None and len(node.input) > 1 and node.input[1]:
        value = g.const(node.input[1])
        low = None if value is None else float(np.asarray(value).reshape(-1)[0])
    return low is not None and low >= 0


def _quantize(x: np.ndarray, p: _Params) -> np.ndarray:
    """QuantizeLinear in numpy (round half to even, saturate), for a float constant behind a pair."""
    shape = [1] * x.ndim
    if p.axis is not None:
        shape[p.axis] = -1
    lo, hi = _RANGES[p.dtype]
    q = np.rint(x.astype(np.float32) / p.scale.astype(np.float32).reshape(shape)) + p.zero_point.reshape(shape)
    return np.clip(q, lo, hi).astype(p.dtype)
