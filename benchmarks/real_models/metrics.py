"""Task metrics for comparing a quantized model's outputs with the float model's, numpy only.

Written independently of ``edgenet``'s verdict code (this is the check of those verdicts). Conventions:
CTC decoding as PaddleOCR's ``CTCLabelDecode`` (greedy argmax, collapse repeats, drop blank 0); DB text
maps binarized at 0.3 as rapidocr's ``DBPostProcess``; YOLOv8 boxes as (cx, cy, w, h) in input pixels,
NMS as nudenet (class-agnostic, IoU 0.45).
"""
from __future__ import annotations

import numpy as np


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2) in dB; inf when equal, nan when both are empty/zero."""
    ref = np.asarray(reference, np.float64).ravel()
    err = float(np.sum((ref - np.asarray(test, np.float64).ravel()) ** 2))
    sig = float(np.sum(ref ** 2))
    if err == 0.0:
        return float("inf") if sig > 0 else float("nan")
    return 10.0 * np.log10(sig / err) if sig > 0 else float("-inf")


def ctc_greedy(ids: np.ndarray, blank: int = 0) -> list[int]:
    """Greedy CTC: collapse repeated ids of consecutive steps, then drop ``blank``. ids: (T,) ints."""
    ids = np.asarray(ids).ravel()
    keep = np.ones(ids.shape, bool)
    keep[1:] = ids[1:] != ids[:-1]
    return [int(i) for i in ids[keep] if i != blank]


def ctc_text(probs: np.ndarray, charset: list[str]) -> str:
    """Decoded string of one CTC distribution (T, C); charset[i] is the character of class i (0 = blank)."""
    return "".join(charset[i] for i in ctc_greedy(np.argmax(probs, axis=-1)))


def binary_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean maps; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def count_regions(mask: np.ndarray, min_pixels: int = 10) -> int:
    """Connected regions (4-neighbour) of a boolean (H, W) map with at least ``min_pixels`` pixels, after a
    2x2 dilation (rapidocr's ``use_dilation``): the number of text boxes DB post-processing would start from."""
    m = np.asarray(mask, bool).copy()
    m[:-1, :] |= m[1:, :]
    m[:, :-1] |= m[:, 1:]
    from scipy import ndimage   # installed with edgenet[convert] (scikit-learn needs it)

    labels, n = ndimage.label(m)
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= min_pixels).sum())


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64)
    return np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes (N, 4) and (M, 4) in (x0, y0, x1, y1): (N, M)."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])   # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def yolo_detections(head: np.ndarray, score: float = 0.25, iou: float = 0.45
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one YOLOv8 head (4 + classes, anchors): class-agnostic greedy NMS.

    Returns (anchor indices, boxes (K, 4) x0y0x1y1, scores (K,), classes (K,)), highest score first.
    """
    cls = head[4:]
    best, label = cls.max(axis=0), cls.argmax(axis=0)
    idx = np.nonzero(best >= score)[0]
    idx = idx[np.argsort(-best[idx], kind="stable")]
    boxes = xywh_to_xyxy(head[:4, idx].T) if idx.size else np.zeros((0, 4))
    keep: list[int] = []
    suppressed = np.zeros(idx.size, bool)
    overlaps = box_iou(boxes, boxes) if idx.size else np.zeros((0, 0))
    for i in range(idx.size):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i] > iou
    k = np.array(keep, int)
    return idx[k], boxes[k], best[idx[k]], label[idx[k]]


def match_f1(ref_boxes, ref_classes, test_boxes, test_classes, iou: float = 0.5) -> tuple[int, int, int]:
    """Greedy one-to-one matching of test to reference detections, same class and IoU >= ``iou``.

    Returns (true positives, reference count, test count); F1 = 2 tp / (n_ref + n_test).
    """
    n_ref, n_test = len(ref_boxes), len(test_boxes)
    if n_ref == 0 or n_test == 0:
        return 0, n_ref, n_test
    ious = box_iou(ref_boxes, test_boxes)
    ious[np.asarray(ref_classes)[:, None] != np.asarray(test_classes)[None]] = 0.0
    tp = 0
    while True:
        i, j = np.unravel_index(np.argmax(ious), ious.shape)
        if ious[i, j] < iou:
            return tp, n_ref, n_test
        tp += 1
        ious[i, :] = 0.0
        ious[:, j] = 0.0


def text_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, min_size: int = 3) -> np.ndarray:
    """Text boxes of one DB probability map (H, W), as PaddleOCR's ``DBPostProcess`` finds them, with
    axis-aligned boxes for its minimum-area rectangles: connected regions (8-neighbour, as OpenCV's
    contours) of the map binarized at ``thresh``, each kept when its shorter side is at least
    ``min_size`` pixels and the map's mean over its box ("fast" score) at least ``box_thresh``.
    No unclip: both sides of a comparison are boxes of the same shrunk kernels. Returns (K, 4) x0y0x1y1."""
    from scipy import ndimage

    labels, n = ndimage.label(prob > thresh, structure=np.ones((3, 3), bool))
    boxes = []
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if min(h, w) < min_size or float(prob[sl].mean()) < box_thresh:
            continue
        boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return np.asarray(boxes, np.float64).reshape(-1, 4)
