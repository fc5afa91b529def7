"""The repair of an end-to-end (NMS-free) detector's int8 boxes (converters/repair/backward.py,
graph.tail): the decode after the last convs (anchors -/+ distances, times the stride) is int8 with
one scale over every anchor's box, the background anchors' wild boxes included, so the detections'
boxes land on a coarse grid (YOLO26n: 7.5 px, mean IoU 0.86). The search by segments counted the
model as it runs and stopped at its cap of ops before the decode, last in the model; the outputs'
arithmetic tail is now a segment of its own, right after the outputs' producers.

The model: tests/e2e_detector.py (a YOLO26-shaped head on a small backbone of 1x1 convs)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edgenet.converters.repair.graph import LEARNED, ops, tail  # noqa: E402
from edgenet.errors import ConversionError  # noqa: E402
from edgenet.verdicts.base import Thresholds  # noqa: E402
from edgenet.verdicts.e2e import e2e_quality  # noqa: E402
from e2e_detector import detector, squares  # noqa: E402

DECODE = {"lt", "rb", "x1y1", "x2y2", "cells", "pixels", "kbox"}   # the ONNX model's decode tensors


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    onnx.save(detector(), d / "det.onnx")
    np.save(d / "calib.npy", squares(np.random.default_rng(1), 128))
    return d


def _convert(files, out: str, **kw):
    import edgenet

    return edgenet.convert(str(files / "det.onnx"), int8=True, target="rpi", calib=str(files / "calib.npy"),
                           mean=[0.0], std=[1.0], out=files / out, **kw)


@pytest.fixture(scope="module")
def converted(files):
    return _convert(files, "o")


def test_the_tail_is_the_decode_and_the_selection_not_the_convs(files, converted):
    listing = ops((files / "o" / "model_float.tflite").read_bytes())
    found = tail(listing, {op.name for op in listing if op.output_position is not None})
    kinds = {op.name: op.op for op in listing}
    assert DECODE <= found, DECODE - found
    assert {"probs", "best", "top", "kscores"} <= found           # the sigmoid, the TopK, the gathers
    assert not {kinds[n] for n in found} & LEARNED
    assert len(found) < len(listing) / 2                          # the backbone is not in it


def test_the_repair_reaches_the_decode_and_the_boxes_keep_their_place(files, converted):
    r = converted
    mp = r.report.mixed_precision
    assert mp and mp["passed"], r.report.notes
    promoted = {p["tensor"]: p for p in mp["promoted"]}
    assert promoted.keys() & DECODE, promoted.keys()               # the decode, not the backbone
    assert all("tail" in p["reason"] or "output" in p["reason"] for p in mp["promoted"]), mp["promoted"]
    assert mp["rounds"] <= 24
    # held out: images neither the calibration nor the verdict saw, judged as the verdict does
    from edgenet.inference import TFLiteModel

    x = squares(np.random.default_rng(7), 24).transpose(0, 2, 3, 1)      # the .tflite models take NHWC
    f = TFLiteModel((files / "o" / "model_float.tflite").read_bytes()).predict_all([x])[0]
    q = TFLiteModel((files / "o" / "model_int8.tflite").read_bytes()).predict_all([x])[0]
    judged = e2e_quality("output0", f, q, Thresholds())
    assert judged.passed and judged.metrics["box_iou_mean"] >= 0.9, judged.metrics


def test_a_refusal_leads_with_what_still_fails(files):
    """--strict-int8 (no float): the split head's parts, int16 on them, still put the boxes on the int8
    output's grid; the refusal leads with the boxes' IoU (what fails nearest to passing), then the
    whole output's F1 0.00 (every score rounded to 0 by the boxes' scale)."""
    with pytest.raises(ConversionError) as exc:
        _convert(files, "strict", strict_int8=True)
    text = str(exc.value)
    assert text.startswith("the int8 model lost its signal: output 'output0': boxes of the "), text
    assert "mean IoU with float's" in text.split(";")[0]
    assert "written as parts" in text and "as one int8 output: output0: detections F1 0.00" in text
    assert "kept float out of mixed precision" in text
