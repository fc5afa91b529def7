"""Multi-node ONNX patterns converted as one TFLite op.

The exact GELU as exporters write it at opsets <= 19, ``x * 0.5 * (1 + Erf(x / sqrt(2)))`` (Div or
Mul by 1/sqrt(2), Erf, Add 1, then the two Muls in any of their usual orders), becomes
``tf.nn.gelu(approximate=False)``, which TensorFlow's converter lowers to TFLite's builtin GELU
(Hendrycks & Gimpel 2016, the erf form). TFLite has no builtin Erf, so an Erf outside this pattern
is refused. A pattern is only taken when its intermediate values are read by nothing else.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Fusion:
    """Nodes (by index in graph.node) that become one op; the last one's output is the result."""

    op_type: str  # the op they become, e.g. "Gelu"
    nodes: tuple[int, ...]  # in graph order; nodes[-1] produces ``output``
    input: str
    output: str
    attrs: tuple[tuple[str, Any], ...] = ()


def constant_arrays(model: Any) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs (tensor or float/int values) by value name."""
    from edgenet._deps import require

    onnx = require("onnx")
    arrays = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or not node.output:
            continue
        for a in node.attribute:
            value = onnx.helper.get_attribute_value(a)
            if a.name == "value":
                arrays[node.output[0]] = onnx.numpy_helper.to_array(value)
            elif a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                arrays[node.output[0]] = np.asarray(value)
    return arrays


def _scalar(arrays: Mapping[str, np.ndarray], name: str, target: float) -> bool:
    a = arrays.get(name)
    return a is not None and a.size == 1 and math.isclose(float(a.reshape(())), target, rel_tol=1e-4)


def _other(node: Any, name: str) -> str | None:
    """The input of a two-input node that is not ``name`` (None when ``name`` is not an input)."""
    ins = list(node.input)
    if len(ins) != 2 or name not in ins:
        return None
    return ins[1] if ins[0] == name else ins[0]


def find_fusions(model: Any) -> list[Fusion]:
    """Every GELU (erf form) pattern in the graph whose intermediates have no other reader."""
    graph = model.graph
    arrays = constant_arrays(model)
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for name in n.input:
            readers.setdefault(name, []).append(i)
    outputs = Counter(o.name for o in graph.output)

    def only_reader(value: str) -> int | None:
        r = readers.get(value, [])
        return r[0] if len(r) == 1 and not outputs[value] else None

    fusions = []
    for e, erf in enumerate(graph.node):
        if erf.op_type != "Erf" or erf.domain not in ("", "ai.onnx"):
            continue
        d = producer.get(erf.input[0])
        if d is None or only_reader(erf.input[0]) != e:
            continue
        div = graph.node[d]
        if div.op_type == "Div" and len(div.input) == 2 and _scalar(arrays, div.input[1], _SQRT2):
            x = div.input[0]
        elif div.op_type == "Mul" and len(div.input) == 2:
            x = next((a for a, b in (div.input, div.input[::-1]) if _scalar(arrays, b, 1 / _SQRT2)), None)
            if x is None:
                continue
        else:
            continue
        a = only_reader(erf.output[0])
        if a is None or graph.node[a].op_type != "Add" or not _scalar(
                arrays, _other(graph.node[a], erf.output[0]) or "", 1.0):
            continue
        found = _final_muls(graph, arrays, x, graph.node[a].output[0], only_reader, readers)
        if found is None:
            continue
        muls, out = found
        nodes = tuple(sorted({d, e, a, *muls}))
        fusions.append(Fusion("Gelu", nodes, x, out, (("approximate", "none"),)))
    return fusions


def _final_muls(graph, arrays, x: str, one_plus: str, only_reader, readers):
    """The two Muls that finish 0.5 * x * (1 + erf): (node indices, output name) or None."""
    first = only_reader(one_plus)
    if first is None or graph.node[first].op_type != "Mul":
        return None
    m1 = graph.node[first]
    partner = _other(m1, one_plus)
    if partner == x:  # (x * w) * 0.5
        second = only_reader(m1.output[0])
        if second is None or graph.node[second].op_type != "Mul":
            return None
        if not _scalar(arrays, _other(graph.node[second], m1.output[0]) or "", 0.5):
            return None
        return (first, second), graph.node[second].output[0]
    if partner is not None and _scalar(arrays, partner, 0.5):  # (w * 0.5) * x
        second = only_reader(m1.output[0])
        if second is None or graph.node[second].op_type != "Mul" or _other(graph.node[second], m1.output[0]) != x:
            return None
        return (first, second), graph.node[second].output[0]
    # (x * 0.5) * w: the half is its own branch off x
    for h in readers.get(x, []):
        half = graph.node[h]
        if half.op_type == "Mul" and partner == half.output[0] and _scalar(arrays, _other(half, x) or "", 0.5) \
                and only_reader(half.output[0]) == first:
            return (h, first), m1.output[0]
    return None
