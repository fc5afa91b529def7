"""ddddocr 1.6.1's models in the real-models benchmark: rendered captchas and their task metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics, render
from .data import MATCH_IOU, Data

# ---- ddddocr: a CRNN (conv + bidirectional LSTM, time-first CTC output) and a YOLOX character detector ------

DDDDOCR = Path("ddddocr/ddddocr")
CAPTCHA_W = 192


def _make_captcha(rng: np.random.Generator, n: int) -> Data:
    pairs = [render.captcha(rng, CAPTCHA_W, 64) for _ in range(n)]
    return Data(np.stack([p[0][None].astype(np.float32) / 255.0 for p in pairs]), [p[1] for p in pairs])


def ddddocr_charset(model_path: Path) -> list[str]:
    """``CHARSET_BETA`` (``common.onnx``) or ``CHARSET_OLD`` (``common_old.onnx``, ddddocr's default
    model) of the wheel's ``charsets.py`` (read as a literal, never executed)."""
    import ast

    wanted = "CHARSET_OLD" if model_path.name == "common_old.onnx" else "CHARSET_BETA"
    tree = ast.parse((model_path.parent / "charsets.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == wanted for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"{model_path.parent / 'charsets.py'}: no {wanted}")


def _captcha_text(scores: np.ndarray, chars: list[str]) -> str:
    ids = scores.reshape(scores.shape[0], -1).argmax(-1)       # [T, 1, C] -> per step
    return "".join(chars[i] for i in metrics.ctc_greedy(ids, 0))


def _judge_captcha(fl: list, q: list, data: Data, path: Path) -> dict:
    chars = ddddocr_charset(path)
    steps = agree = same = f_ok = q_ok = 0
    for f, i8, truth in zip(fl, q, data.truth):
        fa, qa = (a.reshape(a.shape[0], -1).argmax(-1) for a in (f, i8))
        agree, steps = agree + int((fa == qa).sum()), steps + fa.size
        ft, qt = _captcha_text(f, chars), _captcha_text(i8, chars)
        same += ft == qt
        f_ok += ft.lower() == truth
        q_ok += qt.lower() == truth
    n = len(data.truth)
    return {"per_step_agreement": agree / steps, "string_agreement": same / n, "float_accuracy": f_ok / n,
            "int8_accuracy": q_ok / n, "examples": n, "charset_size": len(chars),
            "targets": {"string_agreement >= 0.95": same / n >= 0.95}}


def _make_clicks(rng: np.random.Generator, n: int) -> Data:
    return Data(np.stack([render.click_captcha(rng).astype(np.float32).transpose(2, 0, 1) for _ in range(n)]),
                [None] * n)


def _yolox_boxes(head: np.ndarray, size: int = 416, score: float = 0.1, iou: float = 0.45):
    """ddddocr's decoding of a ``[1, A, 5 + C]`` YOLOX head: (xyxy boxes [k, 4], classes [k]) after NMS."""
    grids, strides = [], []
    for stride in (8, 16, 32):
        n = size // stride
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    p = head.reshape(-1, head.shape[-1]).astype(np.float64)
    xy, wh = (p[:, :2] + grid) * stride, np.exp(np.clip(p[:, 2:4], -20, 20)) * stride
    scores = p[:, 4:5] * p[:, 5:]
    cls, best = scores.argmax(1), scores.max(1)
    keep = np.flatnonzero(best >= score)
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[keep]
    order, chosen = list(np.argsort(-best[keep])), []
    while order:
        i = order.pop(0)
        chosen.append(i)
        if order:
            rest = np.asarray(order)
            order = [int(j) for j, o in zip(rest, metrics.box_iou(boxes[i:i + 1], boxes[rest])[0]) if o <= iou]
    return boxes[chosen], cls[keep][chosen]


def _judge_clicks(fl: list, q: list, data: Data, _path: Path) -> dict:
    tp = n_f = n_q = 0
    for f, i8 in zip(fl, q):
        fb, fc = _yolox_boxes(f)
        qb, qc = _yolox_boxes(i8)
        t, a, b = metrics.match_f1(fb, fc, qb, qc, MATCH_IOU)
        tp, n_f, n_q = tp + t, n_f + a, n_q + b
    out = {"float_detections": n_f, "int8_detections": n_q, "matched": tp, "examples": len(fl)}
    if n_f == 0:
        return {**out, "not_judged": "no detections in float", "targets": {}}
    f1 = 2 * tp / (n_f + n_q)
    return {**out, "detection_f1": f1, "targets": {"detection_f1 >= 0.9": f1 >= 0.9}}
