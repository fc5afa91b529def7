"""The generic verdict (SQNR of the whole output, per channel, degeneracy) and the index verdict.

A single SQNR over a whole output hides the damage that matters. A detector whose head concatenates
boxes in pixels (0..320) with scores (0..1) quantizes both with one scale: the scores collapse to a
handful of int8 values while the output's SQNR, dominated by the boxes, still reads 30-45 dB. So
every output is measured channel by channel (the ONNX channel axis: dim 1 of an ``(N, C, ...)``
output, e.g. each of the C rows of a ``[1, C, anchors]`` detection output, each class of logits):

* SQNR of the input-dependent part: ``10 log10(sum (f - mean f)^2 / sum (f - q)^2)``, where
  ``mean f`` is the float channel's mean over the examples -- a constant offset is no signal, so a
  channel whose variation is lost scores near 0 dB however large its values are;
* degeneracy: the quantized channel takes a handful of distinct values where the float one varies.

A channel (or output) whose float values barely depend on the input (variation under 0.1% of its
RMS: a bias-dominated output, an untrained head) has no input-dependent part to measure; it is
judged on the plain SQNR instead, and listed as static. Messages name the slices by what they
are (:func:`axis_name`): channels of a map, rows or columns of a rank-3 output, values of a vector.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgenet.verdicts.base import (DEGENERATE_MAX_DISTINCT, DEGENERATE_MIN_FLOAT_DISTINCT, OutputKind,
                                   OutputQuality, Thresholds, _list, centered_sqnr_db, error_metrics,
                                   plain_sqnr_db)

MIN_INDEX_KEPT = 0.5               # an index (class) of an ArgMax map must keep half its float positions
STATIC_VARIATION = 1e-3           # a float channel whose input-dependent part is below this fraction of
                                  # its magnitude (RMS) carries no input signal: judged on plain SQNR
ROWS_PER_CHANNEL = 16   # a rank-3 output with this many times more rows than values per row is
                        # channels-last: [N, boxes, xywh + scores] (YOLOv5), not [N, C, anchors]


def is_classifier_shaped(shape: Sequence[int]) -> bool:
    """``(N, K)`` with K >= 2 (or ``(N, 1, ..., K)``): one score per class, top-1 means something."""
    rest = [d for d in shape[1:]]
    big = [d for d in rest if d != 1]
    return len(big) == 1 and rest[-1] == big[0] and big[0] >= 2


def channel_axis(shape: Sequence[int]) -> int:
    """The channel axis of an output of ``shape`` (examples first, ONNX layout): 1, except for a
    rank-3 output of many short rows (``[N, 25200, 85]``: 85 channels, one row per box), whose
    channels are its last axis; -1 for rank <= 1."""
    if len(shape) <= 1:
        return -1
    if len(shape) == 3 and shape[2] > 1 and shape[1] >= ROWS_PER_CHANNEL * shape[2]:
        return 2
    return 1


def axis_name(shape: Sequence[int], axis: int | None = None) -> str:
    """What one slice along the channel axis of an output of ``shape`` (ONNX layout) is called:
    "channel" for rank >= 4 (maps), "row" (axis 1) or "column" (axis 2) of a rank-3 output,
    "value" of a rank-2 vector."""
    axis = channel_axis(shape) if axis is None else axis
    if len(shape) >= 4:
        return "channel"
    if len(shape) == 3:
        return "column" if axis == 2 else "row"
    return "value"


def channel_view(y: np.ndarray, channels_last: bool) -> tuple[np.ndarray, int]:
    """The array with its channels on axis 1 (ONNX layout; a channels-last rank-3 output transposed,
    see :func:`channel_axis`), and that axis (1 for rank >= 2, -1 for rank <= 1)."""
    if channels_last and y.ndim == 4:
        y = np.transpose(y, (0, 3, 1, 2))
    if channel_axis(y.shape) == 2:
        y = np.transpose(y, (0, 2, 1))
    return y, (1 if y.ndim >= 2 else -1)


def onnx_layout(y: np.ndarray, channels_last: bool) -> np.ndarray:
    """A runner's output in ONNX layout (an NHWC rank-4 output transposed to NCHW)."""
    y = np.asarray(y)
    return np.transpose(y, (0, 3, 1, 2)) if channels_last and y.ndim == 4 else y


def _plural(word: str, n: int) -> str:
    return word + ("s" if n > 1 else "")


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
    lost = lost_labels(f.reshape(-1), q.reshape(-1), max(16, 0.01 * f.size))
    if lost:
        shown = ", ".join(f"{v:g} ({100 * k:.0f}% kept)" for k, v in lost[:6])
        failures.append(f"index{'es' if len(lost) > 1 else ''} {shown} mostly lost where float has "
                        f"{'them' if len(lost) > 1 else 'it'} (< {100 * MIN_INDEX_KEPT:g}% of its positions kept)")
    return OutputQuality(name, tuple(int(d) for d in f.shape[1:]), None, None, 1, None, None, (), None,
                         tuple(failures), (), 1, agreement, kind=OutputKind.INDEX.value)


def lost_labels(f: np.ndarray, q: np.ndarray, min_count: float) -> list[tuple[float, float]]:
    """(kept share, label) of each label float gives at least ``min_count`` times that the
    quantized side keeps at fewer than MIN_INDEX_KEPT of those positions, worst first: per label,
    as per channel for values (a dominant background, or a frequent class, hides a lost one
    behind an overall agreement)."""
    values, counts = np.unique(f, return_counts=True)
    lost = []
    for value, count in zip(values, counts):
        if count >= min_count:
            kept = float(np.mean(q[f == value] == value))
            if kept < MIN_INDEX_KEPT:
                lost.append((kept, float(value)))
    return sorted(lost)


def output_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                   thresholds: Thresholds) -> OutputQuality:
    """Measure one output (examples along axis 0, as the runners give them) by SQNR: whole output
    (``min_sqnr_db``), per channel (``min_channel_sqnr_db``), degenerate channels."""
    f, axis = channel_view(np.asarray(float_out, dtype=np.float32), channels_last)
    q, _ = channel_view(np.asarray(quant_out, dtype=np.float32), channels_last)
    onnx_shape = onnx_layout(float_out, channels_last).shape
    along = channel_axis(onnx_shape)
    what = axis_name(onnx_shape, along)
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
            failures.append(f"{_plural(what, len(bad))} {_list(bad)} of {channels}{where} below "
                            f"{thresholds.min_channel_sqnr_db:g} dB (worst: {what} {worst} at {worst_db:.1f} dB)")
        if degenerate:
            failures.append(f"{_plural(what, len(degenerate))} {_list(degenerate)}{where} degenerate "
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
                         tuple(degenerate), top1, tuple(failures), tuple(static), max(along, 0),
                         kind=OutputKind.GENERIC.value, axis_name=what, **error_metrics(f, q))


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
