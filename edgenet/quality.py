"""How much of each output a quantized model keeps: per output, per channel, and a verdict.

A single SQNR over a whole output hides the damage that matters. A detector whose head concatenates
boxes in pixels (0..320) with scores (0..1) quantizes both with one scale: the scores collapse to a
handful of int8 values while the output's SQNR, dominated by the boxes, still reads 30-45 dB. So
every output is measured channel by channel (the ONNX channel axis: dim 1 of an ``(N, C, ...)``
output, e.g. each of the C rows of a ``[1, C, anchors]`` detection output, each class of logits):

* SQNR of the input-dependent part: ``10 log10(sum (f - mean f)^2 / sum (f - q)^2)``, where
  ``mean f`` is the float channel's mean over the examples -- a constant offset is no signal, so a
  channel whose variation is lost scores near 0 dB however large its values are;
* degeneracy: the quantized channel takes a handful of distinct values where the float one varies;
* top-1 agreement only for classifier-shaped outputs (``(N, K)`` scores, ``K >= 2``).

A channel (or output) whose float values barely depend on the input (variation under 0.1% of its
RMS: a bias-dominated output, an untrained head) has no input-dependent part to measure; it is
judged on the plain SQNR instead, and listed as static.

:func:`judge` turns these into a :class:`Verdict` with the thresholds a target profile sets.
Numpy only: the benchmark runs it on the device.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

DEGENERATE_MAX_DISTINCT = 4       # a quantized channel with this few distinct values ...
DEGENERATE_MIN_FLOAT_DISTINCT = 16  # ... where the float channel has at least this many is degenerate
MIN_INDEX_KEPT = 0.5               # an index (class) of an ArgMax map must keep half its float positions
STATIC_VARIATION = 1e-3           # a float channel whose input-dependent part is below this fraction of
                                  # its magnitude (RMS) carries no input signal: judged on plain SQNR


@dataclass(frozen=True)
class Thresholds:
    """What a quantized model must keep (a target profile's ``min_sqnr_db`` / ``min_channel_sqnr_db``).

    20 dB over an output is about 10% RMS error of its variation; 10 dB for the worst channel."""

    min_sqnr_db: float = 20.0
    min_channel_sqnr_db: float = 10.0
    min_index_agreement: float = 0.9    # outputs of indices (ArgMax): the share of values that must match


@dataclass(frozen=True)
class ChannelQuality:
    index: int
    sqnr_db: float
    distinct_float: int
    distinct_quantized: int
    degenerate: bool


@dataclass(frozen=True)
class OutputQuality:
    """One output of a quantized model against the float one (ONNX layout, channel axis 1)."""

    name: str
    shape: tuple[int, ...]
    sqnr_db: float | None               # whole output, plain: 10 log10(sum f^2 / sum (f - q)^2); None: indices
    sqnr_centered_db: float | None      # whole output, input-dependent part; None: indices
    channels: int
    worst_channel: int | None
    worst_channel_sqnr_db: float | None
    degenerate_channels: tuple[int, ...]
    top1_agreement: float | None        # classifier-shaped outputs only
    failures: tuple[str, ...] = ()      # what fails the thresholds, one phrase each
    static_channels: tuple[int, ...] = ()   # channels the float model barely varies (judged on plain SQNR)
    channel_axis: int = 1               # the axis the channels are on (2: [N, boxes, values], channels last)
    index_agreement: float | None = None    # outputs of indices (ArgMax ...): the share of values equal to float's

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


@dataclass(frozen=True)
class Verdict:
    """A quantized model's outputs against the float model, decided."""

    precision: str
    thresholds: Thresholds
    outputs: tuple[OutputQuality, ...]
    samples: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def worst(self) -> OutputQuality:
        shown = worst_output([o.to_dict() for o in self.outputs])
        return next(o for o in self.outputs if o.name == shown["name"])

    def message(self) -> str:
        """One line naming the damaged output(s), the channels and the numbers."""
        parts = [f"output {o.name!r}: {'; '.join(o.failures)}" for o in self.outputs if not o.passed]
        return f"the {self.precision} model lost its signal: " + " | ".join(parts)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "passed": self.passed, "samples": self.samples,
                "thresholds": asdict(self.thresholds), "outputs": [o.to_dict() for o in self.outputs],
                "notes": list(self.notes)}


def centered_sqnr_db(reference: np.ndarray, test: np.ndarray, axis: int | tuple | None = None) -> np.ndarray | float:
    """SQNR of the input-dependent part of ``reference`` (its mean over axis 0 removed) against
    ``test``, reduced over every axis but ``axis`` (None: one number). inf when identical; -inf
    when the reference does not vary (a constant carries no signal) but the test differs."""
    ref = np.asarray(reference, dtype=np.float64)
    err = ref - np.asarray(test, dtype=np.float64)
    var = ref - ref.mean(axis=0, keepdims=True)
    reduce = tuple(a for a in range(ref.ndim) if axis is None or a != axis)
    signal = np.sum(var * var, axis=reduce)
    noise = np.sum(err * err, axis=reduce)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(signal / noise)
    db = np.where(noise == 0, np.inf, np.where(signal == 0, -np.inf, db))
    return float(db) if axis is None else db


