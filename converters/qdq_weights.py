"""A QDQ model's weights in the int8 .tflite: measured against the stored values, and put back on the
producer's grid where the LiteRT Quantizer moved them (for :mod:`edgenet.converters.qdq_quantize`).

The quantizer gives each weight channel the scale ``max|w| / 127``. A producer's stored weights
``q * s`` come back exactly when the channel's largest ``|q|`` is 127 (onnxruntime's weights).
PyTorch's symmetric per-channel QAT observer uses ``[-128, 127]`` with ``s = max|w| / 127.5``: a
channel whose largest value is negative holds ``q = -128``, and the quantizer's ``max|F| / 127``
moves each of its values by less than half a step. TFLite stores weights on [-127, 127]; clamping
the -128 instead would move the channel's largest weight by a whole step (measured: worse outputs),
so those channels are left as the quantizer made them. A channel whose largest ``|q|`` is below 127
(a learned QAT scale wider than the weights need, a per-tensor weight quantized per channel, one
group's slice of a grouped Conv's per-tensor weight, a weight re-centred from a non-zero zero point)
is different: :func:`keep_stored_grid` finds the producer's step (the finest ``max|w| / k``, ``k`` a
whole number up to 127, on which every value is a whole multiple), writes the values on that grid and
requantizes the op's int32 bias on ``input scale * weight scale`` (one scale for a per-tensor weight,
as TFLite requires). Channels with no such step are left as they were.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenet.converters import _flatbuffer

_FLOAT32, _INT8, _INT32 = 0, 9, 2      # tflite TensorType
_WEIGHTED = {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED"}   # BuiltinOperator codes
GRID_TOLERANCE = 1e-3                  # |F / s - round(F / s)| allowed: float32 rounding of q * s


@dataclass(frozen=True)
class WeightFidelity:
    """How many weight values of the int8 model equal the QDQ model's (dequantized) values."""

    equal: int
    total: int
    tensors_differing: int
    channels_regridded: int = 0        # channels put back on the producer's grid by keep_stored_grid

    @property
    def share(self) -> float:
        return self.equal / self.total if self.total else 1.0

    def to_dict(self) -> dict:
        return {"equal": self.equal, "total": self.total, "share": round(self.share, 6),
                "tensors_differing": self.tensors_differing, "channels_regridded": self.channels_regridded}


def _has_data(buffer) -> bool:
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def _float_constants(model: bytes) -> dict[str, np.ndarray]:
    obj = _flatbuffer.read(model)
    out = {}
    for t in obj.subgraphs[0].tensors:
        if t.type == _FLOAT32 and _has_data(obj.buffers[t.buffer]):
            out[_flatbuffer.tensor_name(t)] = np.frombuffer(bytes(obj.buffers[t.buffer].data), np.float32).reshape(
                [int(d) for d in t.shape])
    return out


def _per_channel(q: np.ndarray, t) -> tuple[np.ndarray, list[int]]:
    scale = np.asarray(t.quantization.scale, np.float32)
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[int(t.quantization.quantizedDimension)] = -1
    return scale.reshape(shape), shape


def weight_fidelity(float_model: bytes, int8_model: bytes, tolerance: float = 0.01,
                    regridded: int = 0) -> WeightFidelity:
    """Weight values of ``int8_model`` (int8 tensors with constant data, dequantized with their
    scales) equal to ``float_model``'s tensor of the same name (the producer's dequantized weights)
    within ``tolerance`` of a quantization step (float32 rounding of ``q * s``; a value one step
    off differs by the step itself)."""
    floats = _float_constants(float_model)
    qobj = _flatbuffer.read(int8_model)
    equal = total = differing = 0
    for t in qobj.subgraphs[0].tensors:
        name = _flatbuffer.tensor_name(t)
        if t.type != _INT8 or not _has_data(qobj.buffers[t.buffer]) or name not in floats or t.quantization is None:
            continue
        ref = floats[name].reshape([int(d) for d in t.shape])
        q = np.frombuffer(bytes(qobj.buffers[t.buffer].data), np.int8).reshape(ref.shape).astype(np.float32)
        scale, _ = _per_channel(q, t)
        same = np.abs(q * scale - ref) <= tolerance * scale   # one step is the scale
        equal += int(same.sum())
        total += int(same.size)
        differing += int(not same.all())
    return WeightFidelity(equal, total, differing, regridded)


