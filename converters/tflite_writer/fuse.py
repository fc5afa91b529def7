"""Rewrites of the recorded graph that TensorFlow's TFLite converter makes too, so the native model has
the same operators (or fewer): a per-channel constant MUL after CONV_2D / DEPTHWISE_CONV_2D /
FULLY_CONNECTED / TRANSPOSE_CONV scales its weights, a constant ADD / SUB becomes its bias, ``x * s + b`` before a VALID conv or an FC
folds into it; a RELU / RELU6 / RELU_N1_TO_1 after an op with a fused-activation field becomes that
field (after a CONCATENATION of such ops, as a grouped Conv is written: one CONV_2D per group, then the
concatenation, each reading only its own producer, the activation becomes each producer's field);
``x * relu6(x + 3) * (1/6)`` becomes HARD_SWISH; a RESHAPE to rows before FULLY_CONNECTED
is dropped (FC reads any input as rows); ops whose outputs nobody reads are dropped.
Besides (as TensorFlow's converter does, seen on PP-OCRv4): ``x * 1``, ``x / 1``, ``x + 0``, ``x - 0``
are dropped (readers read ``x``); ``x / sqrt(v)`` becomes ``x * rsqrt(v)`` (a LayerNorm's division;
one rounding apart); a per-channel ``x * g + b`` (a LayerNorm's gamma and beta) before a
FULLY_CONNECTED folds into its weights and bias; RESHAPE of a RESHAPE reshapes the first one's input;
an ADD / MUL of a constant and a tensor reads the tensor first.
A fold into another op only happens when the intermediate tensor has one reader and is not a graph
output (the tensors the user can name stay in the model).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Collection, Sequence

import numpy as np

from edgenet.converters.hswish_balance import MARK
from edgenet.converters.tflite_writer.fuse_activations import (_const_operand, _fuse_activations,
                                                                _fuse_activations_through_concat,
                                                                _fuse_hard_sigmoid_product, _fuse_hard_swish)
from edgenet.converters.tflite_writer.tensors import Op, RTensor

_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
_WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 0}  # output channels
_NEUTRAL = {"MUL": 1.0, "DIV": 1.0, "ADD": 0.0, "SUB": 0.0}   # the constant that leaves the other operand as is


class _Graph:
    def __init__(self, ops: list[Op], outputs: Sequence[RTensor]):
        self.ops = ops
        self.outputs = {id(t) for t in outputs}
        self.readers: dict[int, list[Op]] = defaultdict(list)
        for op in ops:
            for t in op.inputs:
                if t is not None:
                    self.readers[id(t)].append(op)

    def sole_reader(self, t: RTensor) -> Op | None:
        """The one op reading ``t``, if it is the only reader and ``t`` is no graph output."""
        readers = self.readers.get(id(t), [])
        if len(readers) != 1 or id(t) in self.outputs:
            return None
        return readers[0]

    def replace(self, first: Op, last: Op, removed: Sequence[Op]) -> None:
        """``first`` now makes ``last``'s outputs; ``removed`` ops are gone."""
        first.outputs = last.outputs
        for t in first.outputs:
            t.producer = first
        gone = {id(o) for o in removed}
        self.ops[:] = [o for o in self.ops if id(o) not in gone]


def _channel_constant(graph: _Graph, op: Op, codes: tuple[str, ...]):
    """(reader, per-channel values) when ``op``'s output is read only by a ``codes`` op with a
    constant of one value or one per output channel (its last dim) as the other operand; else None."""
    y = op.outputs[0]
    reader = graph.sole_reader(y)
    if reader is None or reader.code not in codes or reader.options[1]["fusedActivationFunction"]:
        return None
    c = _const_operand(reader, y)
    channels = y.shape_[-1]
    if c is None or reader.outputs[0].shape_ != y.shape_ or c.const.size not in (1, channels) or (
            c.const.ndim and c.const.shape[-1] != c.const.size):
        return None
    if reader.code == "SUB" and reader.inputs[0] is not y:   # c - y is no bias
        return None
    values = np.broadcast_to(c.const.reshape(-1), (channels,)).astype(y.dtype_)
    return reader, (-values if reader.code == "SUB" else values)


def _fold_bias(graph: _Graph, rec) -> None:
    """ADD (or SUB) of a per-channel constant after a weighted op: its bias."""
    for op in list(graph.ops):
        if op.code not in _BIAS_INPUT or op.options[1]["fusedActivationFunction"]:
            continue
        found = _channel_constant(graph, op, ("ADD", "SUB"))
        if found is None:
            continue
        reader, values = found
        slot = _BIAS_INPUT[op.code]
        old = op.inputs[slot]
        base = np.zeros(values.shape, values.dtype) if old is None else old.const
        op.inputs[slot] = rec.const((base + values).astype(values.dtype))
        graph.replace(op, reader, [reader])


