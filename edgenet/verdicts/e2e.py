"""The verdict on an end-to-end (NMS-free) detector's output: the detections it lists, matched.

Layout ``e2e``: ``[N, K, 6]``, one detection a row -- box, score in [0, 1], class id (an integer
>= 0, as a float) -- rows sorted by descending score, K fixed (the graph's TopK: Ultralytics'
YOLOv10 and YOLO26 exports with ``nms=False``, K = max_det = 300, boxes x1, y1, x2, y2 in pixels;
Ultralytics' RT-DETR export, boxes cx, cy, w, h normalized to [0, 1]). The rows below the
detections are the TopK's leftovers, low scores the app drops.

Read from the values (:func:`is_e2e`, before the raw-head layouts: a single-class end-to-end
output has class ids 0 in column 5 and would read as a YOLOv5 head): six values a row, column 5
integer-valued and >= 0, column 4 in [0, 1], non-increasing along the rows of every example (all
equal too: an untrained head's scores are its bias), the output not all zero. The box format
(:func:`box_format`): x1 y1 x2 y2 when most rows that score at least ``SCORE_FLOOR`` (all rows if
none does) have x2 >= x1 and y2 >= y1, else cx cy w h when widths and heights are >= 0
everywhere (a centre format read as corners has x2 < x1 wherever w < cx), else corners (an
untrained YOLO26's boxes, whose distances have either sign).

Judged as the app reads it, per example: the rows at score >= ``score_threshold`` (no NMS: the
model selected them), int8's matched to float's by class and IoU >= ``match_iou``
(:func:`edgenet.verdicts.detection.match`) -> the detections' F1 with the borderline band of the
other layouts (:func:`edgenet.verdicts.detection.match_counts`). Rows are not aligned across the
two models -- int8 reorders detections whose scores are close and may list the other of two
near-equal candidates -- so nothing is compared row by row: boxes are judged on the matched pairs
(plain SQNR of their corners, ``min_box_sqnr_db``, and their mean IoU with float's, ``min_box_iou``:
SQNR is relative to the coordinates, IoU to the object), scores on the
matched pairs too (``min_score_sqnr_db``). Class ids are read rounded to the nearest integer (an
int8 output dequantizes them to multiples of its scale). When float detects nothing (at score >=
``score_threshold + score_band``) the output is not judged, unless int8 detects where float does not.
"""
from __future__ import annotations

import numpy as np

from edgenet.verdicts.base import OutputKind, OutputQuality, Thresholds, plain_sqnr_db
from edgenet.verdicts.detection import f1_judgement, iou_matrix, match_counts, xyxy
from edgenet.verdicts.tasks import _base

E2E_VALUES = 6          # x1, y1, x2, y2 (or cx, cy, w, h), score, class id
SCORE_FLOOR = 0.05      # rows scoring at least this decide the box format (the TopK's leftovers do not)
SCORE_SLACK = 1e-6      # float rounding allowed on a score's range and its descending order


def box_format(f: np.ndarray) -> str:
    """"xyxy" or "cxcywh": the box format of ``[N, K, 6]`` rows (module docstring)."""
    if ordered_share(f) >= 0.5 or np.asarray(f, dtype=np.float64)[..., 2:4].min() < 0:
        return "xyxy"
    return "cxcywh"


def ordered_share(f: np.ndarray) -> float:
    """Share of the ``[N, K, 6]`` rows scoring at least ``SCORE_FLOOR`` (all rows if none) whose corners
    are in order as written (x1 <= x2 and y1 <= y2)."""
    f = np.asarray(f, dtype=np.float64)
    b, s = f[..., :4], f[..., 4]
    rows = s >= SCORE_FLOOR
    seen = b[rows] if rows.any() else b.reshape(-1, 4)
    return float(((seen[:, 2] >= seen[:, 0]) & (seen[:, 3] >= seen[:, 1])).mean()) if len(seen) else 1.0


def is_e2e(f: np.ndarray) -> bool:
    """True when a float output reads as an end-to-end detector's ``[N, K, 6]`` (K >= 2): class
    ids in column 5, scores in [0, 1] sorted descending in column 4 (module docstring)."""
    f = np.asarray(f)
    if f.ndim != 3 or f.shape[2] != E2E_VALUES or f.shape[1] < 2 or not f.size or not np.isfinite(f).all():
        return False
    cls, s = f[..., 5].astype(np.float64), f[..., 4].astype(np.float64)
    if cls.min() < 0 or not np.array_equal(cls, np.rint(cls)):
        return False
    if s.min() < -SCORE_SLACK or s.max() > 1 + SCORE_SLACK or not f.any():
        return False
    return bool(np.all(np.diff(s, axis=1) <= SCORE_SLACK))


