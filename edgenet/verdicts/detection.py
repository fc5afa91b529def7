"""The verdict on a detector head: the detections it gives, not the SQNR of its tensor.

Layouts (boxes as centre x, centre y, width, height; in pixels or normalized to [0, 1]):

* ``v8``: ``[N, 4 + C, anchors]`` (Ultralytics YOLOv8/v11: class scores after a sigmoid, no
  objectness); the same transposed, ``[N, anchors, 4 + C]``, with ``detection:v8``;
* ``v5``: ``[N, anchors, 5 + C]`` (YOLOv5/v7: objectness at index 4, score = objectness x class);
* ``detr``: ``[N, queries, 4 + C]`` (DETR / RT-DETR: boxes normalized to [0, 1], then class
  scores, or logits read through a sigmoid), and the same as two outputs, boxes ``[N, Q, 4]``
  beside scores or logits ``[N, Q, C]`` (:func:`paired_detection_quality`; boxes given as x1 y1 x2
  y2 are read as such);
* ``e2e``: ``[N, K, 6]``, an end-to-end (NMS-free) detector's detections, one a row: x1 y1 x2 y2
  (or cx cy w h), score, class id, rows sorted by score (Ultralytics' YOLOv10 / YOLO26 exports):
  judged by :mod:`edgenet.verdicts.e2e` (no NMS, the rows at score >= ``score_threshold`` matched
  by class and IoU with this module's :func:`match_counts`; boxes and scores on the matched pairs,
  rows being in no fixed order across models).

Without a layout given it is read from the values (:func:`detection_layout`): e2e first (class
ids in column 5, scores sorted in column 4); many anchors (16x more than values per anchor) on
axis 2 are v8, on axis 1 v5; fewer rows are DETR's queries.

Scores are judged where they matter: the detections at score >= ``score_threshold`` after
per-class non-maximum suppression (IoU ``nms_iou``; harmless for DETR, whose queries do not
overlap), int8's matched to float's greedily by score at IoU >= ``match_iou`` with the same class
-> F1 (``min_detection_f1``, pooled over examples), on the detections float decides: a float
detection whose score is within ``score_band`` of the threshold (borderline: 0.27 in float, 0.24 in
int8 at 0.25 is rounding, not a lost object) is neither required of int8 nor, when int8 has it,
counted against it; an int8 detection is extra only when no float detection of its class at score
>= ``score_threshold - score_band`` matches it (``borderline`` counts them). The SQNR of the scores
where either side is at least ``score_floor`` (``min_score_sqnr_db``), so the many near-zero scores
of empty images neither fail nor pass a model by themselves. Boxes are judged by their plain SQNR
on the anchors float detects (pre-NMS; ``min_box_sqnr_db``). When float decides no detection on
the evaluation data, the output is not judged (unless int8 detects where float has nothing).
"""
from __future__ import annotations

import numpy as np

from edgenet.verdicts.base import OutputKind, OutputQuality, Thresholds, plain_sqnr_db
from edgenet.verdicts.generic import ROWS_PER_CHANNEL
from edgenet.verdicts.tasks import NO_SIGNAL, _base

LAYOUTS = ("v8", "v5", "detr", "e2e")
ROWS_PER_VALUE = ROWS_PER_CHANNEL   # a YOLO head has at least this many anchors per value


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


def _in01(x: np.ndarray, tol: float = 0.0) -> bool:
    return bool(x.size) and float(x.min()) >= -tol and float(x.max()) <= 1 + tol


def normalized_boxes(boxes: np.ndarray) -> bool:
    """``[N, P, 4]`` cx, cy, w, h normalized to the image: in [0, 1] (1% slack), w and h >= 0,
    centres spread over the image: cx and cy each with its median within [0.1, 0.9] and varying
    across positions (std > 0.05; anchors and queries tile the image, where sigmoid class scores
    read as boxes sit near 0 or 1: an SSD head's background and object columns)."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 3 or b.shape[-1] != 4 or not _in01(b, 0.01) or b[..., 2:].min() < 0:
        return False
    for k in (0, 1):
        c = b[..., k]
        if not (0.1 <= np.median(c) <= 0.9 and c.std(axis=1).mean() > 0.05):
            return False
    return True


def sparse_scores(scores: np.ndarray) -> bool:
    """Class scores (or logits, through a sigmoid) of which most positions detect nothing: the
    median over positions of their best class score is under 0.5."""
    s = np.asarray(scores, dtype=np.float32)
    s = s if _in01(s, 1e-6) else _sigmoid(s)
    return bool(s.size) and float(np.median(s.max(-1))) < 0.5


def detection_layout(f: np.ndarray) -> str | None:
    """The layout of a rank-3 float head from its values, or None when it is no detection head:
    v8 / v5 for YOLO's many anchors (scores in [0, 1], boxes in pixels or normalized), detr for
    ``[N, queries, 4 + C]`` with normalized boxes and mostly-empty scores or logits, e2e for an
    end-to-end detector's ``[N, K, 6]`` detections (:func:`edgenet.verdicts.e2e.is_e2e`, read first)."""
    from edgenet.verdicts.e2e import is_e2e

    f = np.asarray(f)
    if is_e2e(f):
        return "e2e"
    if f.ndim != 3 or min(f.shape[1:]) < 5 or not f.size or not np.isfinite(f).all():
        return None
    a, b = f.shape[1], f.shape[2]
    if max(a, b) >= ROWS_PER_VALUE * min(a, b):
        rows = np.transpose(f, (0, 2, 1)) if a < b else f
        scores, boxes = rows[..., 4:], rows[..., :4]
        if _in01(scores) and ((boxes.max() > 1 or boxes.min() < 0)
                              or (normalized_boxes(boxes) and sparse_scores(scores))):
            return "v8" if a < b else "v5"
    if normalized_boxes(f[..., :4]) and sparse_scores(f[..., 4:]):
        return "detr"
    return None