def _fold_scale(graph: _Graph, rec) -> None:
    """MUL by a per-channel constant after a weighted op: its weights and bias scaled (what
    TensorFlow's converter does with an affine BatchNorm left as Mul + Add after a conv)."""
    for op in list(graph.ops):
        if op.code not in _WEIGHT_AXIS or op.options[1]["fusedActivationFunction"]:
            continue
        found = _channel_constant(graph, op, ("MUL",))
        if found is None or MARK in found[0].scope:   # hard-swish balancing's own float MUL stays
            continue
        reader, scale = found
        weights = op.inputs[1].const
        shape = [1] * weights.ndim
        shape[_WEIGHT_AXIS[op.code]] = scale.size
        op.inputs[1] = rec.const((weights * scale.reshape(shape)).astype(weights.dtype))
        slot = _BIAS_INPUT[op.code]
        if op.inputs[slot] is not None:
            op.inputs[slot] = rec.const((op.inputs[slot].const * scale).astype(scale.dtype))
        graph.replace(op, reader, [reader])


_SUM_AXES = {"CONV_2D": (1, 2, 3), "DEPTHWISE_CONV_2D": (0, 1, 2), "FULLY_CONNECTED": (1,)}


def _affine_operand(graph: _Graph, t: RTensor, code: str, reader: Op, channels: int, per_channel: bool):
    """(op, other input, values (channels,)) when ``t`` is made by a ``code`` op of a tensor and a
    constant of one value (or, if ``per_channel``, one per last-dim channel), read only by ``reader``;
    else None."""
    op = t.producer
    if op is None or op.code != code or op.options[1]["fusedActivationFunction"] or graph.sole_reader(t) is not reader:
        return None
    x = next((i for i in op.inputs if i.const is None), None)
    c = None if x is None else _const_operand(op, x)
    if c is None or x.shape_ != t.shape_ or not x.shape_ or x.shape_[-1] != channels:
        return None
    if c.const.size == 1:
        return op, x, np.full(channels, float(c.const.reshape(())))
    if per_channel and c.const.size == channels and c.const.shape[-1] == channels and \
            len(c.const.shape) <= len(x.shape_):
        return op, x, c.const.reshape(-1).astype(np.float64)
    return None


def _fold_input_affine(graph: _Graph, rec) -> None:
    """``x * s + b`` read only by a VALID CONV_2D / DEPTHWISE_CONV_2D (scalars ``s``, ``b``) or a
    FULLY_CONNECTED (scalars or one value per input channel): the op reads ``x`` with weights ``s W``
    (scaled along the input channels) and bias ``bias + W b`` (summed over the window and the input
    channels; exact without padding). What TensorFlow's converter does with PP-LCNet's learnable
    affine blocks before pointwise convs, and with a LayerNorm's gamma and beta before an FC."""
    for op in list(graph.ops):
        if op.code not in _SUM_AXES:
            continue
        fc = op.code == "FULLY_CONNECTED"
        if not fc and op.options[1]["padding"] != 1:
            continue
        weights, channels = op.inputs[1].const, op.inputs[0].shape_[-1] if op.inputs[0].shape_ else 0
        if weights is None or fc and weights.shape[1] != channels:   # rows of K from a wider last dim
            continue
        t, removed = op.inputs[0], []
        scale, shift = np.ones(channels), np.zeros(channels)
        add = _affine_operand(graph, t, "ADD", op, channels, fc)
        if add is not None:
            removed.append(add[0])
            t, shift = add[1], add[2]
        mul = _affine_operand(graph, t, "MUL", removed[-1] if removed else op, channels, fc)
        if mul is not None:
            removed.append(mul[0])
            t, scale = mul[1], mul[2]
        if not removed:
            continue
        dtype = weights.dtype
        old = op.inputs[2]
        bias = np.zeros(op.outputs[0].shape_[-1], dtype) if old is None else old.const
        w64 = weights.astype(np.float64)
        if fc:   # (O, K): along K
            summed = w64 @ shift
            scaled = weights * scale.astype(dtype)
        else:    # scalars (checked above): the window's sum per output channel
            summed = shift[0] * w64.sum(axis=_SUM_AXES[op.code]).reshape(-1)
            scaled = weights * np.asarray(scale[0], dtype)
        op.inputs[2] = rec.const((bias + summed).astype(dtype))
        op.inputs[1] = rec.const(scaled.astype(dtype))
        op.inputs[0] = t
        gone = {id(o) for o in removed}
        graph.ops[:] = [o for o in graph.ops if id(o) not in gone]


def _flatten_into_fc(graph: _Graph) -> None:
    """A RESHAPE to (N, K) read only by FULLY_CONNECTED: the FC reads the reshape's input (FC takes
    any input as rows of K values), as TensorFlow's converter leaves it."""
    for fc in graph.ops:
        if fc.code != "FULLY_CONNECTED" or fc.options[1].get("keepNumDims"):
            continue
        r = fc.inputs[0]
        reshape = r.producer
        if reshape is None or reshape.code != "RESHAPE" or graph.sole_reader(r) is not fc or len(r.shape_) != 2:
            continue
        source = reshape.inputs[0]
        if source.shape_ and source.shape_[-1] == r.shape_[1] and r.shape_[0] * r.shape_[1] == int(np.prod(source.shape_)):
            fc.inputs[0] = source