def _grid(values: np.ndarray) -> float | None:
    """The finest scale ``max|values| / k`` (``k`` a whole number of steps, at most 127) on which every
    value is a whole multiple within [-127, 127] steps, or None. The producer's own step is one of
    them (``k`` = the channel's largest ``|q|``): a wider learned QAT grid, a grouped Conv's slice of
    a per-tensor weight (its largest value below the whole tensor's), or a weight re-centred from a
    non-zero zero point (``q - z`` within [-127, 127]) all come back exactly; a finer one (``k`` a
    multiple of it) holds the same values and keeps the bias, on ``input scale * weight scale``, a
    whole multiple of the producer's. A grid that needs -128 is not used: clamping the channel's
    largest weight by a whole step costs more than the quantizer's rescaling of every value by less
    than half of one."""
    top = float(np.abs(values).max())
    if top == 0:
        return None
    v = values.astype(np.float64).reshape(-1) / top
    for k in range(127, 0, -1):
        ratio = v * k
        if np.abs(ratio - np.rint(ratio)).max() <= GRID_TOLERANCE:
            return top / k
    return None


def keep_stored_grid(float_model: bytes, int8_model: bytes) -> tuple[bytes, int]:
    """``int8_model`` with the weight channels the quantizer moved off the producer's grid put back
    on it (module docstring), and their biases requantized; returns (model, channels changed)."""
    floats = _float_constants(float_model)
    obj = _flatbuffer.read(int8_model)
    graph = obj.subgraphs[0]
    changed = 0
    for op in graph.operators:
        if _flatbuffer.builtin_code(obj, op) not in _WEIGHTED or len(op.inputs) < 2:
            continue
        x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
        name = _flatbuffer.tensor_name(w)
        if w.type != _INT8 or name not in floats or w.quantization is None or not _has_data(obj.buffers[w.buffer]):
            continue
        ref = floats[name].reshape([int(d) for d in w.shape])
        q = np.frombuffer(bytes(obj.buffers[w.buffer].data), np.int8).reshape(ref.shape).copy()
        scale, shape = _per_channel(q, w)
        axis = shape.index(-1) if -1 in shape else None
        channels = range(ref.shape[axis]) if axis is not None else [None]
        new_scale = scale.reshape(-1).astype(np.float64).copy()
        hits = 0
        for c in channels:
            index = (slice(None),) * axis + (c,) if axis is not None else ()
            values, s_now = ref[index], float(new_scale[c or 0])
            if np.abs(values / s_now - np.rint(values / s_now)).max() <= GRID_TOLERANCE:
                continue                       # already on its grid
            s = _grid(values)
            if s is None:
                continue
            q[index] = np.clip(np.rint(values / s), -127, 127).astype(np.int8)
            new_scale[c or 0] = s
            hits += 1
        if not hits:
            continue
        changed += hits
        obj.buffers[w.buffer].data = q.reshape(-1).view(np.uint8)
        w.quantization.scale = [float(v) for v in new_scale.astype(np.float32)]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            _requantize_bias(obj, graph.tensors[op.inputs[2]], x, new_scale, floats)
    return (_flatbuffer.write(obj) if changed else int8_model), changed


def _requantize_bias(obj, bias, x, new_w: np.ndarray, floats: dict) -> None:
    """The int32 bias on ``input scale * new weight scale`` (TFLite's bias scale), from the float
    model's bias when it has one of that name, else from the int32 values."""
    if bias.type != _INT32 or bias.quantization is None or not _has_data(obj.buffers[bias.buffer]):
        return
    x_scale = float(np.asarray(x.quantization.scale, np.float64).reshape(-1)[0])
    data = np.frombuffer(bytes(obj.buffers[bias.buffer].data), np.int32).astype(np.float64)
    old = np.asarray(bias.quantization.scale, np.float64)
    real = data * (old if old.size == data.size else old.reshape(-1)[0])
    name = _flatbuffer.tensor_name(bias)
    if name in floats and floats[name].size == data.size:
        real = floats[name].reshape(-1).astype(np.float64)
    # per channel: a scale per value; per tensor: one scale (and one zero point), as TFLite requires
    new = x_scale * (new_w.reshape(-1) if new_w.size == data.size else new_w.reshape(-1)[:1])
    q = np.clip(np.rint(real / new), -2**31, 2**31 - 1).astype(np.int32)
    obj.buffers[bias.buffer].data = q.view(np.uint8)
    bias.quantization.scale = [float(v) for v in new.astype(np.float32)]
    bias.quantization.zeroPoint = [0] * new.size
