"""Dynamically quantized ONNX (onnxruntime's ``quantize_dynamic``) read as the float graph on the
dequantized weights (for :mod:`edgenet.converters.qoperator`).

``quantize_dynamic`` stores int8 (or uint8) weights and quantizes each activation at run time on its
own min/max (``DynamicQuantizeLinear``: uint8, ``scale = (max(x, 0) - min(x, 0)) / 255``). The
chains it writes, one per Conv / MatMul, compute ``op(x, (w - wz) * ws) (+ bias)``:

    DynamicQuantizeLinear(x) -> (xq, xs, xz)
    ConvInteger / MatMulInteger(xq, wq, xz, wz) [-> Add(int32 bias)] -> Cast(float) -> Mul(xs * ws) [-> Add(bias)]

(older onnxruntime versions put the bias into the int32 sum as ``Cast(Floor(b / (xs * ws)))``). Each
chain becomes the float op on ``x`` and ``(wq - wz) * ws`` with the bias, named as the chain's last
output. com.microsoft ``DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias)`` becomes
``MatMul (+ Add)``, and ``DynamicQuantizeLSTM`` becomes ONNX ``LSTM``: its weights are stored
transposed, ``W [directions, input, 4 * hidden]`` and ``R [directions, hidden, 4 * hidden]`` with a
scale per direction or per direction and gate row, and are put back as ONNX's
``[directions, 4 * hidden, input]``. The run-time activation rounding is dropped (the float graph
is what dynamic quantization approximates); the activations are calibrated like any float model's.

Errors: a chain of another shape is a ModelError naming its node.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from edgenet.converters.cleanup import name_allocator
from edgenet.converters.qdq_params import Graph, label
from edgenet.errors import ModelError

# what the int32 result may pass through before its rescaling Mul
_PASS = ("Cast",)
# what an old-style int32 bias passes through from its Div by the scale product
_BIAS_PASS = ("Reshape", "Cast", "Floor", "Round", "Ceil", "Unsqueeze", "Identity")


def rewrite_dynamic(model) -> Counter:
    """Rewrite ``model``'s dynamic-quantization chains in place; op type -> count rewritten."""
    from onnx import helper, numpy_helper

    from edgenet.converters.qdq import _live

    graph = model.graph
    g = Graph(model)
    fresh = name_allocator(graph)
    counts: Counter = Counter()
    at: dict[int, list] = {}          # id(node) -> the nodes that take its place
    inits = []

    def const(array: np.ndarray, base: str) -> str:
        name = fresh(base)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), name))
        return name

    for node in graph.node:
        op = node.op_type
        if op in ("ConvInteger", "MatMulInteger"):
            chain = _chain(node, g)
            w = _dequantized(node, chain, g, op)
            wname = const(w, f"{_stem(node.input[1])}__dequantized")
            conv = op == "ConvInteger"
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            out = chain.output
            new = []
            bias = chain.bias
            if chain.after is not None:     # a float bias Add behind the rescaling Mul
                b = g.const(next(i for i in chain.after.input if i != chain.mul.output[0]))
                if conv and b is not None and bias is None and b.size == w.shape[0]:
                    bias, out = b.reshape(-1), chain.after.output[0]
                    at[id(chain.after)] = []
            inputs = [chain.x, wname]
            if conv and bias is not None:
                inputs.append(const(bias.reshape(-1), f"{_stem(node.input[1])}__bias"))
                bias = None
            mid = out if bias is None else fresh(f"{out}__before_bias")
            new.append(helper.make_node("Conv" if conv else "MatMul", inputs, [mid], name=node.name or mid,
                                        **(attrs if conv else {})))
            if bias is not None:
                new.append(helper.make_node("Add", [mid, const(bias, f"{_stem(node.input[1])}__bias")], [out],
                                            name=f"{out}__bias_add"))
            for n in chain.nodes:
                at[id(n)] = []
            at[id(chain.mul)] = new
            counts[op] += 1
        elif op == "DynamicQuantizeMatMul":
            ins = list(node.input) + [""] * 5
            w = _weight(node, g, ins[1], ins[2], ins[3], -1)
            out = node.output[0]
            mid = fresh(f"{out}__before_bias") if ins[4] else out
            new = [helper.make_node("MatMul", [ins[0], const(w, f"{_stem(ins[1])}__dequantized")], [mid],
                                    name=node.name or mid)]
            if ins[4]:
                new.append(helper.make_node("Add", [mid, ins[4]], [out], name=f"{out}__bias_add"))
            at[id(node)] = new
            counts[op] += 1
        elif op == "DynamicQuantizeLSTM":
            ins = list(node.input) + [""] * 12
            ws = [_lstm_weight(node, g, ins[k], ins[s], ins[z]) for k, s, z in ((1, 8, 9), (2, 10, 11))]
            inputs = [ins[0], const(ws[0], f"{_stem(ins[1])}__dequantized"),
                      const(ws[1], f"{_stem(ins[2])}__dequantized")] + ins[3:8]
            while inputs and not inputs[-1]:
                inputs.pop()
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            at[id(node)] = [helper.make_node("LSTM", inputs, list(node.output), name=node.name or node.output[0],
                                             **attrs)]
            counts[op] += 1
    if not at:
        return counts
    nodes = []
    for node in graph.node:
        nodes.extend(at.get(id(node), [node]))
    nodes = _live(nodes, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return counts


class _Chain:
    """A ConvInteger / MatMulInteger chain: its float input, the nodes between the integer op and
    its rescaling Mul, an old-style int32 bias (float values) and a float bias Add behind it."""

    def __init__(self, x, nodes, mul, bias, after):
        self.x, self.nodes, self.mul, self.bias, self.after = x, nodes, mul, bias, after

    @property
    def output(self) -> str:
        return self.mul.output[0]


def _chain(node, g: Graph) -> _Chain:
    where = f"{node.op_type} node {label(node)!r}"
    dql = g.producer.get(node.input[0])
    if dql is None or dql.op_type != "DynamicQuantizeLinear":
        raise ModelError(f"{where}: its input is not made by a DynamicQuantizeLinear (edgenet reads onnxruntime's "
                         "quantize_dynamic chains)")
    x, xs = dql.input[0], dql.output[1]
    nodes, cur, bias = [node], node.output[0], None
    for _ in range(8):
        users = g.consumers.get(cur, [])
        if len(users) != 1 or cur in g.outputs:
            break
        user = users[0]
        if user.op_type in _PASS:
            nodes.append(user)
            cur = user.output[0]
            continue
        if user.op_type == "Add" and bias is None:
            other = next(i for i in user.input if i != cur)
            bias = _int_bias(other, g, xs)
            if bias is None:
                break
            nodes.append(user)
            cur = user.output[0]
            continue
        if user.op_type == "Mul":
            other = next((i for i in user.input if i != cur), cur)
            scales = g.producer.get(other)
            if scales is not None and scales.op_type == "Mul" and xs in scales.input:
                after = g.consumers.get(user.output[0], [])
                after = after[0] if len(after) == 1 and after[0].op_type == "Add" and \
                    user.output[0] not in g.outputs else None
                if after is not None and not any(g.const(i) is not None for i in after.input if i != user.output[0]):
                    after = None
                return _Chain(x, nodes, user, bias, after)
        break
    raise ModelError(f"{where}: its int32 result is not rescaled by a Mul of the input and weight scales as "
                     "onnxruntime's quantize_dynamic writes it; edgenet cannot read this chain")


def _int_bias(name: str, g: Graph, xs: str):
    """The float bias behind an old-style int32 bias ``Cast(Floor(b / (xs * ws)))``, else None."""
    node = g.producer.get(name)
    for _ in range(8):
        if node is None:
            return None
        if node.op_type in _BIAS_PASS:
            node = g.producer.get(node.input[0])
            continue
        if node.op_type == "Div":
            b = g.const(node.input[0])
            scales = g.producer.get(node.input[1])
            if b is not None and scales is not None and xs in scales.input:
                return np.asarray(b, np.float32)
        return None
    return None


def _dequantized(node, chain: _Chain, g: Graph, op: str) -> np.ndarray:
    """``(wq - wz) * ws`` of a ConvInteger / MatMulInteger weight, ``ws`` read from the chain's
    scale product ``Mul(xs, ws)``."""
    scales = g.producer[next(i for i in chain.mul.input if i != chain.nodes[-1].output[0])]
    xs = g.producer[node.input[0]].output[1]
    ws_name = next((i for i in scales.input if i != xs), None)
    zp = node.input[3] if len(node.input) > 3 else ""
    return _weight(node, g, node.input[1], ws_name, zp, 0 if op == "ConvInteger" else -1)


def _weight(node, g: Graph, q: str, scale: str | None, zp: str, axis: int) -> np.ndarray:
    where = f"{node.op_type} node {label(node)!r}"
    wq = g.const(q)
    s = g.const(scale) if scale else None
    if wq is None or s is None:
        raise ModelError(f"{where}: its weight {q!r} or weight scale {scale!r} is not a constant")
    z = g.const(zp) if zp else np.zeros((), np.int64)
    if z is None:
        raise ModelError(f"{where}: its weight zero point {zp!r} is not a constant")
    s, z = np.asarray(s, np.float64).reshape(-1), np.asarray(z, np.float64).reshape(-1)
    shape = [1] * wq.ndim
    if s.size > 1 or z.size > 1:
        shape[axis] = -1
        if wq.shape[axis] not in (s.size, z.size):
            raise ModelError(f"{where}: {s.size} weight scales for a weight of shape {list(wq.shape)}")
    return ((wq.astype(np.float64) - z.reshape(shape)) * s.reshape(shape)).astype(np.float32)


def _lstm_weight(node, g: Graph, q: str, scale: str, zp: str) -> np.ndarray:
    """A DynamicQuantizeLSTM weight ``[D, in, 4H]`` with a scale per direction ``[D]`` or per
    direction and gate row ``[D, 4H]``, dequantized and put back as ONNX's ``[D, 4H, in]``."""
    where = f"DynamicQuantizeLSTM node {label(node)!r}"
    wq, s = g.const(q), g.const(scale)
    z = g.const(zp) if zp else np.zeros((), np.int64)
    if wq is None or s is None or z is None or wq.ndim != 3:
        raise ModelError(f"{where}: weight {q!r} (3-D), its scale and zero point must be constants")
    d, _, rows = wq.shape
    out = []
    for a in (np.asarray(s, np.float64), np.asarray(z, np.float64)):
        if a.size == 1:
            out.append(a.reshape(1, 1, 1))
        elif a.size == d:
            out.append(a.reshape(d, 1, 1))
        elif a.size == d * rows:
            out.append(a.reshape(d, 1, rows))
        else:
            raise ModelError(f"{where}: {a.size} scales or zero points for weight {q!r} of shape {list(wq.shape)}")
    w = (wq.astype(np.float64) - out[1]) * out[0]
    return np.transpose(w, (0, 2, 1)).astype(np.float32)


def _stem(name: str) -> str:
    return name[:-len("_quantized")] if name.endswith("_quantized") else name