def _drop_identities(graph: _Graph) -> None:
    """``x * 1``, ``x / 1``, ``x + 0``, ``x - 0`` (a constant all of that value, broadcast into ``x``'s
    shape, no fused activation): the readers read ``x`` (exact; PaddlePaddle's swish is
    ``x * sigmoid(1 * x)``). An op making a graph output stays."""
    for op in list(graph.ops):
        neutral = _NEUTRAL.get(op.code)
        if neutral is None or len(op.inputs) != 2 or op.options is None or op.options[1].get("fusedActivationFunction"):
            continue
        y = op.outputs[0]
        x, c = op.inputs
        if op.code in ("ADD", "MUL") and x.const is not None:
            x, c = c, x
        if id(y) in graph.outputs or x.const is not None or c.const is None or x.shape_ != y.shape_ or \
                x.dtype_ != y.dtype_ or not np.all(c.const == neutral):
            continue
        for reader in graph.readers.pop(id(y), []):
            reader.inputs = [x if i is y else i for i in reader.inputs]
            graph.readers[id(x)].append(reader)
        graph.ops.remove(op)


def _rsqrt_divisions(graph: _Graph) -> None:
    """DIV(x, SQRT(v)) -> MUL(x, RSQRT(v)) when the SQRT has no other reader (a LayerNorm's
    normalization, as TensorFlow's converter writes it: one rounding apart, and int8 kernels have
    RSQRT and MUL where DIV has none)."""
    for div in graph.ops:
        if div.code != "DIV" or len(div.inputs) != 2 or div.inputs[1].const is not None:
            continue
        s = div.inputs[1]
        root = s.producer
        if root is None or root.code != "SQRT" or graph.sole_reader(s) is not div or div.inputs[0] is s:
            continue
        root.code = "RSQRT"
        div.code, div.options = "MUL", ("MulOptions", dict(div.options[1]))


def _merge_reshapes(graph: _Graph) -> None:
    """A RESHAPE of a RESHAPE's output reshapes that one's input (exact; the first one is dropped
    when nothing else reads it)."""
    for op in graph.ops:
        first = op.inputs[0].producer if op.code == "RESHAPE" else None
        while first is not None and first.code == "RESHAPE":
            op.inputs[0] = first.inputs[0]
            first = op.inputs[0].producer


def _tensor_first(ops: list[Op]) -> None:
    """ADD / MUL of a constant and a tensor read the tensor first, as TensorFlow's converter writes
    them (both commute exactly, in float and in int8)."""
    for op in ops:
        if op.code in ("ADD", "MUL") and len(op.inputs) == 2 and op.inputs[0].const is not None and \
                op.inputs[1].const is None:
            op.inputs.reverse()


def _drop_dead(ops: list[Op], outputs: Sequence[RTensor]) -> list[Op]:
    live = {id(t) for t in outputs}
    kept = []
    for op in reversed(ops):
        if any(id(t) in live for t in op.outputs):
            kept.append(op)
            live.update(id(t) for t in op.inputs if t is not None)
    return kept[::-1]


def optimize(ops: list[Op], outputs: Sequence[RTensor], rec, unfused: Collection[str] = ()) -> list[Op]:
    """The recorded ``ops`` rewritten (see the module docstring); ``outputs`` are the graph outputs.
    Order matters: identities, divisions and reshapes first (they expose the folds), then output-side
    folds (they need the op's activation field still empty), then activations and HARD_SWISH, then
    the input-side affine fold (which must not take a HARD_SWISH's last MUL). ``unfused``: ops a
    target's runtime lacks (``TargetProfile.unfused_ops``), left as the arithmetic they fuse."""
    ops = _drop_dead(ops, outputs)
    graph = _Graph(ops, outputs)
    _drop_identities(graph)
    _rsqrt_divisions(graph)
    _merge_reshapes(graph)
    graph = _Graph(_drop_dead(graph.ops, outputs), outputs)
    for _ in range(2):   # conv -> mul -> add and conv -> add -> mul alike
        _fold_scale(graph, rec)
        graph = _Graph(graph.ops, outputs)
        _fold_bias(graph, rec)
        graph = _Graph(graph.ops, outputs)
    _fuse_activations(graph)
    graph = _Graph(graph.ops, outputs)
    _fuse_activations_through_concat(graph)
    graph = _Graph(graph.ops, outputs)
    if "HARD_SWISH" not in unfused:     # a runtime without it (the Edge TPU) keeps the arithmetic
        _fuse_hard_swish(graph)
        graph = _Graph(graph.ops, outputs)
        _fuse_hard_sigmoid_product(graph)
        graph = _Graph(graph.ops, outputs)
    _fold_input_affine(graph, rec)
    graph = _Graph(graph.ops, outputs)
    _flatten_into_fc(graph)
    _tensor_first(graph.ops)
    return _drop_dead(graph.ops, outputs)