def rows_view(y: np.ndarray, layout: str | None) -> tuple[np.ndarray, str]:
    """([N, anchors, values] rows, layout) of a rank-3 head: DETR's as they are; YOLO's values on
    the shorter axis. No layout given: :func:`detection_layout`, else v8 for values on axis 1, v5
    for values last (the YOLO reading)."""
    y = np.asarray(y, dtype=np.float32)
    layout = layout or detection_layout(y)
    if layout == "detr":
        return y, layout
    first = y.shape[1] < y.shape[2]          # values on axis 1: [N, 4 + C, anchors]
    rows = np.transpose(y, (0, 2, 1)) if first else y
    return rows, layout or ("v8" if first else "v5")


def scores_of(rows: np.ndarray, layout: str, logits: bool = False) -> np.ndarray:
    """[N, anchors, C] class scores (v5: objectness x class; detr: ``logits`` through a sigmoid)."""
    if layout == "v5":
        return rows[..., 4:5] * rows[..., 5:] if rows.shape[-1] > 5 else rows[..., 4:5]
    return _sigmoid(rows[..., 4:]) if logits else rows[..., 4:]


def xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = (boxes[..., k] for k in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [n, 4] with every box of ``b`` [m, 4] (x1, y1, x2, y2)."""
    w = np.minimum(a[:, None, 2], b[None, :, 2])
    w -= np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3])
    h -= np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0, out=w)
    inter *= np.maximum(h, 0, out=h)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    positive = union > 0
    return np.where(positive, inter / np.where(positive, union, 1), 0.0)


NMS_BLOCK = 1024   # boxes whose IoU with each other NMS computes at once (a block of 1024 x 1024 float64: 8 MB)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, classes: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first. ``classes`` given: per
    class (boxes of different classes never suppress each other), else class-agnostic.

    Boxes are visited by descending score; each box not suppressed yet is kept and suppresses every
    later box of its class with IoU > ``iou``. The IoUs of a block of :data:`NMS_BLOCK` kept-candidates
    against the later boxes are computed in one array operation (the same elementwise arithmetic as
    :func:`iou_matrix` on one box at a time, so the same boxes are kept): a head with thousands of
    candidates an image is not suppressed one Python-level array call per kept box."""
    order = np.argsort(-scores, kind="stable")
    n = order.size
    if not n:
        return np.zeros(0, dtype=np.int64)
    b = boxes[order]
    c = None if classes is None else classes[order]
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for start in range(0, n, NMS_BLOCK):
        stop = min(start + NMS_BLOCK, n)
        overlap = iou_matrix(b[start:stop], b[start:])        # [block, n - start]
        drop = overlap > iou
        if c is not None:
            drop &= c[start:stop, None] == c[None, start:]
        for k in range(stop - start):
            if suppressed[start + k]:
                continue
            keep.append(int(order[start + k]))
            suppressed[start + k + 1:] |= drop[k, k + 1:]
    return np.asarray(keep, dtype=np.int64)


def detections(rows: np.ndarray, layout: str, thresholds: Thresholds, per_class: bool = True,
               threshold: float | None = None, logits: bool = False):
    """Per example: (boxes x1y1x2y2 [k, 4], scores [k], classes [k]) at score >= ``threshold``
    (default ``score_threshold``) after NMS."""
    scores = scores_of(rows, layout, logits)
    best, cls = scores.max(-1), scores.argmax(-1)
    threshold = thresholds.score_threshold if threshold is None else threshold
    out = []
    for n in range(len(rows)):
        idx = np.flatnonzero(best[n] >= threshold)
        boxes = xyxy(rows[n, idx, :4])
        keep = nms(boxes, best[n, idx], thresholds.nms_iou, cls[n, idx] if per_class else None)
        out.append((boxes[keep], best[n, idx][keep], cls[n, idx][keep]))
    return out


def match(found_f, found_q, iou: float) -> np.ndarray:
    """For each float detection (in ``found_f``'s order) the int8 detection matched to it (same
    class, IoU >= ``iou``), or -1: float's detections taken by descending score, each matched to the
    unmatched int8 detection it overlaps most."""
    (bf, sf, cf), (bq, _, cq) = found_f, found_q
    pairs = np.full(len(bf), -1, dtype=np.int64)
    if not len(bf) or not len(bq):
        return pairs
    overlap = iou_matrix(bf, bq)
    overlap[cf[:, None] != cq[None, :]] = 0.0
    used = np.zeros(len(bq), dtype=bool)
    for i in np.argsort(-sf, kind="stable"):
        cand = np.where(used, -1.0, overlap[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            used[j] = True
            pairs[i] = j
    return pairs


def match_counts(found_f, found_q, thresholds: Thresholds) -> tuple[dict, list[np.ndarray]]:
    """Float's detections (at score >= ``score_threshold - score_band``) against int8's (at
    ``score_threshold``), per example (:func:`match`): ({"matched", "missed", "extra", "borderline",
    "decided"} counts over the examples, the pairs of each example). A float detection within
    ``score_band`` of the threshold is borderline (neither required nor counted against int8); an
    int8 detection no float one matches is extra."""
    t, band = thresholds.score_threshold, thresholds.score_band
    counts = {"matched": 0, "missed": 0, "extra": 0, "borderline": 0, "decided": 0}
    all_pairs = []
    for a, b in zip(found_f, found_q):
        pairs = match(a, b, thresholds.match_iou)
        decided = a[1] >= t + band
        counts["matched"] += int(np.sum(decided & (pairs >= 0)))
        counts["missed"] += int(np.sum(decided & (pairs < 0)))
        counts["borderline"] += int(np.sum(~decided))
        counts["decided"] += int(decided.sum())
        counts["extra"] += len(b[1]) - int(np.sum(pairs >= 0))
        all_pairs.append(pairs)
    return counts, all_pairs


def f1_judgement(counts: dict, nq: int, thresholds: Thresholds, failures: dict, metrics: dict) -> str | None:
    """The detections' F1 from :func:`match_counts`' ``counts`` (``nq``: int8's detections) into
    ``failures`` ("f1" / "extra") and ``metrics`` (detection_f1); returns why the output is not
    judged (float decides no detection and int8 adds none), else None."""
    t, band = thresholds.score_threshold, thresholds.score_band
    hits, missed, extra, borderline, nf = (counts[k] for k in ("matched", "missed", "extra", "borderline", "decided"))
    if nf == 0:
        if extra:
            failures["extra"] = (f"{extra} detection(s) at score >= {t:g} where float detects none (at score >= "
                                 f"{t - band:g})")
            return None
        return (f"{NO_SIGNAL}: float detects nothing at score >= {t + band:g} ({borderline} borderline "
                f"detection(s) within {band:g} of {t:g})")
    f1 = 2 * hits / (2 * hits + missed + extra)
    metrics["detection_f1"] = f1
    if f1 < thresholds.min_detection_f1:
        failures["f1"] = (f"detections F1 {f1:.2f} < {thresholds.min_detection_f1:g} ({hits} of float's {nf} "
                          f"found at IoU >= {thresholds.match_iou:g}, {extra} of int8's {nq} not float's; "
                          f"{borderline} borderline within {band:g} of score {t:g} not judged)")
    return None


def _judge_rows(f: np.ndarray, q: np.ndarray, layout: str, thresholds: Thresholds, logits: bool):
    """(failures as {"nan"|"f1"|"extra"|"boxes"|"scores": text}, metrics, not_judged) of the
    head's rows [N, anchors, values] in float and int8."""
    failures: dict[str, str] = {} if np.isfinite(q).all() else {"nan": "NaN or infinite values"}
    t, band = thresholds.score_threshold, thresholds.score_band
    found_f = detections(f, layout, thresholds, threshold=max(t - band, 0.0), logits=logits)
    found_q = detections(q, layout, thresholds, logits=logits)
    counts, _ = match_counts(found_f, found_q, thresholds)
    nq = sum(len(d[1]) for d in found_q)
    metrics: dict = {"layout": layout, "detections_float": counts["decided"], "detections_quantized": nq,
                     "matched": counts["matched"], "borderline": counts["borderline"], "extra": counts["extra"]}
    sf, sq = scores_of(f, layout, logits), scores_of(q, layout, logits)
    judged = (sf >= thresholds.score_floor) | (sq >= thresholds.score_floor)
    metrics["score_sqnr_db"] = plain_sqnr_db(sf[judged], sq[judged]) if judged.any() else None
    detected = sf.max(-1) >= t
    metrics["box_sqnr_db"] = plain_sqnr_db(f[..., :4][detected], q[..., :4][detected]) if detected.any() else None
    metrics["detecting_anchors"] = int(detected.sum())
    not_judged = f1_judgement(counts, nq, thresholds, failures, metrics)
    if counts["decided"]:
        box = metrics["box_sqnr_db"]
        if box is not None and not box >= thresholds.min_box_sqnr_db:
            failures["boxes"] = (f"boxes of the {int(detected.sum())} detecting anchors: SQNR {box:.1f} dB < "
                                 f"{thresholds.min_box_sqnr_db:g} dB")
        score = metrics["score_sqnr_db"]
        if score is not None and not score >= thresholds.min_score_sqnr_db:
            failures["scores"] = (f"scores >= {thresholds.score_floor:g}: SQNR {score:.1f} dB < "
                                  f"{thresholds.min_score_sqnr_db:g} dB")
    return failures, metrics, not_judged


def detection_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                      thresholds: Thresholds, layout: str | None = None) -> OutputQuality:
    """A rank-3 detector head judged by its detections (F1), its boxes and its scores above a floor;
    an end-to-end detector's ``[N, K, 6]`` (layout e2e) by :func:`edgenet.verdicts.e2e.e2e_quality`."""
    layout = layout or detection_layout(float_out)
    if layout == "e2e":
        from edgenet.verdicts.e2e import e2e_quality

        return e2e_quality(name, float_out, quant_out, thresholds)
    f, layout = rows_view(float_out, layout)
    q, _ = rows_view(quant_out, layout)
    logits = layout == "detr" and not _in01(f[..., 4:], 1e-6)
    failures, metrics, not_judged = _judge_rows(f, q, layout, thresholds, logits)
    if logits:
        metrics["scores_from"] = "logits (sigmoid)"
    return _base(name, np.asarray(float_out, dtype=np.float32), np.asarray(quant_out, dtype=np.float32),
                 OutputKind.DETECTION, "query" if layout == "detr" else "anchor", tuple(failures.values()), metrics,
                 not_judged=not_judged)


def box_rows(boxes: np.ndarray) -> np.ndarray:
    """``[N, Q, 4]`` boxes as cx, cy, w, h: x1 y1 x2 y2 (ordered at every position) converted."""
    b = np.asarray(boxes, dtype=np.float32)
    if np.all(b[..., 2] >= b[..., 0]) and np.all(b[..., 3] >= b[..., 1]) and not normalized_boxes(b):
        return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0],
                         b[..., 3] - b[..., 1]], -1)
    return b


