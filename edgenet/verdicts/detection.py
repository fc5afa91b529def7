"""The verdict on a detector head: the detections it gives, not the SQNR of its tensor.

Layouts (YOLO's raw heads, boxes as centre x, centre y, width, height):

* ``v8``: ``[N, 4 + C, anchors]`` (Ultralytics YOLOv8/v11: class scores after a sigmoid, no
  objectness); the same transposed, ``[N, anchors, 4 + C]``, with ``detection:v8``;
* ``v5``: ``[N, anchors, 5 + C]`` (YOLOv5/v7: objectness at index 4, score = objectness x class).

Without a layout given, rows of values on axis 1 are read as v8, rows on the last axis as v5.

Scores are judged where they matter: the detections at score >= ``score_threshold`` after
per-class non-maximum suppression (IoU ``nms_iou``), int8's matched to float's greedily by score
at IoU >= ``match_iou`` with the same class -> F1 (``min_detection_f1``, pooled over examples);
and the SQNR of the scores where either side is at least ``score_floor`` (``min_score_sqnr_db``),
so the many near-zero scores of empty images neither fail nor pass a model by themselves. Boxes
are judged by their plain SQNR on the anchors float detects (pre-NMS; ``min_box_sqnr_db``). When
float detects nothing on the evaluation data, the output is not judged (unless int8 does).
"""
from __future__ import annotations

import numpy as np

from edgenet.verdicts.base import OutputKind, OutputQuality, Thresholds, plain_sqnr_db
from edgenet.verdicts.tasks import NO_SIGNAL, _base

LAYOUTS = ("v8", "v5")


def rows_view(y: np.ndarray, layout: str | None) -> tuple[np.ndarray, str]:
    """([N, anchors, values] rows, layout) of a rank-3 head; values on the shorter axis."""
    y = np.asarray(y, dtype=np.float32)
    first = y.shape[1] < y.shape[2]          # values on axis 1: [N, 4 + C, anchors]
    rows = np.transpose(y, (0, 2, 1)) if first else y
    return rows, layout or ("v8" if first else "v5")


def scores_of(rows: np.ndarray, layout: str) -> np.ndarray:
    """[N, anchors, C] class scores (v5: objectness x class)."""
    if layout == "v5":
        return rows[..., 4:5] * rows[..., 5:] if rows.shape[-1] > 5 else rows[..., 4:5]
    return rows[..., 4:]


def xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = (boxes[..., k] for k in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [n, 4] with every box of ``b`` [m, 4] (x1, y1, x2, y2)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, classes: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first. ``classes`` given: per
    class (boxes of different classes never suppress each other), else class-agnostic."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        overlap = iou_matrix(boxes[i:i + 1], boxes[rest])[0]
        drop = overlap > iou
        if classes is not None:
            drop &= classes[rest] == classes[i]
        order = rest[~drop]
    return np.asarray(keep, dtype=np.int64)


def detections(rows: np.ndarray, layout: str, thresholds: Thresholds, per_class: bool = True):
    """Per example: (boxes x1y1x2y2 [k, 4], scores [k], classes [k]) after threshold and NMS."""
    scores = scores_of(rows, layout)
    best, cls = scores.max(-1), scores.argmax(-1)
    out = []
    for n in range(len(rows)):
        idx = np.flatnonzero(best[n] >= thresholds.score_threshold)
        boxes = xyxy(rows[n, idx, :4])
        keep = nms(boxes, best[n, idx], thresholds.nms_iou, cls[n, idx] if per_class else None)
        out.append((boxes[keep], best[n, idx][keep], cls[n, idx][keep]))
    return out


def match(found_f, found_q, iou: float) -> int:
    """Matched pairs (same class, IoU >= ``iou``), float's detections taken by descending score,
    each matched to the unmatched int8 detection it overlaps most."""
    (bf, sf, cf), (bq, _, cq) = found_f, found_q
    if not len(bf) or not len(bq):
        return 0
    overlap = iou_matrix(bf, bq)
    overlap[cf[:, None] != cq[None, :]] = 0.0
    used = np.zeros(len(bq), dtype=bool)
    hits = 0
    for i in np.argsort(-sf, kind="stable"):
        cand = np.where(used, -1.0, overlap[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            used[j] = True
            hits += 1
    return hits


def detection_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                      thresholds: Thresholds, layout: str | None = None) -> OutputQuality:
    """A rank-3 detector head judged by its detections (F1), its boxes and its scores above a floor."""
    f, layout = rows_view(float_out, layout)
    q, _ = rows_view(quant_out, layout)
    failures = [] if np.isfinite(q).all() else ["NaN or infinite values"]
    found_f, found_q = detections(f, layout, thresholds), detections(q, layout, thresholds)
    nf, nq = sum(len(d[1]) for d in found_f), sum(len(d[1]) for d in found_q)
    hits = sum(match(a, b, thresholds.match_iou) for a, b in zip(found_f, found_q))
    metrics: dict = {"layout": layout, "detections_float": nf, "detections_quantized": nq, "matched": hits}
    sf, sq = scores_of(f, layout), scores_of(q, layout)
    judged = (sf >= thresholds.score_floor) | (sq >= thresholds.score_floor)
    metrics["score_sqnr_db"] = plain_sqnr_db(sf[judged], sq[judged]) if judged.any() else None
    detected = sf.max(-1) >= thresholds.score_threshold
    metrics["box_sqnr_db"] = plain_sqnr_db(f[..., :4][detected], q[..., :4][detected]) if detected.any() else None
    not_judged = None
    if nf == 0:
        if nq:
            failures.append(f"{nq} detection(s) at score >= {thresholds.score_threshold:g} where float detects none")
        else:
            not_judged = f"{NO_SIGNAL}: float detects nothing at score >= {thresholds.score_threshold:g}"
    else:
        f1 = 2 * hits / (nf + nq)
        metrics["detection_f1"] = f1
        if f1 < thresholds.min_detection_f1:
            failures.append(f"detections F1 {f1:.2f} < {thresholds.min_detection_f1:g} ({hits} of float's {nf} "
                            f"found at IoU >= {thresholds.match_iou:g}, {nq - hits} of int8's {nq} not float's)")
        box = metrics["box_sqnr_db"]
        if box is not None and not box >= thresholds.min_box_sqnr_db:
            failures.append(f"boxes of the {int(detected.sum())} detecting anchors: SQNR {box:.1f} dB < "
                            f"{thresholds.min_box_sqnr_db:g} dB")
        score = metrics["score_sqnr_db"]
        if score is not None and not score >= thresholds.min_score_sqnr_db:
            failures.append(f"scores >= {thresholds.score_floor:g}: SQNR {score:.1f} dB < "
                            f"{thresholds.min_score_sqnr_db:g} dB")
    out = _base(name, np.asarray(float_out, dtype=np.float32), np.asarray(quant_out, dtype=np.float32),
                OutputKind.DETECTION, "anchor", failures, metrics, not_judged=not_judged)
    return out