def plain_sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - test) ** 2))
    signal = float(np.sum(ref * ref))
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10 * math.log10(signal / noise)


def is_classifier_shaped(shape: Sequence[int]) -> bool:
    """``(N, K)`` with K >= 2 (or ``(N, 1, ..., K)``): one score per class, top-1 means something."""
    rest = [d for d in shape[1:]]
    big = [d for d in rest if d != 1]
    return len(big) == 1 and rest[-1] == big[0] and big[0] >= 2


ROWS_PER_CHANNEL = 16   # a rank-3 output with this many times more rows than values per row is
                        # channels-last: [N, boxes, xywh + scores] (YOLOv5), not [N, C, anchors]


def channel_axis(shape: Sequence[int]) -> int:
    """The channel axis of an output of ``shape`` (examples first, ONNX layout): 1, except for a
    rank-3 output of many short rows (``[N, 25200, 85]``: 85 channels, one row per box), whose
    channels are its last axis; -1 for rank <= 1."""
    if len(shape) <= 1:
        return -1
    if len(shape) == 3 and shape[2] > 1 and shape[1] >= ROWS_PER_CHANNEL * shape[2]:
        return 2
    return 1


def channel_view(y: np.ndarray, channels_last: bool) -> tuple[np.ndarray, int]:
    """The array with its channels on axis 1 (ONNX layout; a channels-last rank-3 output transposed,
    see :func:`channel_axis`), and that axis (1 for rank >= 2, -1 for rank <= 1)."""
    if channels_last and y.ndim == 4:
        y = np.transpose(y, (0, 3, 1, 2))
    if channel_axis(y.shape) == 2:
        y = np.transpose(y, (0, 2, 1))
    return y, (1 if y.ndim >= 2 else -1)


def index_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                  thresholds: Thresholds) -> OutputQuality:
    """An output of indices (a segmentation map's ArgMax, class ids): values are labels, not
    magnitudes, so SQNR means nothing; the share of values equal to the float model's decides
    (``thresholds.min_index_agreement``)."""
    f, _ = channel_view(np.asarray(float_out), channels_last)
    q, _ = channel_view(np.asarray(quant_out), channels_last)
    agreement = float(np.mean(f == q)) if f.size else 1.0
    failures = [] if agreement >= thresholds.min_index_agreement else [
        f"{100 * (1 - agreement):.1f}% of its indices differ from the float model's (agreement "
        f"{100 * agreement:.1f}% < {100 * thresholds.min_index_agreement:g}%)"]
    # per index, as per channel for values: a class the float model finds (on at least 1% of the
    # values) that the quantized model mostly loses is damage an overall agreement hides
    # (background dominates a segmentation map)
    values, counts = np.unique(f, return_counts=True)
    lost = []
    for value, count in zip(values, counts):
        if count >= max(16, 0.01 * f.size):
            kept = float(np.mean(q[f == value] == value))
            if kept < MIN_INDEX_KEPT:
                lost.append((kept, value))
    if lost:
        lost.sort()
        shown = ", ".join(f"{v:g} ({100 * k:.0f}% kept)" for k, v in lost[:6])
        failures.append(f"index{'es' if len(lost) > 1 else ''} {shown} mostly lost where float has "
                        f"{'them' if len(lost) > 1 else 'it'} (< {100 * MIN_INDEX_KEPT:g}% of its positions kept)")
    return OutputQuality(name, tuple(int(d) for d in f.shape[1:]), None, None, 1, None, None, (), None,
                         tuple(failures), (), 1, agreement)


