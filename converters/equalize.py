"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
and Bias Correction") on the folded ONNX graph, followed by bias correction.

Folding BatchNorm multiplies each output channel of a conv by ``gamma / sqrt(var)``, which spreads
the channels' weight ranges over orders of magnitude: with one int8 scale per weight tensor the
small channels are left with a few quantization levels. For two layers joined by a positively
homogeneous activation (``f(x / s) = f(x) / s`` for ``s > 0``: ReLU, LeakyReLU, PReLU)

    y = W2 f(W1 x + b1) = (W2 S) f(S^-1 W1 x + S^-1 b1),    S = diag(s_1 .. s_C), s_i > 0,

so scaling output channel i of W1 (and b1) by ``1 / s_i`` and input channel i of W2 by ``s_i``
keeps the function. With ``r1_i`` the range (max |w|) of W1's output channel i and ``r2_i`` that of
W2's input channel i, the scaled ranges are ``r1_i / s_i`` and ``r2_i s_i``; the choice
``s_i = sqrt(r1_i / r2_i)`` (the paper's ``s_i = sqrt(r1_i r2_i) / r2_i``) makes both equal to
``sqrt(r1_i r2_i)``, which maximizes the summed per-channel precision of the pair. A layer that is
the second of one pair and the first of the next (MobileNet's depthwise convs) is rescaled by
both, so we sweep over the pairs until the scales settle.

Pairs are ``Conv -> act -> Conv | Gemm``, optionally with a channel-wise pool (and a Flatten after
a global pool) between the activation and the second layer (MobileNet's last pointwise conv ->
GlobalAveragePool -> Flatten -> classifier), where each tensor on the way has exactly one reader.

ReLU6 is ``Clip(0, 6)``, and clipping does not commute with scaling: the clip at 6 becomes a clip
at ``6 / s_i`` per channel. :class:`ClipPolicy` chooses what to do: ``RELU`` (the default, and what
the paper does for MobileNetV2) replaces the Clip by a Relu -- the float model changes, which the
stats and notes report; ``PER_CHANNEL`` keeps the exact function, ``min(relu(x), c)`` where
``c`` is a per-channel constant, as ``relu(x) - relu(relu(x) - c)`` (two more int8 elementwise ops per
layer on the device: the LiteRT Quantizer has no int8 MINIMUM); ``SKIP`` leaves
pairs joined by a Clip alone. Measured with ``benchmarks/accuracy_table.py``: on the shapes model
(MobileNetV1 0.25/64, ReLU6) ``RELU`` costs 1.2 points of float top-1 while ``PER_CHANNEL`` keeps
99.8% and gives the best per-tensor SQNR (35.8 dB, per-channel weights 32.0 dB), at the price of
27 MINIMUM ops (+4% int8 size, ~+20-70% host latency with XNNPACK on these small models).

Bias correction (:mod:`edgenet.converters.bias_correction`) runs last, on the equalized graph, for the
int8 weight scheme the target uses (``per_channel``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgenet.converters.bias_correction import BiasCorrection, BiasCorrectionStats, correct_biases
from edgenet._deps import require
from edgenet.errors import ConversionError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

MAX_SWEEPS = 20
TOLERANCE = 1e-2          # stop when no scale moves by more than ~1% in a sweep (log scale)
CHECK_SAMPLES = 32        # calibration samples used to check that the function is kept
ACTIVATION_SAMPLES = 256  # ... and to measure what replacing ReLU6 by ReLU changes
# ... each at most this many input values (32 / 256 samples of 3x224x224; 8 / 26 images of 3x608x800),
# and at least 8 samples: a large detector's checks cost a few model passes, not hundreds
CHECK_VALUES = CHECK_SAMPLES * 3 * 224 * 224
ACTIVATION_VALUES = ACTIVATION_SAMPLES * 3 * 224 * 224
MIN_CHECK_SAMPLES = 8
BATCH = 32
MAX_REL_DIFF = 1e-3       # equalized vs reference outputs beyond this: a bug, not rounding

_HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu")
_POOLS = ("GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool")


class ClipPolicy(str, Enum):
    RELU = "relu"                  # Clip(0, m) -> Relu where a pair is equalized
    PER_CHANNEL = "per_channel"    # Clip(0, m) -> min(relu(x), m / s_i) per channel (as two Subs)
    SKIP = "skip"                  # do not equalize across a Clip


@dataclass(frozen=True)
class EqualizeStats:
    pairs: int                          # layer pairs equalized
    sweeps: int
    clip_policy: ClipPolicy
    clips_replaced: int                 # Clip(0, m) nodes rewritten (RELU / PER_CHANNEL)
    range_spread_before: float          # median over weight tensors of max/min per-output-channel range
    range_spread_after: float
    equalize_max_rel_diff: float        # equalized vs un-equalized graph with the same activations
    activation_max_rel_diff: float      # graph with Clip -> Relu vs the original (0 if unchanged)
    activation_top1_agreement: float    # same, argmax agreement on the calibration samples
    bias: BiasCorrectionStats
    seconds: float
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["clip_policy"] = self.clip_policy.value
        d["bias"] = self.bias.to_dict()
        d["seconds"] = round(self.seconds, 3)
        d["notes"] = list(self.notes)
        return d


# -- the graph -------------------------------------------------------------------------------
@dataclass
class _Layer:
    node: object          # onnx.NodeProto
    w: np.ndarray         # float64 working copy
    b: np.ndarray | None
    kind: str             # "conv" | "gemm"
    group: int = 1
    trans_b: bool = False

    def out_ranges(self) -> np.ndarray:
        return np.max(np.abs(self.w.reshape(len(self.w), -1)), axis=1)

    def scale_out(self, factor: np.ndarray) -> None:
        self.w *= factor.reshape((-1,) + (1,) * (self.w.ndim - 1))
        if self.b is not None:
            self.b *= factor

    def in_ranges(self) -> np.ndarray:
        a = np.abs(self.w)
        if self.kind == "gemm":
            return a.max(axis=0) if self.trans_b else a.max(axis=1)
        o, ig = a.shape[:2]
        per = a.reshape(o, ig, -1).max(axis=2)                           # (O, I/G)
        return per.reshape(self.group, o // self.group, ig).max(axis=1).reshape(-1)

    def scale_in(self, factor: np.ndarray) -> None:
        if self.kind == "gemm":
            self.w *= factor[None, :] if self.trans_b else factor[:, None]
            return
        o, ig = self.w.shape[:2]
        per = np.broadcast_to(factor.reshape(self.group, 1, ig), (self.group, o // self.group, ig)).reshape(o, ig)
        self.w *= per.reshape(o, ig, *([1] * (self.w.ndim - 2)))


@dataclass
class _Pair:
    first: _Layer
    second: _Layer
    act: object | None            # the activation node, if any
    clip_max: float | None        # a Clip(0, m) activation's m
    scale: np.ndarray             # accumulated s_i


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _clip_bounds(node, consts: dict) -> tuple[float, float]:
    attrs = _attrs(node)
    lo, hi = attrs.get("min", -np.inf), attrs.get("max", np.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(consts[node.input[1]]) if node.input[1] in consts else None
    if len(node.input) > 2 and node.input[2]:
        hi = float(consts[node.input[2]]) if node.input[2] in consts else None
    return lo, hi


def _layers(graph, consts: dict) -> dict[str, _Layer]:
    """Conv / Gemm nodes with constant weights, by output name."""
    out = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in consts:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias not in consts:
            continue
        attrs = _attrs(node)
        w = consts[node.input[1]].astype(np.float64).copy()
        b = None if bias is None else consts[bias].astype(np.float64).reshape(-1).copy()
        if node.op_type == "Conv":
            if b is not None and len(b) != len(w):
                continue
            out[node.output[0]] = _Layer(node, w, b, "conv", int(attrs.get("group", 1)))
        elif not attrs.get("transA", 0) and w.ndim == 2:
            out[node.output[0]] = _Layer(node, w, b, "gemm", trans_b=bool(attrs.get("transB", 0)))
    return out


def _find_pairs(graph, consts: dict, layers: dict[str, _Layer], policy: ClipPolicy) -> list[_Pair]:
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_reader(name: str):
        r = readers.get(name, [])
        return r[0] if len(r) == 1 and name not in outputs else None

    pairs = []
    for name, first in layers.items():
        if first.kind != "conv":
            continue
        tensor, act, clip_max, pooled = name, None, None, False
        node = only_reader(tensor)
        if node is not None and (node.op_type in _HOMOGENEOUS or node.op_type == "Clip"):
            if node.op_type == "PRelu" and node.input[1] not in consts:
                continue
            if node.op_type == "Clip":
                lo, hi = _clip_bounds(node, consts)
                if lo is None or hi is None or lo != 0 or (np.isfinite(hi) and policy is ClipPolicy.SKIP):
                    continue
                clip_max = float(hi) if np.isfinite(hi) else None
            act, tensor = node, node.output[0]
            node = only_reader(tensor)
        while node is not None and (node.op_type in _POOLS or (node.op_type == "Flatten" and pooled)):
            if node.op_type == "Flatten" and _attrs(node).get("axis", 1) != 1:
                node = None
                break
            pooled = node.op_type.startswith("Global")
            tensor = node.output[0]
            node = only_reader(tensor)
        second = layers.get(node.output[0]) if node is not None and node.op_type in ("Conv", "Gemm") else None
        if second is None or second.node.input[0] != tensor:
            continue
        if len(first.w) != len(second.in_ranges()):
            continue
        pairs.append(_Pair(first, second, act, clip_max, np.ones(len(first.w))))
    return pairs


def _sweep(pairs: list[_Pair]) -> float:
    """One pass over the pairs; returns the largest relative scale change."""
    worst = 0.0
    for pair in pairs:
        r1, r2 = pair.first.out_ranges(), pair.second.in_ranges()
        ok = (r1 > 0) & (r2 > 0)
        s = np.ones_like(r1)
        s[ok] = np.sqrt(r1[ok] / r2[ok])
        pair.first.scale_out(1.0 / s)
        pair.second.scale_in(s)
        pair.scale *= s
        worst = max(worst, float(np.max(np.abs(np.log(s)))) if len(s) else 0.0)
    return worst


def range_spread(w: np.ndarray) -> float:
    """max / min of the per-output-channel ranges (max |w|) of a weight tensor, zero channels ignored."""
    r = np.max(np.abs(np.asarray(w).reshape(len(w), -1)), axis=1)
    r = r[r > 0]
    return float(r.max() / r.min()) if len(r) else 1.0


# -- the pass --------------------------------------------------------------------------------
def equalize(model: "onnx.ModelProto", calib: Sequence[np.ndarray], *, per_channel: bool = False,
             clip: ClipPolicy = ClipPolicy.RELU,
             bias_correction: BiasCorrection = BiasCorrection.SEQUENTIAL,
             max_sweeps: int = MAX_SWEEPS) -> tuple["onnx.ModelProto", EqualizeStats]:
    """Cross-layer equalization then bias correction of a folded ONNX graph.

    ``calib``: one float32 array (N, ...) per graph input in the ONNX layout. ``per_channel`` names
    the int8 weight scheme the target will use (bias correction simulates it).
    """
    from edgenet.converters.cleanup import constant_values

    onnx = require("onnx")
    t0 = time.perf_counter()
    clip = ClipPolicy(clip)
    if not calib or len(calib[0]) == 0:
        raise ConversionError("equalization needs at least one calibration sample")
    calib = [np.ascontiguousarray(x, dtype=np.float32) for x in calib]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = constant_values(graph)
    layers = _layers(graph, consts)
    pairs = _find_pairs(graph, consts, layers, clip)
    convs = [layer for layer in layers.values() if layer.kind == "conv"]
    before = float(np.median([range_spread(layer.w) for layer in convs])) if convs else 1.0

    sweeps = 0
    while pairs and sweeps < max_sweeps:
        sweeps += 1
        if _sweep(pairs) < TOLERANCE:
            break
    after = float(np.median([range_spread(layer.w) for layer in convs])) if convs else 1.0
    touched = {id(p.first): p.first for p in pairs} | {id(p.second): p.second for p in pairs}
    for layer in touched.values():
        _store(graph, layer)

    clips = [p for p in pairs if p.act is not None and p.act.op_type == "Clip"]
    clipped = [p for p in clips if p.clip_max is not None]      # Clip(0, inf) is a Relu already
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    if clip is ClipPolicy.RELU:
        names = {p.act.output[0] for p in clipped}
        for node in reference.graph.node:
            if node.op_type == "Clip" and node.output[0] in names:
                _to_relu(node)
    for p in clips:
        if clip is ClipPolicy.PER_CHANNEL and p.clip_max is not None:
            _to_relu_min(graph, p)
        else:
            _to_relu(p.act)
    _drop_unused(graph)

    # the float model before / after the activation swap / after equalization, on the same samples:
    # one pass of each (a check and a measurement, bounded: the conversion's own data does the rest)
    per_sample = max(1, sum(int(np.prod(x.shape[1:])) for x in calib))
    check = [x[:max(MIN_CHECK_SAMPLES, min(CHECK_SAMPLES, CHECK_VALUES // per_sample))] for x in calib]
    measure_relu = clip is ClipPolicy.RELU and bool(clipped)
    most = max(MIN_CHECK_SAMPLES, min(ACTIVATION_SAMPLES, ACTIVATION_VALUES // per_sample))
    sample = [x[:max(most, len(check[0]))] for x in calib] if measure_relu else check
    ref_all = _outputs(reference, sample)
    ref_out, eq_out = [r[:len(check[0])] for r in ref_all], _outputs(out, check)
    eq_diff = max(_rel_diff(a, b) for a, b in zip(ref_out, eq_out))
    if eq_diff > MAX_REL_DIFF:
        raise ConversionError(f"cross-layer equalization changed the float outputs by {eq_diff:.1e} of their "
                              "range (expected float rounding only); convert without --equalize")
    act_diff, agree = 0.0, 1.0
    if measure_relu:
        orig_out = _outputs(model, sample)
        act_diff = _rel_diff(orig_out[0], ref_all[0])
        agree = _agreement(orig_out[0], ref_all[0])

    out, bias = correct_biases(out, calib, per_channel=per_channel, method=bias_correction)
    stats = EqualizeStats(len(pairs), sweeps, clip, len(clipped), round(before, 3), round(after, 3),
                          eq_diff, act_diff, agree, bias, time.perf_counter() - t0, ())
    return out, _with_notes(stats)


def _with_notes(s: EqualizeStats) -> EqualizeStats:
    from dataclasses import replace

    notes = [f"cross-layer equalization: {s.pairs} layer pairs, {s.sweeps} sweeps; median per-channel weight "
             f"range spread (max/min) {s.range_spread_before:.3g} -> {s.range_spread_after:.3g}; "
             f"float outputs kept to {s.equalize_max_rel_diff:.1e} (relative)"]
    if s.clips_replaced and s.clip_policy is ClipPolicy.RELU:
        notes.append(f"replaced {s.clips_replaced} Clip(0, m) (ReLU6 and the like) by ReLU so that equalization is "
                     f"exact: the float model changes (outputs by up to {100 * s.activation_max_rel_diff:.1f}% of "
                     f"their range, top-1 agreement with the clipped model {100 * s.activation_top1_agreement:.1f}% "
                     "on the calibration images; --equalize-clip per_channel keeps the clips exactly)")
    elif s.clips_replaced:
        notes.append(f"rewrote {s.clips_replaced} Clip(0, m) (ReLU6 and the like) as Relu + a per-channel limit, "
                     "relu(x) - relu(relu(x) - c) (exact; two int8 SUB ops more per layer)")
    if s.bias.method is not BiasCorrection.NONE:
        scheme = "per-channel" if s.bias.per_channel else "per-tensor"
        notes.append(f"bias correction ({s.bias.method.value}, {scheme} int8 weights, {s.bias.samples} samples): "
                     f"{s.bias.layers} biases corrected, largest shift {s.bias.max_abs_shift:.3g}")
    return replace(s, notes=tuple(notes))


def _store(graph, layer: _Layer) -> None:
    from edgenet.converters.cleanup import unique_name
    from onnx import numpy_helper

    node = layer.node
    name = unique_name(graph, node.input[1] + "_eq")
    graph.initializer.append(numpy_helper.from_array(layer.w.astype(np.float32), name))
    node.input[1] = name
    if layer.b is not None:
        old = node.input[2]
        shape = next((tuple(t.dims) for t in graph.initializer if t.name == old), (len(layer.b),))
        name = unique_name(graph, old + "_eq")
        graph.initializer.append(numpy_helper.from_array(layer.b.reshape(shape).astype(np.float32), name))
        node.input[2] = name


def _to_relu(node) -> None:
    node.op_type = "Relu"
    del node.input[1:]
    del node.attribute[:]


def _to_relu_min(graph, pair: _Pair) -> None:
    """Clip(x, 0, m) -> min(relu(x), c) with c = m / s per channel, written as
    ``relu(x) - relu(relu(x) - c)`` (equal for c > 0): SUB with a fused RELU and a SUB, which the
    LiteRT Quantizer makes int8 and XNNPACK runs, where it has no int8 MINIMUM (a Min stayed float)."""
    from edgenet.converters.cleanup import unique_name
    from onnx import helper, numpy_helper

    node = pair.act
    final = node.output[0]
    mid = unique_name(graph, final + "_relu")
    _to_relu(node)
    node.output[0] = mid
    limit = (pair.clip_max / pair.scale).astype(np.float32)
    limit = limit.reshape(-1, *([1] * (pair.first.w.ndim - 2)))
    cname = unique_name(graph, final + "_max")
    graph.initializer.append(numpy_helper.from_array(limit, cname))
    over, excess = unique_name(graph, final + "_over"), unique_name(graph, final + "_excess")
    index = next(i for i, n in enumerate(graph.node) if n.output and n.output[0] == mid)
    added = [helper.make_node("Sub", [mid, cname], [over], name=unique_name(graph, final + "_sub_limit")),
             helper.make_node("Relu", [over], [excess], name=unique_name(graph, final + "_relu_excess")),
             helper.make_node("Sub", [mid, excess], [final], name=unique_name(graph, final + "_min"))]
    for k, extra in enumerate(added):
        graph.node.insert(index + 1 + k, extra)


def _drop_unused(graph) -> None:
    """Remove initializers and Constant nodes nothing reads any more (the replaced Clips' bounds)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    dead = [i for i, n in enumerate(graph.node) if n.op_type == "Constant" and n.output[0] not in used]
    for i in reversed(dead):
        del graph.node[i]
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _outputs(model, calib: Sequence[np.ndarray]) -> list[np.ndarray]:
    """All outputs of ``model`` on the samples (onnxruntime, in batches)."""
    from edgenet.converters.bias_correction import _session, _with_outputs, input_names

    names = [o.name for o in model.graph.output]
    keys = input_names(model)
    n = len(calib[0])
    try:
        sess, step = _session(_with_outputs(model, names, batched=True)), BATCH
        # probed with two samples: a reshape to a hard-coded batch of 1 (an attention block's
        # [1, T, heads, d]) runs on one sample and fails on more
        sess.run(names, {k: x[:2] for k, x in zip(keys, calib)})
    except Exception:  # a graph with a hard-coded batch size
        sess, step = _session(model), 1
    rows = [sess.run(names, {k: x[i:i + step] for k, x in zip(keys, calib)}) for i in range(0, n, step)]
    return [np.concatenate([r[j] for r in rows]) for j in range(len(names))]


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.max(np.abs(a))) or 1.0
    return float(np.max(np.abs(a.astype(np.float64) - b))) / scale


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


__all__ = ["BiasCorrection", "ClipPolicy", "EqualizeStats", "equalize", "range_spread"]
