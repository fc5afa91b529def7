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

QOperator graphs (QLinearConv, ConvInteger, ...: integer operators instead of pairs) are first
rewritten as the QDQ (or, dynamically quantized, float) graph they stand for by
:func:`edgenet.converters.qoperator.rewrite_qoperator`. A malformed pair (scale <= 0 or not finite, a
per-axis scale whose length or axis does not fit the tensor, a zero point outside its type's range
or of another type than int8 / uint8, per-axis activations, blocked quantization) is a ModelError
naming the node.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenet.converters.qdq_params import (RANGES, Graph, Params, Recentred, check_weight_axis, label, pair_params,
                                          quantize_array, recentred)
from edgenet.errors import ModelError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                 "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid",
                 "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "QGemm", "QLinearWhere",
                 "QLinearConvTranspose", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                 "QAttention")
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
    recentred: tuple[Recentred, ...] = ()   # weights stored with a zero point other than 0

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "weights": self.weights, "weight_granularity": self.weight_granularity,
                "weights_symmetric": self.weights_symmetric, "activation_types": list(self.activation_types),
                "relu_restored": self.relu_restored, "conflicting": self.conflicting,
                "unfolded_bn": self.unfolded_bn, "weights_recentred": [r.to_dict() for r in self.recentred]}

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
            out.append(f"{info.conflicting} tensor(s) are quantized twice with different scales in the QDQ graph "
                       "(requantization): the first pair's range is used, and the int8 model can depart from the QDQ "
                       "model there")
        if info.unfolded_bn:
            out.append(f"{info.unfolded_bn} BatchNormalization(s) follow a Conv whose weights were quantized before "
                       "folding: TFLite computes the folded Conv, so its int8 weights and outputs cannot be the QDQ "
                       "model's; fold first (onnxruntime: quant_pre_process before quantize_static)")
        if info.recentred and quantized:
            out.append(recentred_note(info.recentred))
        if not quantized:
            out.append("no --int8: the QDQ pairs were stripped and the float graph converted; add --int8 for the "
                       "full-integer model with the producer's scales")
        return out


