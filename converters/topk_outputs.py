"""Which outputs of a .tflite model are a TopK's indices, read from the graph (the verdict judges
them by set and order, :mod:`edgenet.verdicts.topk`, not position by position).

An output is a TOPK_V2's indices when the op producing it, followed back through CAST, QUANTIZE,
DEQUANTIZE and TRANSPOSE (what the ONNX TopK handler and the int64 output write around it), is a
TOPK_V2's second output; the TopK's axis is TOPK_V2's last axis carried through those transposes
(and an NHWC output's transpose to ONNX layout); its values are the model output reached the same
way from the TOPK_V2's first output, if any.
"""
from __future__ import annotations

from edgenet.verdicts.topk import TopKSource

_PASS_THROUGH = ("CAST", "QUANTIZE", "DEQUANTIZE", "TRANSPOSE", "NEG")   # NEG: largest=0 is NEG -> TOPK_V2 -> NEG
_NHWC_TO_NCHW = (0, 3, 1, 2)


def _origin(graph, producer, tensor: int):
    """(TOPK_V2 op, its output slot, ops from it to ``tensor`` in order) or None."""
    path = []
    op = producer.get(tensor)
    while op is not None and op.name in _PASS_THROUGH and op.inputs:
        path.append(op)
        op = producer.get(op.inputs[0])
    if op is None or op.name != "TOPK_V2":
        return None
    made = path[-1].inputs[0] if path else tensor
    return op, list(op.outputs).index(made), path[::-1]


_TOPK_V2 = 48   # BuiltinOperator


def _has_topk(model: bytes) -> bool:
    """Whether ``model``'s operator codes include TOPK_V2 (read in place: 0.07 s saved a judgement of an
    881-op model, which read_tflite unpacks whole)."""
    from edgenet.converters import _flatbuffer

    root = _flatbuffer.schema().Model.GetRootAs(model, 0)
    codes = (root.OperatorCodes(i) for i in range(root.OperatorCodesLength()))
    return any(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) == _TOPK_V2 for c in codes)


def topk_sources(model: bytes, channels_last) -> dict[int, TopKSource]:
    """{output position: TopKSource} for the model's outputs (in its signature's order, as the
    pipeline judges them) that are a TOPK_V2's indices; ``channels_last``: per output, whether it
    is NHWC where ONNX has NCHW. {} when the graph cannot be read."""
    from edgenet.converters.repair.graph import _outputs_in_model_order
    from edgenet.targets.tflite_graph import read_tflite

    try:
        if not _has_topk(model):   # the common case, without unpacking the graph (a repair judges dozens)
            return {}
        graph = read_tflite(model)
        order = _outputs_in_model_order(model, graph)
    except Exception:   # an unreadable graph: judged by values, as before
        return {}
    producer = {t: op for op in graph.operators for t in op.outputs}
    found = {}
    for pos, t in enumerate(order):
        o = _origin(graph, producer, t)
        if o is not None:
            found[pos] = o
    out = {}
    for pos, (op, slot, path) in found.items():
        if slot != 1:
            continue
        rank = len(graph.tensor(op.outputs[1]).shape)
        axis = rank - 1
        for step in path:
            if step.name == "TRANSPOSE":
                perm = graph.constants.get(step.inputs[1])
                if perm is None:
                    break
                axis = [int(p) for p in perm.reshape(-1)].index(axis)
        else:
            if pos < len(channels_last) and channels_last[pos] and rank == 4:
                axis = _NHWC_TO_NCHW.index(axis)
            values = next((p for p, (o2, s2, _) in found.items() if o2 is op and s2 == 0), None)
            shape_in = graph.tensor(op.inputs[0]).shape
            out[pos] = TopKSource(axis, values, int(graph.tensor(op.outputs[1]).shape[-1]), int(shape_in[-1]))
    return out
