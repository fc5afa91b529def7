"""The verdict's records and measures: output kinds, thresholds, per-output quality, the verdict.

Numpy only (the benchmark runs it on the device). The metric set ST's ``validate`` users know
(cosine similarity, L2 relative error, RMSE, MAE) is in :func:`error_metrics`; SQNR follows the
usual definition ``10 log10(sum ref^2 / sum (ref - test)^2)`` (dB), with a centered variant that
removes the reference's mean over the examples (a constant offset carries no input signal).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np


class OutputKind(str, Enum):
    """What an output is for, and so which metric judges it (``--output-kind NAME=VALUE``)."""

    CLASSIFIER = "classifier"   # [N, K] / [N, 1, .., K] scores: top-1 / top-5 agreement with float where decisive
    EMBEDDING = "embedding"     # [N, K] vectors compared by direction: cosine similarity per example
    SEQUENCE = "sequence"       # [N, T, C] class distribution per step (CTC): step and string agreement
    CLASS_MAP = "class_map"     # [N, P, C] class distribution at many positions (SSD anchors): top-class agreement
    DENSE_MAP = "map"           # [N, C, H, W] maps (a text detector's probability map): SQNR + IoU
    DETECTION = "detection"     # a detector head (YOLOv8 [N, 4+C, A], YOLOv5 [N, A, 5+C], DETR [N, Q, 4+C]): F1, box SQNR
    INDEX = "index"             # integer outputs (ArgMax maps): index agreement
    TOPK = "topk"               # a TopK's indices: set agreement, order where float's values are apart
    GENERIC = "generic"         # anything else: SQNR, per-channel SQNR, degeneracy


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NOT_JUDGED = "not judged"   # the evaluation data cannot exercise the output (no signal)


@dataclass(frozen=True)
class Thresholds:
    """What a quantized model must keep; a target profile's settings (``targets/*.toml``), these
    defaults otherwise.

    How the task thresholds were chosen: each sits between what a model that keeps its task
    measured and what a damaged one did, on the four real models of issue 17 (rapidocr 1.4.4's
    PaddleOCR direction classifier, PP-OCRv4 recognizer and text detector; nudenet 3.4.2's YOLOv8n),
    converted by ``edgenet convert`` with TensorFlow's int8 and int16x8 and judged on 32-40
    held-out examples (rendered text lines and pages; photos for the detector):

    ==============  ======================  ==========================  ====================
    model           int8                    int16x8                     threshold
    ==============  ======================  ==========================  ====================
    classifier      top-1 100% (19.3 dB)    top-1 97.5% (27.2 dB)       top-1 >= 90%
    recognizer      steps 92.6%, strings    steps 96.2%, strings 40%    steps >= 98%,
                    27.5% (damaged)         (damaged)                   strings >= 90%
    text detector   map IoU 0.92, 11.2 dB;  IoU 0.99, 22.4 dB           IoU >= 0.85,
                    its text boxes F1 0.98                              SQNR >= 8 dB
    YOLOv8n         F1 0.82 (4 of 13        F1 0.96, boxes 42.2 dB,     F1 >= 0.9, boxes
                    lost), scores 0.8 dB,   scores 25.3 dB              >= 25 dB, scores
                    boxes 33.9 dB                                       >= 10 dB
    ==============  ======================  ==========================  ====================

    A classifier at 90% agreement keeps its accuracy within a few points (the issue's classifier at
    92.5% kept it); a recognizer whose strings change on one line in ten has lost its task, and one
    wrong step in 50 already breaks a string; an int8 text map at IoU 0.92 still gives float's
    text boxes (connected components matched at F1 0.98), a map shifted by one pixel scores
    0.6-0.75; boxes at 25 dB are off by ~4% of their coordinates (IoU ~0.75 with float's for a box a
    fifth of the image wide). The issue's targets for repaired models (top-1 99%, strings 95%,
    steps 99%, map IoU 0.95, boxes 30 dB) are goals, not refusal lines. The generic SQNR lines are
    today's: 20 dB is about 10% RMS error of an output's variation, 10 dB for its worst channel.

    Where float does not decide, no answer of int8's is wrong, so those examples are not judged:

    * ``min_decisive_margin`` 0.1: a classifier's example counts when float's top-1 probability
      leads its top-2 by at least 0.1 (logits through a softmax). Below it the two classes' logits
      are within ~0.2-0.4 of each other, the size of int8's error on logits (a softmax output
      moves by steps of 1/256 alone); an untrained or near-uniform output has no such example and
      is not judged. The real direction classifier's held-out lines all lead by far more.
    * ``score_band`` 0.05: a float detection scoring within 0.05 of ``score_threshold`` (0.20-0.30
      at 0.25) is borderline: int8 may keep it or not. 0.05 is the score error of a head that keeps
      its detections: scores at 20 dB (10% RMS error) move a 0.25-0.5 score by 0.025-0.05 (YOLOv8n
      int16x8, F1 0.96, keeps its scores at 25 dB); a float score of 0.27 read 0.24 in int8 is that,
      not a lost object. Larger bands would excuse real losses near the threshold (YOLOv8n int8's scores
      falling 0.27 -> 0.04 stay a miss: float decides at >= 0.30, int8 extras count below 0.20).
    * ``min_embedding_cosine`` 0.98 (mean over examples): the cosine of each example's embedding
      with float's. 0.98 leaves an error of 0.2 of the vector's length (sqrt(2 (1 - cos))): a pair's
      similarity moves by at most 0.2 per side and, the error spread over K dimensions, typically by
      ~0.2 / sqrt(K), inside a verification's margin between same and different; SQNR is not asked (cosine 0.99 is ~17 dB, under the generic
      20 dB). Chosen, not measured: no embedding model is among issue 17's four.
    """

    min_sqnr_db: float = 20.0
    min_channel_sqnr_db: float = 10.0
    min_index_agreement: float = 0.9    # outputs of indices (ArgMax): the share of values that must match
    min_top1_agreement: float = 0.9     # classifier: share of decisive examples with float's top-1 class
    min_decisive_margin: float = 0.1    # classifier: an example float decides (top-1 - top-2 probability)
    min_embedding_cosine: float = 0.98  # embedding: mean cosine similarity of each example's vector with float's
    min_step_agreement: float = 0.98    # sequence: share of steps with float's argmax
    min_sequence_agreement: float = 0.9  # sequence: share of examples decoding to float's sequence
    min_map_iou: float = 0.85           # dense map: IoU of the thresholded map with float's
    min_map_sqnr_db: float = 8.0        # dense map: centered SQNR (a floor: IoU asks the task's question)
    map_threshold: float = 0.3          # a map in [0, 1] is binarized here (PaddleOCR's DB thresh)
    min_detection_f1: float = 0.9       # detection: F1 of int8 detections matched to float's
    min_box_sqnr_db: float = 25.0       # detection: SQNR of the boxes float detects
    min_box_iou: float = 0.9            # end-to-end detection: mean IoU of the matched detections' boxes
    min_score_sqnr_db: float = 10.0     # detection: SQNR of the scores above score_floor
    score_threshold: float = 0.25       # a detection: score at least this (Ultralytics' default conf)
    score_floor: float = 0.05           # scores below this on both sides are not judged
    score_band: float = 0.05            # float detections within this of score_threshold are borderline
    match_iou: float = 0.5              # an int8 detection matches a float one at this IoU (same class)
    nms_iou: float = 0.45               # non-maximum suppression IoU
    ctc_blank: int = 0                  # the blank class of a CTC sequence (PaddleOCR: 0)


DEGENERATE_MAX_DISTINCT = 4       # a quantized channel with this few distinct values ...
DEGENERATE_MIN_FLOAT_DISTINCT = 16  # ... where the float channel has at least this many is degenerate


@dataclass(frozen=True)
class OutputQuality:
    """One output of a quantized model against the float one (ONNX layout, channel axis 1).

    ``kind`` decides the verdict (:class:`OutputKind` value); ``metrics`` holds that kind's task
    figures (top5_agreement, step_agreement, sequence_agreement, map_iou, detection_f1,
    box_sqnr_db, score_sqnr_db ...); ``not_judged`` says why the data cannot judge the output."""

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
    kind: str = OutputKind.GENERIC.value
    not_judged: str | None = None       # why the evaluation data cannot judge it (then no failures)
    metrics: dict = field(default_factory=dict)
    axis_name: str = "channel"          # what one slice along channel_axis is: channel, step, anchor, row ...
    cosine: float | None = None         # cosine similarity of the flattened outputs
    l2_rel_err: float | None = None     # ||f - q|| / ||f||
    rmse: float | None = None
    mae: float | None = None

    @property
    def passed(self) -> bool:
        """Nothing fails (a not-judged output does not fail)."""
        return not self.failures

    @property
    def status(self) -> Status:
        if self.failures:
            return Status.FAIL
        return Status.NOT_JUDGED if self.not_judged else Status.PASS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["status"] = self.status.value
        return d


@dataclass(frozen=True)
class Verdict:
    """A quantized model's outputs against the float model, decided: passes when no output fails;
    outputs the data cannot exercise are listed as not judged."""

    precision: str
    thresholds: Thresholds
    outputs: tuple[OutputQuality, ...]
    samples: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    kinds_given: tuple[str, ...] = ()   # the user's overrides, "NAME=KIND" (--output-kind)
    reference: str = "float"            # what was compared against: the float model, or a QDQ model

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def status(self) -> Status:
        """FAIL when an output fails, NOT_JUDGED when no output could be judged, else PASS."""
        if not self.passed:
            return Status.FAIL
        judged = [o for o in self.outputs if o.not_judged is None]
        return Status.PASS if judged or not self.outputs else Status.NOT_JUDGED

    @property
    def not_judged(self) -> tuple[OutputQuality, ...]:
        return tuple(o for o in self.outputs if o.not_judged is not None)

    @property
    def worst(self) -> OutputQuality:
        shown = worst_output([o.to_dict() for o in self.outputs])
        return next(o for o in self.outputs if o.name == shown["name"])

    def message(self) -> str:
        """One line naming the damaged output(s), where and the numbers (and what was not judged)."""
        parts = [f"output {o.name!r}: {'; '.join(o.failures)}" for o in self.outputs if not o.passed]
        text = (f"the {self.precision} model lost its signal: " + " | ".join(parts)) if parts else \
            f"the {self.precision} model keeps every judged output"
        return text + self.not_judged_text()

    def failures_text(self) -> str:
        """The failing outputs in one phrase, "name: failure, failure; name: ..." ("no failure" if none)."""
        return "; ".join(f"{o.name}: {', '.join(o.failures)}" for o in self.outputs if not o.passed) or "no failure"

    def not_judged_text(self) -> str:
        """"; not judged: output 'x' (no signal in the evaluation data: ...)" or ""."""
        left = [f"output {o.name!r} ({o.not_judged})" for o in self.not_judged]
        return ("; not judged: " + ", ".join(left)) if left else ""

    def to_dict(self) -> dict:
        return {"precision": self.precision, "passed": self.passed, "status": self.status.value,
                "samples": self.samples, "thresholds": asdict(self.thresholds),
                "outputs": [o.to_dict() for o in self.outputs],
                "not_judged": {o.name: o.not_judged for o in self.not_judged}, "notes": list(self.notes),
                "output_kinds_given": list(self.kinds_given), "reference": self.reference}


EXAMPLE_BLOCK_VALUES = 1 << 20   # values per block of examples the figures below are summed over


def _examples(reference: np.ndarray, test: np.ndarray):
    """(reference, test) in blocks of whole examples (index of axis 0) of about
    EXAMPLE_BLOCK_VALUES values, as float64: the sums below are taken block by block, so no float64
    copy of a whole output is made (a text detector's 32 x 608 x 800 maps took 0.2-0.9 s per figure
    in float64 copies, and the repair judges dozens), and a long 1-D array (a detector's scores
    above a floor) is not summed one value at a time."""
    ref, tst = np.asarray(reference), np.asarray(test)
    if ref.ndim == 0:
        yield ref.astype(np.float64), tst.astype(np.float64)
        return
    step = max(1, EXAMPLE_BLOCK_VALUES // max(1, int(np.prod(ref.shape[1:]))))
    for i in range(0, len(ref), step):
        yield np.asarray(ref[i:i + step], dtype=np.float64), np.asarray(tst[i:i + step], dtype=np.float64)


def centered_sqnr_db(reference: np.ndarray, test: np.ndarray, axis: int | tuple | None = None) -> np.ndarray | float:
    """SQNR of the input-dependent part of ``reference`` (its mean over axis 0 removed) against
    ``test``, reduced over every axis but ``axis`` (None: one number). inf when identical; -inf
    when the reference does not vary (a constant carries no signal) but the test differs."""
    ref = np.asarray(reference)
    if ref.ndim == 0 or axis == 0:     # per example (or a scalar): small, as it was
        ref64 = ref.astype(np.float64)
        err = ref64 - np.asarray(test, dtype=np.float64)
        var = ref64 - ref64.mean(axis=0, keepdims=True)
        reduce = tuple(a for a in range(ref.ndim) if axis is None or a != axis)
        signal, noise = np.sum(var * var, axis=reduce), np.sum(err * err, axis=reduce)
    else:
        mean = ref.mean(axis=0, dtype=np.float64) if len(ref) else np.zeros(ref.shape[1:])
        inner = None if axis is None else tuple(a for a in range(ref.ndim) if a != axis)   # axis 0 too: a block
        signal = noise = 0.0
        for r, t in _examples(ref, test):
            var, err = r - mean, r - t
            signal = signal + np.sum(var * var, axis=inner)
            noise = noise + np.sum(err * err, axis=inner)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(signal / noise)
    db = np.where(np.asarray(noise) == 0, np.inf, np.where(np.asarray(signal) == 0, -np.inf, db))
    return float(db) if axis is None else db


def plain_sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2); inf when identical, -inf for a zero reference."""
    signal = noise = 0.0
    for r, t in _examples(reference, test):
        d = r - t
        noise += float(np.sum(d * d))
        signal += float(np.sum(r * r))
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10 * math.log10(signal / noise)