def recentred_note(found) -> str:
    """The user's line on weights stored with a non-zero zero point (:class:`Recentred` records)."""
    exact, channels = sum(r.exact for r in found), sum(r.channels for r in found)
    named = ", ".join(f"{r.node!r} ({r.dtype}, zero point {r.zero_points[0]}"
                      + (f"..{r.zero_points[1]})" if r.zero_points[1] != r.zero_points[0] else ")") for r in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    text = (f"weights of {len(found)} op(s) are stored asymmetric (a zero point other than 0, or uint8: "
            f"{named}{more}): TFLite int8 weights are symmetric (zero point 0), so their real values "
            f"(q - zero point) * scale are stored re-centred on 0; {exact} of {channels} channel(s) keep the producer's scale and every value exactly")
    if exact < channels:
        text += (f", {channels - exact} hold a q - zero point outside [-127, 127] and are rescaled to max|w| / 127 "
                 "(each value moved by at most half a step)")
    return text


def qoperator_ops(model) -> list[str]:
    """The QOperator-format op types of ``model`` (sorted; empty for float and QDQ graphs)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type in QOPERATOR_OPS})


def is_qdq(model) -> bool:
    """True when ``model`` holds a QuantizeLinear or DequantizeLinear node."""
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def strip_qdq(model) -> tuple[object, dict[str, tuple[float, float]], QDQInfo]:
    """(float model, ``{ONNX value name: (min, max)}``, :class:`QDQInfo`) of a QDQ ``model``
    (an ``onnx.ModelProto``, left unchanged; a QOperator graph is read through its QDQ rewrite,
    :mod:`edgenet.converters.qoperator`). Ranges are per tensor, in real units.

    Raises:
        ModelError: a malformed pair (named by its node), or a QOperator op without a rewrite.
    """
    import onnx
    from onnx import helper, numpy_helper

    from edgenet.converters.qoperator import rewrite_qoperator

    model, _ = rewrite_qoperator(model)
    g = Graph(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    rename: dict[str, str] = {}          # DequantizeLinear output -> the float value it stands for
    ranges: dict[str, tuple[float, float]] = {}
    params_of: dict[str, Params] = {}
    new_inits, drop = [], set()
    weights, per_axis, per_tensor, symmetric, conflicting = 0, 0, 0, True, 0
    recentred_w: list[Recentred] = []
    act_types: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            p = pair_params(node, g, g.shapes.get(node.input[0]))
            users = g.consumers.get(node.output[0], [])
            if node.output[0] in g.outputs or not users or any(u.op_type != "DequantizeLinear" for u in users):
                what = "a graph output" if node.output[0] in g.outputs else \
                    f"{users[0].op_type} node {label(users[0])!r}" if users else "nothing"
                raise ModelError(f"QuantizeLinear node {label(node)!r}: its integer output feeds {what}, not a "
                                 "DequantizeLinear; edgenet reads QDQ graphs (integer operators: QOperator format)")
            if p.dtype not in RANGES:
                raise ModelError(f"QuantizeLinear node {label(node)!r}: quantizes to {p.dtype.name}; edgenet reads "
                                 "int8 and uint8 QDQ pairs")
            for dq in users:
                q2 = pair_params(dq, g, g.shapes.get(node.input[0]))
                if not q2.same(p) or q2.axis != p.axis:
                    raise ModelError(f"DequantizeLinear node {label(dq)!r}: scale or zero point differ from its "
                                     f"QuantizeLinear node {label(node)!r}")
            x = node.input[0]
            drop.add(id(node))
            drop.update(id(u) for u in users)
            if g.const(x) is not None:      # Q -> DQ of a float constant: the dequantized values
                q = quantize_array(g.const(x), p)
                weights += 1
                per_axis += p.axis is not None
                per_tensor += p.axis is None
                symmetric = symmetric and p.dtype == np.int8 and not p.zero_point.any()
                moved = recentred(q, p, _reader(users[0], g))
                recentred_w += [moved] if moved is not None else []
                for dq in users:
                    new_inits.append(numpy_helper.from_array(p.dequantize(q), dq.output[0]))
                continue
            if p.axis is not None:
                raise ModelError(f"QuantizeLinear node {label(node)!r}: activation {x!r} quantized per axis "
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
                raise ModelError(f"DequantizeLinear node {label(node)!r}: reads {node.input[0]!r}, neither a "
                                 "QuantizeLinear output nor a stored integer tensor")
            p = pair_params(node, g, tuple(q.shape))
            if q.dtype != p.dtype:
                raise ModelError(f"DequantizeLinear node {label(node)!r}: data of type {q.dtype.name}, zero point "
                                 f"of type {p.dtype.name}")
            if p.dtype in RANGES:
                check_weight_axis(p, node, g)
                weights += 1
                per_axis += p.axis is not None
                per_tensor += p.axis is None
                symmetric = symmetric and p.dtype == np.int8 and not p.zero_point.any()
                moved = recentred(q, p, _reader(node, g))
                recentred_w += [moved] if moved is not None else []
            new_inits.append(numpy_helper.from_array(p.dequantize(q), node.output[0]))
            drop.add(id(node))
    kept = [n for n in model.graph.node if id(n) not in drop]
    # pairs in a row (requantization: DQ -> Q -> DQ) all stand for the first float value
    conflicting += _resolve_chains(rename, params_of, ranges)
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
    nodes = _live(nodes, {o.name for o in graph.output})
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
                   unfolded_bn, tuple(recentred_w))
    return out, ranges, info


def _reader(dq, g: Graph) -> str:
    """The op reading a weight's DequantizeLinear ``dq`` (its name, for messages; else ``dq``'s)."""
    users = g.consumers.get(dq.output[0], [])
    return label(users[0]) if users else label(dq)


def _resolve_chains(rename: dict[str, str], params_of: dict, ranges: dict) -> int:
    """``rename`` made transitive (a DequantizeLinear output read by another pair stands for the
    value the first pair quantized); the ranges recorded under an intermediate name move to that
    value, unless it has other ones (counted, the first kept). Returns the conflicts found."""
    def final(name: str) -> str:
        for _ in range(len(rename) + 1):
            if name not in rename:
                break
            name = rename[name]
        return name

    for key in list(rename):
        rename[key] = final(rename[key])
    conflicts = 0
    for name in [n for n in params_of if n in rename]:
        target, p = rename[name], params_of.pop(name)
        r = ranges.pop(name)
        if target in params_of:
            conflicts += not params_of[target].same(p)
            continue
        params_of[target], ranges[target] = p, r
    return conflicts


def _live(nodes: list, outputs: set[str]) -> list:
    """``nodes`` without those whose results nothing reads (what computed a weight or zero point now
    folded into an initializer)."""
    nodes = list(nodes)
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if any(o in read for o in n.output if o)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


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


def _clips_at_zero(node, g: Graph) -> bool:
    """A Clip whose minimum is >= 0 (Relu6 and the like): already non-negative."""
    if node.op_type != "Clip":
        return False
    low = next((a.f for a in node.attribute if a.name == "min"), None)
    if low is None and len(node.input) > 1 and node.input[1]:
        value = g.const(node.input[1])
        low = None if value is None else float(np.asarray(value).reshape(-1)[0])
    return low is not None and low >= 0