def output_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                   thresholds: Thresholds) -> OutputQuality:
    """Measure one output (examples along axis 0, as the runners give them)."""
    f, axis = channel_view(np.asarray(float_out, dtype=np.float32), channels_last)
    q, _ = channel_view(np.asarray(quant_out, dtype=np.float32), channels_last)
    onnx_shape = (np.transpose(float_out, (0, 3, 1, 2)) if channels_last and np.ndim(float_out) == 4
                  else np.asarray(float_out)).shape
    along = channel_axis(onnx_shape)
    where = " (last axis)" if along == 2 else ""
    whole_plain = plain_sqnr_db(f, q)
    whole = centered_sqnr_db(f, q)
    failures: list[str] = []
    if not np.isfinite(q).all():
        failures.append("NaN or infinite values")
    worst = worst_db = None
    degenerate: list[int] = []
    channels = 1
    static: list[int] = []
    if axis == 1 and f.shape[1] > 1:
        channels = f.shape[1]
        per = np.asarray(centered_sqnr_db(f, q, axis=1), dtype=np.float64)
        static = [int(c) for c in np.flatnonzero(_static(f, axis=1))]
        if static:   # no input signal to lose: how close the values stay is what counts
            per[static] = [plain_sqnr_db(np.take(f, c, 1), np.take(q, c, 1)) for c in static]
        order = np.argsort(per, kind="stable")
        worst, worst_db = int(order[0]), float(per[order[0]])
        fc = np.moveaxis(f, 1, 0).reshape(channels, -1)
        qc = np.moveaxis(q, 1, 0).reshape(channels, -1)
        for c in range(channels):
            distinct_q = len(np.unique(qc[c][: 4096]))
            # a static channel's variation is small, so a few quantized values may be all it gets;
            # none at all (one value where float varies) is still a channel that lost its signal
            if distinct_q <= (1 if c in static else DEGENERATE_MAX_DISTINCT):
                nf = len(np.unique(fc[c][: 4096]))
                if nf >= DEGENERATE_MIN_FLOAT_DISTINCT:
                    degenerate.append(c)
        bad = [int(c) for c in order if per[c] < thresholds.min_channel_sqnr_db]
        if bad:
            failures.append(f"channel{'s' if len(bad) > 1 else ''} {_list(bad)} of {channels}{where} below "
                            f"{thresholds.min_channel_sqnr_db:g} dB (worst: channel {worst} at {worst_db:.1f} dB)")
        if degenerate:
            failures.append(f"channel{'s' if len(degenerate) > 1 else ''} {_list(degenerate)}{where} degenerate "
                            f"(at most {DEGENERATE_MAX_DISTINCT} distinct values where float varies)")
    if bool(_static(f, axis=None)):
        whole = whole_plain   # the whole output barely depends on the input: judged on plain SQNR
    if channels == 1 and bool(_static(f, axis=None)) and len(np.unique(q[: 4096])) <= 1 \
            and len(np.unique(f[: 4096])) >= DEGENERATE_MIN_FLOAT_DISTINCT:
        failures.append("one value for every example where float varies")
    if not whole >= thresholds.min_sqnr_db:
        failures.insert(0, f"SQNR {whole:.1f} dB < {thresholds.min_sqnr_db:g} dB")
    top1 = None
    if is_classifier_shaped(f.shape):
        top1 = float(np.mean(np.argmax(f.reshape(len(f), -1), 1) == np.argmax(q.reshape(len(q), -1), 1)))
    return OutputQuality(name, tuple(int(d) for d in onnx_shape[1:]), whole_plain, whole, channels, worst, worst_db,
                         tuple(degenerate), top1, tuple(failures), tuple(static), max(along, 0))


def _static(f: np.ndarray, axis: int | None) -> np.ndarray | bool:
    """True (per channel along ``axis``, or for the whole array) where the input-dependent part of
    ``f`` (its deviation from the mean over examples) is below STATIC_VARIATION of its RMS."""
    x = f.astype(np.float64)
    dev = x - x.mean(axis=0, keepdims=True)
    reduce = tuple(a for a in range(x.ndim) if axis is None or a != axis)
    var = np.sqrt(np.mean(dev * dev, axis=reduce))
    rms = np.sqrt(np.mean(x * x, axis=reduce))
    if len(x) < 2:   # one example: no input-dependent part to measure at all
        return np.ones_like(rms, dtype=bool) if axis is not None else True
    return (var <= STATIC_VARIATION * rms) & (rms > 0)


def judge(precision: str, names: Sequence[str], float_outs: Sequence[np.ndarray], quant_outs: Sequence[np.ndarray],
          channels_last: Sequence[bool], thresholds: Thresholds = Thresholds(),
          indices: Sequence[bool] | None = None) -> Verdict:
    """The verdict on a quantized model's outputs against the float model's on the same examples.
    ``indices``: which outputs hold indices (integer outputs: :func:`index_quality`)."""
    indices = indices or [False] * len(names)
    outputs = tuple((index_quality if ix else output_quality)(n, f, q, cl, thresholds)
                    for n, f, q, cl, ix in zip(names, float_outs, quant_outs, channels_last, indices))
    return Verdict(precision, thresholds, outputs, int(len(float_outs[0])) if float_outs else 0)


def _list(indices: Sequence[int], limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in sorted(indices)[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def worst_output(outputs: Sequence[dict]) -> dict:
    """Of a verdict's outputs (``OutputQuality.to_dict()`` form), the one to show: a failing one
    first, then the lowest whole-output SQNR (the figure shown beside its name); index outputs by
    their agreement."""
    def level(o: dict) -> tuple:
        if o.get("index_agreement") is not None:
            value = 1e9 if o["index_agreement"] == 1.0 else o["index_agreement"]
        else:
            value = o["sqnr_centered_db"] if o.get("sqnr_centered_db") is not None else 1e9
        return (o.get("passed", True), value)
    return min(outputs, key=level)


def level_text(o: dict) -> str:
    """"SQNR 23.1 dB", "identical", or for an output of indices "index agreement 97.2%"."""
    if o.get("index_agreement") is not None:
        return f"index agreement {100 * o['index_agreement']:.1f}%"
    value = o.get("sqnr_centered_db")
    return "identical" if value is None or value == math.inf else f"SQNR {value:.1f} dB"