def error_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float | None]:
    """cosine (similarity of the flattened arrays; 1.0 for two zero arrays), l2_rel_err
    (||ref - test|| / ||ref||; inf for a zero reference that differs), rmse, mae; None when not
    finite on the test side."""
    ref, tst = np.asarray(reference), np.asarray(test)
    if ref.size == 0 or not np.isfinite(tst).all():
        return {"cosine": None, "l2_rel_err": None, "rmse": None, "mae": None}
    ff = qq = fq = dd = ad = 0.0
    for r, t in _examples(ref, tst):
        r, t = r.reshape(-1), t.reshape(-1)
        d = r - t
        # numpy's own sums, not BLAS dots: OpenBLAS splits a dot over its threads (so its last bits
        # depend on the machine's core count), and on a busy 2-core machine its threads took 1.2 s
        # for a recognizer's 32 x 80 x 6625 outputs, against 0.05 s (the repair judges dozens of models)
        ff += float(np.sum(r * r))
        qq += float(np.sum(t * t))
        fq += float(np.sum(r * t))
        dd += float(np.sum(d * d))
        ad += float(np.sum(np.abs(d)))
    nf, nq, nd = math.sqrt(ff), math.sqrt(qq), math.sqrt(dd)
    cosine = 1.0 if nf == 0 and nq == 0 else (0.0 if nf == 0 or nq == 0 else fq / (nf * nq))
    rel = 0.0 if nd == 0 else (math.inf if nf == 0 else nd / nf)
    return {"cosine": cosine, "l2_rel_err": rel, "rmse": math.sqrt(dd / ref.size), "mae": ad / ref.size}


