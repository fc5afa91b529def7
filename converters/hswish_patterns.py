"""The graph patterns hard-swish balancing (:mod:`edgenet.converters.hswish_balance`) rewrites, found in a
BN-folded ONNX graph: hard-swishes (the HardSwish op, or the arithmetic exporters write below opset
14), a conv feeding one through Mul / Add nodes by constants, and a conv (depthwise or full) reading
one through scalar Mul / Add nodes (PP-LCNetV3's learnable affine blocks)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class _Graph:
    """The ONNX graph's producers, readers and constants."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def sole(self, t: str):
        r = self.readers.get(t, [])
        return r[0] if len(r) == 1 and t not in self.outputs else None

    def const_operand(self, node):
        """(constant input name, tensor input name) of a binary node with one constant operand."""
        c = [i for i in node.input if i in self.consts]
        x = [i for i in node.input if i not in self.consts]
        return (c[0], x[0]) if len(node.input) == 2 and len(c) == 1 and len(x) == 1 else (None, None)

    def set_const(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        value = value.astype(np.float32)
        self.consts[name] = value
        for t in self.graph.initializer:
            if t.name == name:
                t.CopyFrom(numpy_helper.from_array(value, name))
                return
        self.graph.initializer.append(numpy_helper.from_array(value, name))

    def unique(self, base: str) -> str:
        taken = set(self.consts) | set(self.producer) | {n.name for n in self.graph.node}
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _is_depthwise(g: _Graph, node) -> bool:
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in g.consts:
        return False
    w, group = g.consts[node.input[1]], int(_attr(node, "group", 1))
    return w.ndim == 4 and w.shape[1] == 1 and group == w.shape[0] and group > 1




def _is_full_conv(g: _Graph, node) -> bool:
    return node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in g.consts and \
        int(_attr(node, "group", 1)) == 1 and g.consts[node.input[1]].ndim == 4


def _affine_chain(g: _Graph, t: str, per_channel: bool, first_read_by=None):
    """Walk back from tensor ``t`` through Mul / Add nodes by a constant (one value, or one a channel
    when ``per_channel``), each read only by the next (``t`` itself only by ``first_read_by``'s
    nodes, when given): (the chain in graph order, the tensor it starts from)."""
    chain = []
    while t in g.producer and g.producer[t].op_type in ("Mul", "Add"):
        if not (first_read_by is not None and not chain and _read_only_by(g, t, first_read_by)) and g.sole(t) is None:
            break
        node = g.producer[t]
        c, x = g.const_operand(node)
        if c is None or (g.consts[c].size != 1 and not per_channel):
            break
        chain.append(node)
        t = x
    return chain[::-1], t


@dataclass(frozen=True)
class _HSwish:
    """A hard-swish in the graph: one HardSwish node, or its arithmetic (``nodes``: every node that
    reads ``input``, and the node writing ``output``)."""

    name: str
    input: str
    output: str
    nodes: tuple


def _read_only_by(g: _Graph, t: str, nodes) -> bool:
    ids = {id(n) for n in nodes}
    readers = g.readers.get(t, [])
    return bool(readers) and t not in g.outputs and all(id(r) in ids for r in readers)


def _scalar(g: _Graph, name: str) -> float | None:
    v = g.consts.get(name)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def _relu6_of_plus3(g: _Graph, r: str):
    """(x, Add node, Clip node) when ``r`` is Clip(x + 3, 0, 6); else None."""
    from edgenet.converters.equalize import _clip_bounds

    clip = g.producer.get(r)
    if clip is None or clip.op_type != "Clip" or g.sole(r) is None:
        return None
    try:
        lo, hi = _clip_bounds(clip, g.consts)
    except Exception:   # noqa: BLE001 -- bounds that are not constants: not a hard-swish
        return None
    add = g.producer.get(clip.input[0])
    if (lo, hi) != (0.0, 6.0) or add is None or add.op_type != "Add" or g.sole(clip.input[0]) is None:
        return None
    c, x = g.const_operand(add)
    return (x, add, clip) if c is not None and _scalar(g, c) == 3.0 else None


def _by_six(g: _Graph, node) -> str | None:
    """The tensor ``node`` divides by 6 (Div by 6 or Mul by 1/6); else None."""
    c, x = g.const_operand(node)
    v = None if c is None else _scalar(g, c)
    if v is None or (node.op_type == "Div" and node.input[1] != c):
        return None
    return x if (node.op_type == "Div" and v == 6.0) or (node.op_type == "Mul" and abs(v - 1 / 6) < 1e-6) else None


def _hard_swishes(g: _Graph) -> dict[str, _HSwish]:
    """Every hard-swish of the graph by its output: HardSwish nodes, and the forms exporters write
    below opset 14 -- ``x * Clip(x + 3, 0, 6) / 6`` (the division before or after the product, or a
    multiply by 1/6) and ``x * HardSigmoid(x)`` with alpha 1/6 and beta 0.5."""
    found: dict[str, _HSwish] = {}
    for last in g.graph.node:
        hs = None
        if last.op_type == "HardSwish":
            hs = _HSwish(last.name, last.input[0], last.output[0], (last,))
        elif last.op_type in ("Div", "Mul") and _by_six(g, last) is not None:   # (x * relu6(x + 3)) / 6
            m = _by_six(g, last)
            prod = g.producer.get(m)
            if prod is not None and prod.op_type == "Mul" and g.sole(m) is not None and len(prod.input) == 2:
                for x, r in (tuple(prod.input), tuple(prod.input)[::-1]):
                    inner = _relu6_of_plus3(g, r)
                    if inner is not None and inner[0] == x:
                        hs = _HSwish(last.name, x, last.output[0], (inner[1], inner[2], prod, last))
                        break
        if hs is None and last.op_type == "Mul" and len(last.input) == 2 and g.const_operand(last)[0] is None:
            for x, q in (tuple(last.input), tuple(last.input)[::-1]):   # x * (relu6(x + 3) / 6) or x * HardSigmoid(x)
                qn = g.producer.get(q)
                if qn is None or g.sole(q) is None:
                    continue
                if qn.op_type == "HardSigmoid" and qn.input[0] == x and \
                        abs(float(_attr(qn, "alpha", 0.2)) - 1 / 6) < 1e-6 and abs(float(_attr(qn, "beta", 0.5)) - 0.5) < 1e-6:
                    hs = _HSwish(last.name, x, last.output[0], (qn, last))
                    break
                r = _by_six(g, qn) if qn.op_type in ("Div", "Mul") else None
                inner = None if r is None else _relu6_of_plus3(g, r)
                if inner is not None and inner[0] == x:
                    hs = _HSwish(last.name, x, last.output[0], (inner[1], inner[2], qn, last))
                    break
        if hs is not None and _read_only_by(g, hs.input, hs.nodes):
            found[hs.output] = hs
    return found


def _find(g: _Graph):
    """(into, out_of): hard-swishes fed by a conv through per-channel Mul / Add nodes, as (conv,
    chain, hard-swish); convs (depthwise or full) fed by a hard-swish through scalar Mul / Add nodes,
    as (hard-swish, chain, conv)."""
    swishes = _hard_swishes(g)
    into, out_of = [], []
    for hs in swishes.values():
        chain, t = _affine_chain(g, hs.input, True, first_read_by=hs.nodes)
        conv = g.producer.get(t)
        if conv is not None and conv.op_type == "Conv" and (_read_only_by(g, t, hs.nodes) if not chain else
                                                             g.sole(t) is not None) \
                and len(conv.input) >= 2 and conv.input[1] in g.consts \
                and (len(conv.input) < 3 or conv.input[2] in g.consts) \
                and all(g.consts[g.const_operand(n)[0]].size in (1, g.consts[conv.input[1]].shape[0]) for n in chain):
            into.append((conv, chain, hs))
    for node in g.graph.node:
        if _is_depthwise(g, node) or _is_full_conv(g, node):
            chain, t = _affine_chain(g, node.input[0], False)
            if t in swishes and g.sole(t) is not None:
                out_of.append((swishes[t], chain, node))
    return into, out_of