def paired_detection_quality(name: str, role: str, partner: str, boxes_f: np.ndarray, boxes_q: np.ndarray,
                             scores_f: np.ndarray, scores_q: np.ndarray, thresholds: Thresholds) -> OutputQuality:
    """One output of a two-output head, boxes ``[N, Q, 4]`` beside class scores or logits
    ``[N, Q, C]`` (DETR's ``pred_boxes`` and ``pred_logits``): the head is judged as one
    (:func:`detection_quality`'s detr layout); ``role`` "scores" carries the detections' F1 and the
    scores' SQNR, "boxes" the boxes' SQNR on the queries float detects. ``partner``: the other
    output's name (metrics ``paired_with``)."""
    bf, bq = box_rows(boxes_f), box_rows(boxes_q)
    f = np.concatenate([bf, np.asarray(scores_f, dtype=np.float32)], -1)
    q = np.concatenate([bq, np.asarray(scores_q, dtype=np.float32)], -1)
    logits = not _in01(f[..., 4:], 1e-6)
    failures, metrics, not_judged = _judge_rows(f, q, "detr", thresholds, logits)
    metrics["paired_with"] = partner
    if logits:
        metrics["scores_from"] = "logits (sigmoid)"
    if role == "boxes":
        failures = {k: v for k, v in failures.items() if k == "boxes" or (k == "nan" and not np.isfinite(bq).all())}
        own_f, own_q = boxes_f, boxes_q
    else:
        failures = {k: v for k, v in failures.items() if k != "boxes" and (k != "nan" or not np.isfinite(
            np.asarray(scores_q)).all())}
        own_f, own_q = scores_f, scores_q
    return _base(name, np.asarray(own_f, dtype=np.float32), np.asarray(own_q, dtype=np.float32), OutputKind.DETECTION,
                 "query", tuple(failures.values()), metrics, not_judged=not_judged)
