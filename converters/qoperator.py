"""QOperator-format quantized ONNX read as the QDQ graph it stands for.

onnxruntime's ``quantize_static(..., quant_format=QuantFormat.QOperator)`` writes integer operators
(``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QGemm``, ``QLinearAdd`` ...) whose inputs carry
their own scale and zero point, and leaves data-movement ops (``MaxPool``, ``Reshape``, ``Flatten``,
``Transpose``, ``Resize`` ...) running on the integer tensors directly. ``quantize_dynamic`` writes
``DynamicQuantizeLinear -> ConvInteger / MatMulInteger -> Cast -> Mul`` chains and com.microsoft
``DynamicQuantizeMatMul`` / ``DynamicQuantizeLSTM`` (:mod:`edgenet.converters.qoperator_dynamic`).

:func:`rewrite_qoperator` turns each static integer op into its QDQ equivalent (the operator semantics
of the com.microsoft contrib ops, onnxruntime's ``docs/ContribOperators.md``)::

    QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B)
      ->  QuantizeLinear(Conv(DQ(x, xs, xz), DQ(w, ws, wz, axis 0), DQ(B, xs * ws, 0)), ys, yz)

and each data-movement op on an integer tensor into the float op between a DequantizeLinear and a
QuantizeLinear with the input's own scale and zero point (exact: these ops only move or select
values). The graph's own QuantizeLinear / DequantizeLinear nodes at the edges stay. The result is a
QDQ graph that :func:`edgenet.converters.qdq.strip_qdq` reads into the float graph plus the producer's
ranges. Dynamic chains become the float op on dequantized weights (the activations had no fixed
range: they are calibrated like any float model's).

Errors: an op this rewrite does not know (``QAttention``, ``QLinearConvTranspose``, an unknown
com.microsoft op reading integer tensors ...) is a ModelError naming it and its node.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edgenet.converters.cleanup import name_allocator
from edgenet.converters.qdq_params import Graph, label
from edgenet.errors import ModelError

# static integer op -> the float op it computes
STATIC_OPS = {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "QGemm": "Gemm", "QLinearAdd": "Add",
              "QLinearMul": "Mul", "QLinearAveragePool": "AveragePool",
              "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearConcat": "Concat",
              "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax",
              "QLinearReduceMean": "ReduceMean", "QLinearWhere": "Where"}
DYNAMIC_OPS = ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
               "DynamicQuantizeLSTM")
# ops onnxruntime runs on integer tensors directly: output i has the same scale and zero point as input 0
DIRECT_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Resize", "Split", "Gather",
              "Pad", "Slice", "Identity", "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "GlobalMaxPool",
              "ReduceMax", "ReduceMin")
# integer ops of onnxruntime's quantizer with no rewrite here
_UNSUPPORTED = ("QAttention", "QEmbedLayerNormalization", "QOrderedAttention", "QOrderedMatMul", "QOrderedGelu",
                "QOrderedLayerNormalization", "QOrderedLongformerAttention", "QuantizeWithOrder",
                "DequantizeWithOrder", "MatMulIntegerToFloat")
# ops reading an integer tensor whose result does not depend on the scale (ArgMax of (q - z) * s is ArgMax of q)
_SCALE_FREE = ("Shape", "Size", "ArgMax", "ArgMin")


def is_qoperator(model) -> bool:
    """True when ``model`` holds a static or dynamic QOperator-format op."""
    known = set(STATIC_OPS) | set(DYNAMIC_OPS) | set(_UNSUPPORTED)
    return any(n.op_type in known or n.op_type.startswith("QLinear") for n in model.graph.node)


@dataclass(frozen=True)
class QOperatorInfo:
    """What :func:`rewrite_qoperator` rewrote (op type -> count)."""

    static: dict = field(default_factory=dict)     # integer ops now float ops between QDQ pairs
    dynamic: dict = field(default_factory=dict)    # dynamic chains now float ops on dequantized weights
    direct: int = 0                                # data-movement ops that ran on integer tensors

    def to_dict(self) -> dict:
        return {"static": dict(self.static), "dynamic": dict(self.dynamic), "direct": self.direct}

    def notes(self) -> list[str]:
        out = []
        if self.static:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.static.items()))
            out.append(f"quantized ONNX in QOperator format ({ops}): read as the equivalent QDQ graph, each integer "
                       "op the float op between its own input and output scales; the int8 model is judged against "
                       "onnxruntime running the QOperator model")
        if self.dynamic:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.dynamic.items()))
            out.append(f"dynamically quantized ONNX ({ops}): the float ops on the dequantized int8 weights; "
                       "dynamic quantization fixes no activation range, so the activations are calibrated")
        return out


def rewrite_qoperator(model) -> tuple[object, QOperatorInfo | None]:
    """(QDQ or float ``onnx.ModelProto``, :class:`QOperatorInfo`) for a QOperator ``model`` (left
    unchanged); ``(model, None)`` when it holds no QOperator op.

    Raises:
        ModelError: an integer op this rewrite does not know, or a pattern it cannot read (named).
    """
    import onnx

    if not is_qoperator(model):
        return model, None
    unknown = sorted({n.op_type for n in model.graph.node if n.op_type not in STATIC_OPS
                      and (n.op_type.startswith("QLinear") or n.op_type in _UNSUPPORTED)})
    if unknown:
        node = next(n for n in model.graph.node if n.op_type in unknown)
        raise ModelError(f"QOperator op {', '.join(unknown)} (node {label(node)!r}) has no QDQ rewrite in edgenet; "
                         "export the model in QDQ format instead (onnxruntime: quantize_static(..., "
                         "quant_format=QuantFormat.QDQ))")
    from edgenet.converters.qoperator_dynamic import rewrite_dynamic

    out = onnx.ModelProto()
    out.CopyFrom(model)
    dynamic = rewrite_dynamic(out)
    static, direct = _rewrite_static(out)
    _drop_unused_domains(out)
    return out, QOperatorInfo(dict(static), dict(dynamic), direct)


def read_qoperator(model, source) -> tuple[object, tuple | None]:
    """For the pipeline: (rewritten model, (``model`` as given, :class:`QOperatorInfo`)), or
    ``(model, None)`` for other graphs; a ModelError names ``source``."""
    try:
        rewritten, info = rewrite_qoperator(model)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None
    return (model, None) if info is None else (rewritten, (model, info))


def _rewrite_static(model) -> tuple[Counter, int]:
    """Rewrite ``model`` in place; returns (static op counts, direct ops rewritten)."""
    from onnx import helper, numpy_helper

    g = Graph(model)
    graph = model.graph
    fresh = name_allocator(graph)
    params: dict[str, tuple[str, str]] = {}      # integer activation -> (scale name, zero point name)
    dq_cache: dict[tuple, str] = {}
    new_nodes, new_inits = [], []
    counts, direct = Counter(), 0
    reading = [""]          # the user's node being rewritten: the Q / DQ nodes are named after it (its errors)

    def float_of(q: str, scale: str, zp: str, axis: int | None = None) -> str:
        """The float value of integer ``q`` (a DequantizeLinear, shared by readers with equal parameters)."""
        key = (q, scale, zp, axis)
        if key not in dq_cache:
            out = fresh(f"{q}__dq")
            kw = {"axis": axis} if axis is not None else {}
            new_nodes.append(helper.make_node("DequantizeLinear", [q, scale, zp] if zp else [q, scale], [out],
                                              name=fresh(f"{reading[0]}: input {q}"), **kw))
            dq_cache[key] = out
        return dq_cache[key]

    def weight(q: str, scale: str, zp: str, axis: int) -> str:
        s = g.const(scale)
        return float_of(q, scale, zp, axis if s is not None and np.asarray(s).size > 1 else None)

    def quantized(float_out: str, q_out: str, scale: str, zp: str) -> None:
        new_nodes.append(helper.make_node("QuantizeLinear", [float_out, scale, zp] if zp else [float_out, scale],
                                          [q_out], name=fresh(f"{reading[0]}: output {q_out}")))
        params[q_out] = (scale, zp)

    def float_name(q_out: str) -> str:
        base = q_out[:-len("_quantized")] if q_out.endswith("_quantized") else f"{q_out}__float"
        return fresh(base)

    def bias(b: str, scale_names: list[str], factor: float, axis_len: int | None) -> str:
        """An int32 bias dequantized on the product of ``scale_names`` times ``factor``."""
        arrays = [g.const(s) for s in scale_names]
        if any(a is None for a in arrays):
            raise ModelError(f"bias {b!r}: its input and weight scales are not constants")
        s = np.asarray(factor, np.float64)
        for a in arrays:
            s = s * np.asarray(a, np.float64).reshape(-1)
        s = s.astype(np.float32).reshape(-1)
        if s.size == 1:
            s = s.reshape(())
        sname, zname = fresh(f"{b}__scale"), fresh(f"{b}__zero_point")
        new_inits.extend([numpy_helper.from_array(s, sname), numpy_helper.from_array(np.zeros(s.shape, np.int32),
                                                                                     zname)])
        return float_of(b, sname, zname, 0 if s.size > 1 else None)

    for node in list(graph.node):
        op = node.op_type
        reading[0] = f"{op} {label(node)}"
        ins = list(node.input) + [""] * 12
        attrs = {a.name: a for a in node.attribute}
        if op == "QuantizeLinear":
            params[node.output[0]] = (node.input[1], node.input[2] if len(node.input) > 2 else "")
            new_nodes.append(node)
            continue
        if op in STATIC_OPS:
            counts[op] += 1
            fop = STATIC_OPS[op]
            keep = {k: a for k, a in attrs.items() if k not in ("channels_last", "opset")}
            if "channels_last" in attrs and attrs["channels_last"].i:
                raise ModelError(f"{op} node {label(node)!r}: channels_last=1 is not supported; edgenet reads "
                                 "the NCHW layout onnxruntime's quantizer writes")
            ys = yz = None
            if op == "QLinearConv":
                inputs = [float_of(ins[0], ins[1], ins[2]), weight(ins[3], ins[4], ins[5], 0)]
                if ins[8]:
                    inputs.append(bias(ins[8], [ins[1], ins[4]], 1.0, None))
                ys, yz = ins[6], ins[7]
            elif op == "QLinearMatMul":
                inputs = [_operand(g, float_of, weight, ins[0], ins[1], ins[2], -1),
                          _operand(g, float_of, weight, ins[3], ins[4], ins[5], -1)]
                ys, yz = ins[6], ins[7]
            elif op == "QGemm":
                trans_b = attrs["transB"].i if "transB" in attrs else 0
                alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
                inputs = [_operand(g, float_of, weight, ins[0], ins[1], ins[2], 1),
                          _operand(g, float_of, weight, ins[3], ins[4], ins[5], 0 if trans_b else 1)]
                if ins[6]:
                    inputs.append(bias(ins[6], [ins[1], ins[4]], alpha, None))
                keep.pop("beta", None)
                ys, yz = ins[7], ins[8]
            elif op in ("QLinearAdd", "QLinearMul"):
                inputs = [_operand(g, float_of, weight, ins[0], ins[1], ins[2], None),
                          _operand(g, float_of, weight, ins[3], ins[4], ins[5], None)]
                ys, yz = ins[6], ins[7]
            elif op == "QLinearConcat":
                n_in = (len(node.input) - 2) // 3
                inputs = [_operand(g, float_of, weight, ins[2 + 3 * k], ins[3 + 3 * k], ins[4 + 3 * k], None)
                          for k in range(n_in)]
                ys, yz = ins[0], ins[1]
            elif op == "QLinearWhere":
                inputs = [ins[0], _operand(g, float_of, weight, ins[1], ins[2], ins[3], None),
                          _operand(g, float_of, weight, ins[4], ins[5], ins[6], None)]
                ys, yz = ins[7], ins[8]
            else:   # unary: X, x_scale, x_zero_point, y_scale, y_zero_point
                inputs = [float_of(ins[0], ins[1], ins[2])]
                ys, yz = ins[3], ins[4]
                if op == "QLinearSoftmax":
                    _check_softmax(node, attrs, g, model)
                if op == "QLinearReduceMean" and g.opset >= 18 and "axes" in keep:
                    axes = fresh(f"{node.output[0]}__axes")
                    new_inits.append(numpy_helper.from_array(np.asarray(keep.pop("axes").ints, np.int64), axes))
                    inputs.append(axes)
            out_q = node.output[0]
            out_f = float_name(out_q) if ys else out_q
            new_nodes.append(helper.make_node(fop, inputs, [out_f], name=node.name or out_f, **{
                k: helper.get_attribute_value(a) for k, a in keep.items()}))
            if ys:
                quantized(out_f, out_q, ys, yz)
            continue
        read = [i for i in node.input if i in params]
        if not read or op == "DequantizeLinear":
            new_nodes.append(node)
            continue
        copy = _copy(node)
        if op in _SCALE_FREE:
            for k, i in enumerate(copy.input):
                if i in params:
                    copy.input[k] = float_of(i, *params[i])
            new_nodes.append(copy)
            continue
        if op not in DIRECT_OPS or node.input[0] not in params or len(read) > 1:
            raise ModelError(f"{op} node {label(node)!r} reads the integer tensor {read[0]!r} of a QOperator graph; "
                             f"edgenet has no QDQ rewrite for {op} on integer tensors (export the model in QDQ "
                             "format instead: quantize_static(..., quant_format=QuantFormat.QDQ))")
        direct += 1
        scale, zp = params[node.input[0]]
        copy.input[0] = float_of(node.input[0], scale, zp)
        if op == "Pad":
            _pad_value(copy, attrs, g, scale, zp, new_inits, fresh)
        new_nodes.append(copy)
        for k in range(len(node.output)) if op == "Split" else [0]:
            q_out = node.output[k]
            copy.output[k] = float_name(q_out)
            quantized(copy.output[k], q_out, scale, zp)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    return counts, direct


def _operand(g: Graph, float_of, weight, q: str, scale: str, zp: str, axis: int | None) -> str:
    """A QLinear op's integer input as float: a stored tensor is a weight (per ``axis`` when its
    scale has several values), anything else an activation."""
    if g.const(q) is not None and axis is not None:
        return weight(q, scale, zp, axis % max(len(g.const(q).shape), 1))
    return float_of(q, scale, zp)


def _check_softmax(node, attrs, g: Graph, model) -> None:
    """QLinearSoftmax computes Softmax of its ``opset`` attribute; the float Softmax is read at the
    graph's opset. Before 13 Softmax flattens the input from ``axis`` on: the same only when the
    axis is the last one."""
    own = attrs["opset"].i if "opset" in attrs else g.opset
    if (own >= 13) == (g.opset >= 13):
        return
    rank = len(g.shapes.get(node.input[0]) or ())
    axis = attrs["axis"].i if "axis" in attrs else (-1 if own >= 13 else 1)
    if not rank or axis % rank != rank - 1:
        raise ModelError(f"QLinearSoftmax node {label(node)!r}: Softmax of opset {own} over axis {axis} differs from "
                         f"the graph's opset {g.opset} Softmax; edgenet rewrites it only over the last axis")


def _pad_value(copy, attrs, g: Graph, scale: str, zp: str, new_inits: list, fresh) -> None:
    """A constant Pad on an integer tensor pads with the integer ``c`` (0 when not given): in float
    that is ``(c - zero_point) * scale``."""
    from onnx import numpy_helper

    mode = attrs["mode"].s.decode() if "mode" in attrs else "constant"
    if mode != "constant":
        return
    given = copy.input[2] if len(copy.input) > 2 and copy.input[2] else None
    c = g.const(given) if given else np.zeros((), np.int64)
    s, z = g.const(scale), g.const(zp) if zp else np.zeros(())
    if c is None or s is None or z is None:
        raise ModelError(f"Pad node {label(copy)!r}: its pad value, scale or zero point is not a constant")
    value = ((np.asarray(c, np.float64) - np.asarray(z, np.float64).reshape(())) * float(np.asarray(s).reshape(-1)[0]))
    name = fresh(f"{copy.output[0]}__pad_value")
    new_inits.append(numpy_helper.from_array(value.astype(np.float32).reshape(()), name))
    while len(copy.input) < 3:
        copy.input.append("")
    copy.input[2] = name
    if g.opset < 11:
        raise ModelError(f"Pad node {label(copy)!r}: an integer Pad at opset {g.opset} (pad value as attribute) is "
                         "not supported")


def _copy(node):
    import onnx

    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def _drop_unused_domains(model) -> None:
    """Opset imports of domains no node uses any more (com.microsoft after the rewrite)."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
