"""Range floors for calibration: tensors whose readers are flat below a value (hard-swish: 0 for every
input <= -3), so an int8 range need not reach further down (:func:`flat_below`), and how far a floor
may narrow a calibrated range (:func:`floored`). Read by :meth:`edgenet.converters.calibration.
RangeCalibrator.ranges` and the repair's sensitivity measure (clipping below a floor is no error)."""
from __future__ import annotations

import numpy as np

_FLOAT32 = 0  # tflite TensorType.FLOAT32
_FLAT_BELOW = {117: -3.0}   # HARD_SWISH: x * relu6(x + 3) / 6 is 0 for every x <= -3
MAX_NARROWING = 4.0        # a floor narrows a range at most this many times (see floored)


def _has_data(buffer) -> bool:
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def flat_below(obj) -> dict[int, float]:
    """Tensors of subgraph 0 of a TFLite ``ModelT`` read only by ops that are flat below a value
    (hard-swish: 0 for every input <= -3), and not model outputs: ``{tensor index: that value}``.
    Below it every value gives the same output, so the range's low end need not reach further: the
    int8 steps go where the function moves (a hard-swish input calibrated to [-87, 112] keeps
    [-3, 112])."""
    graph = obj.subgraphs[0]
    codes = [max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) for c in obj.operatorCodes]
    readers: dict[int, set[int]] = {}
    for op in graph.operators or []:
        for t in (op.inputs if op.inputs is not None else []):
            if t >= 0:
                readers.setdefault(int(t), set()).add(codes[op.opcodeIndex])
    outputs = {int(o) for o in graph.outputs}
    found = {}
    for t, kinds in readers.items():
        if t not in outputs and len(kinds) == 1 and next(iter(kinds)) in _FLAT_BELOW:
            found[t] = _FLAT_BELOW[next(iter(kinds))]
    found.update(_scaled_flat_below(obj, codes, found, outputs))
    return found


_MUL = 18


def _scaled_flat_below(obj, codes: list[int], flat: dict[int, float], outputs: set[int]) -> dict[int, float]:
    """Tensors read only by a MUL by positive constants (one, or one a channel) whose output is
    flat below ``f`` (:func:`flat_below`): flat below ``f / min(constant)`` (hard-swish balancing,
    :mod:`edgenet.converters.hswish_balance`, puts such a MUL before a hard-swish)."""
    graph = obj.subgraphs[0]
    ops_reading: dict[int, list] = {}
    for op in graph.operators or []:
        for t in (op.inputs if op.inputs is not None else []):
            if t >= 0:
                ops_reading.setdefault(int(t), []).append(op)
    found = {}
    for t, readers in ops_reading.items():
        if t in outputs or len(readers) != 1 or codes[readers[0].opcodeIndex] != _MUL:
            continue
        op = readers[0]
        other = [int(i) for i in op.inputs if int(i) != t]
        out = int(op.outputs[0])
        if len(other) != 1 or out not in flat or not _has_data(obj.buffers[graph.tensors[other[0]].buffer]):
            continue
        tensor = graph.tensors[other[0]]
        if tensor.type != _FLOAT32:
            continue
        c = np.frombuffer(bytes(obj.buffers[tensor.buffer].data), np.float32)
        if c.size and float(c.min()) > 0:
            found[t] = flat[out] / float(c.min())
    return found


def floored(lo: float, hi: float, floor: float) -> float:
    """The low end of ``[lo, hi]`` raised to ``floor`` (:func:`flat_below`), but the range narrowed at
    most MAX_NARROWING times: the producer's int8 output then saturates below the new low end. A
    conv whose output range was set ~190x narrower than its values (a sigmoid's input clipped to
    +-7.8) was seen to give wrong values in LiteRT, not saturated ones (cause not established);
    4.4x saturated correctly (tests/test_int8_float_ops.py), and 2.5x is the most the PP-OCRv4
    models needed."""
    if lo >= floor or hi <= floor:
        return lo
    return min(floor, hi - (hi - lo) / MAX_NARROWING)