def _list(indices: Sequence[int], limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in sorted(indices)[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# what each kind shows as its level: (metrics key or field, format)
_HEADLINE = {
    OutputKind.CLASSIFIER.value: ("top1_agreement", "top-1 agreement"),
    OutputKind.EMBEDDING.value: ("cosine_mean", "embedding cosine"),
    OutputKind.SEQUENCE.value: ("sequence_agreement", "sequence agreement"),
    OutputKind.CLASS_MAP.value: ("position_agreement", "top-class agreement"),
    OutputKind.DENSE_MAP.value: ("map_iou", "map IoU"),
    OutputKind.DETECTION.value: ("detection_f1", "detection F1"),
    OutputKind.TOPK.value: ("topk_agreement", "top-k agreement"),
}


def headline(o: dict) -> tuple[str, float] | None:
    """(label, value) of a task output's own figure (a fraction), None for SQNR-judged outputs."""
    if o.get("index_agreement") is not None:
        return "index agreement", o["index_agreement"]
    key = _HEADLINE.get(o.get("kind", OutputKind.GENERIC.value))
    if key is None:
        return None
    value = o.get(key[0]) if key[0] in o and o.get(key[0]) is not None else (o.get("metrics") or {}).get(key[0])
    return None if value is None else (key[1], value)


def worst_output(outputs: Sequence[dict]) -> dict:
    """Of a verdict's outputs (``OutputQuality.to_dict()`` form), the one to show: a failing one
    first, then a judged one before a not-judged one; among those, a task figure (agreement, IoU,
    F1) below 1 first, lowest first, then the lowest whole-output SQNR."""
    def level(o: dict) -> tuple:
        head = headline(o)
        if head is not None:
            value = (1, 1e9) if head[1] >= 1.0 else (0, head[1])
        else:
            value = (1, o["sqnr_centered_db"] if o.get("sqnr_centered_db") is not None else 1e9)
        return (o.get("passed", True), o.get("not_judged") is not None, value)
    return min(outputs, key=level)


def level_text(o: dict) -> str:
    """"SQNR 23.1 dB", "identical", "top-1 agreement 97.2%", "not judged (...)"."""
    if o.get("not_judged") and not o.get("failures"):
        return f"not judged ({o['not_judged']})"
    head = headline(o)
    if head is not None:
        return f"{head[0]} {head[1]:.3f}" if head[0] in ("map IoU", "detection F1", "embedding cosine") else f"{head[0]} {_pct(head[1])}"
    value = o.get("sqnr_centered_db")
    return "identical" if value is None or value == math.inf else f"SQNR {value:.1f} dB"
