"""The activation fusions of :mod:`edgenet.converters.tflite_writer.fuse`: a RELU / RELU6 /
RELU_N1_TO_1 after an op with a fused-activation field becomes that field (also through the
CONCATENATION of a grouped Conv's per-group CONV_2Ds), and ``x * relu6(x + 3) * (1/6)`` becomes
HARD_SWISH, as TensorFlow's TFLite converter does. ``graph`` is fuse's ``_Graph`` (ops, readers,
``sole_reader``, ``replace``).
"""
from __future__ import annotations

from edgenet.converters.tflite_writer.tensors import Op, RTensor

_ACTIVATIONS = {"RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
_FUSES_ACTIVATION = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL",
                     "DIV")


def _const_operand(op: Op, t: RTensor) -> RTensor | None:
    """The other operand of binary ``op`` when it is a constant."""
    other = op.inputs[1] if op.inputs[0] is t else op.inputs[0]
    return other if other is not t and other.const is not None else None


def _fuse_activations(graph) -> None:
    for op in list(graph.ops):
        if op.code not in _FUSES_ACTIVATION or op.options is None or op.options[1]["fusedActivationFunction"]:
            continue
        act = graph.sole_reader(op.outputs[0])
        if act is None or act.code not in _ACTIVATIONS or act.inputs[0] is not op.outputs[0]:
            continue
        op.options[1]["fusedActivationFunction"] = _ACTIVATIONS[act.code]
        graph.replace(op, act, [act])


def _fusable(graph, op: Op | None, reader: Op) -> bool:
    return op is not None and op.code in _FUSES_ACTIVATION and op.options is not None \
        and not op.options[1]["fusedActivationFunction"] and graph.sole_reader(op.outputs[0]) is reader


def _fuse_activations_through_concat(graph) -> None:
    """RELU / RELU6 / RELU_N1_TO_1 of a CONCATENATION whose inputs are each made by an op with an
    empty fused-activation field and read by the concatenation alone (a grouped Conv: one CONV_2D per
    group): the activation, which acts value by value, becomes each producer's field and the
    concatenation makes the activation's output. An int8 model then computes each group's output
    directly on the activation's range, as the single ONNX Conv + Relu (or onnxruntime's Conv with
    the Relu folded into its quantization) does, instead of quantizing the unclamped values first. A
    RESHAPE between the concatenation and the activation (a 1-D grouped Conv) stays, before it."""
    for cat in list(graph.ops):
        if cat.code != "CONCATENATION" or cat.options is None or cat.options[1].get("fusedActivationFunction"):
            continue
        last = cat                  # a 1-D grouped Conv reshapes the concatenation back to rank 3 first
        act = graph.sole_reader(cat.outputs[0])
        if act is not None and act.code == "RESHAPE" and act.inputs[0] is cat.outputs[0]:
            last, act = act, graph.sole_reader(act.outputs[0])
        if act is None or act.code not in _ACTIVATIONS or act.inputs[0] is not last.outputs[0]:
            continue
        producers = [getattr(t, "producer", None) for t in cat.inputs]
        if not producers or not all(_fusable(graph, op, cat) for op in producers):
            continue
        for op in producers:
            op.options[1]["fusedActivationFunction"] = _ACTIVATIONS[act.code]
        graph.replace(last, act, [act])


def _scalar(t: RTensor | None, value: float) -> bool:
    return t is not None and t.const is not None and t.const.size == 1 and \
        abs(float(t.const.reshape(())) - value) <= 1e-6 * abs(value)


def _relu6_plus_3_of(graph, r: RTensor, reader: Op) -> RTensor | None:
    """x when ``r`` is ADD(x, 3) with RELU6 fused, read by ``reader`` alone; else None."""
    add = r.producer
    if add is None or add.code != "ADD" or add.options[1]["fusedActivationFunction"] != 3 or \
            graph.sole_reader(r) is not reader:
        return None
    return next((x for x in add.inputs if x.const is None and _scalar(_const_operand(add, x), 3.0)), None)


def _replace_with_hard_swish(graph, x: RTensor, last: Op, gone: tuple[Op, ...]) -> None:
    swish = Op("HARD_SWISH", [x], last.outputs, None, last.scope)
    for t in swish.outputs:
        t.producer = swish
    graph.ops[graph.ops.index(last)] = swish
    ids = {id(o) for o in gone}
    graph.ops[:] = [o for o in graph.ops if id(o) not in ids]


def _fuse_hard_sigmoid_product(graph) -> None:
    """MUL(x, MUL(ADD(x, 3) with RELU6, 1/6)) -> HARD_SWISH(x): ``x * HardSigmoid(x)`` with
    HardSigmoid's alpha 1/6, beta 0.5 -- how torch exports hardswish below opset 14 (either operand
    order)."""
    for last in list(graph.ops):
        if last.code != "MUL" or last.options[1]["fusedActivationFunction"] or len(last.inputs) != 2 or \
                any(t.const is not None for t in last.inputs):
            continue
        for x, h in (last.inputs, reversed(last.inputs)):
            mul = h.producer
            if mul is None or mul.code != "MUL" or mul.options[1]["fusedActivationFunction"] or \
                    graph.sole_reader(h) is not last:
                continue
            r = next((t for t in mul.inputs if t.const is None), None)
            if r is None or not _scalar(_const_operand(mul, r), 1 / 6):
                continue
            if _relu6_plus_3_of(graph, r, mul) is x and x.shape_ == last.outputs[0].shape_:
                _replace_with_hard_swish(graph, x, last, (r.producer, mul))
                break


def _fuse_hard_swish(graph) -> None:
    """MUL(MUL(x, ADD(x, 3) with RELU6), 1/6) -> HARD_SWISH(x) (either operand order)."""
    for last in list(graph.ops):
        if last.code != "MUL" or last.options[1]["fusedActivationFunction"] or len(last.inputs) != 2:
            continue
        m = next((t for t in last.inputs if t.const is None), None)
        if m is None or not _scalar(_const_operand(last, m), 1 / 6) or m.producer is None:
            continue
        mul = m.producer
        if mul.code != "MUL" or graph.sole_reader(m) is not last or mul.options[1]["fusedActivationFunction"]:
            continue
        for x, r in (mul.inputs, reversed(mul.inputs)):
            if _relu6_plus_3_of(graph, r, mul) is x and x.shape_ == last.outputs[0].shape_:
                _replace_with_hard_swish(graph, x, last, (r.producer, mul))
                break