def e2e_arrays(y: np.ndarray, fmt: str, span: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes x1 y1 x2 y2 [N, K, 4], scores [N, K], class ids [N, K] int64) of ``[N, K, 6]`` rows;
    a row with a non-finite value scores -inf (never a detection), class ids rounded; with ``span``,
    each box the rectangle its corners span (x1 <= x2, y1 <= y2: what an app draws from them)."""
    y = np.asarray(y, dtype=np.float32)
    finite = np.isfinite(y).all(-1)
    boxes = xyxy(y[..., :4]) if fmt == "cxcywh" else y[..., :4]
    if span:   # float's own boxes mostly unordered (e2e_quality): the rectangle the corners span
        boxes = np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])],
                               axis=-1)
    scores = np.where(finite, y[..., 4], -np.inf)
    classes = np.where(finite, np.rint(np.where(finite, y[..., 5], 0)), -1).astype(np.int64)
    return boxes, scores, classes


def e2e_detections(y: np.ndarray, fmt: str, threshold: float, span: bool = False):
    """Per example: (boxes x1y1x2y2 [k, 4], scores [k], classes [k]), the rows at score >= ``threshold``
    (``span``: :func:`e2e_arrays`)."""
    boxes, scores, classes = e2e_arrays(y, fmt, span)
    out = []
    for n in range(len(scores)):
        keep = scores[n] >= threshold
        out.append((boxes[n][keep], scores[n][keep], classes[n][keep]))
    return out


def _matched(found_f, found_q, pairs):
    """(float boxes [m, 4], int8 boxes [m, 4], float scores [m], int8 scores [m], IoUs [m]) of the
    matched pairs over the examples."""
    bf, bq, sf, sq, ious = [], [], [], [], []
    for (b1, s1, _), (b2, s2, _), p in zip(found_f, found_q, pairs):
        m = p >= 0
        if not m.any():
            continue
        a, b = b1[m], b2[p[m]]
        bf.append(a)
        bq.append(b)
        sf.append(s1[m])
        sq.append(s2[p[m]])
        ious.append(np.diag(iou_matrix(a, b)))
    if not bf:
        return (np.zeros((0, 4), np.float32),) * 2 + (np.zeros(0, np.float32),) * 3
    return tuple(np.concatenate(x) for x in (bf, bq, sf, sq, ious))


def e2e_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, thresholds: Thresholds) -> OutputQuality:
    """An end-to-end detector's ``[N, K, 6]`` output judged by its detections (module docstring):
    failures "f1" (or "extra" where float detects nothing), "boxes", "scores", "nan"."""
    f = np.asarray(float_out, dtype=np.float32)
    q = np.asarray(quant_out, dtype=np.float32)
    fmt = box_format(f)
    failures: dict[str, str] = {} if np.isfinite(q).all() else {"nan": "NaN or infinite values"}
    t, band = thresholds.score_threshold, thresholds.score_band
    # boxes whose distances have either sign (an untrained YOLO26: 92% of its detections had x2 < x1)
    # have no area as written and matched nothing, not even themselves (float against float: F1 0.08):
    # where float's own boxes are mostly unordered, both sides' are read as the rectangle their corners
    # span; where float's are ordered, the quantized model's are judged as written (swapped corners
    # there are a damage: an app computing x2 - x1 gets a negative width)
    span = fmt == "xyxy" and ordered_share(f) < 0.5
    found_f = e2e_detections(f, fmt, max(t - band, 0.0), span)
    found_q = e2e_detections(q, fmt, t, span)
    counts, pairs = match_counts(found_f, found_q, thresholds)
    nq = sum(len(d[1]) for d in found_q)
    bf, bq, sf, sq, ious = _matched(found_f, found_q, pairs)
    metrics: dict = {"layout": "e2e", "box_format": fmt, "detections_float": counts["decided"],
                     "detections_quantized": nq, "matched": counts["matched"], "borderline": counts["borderline"],
                     "extra": counts["extra"], "matched_pairs": int(len(ious)),
                     "box_iou_mean": float(ious.mean()) if len(ious) else None,
                     "box_sqnr_db": plain_sqnr_db(bf, bq) if len(ious) else None,
                     "score_sqnr_db": plain_sqnr_db(sf, sq) if len(ious) else None}
    not_judged = f1_judgement(counts, nq, thresholds, failures, metrics)
    if counts["decided"]:
        box, score = metrics["box_sqnr_db"], metrics["score_sqnr_db"]
        iou = metrics["box_iou_mean"]
        if box is not None and not box >= thresholds.min_box_sqnr_db:
            failures["boxes"] = (f"boxes of the {len(ious)} matched detections: SQNR {box:.1f} dB < "
                                 f"{thresholds.min_box_sqnr_db:g} dB (mean IoU {iou:.2f})")
        elif iou is not None and not iou >= thresholds.min_box_iou:
            # SQNR is relative to the coordinates (~160 px): a box off by 8 px of a 40 px object keeps
            # 30+ dB; IoU is relative to the object (a YOLO26n whose int8 boxes kept 36 dB lost a fifth
            # of its AP50-95 at mean IoU 0.86)
            failures["boxes"] = (f"boxes of the {len(ious)} matched detections: mean IoU with float's {iou:.2f} < "
                                 f"{thresholds.min_box_iou:g}")
        if score is not None and not score >= thresholds.min_score_sqnr_db:
            failures["scores"] = (f"scores of the {len(ious)} matched detections: SQNR {score:.1f} dB < "
                                  f"{thresholds.min_score_sqnr_db:g} dB")
    return _base(name, f, q, OutputKind.DETECTION, "detection", tuple(failures.values()), metrics,
                 not_judged=not_judged)
