"""Detection heads beyond YOLO's pixel boxes (numpy only): DETR / RT-DETR's normalized boxes, in one
output [N, Q, 4 + C] or two (boxes [N, Q, 4] beside scores or logits [N, Q, C]), and borderline
detections; each with a planted fault the verdict must catch and a healthy twin it must pass."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.verdicts import OutputKind, Status, Thresholds, detect_kind, detection_layout, judge

TH = Thresholds()


def _detr(rng, n=16, queries=100, classes=6, objects=3, logits=False):
    """[N, Q, 4 + C]: boxes cx, cy, w, h in [0, 1], then class scores (or logits); a few queries
    per image find an object, placed apart, the rest score near zero."""
    boxes = np.concatenate([rng.uniform(0.1, 0.9, (n, queries, 2)), rng.uniform(0.05, 0.3, (n, queries, 2))], -1)
    scores = rng.uniform(0, 0.03, (n, queries, classes))
    for k in range(n):
        for i, q in enumerate(rng.choice(queries, objects, replace=False)):
            scores[k, q, rng.integers(classes)] = rng.uniform(0.6, 0.95)
            boxes[k, q, :2] = [0.15 + 0.3 * i, 0.2 + 0.25 * i]       # apart from each other
    if logits:
        scores = np.log(scores / (1 - scores))
    return np.concatenate([boxes, scores], -1).astype(np.float32)


def _noisy(rng, y, box=0.002, score=0.01):
    scale = np.r_[[box] * 4, [score] * (y.shape[-1] - 4)]
    return (y + rng.normal(0, 1, y.shape) * scale).astype(np.float32)


def _one(f, q, kind=None):
    v = judge("int8", ["y"], [f], [q], [False], TH, kinds=None if kind is None else {"y": kind})
    return v, v.outputs[0]


@pytest.mark.parametrize("logits", [False, True])
def test_a_detr_head_in_one_output_is_a_detection_and_its_damage_fails(logits):
    rng = np.random.default_rng(0)
    f = _detr(rng, logits=logits)
    assert detect_kind(f) is OutputKind.DETECTION and detection_layout(f) == "detr"
    v, o = _one(f, _noisy(rng, f, score=0.05 if logits else 0.01))
    assert v.passed and o.metrics["detection_f1"] == 1.0 and o.metrics["layout"] == "detr", o.failures
    assert o.axis_name == "query" and o.metrics["detections_float"] == 48
    collapsed = f.copy()
    collapsed[..., 4:] = -8.0 if logits else 0.01              # every score near zero
    v, o = _one(f, collapsed)
    assert not v.passed and "F1 0.00" in o.failures[0]
    shifted = f.copy()
    shifted[..., :2] += 0.08                                   # every box off by 8% of the image
    v, o = _one(f, shifted)
    assert not v.passed and any("F1" in x for x in o.failures) and any("boxes" in x for x in o.failures)


def test_a_detr_head_that_detects_nothing_is_not_judged():
    rng = np.random.default_rng(1)
    f = _detr(rng, objects=0)
    v, o = _one(f, _noisy(rng, f), OutputKind.DETECTION)
    assert v.passed and o.status is Status.NOT_JUDGED and "no signal in the evaluation data" in o.not_judged
    spurious = f.copy()
    spurious[:, 0, 4] = 0.9                                    # int8 finds an object float does not
    v, o = _one(f, spurious, OutputKind.DETECTION)
    assert not v.passed and "where float detects none" in o.failures[0]


def test_normalized_yolo_boxes_are_a_detection_too():
    """Ultralytics' TFLite export divides YOLOv8's boxes by the image size: [N, 4 + C, anchors]."""
    rng = np.random.default_rng(2)
    f = _detr(rng, queries=400, classes=3).transpose(0, 2, 1)  # 400 anchors >= 16 x 7 values
    assert detection_layout(f) == "v8" and _one(f, _noisy(rng, f.transpose(0, 2, 1)).transpose(0, 2, 1))[0].passed


def test_two_output_heads_are_judged_as_one_head_naming_the_damaged_output():
    rng = np.random.default_rng(3)
    y = _detr(rng, logits=True)
    fb, fs = y[..., :4], y[..., 4:]
    names = ["pred_boxes", "pred_logits"]

    def verdict(qb, qs, kinds=None):
        return judge("int8", names, [fb, fs], [qb, qs], [False, False], TH, kinds=kinds)

    healthy = _noisy(rng, y, score=0.05)
    v = verdict(healthy[..., :4], healthy[..., 4:])
    assert v.passed and [o.kind for o in v.outputs] == ["detection", "detection"], v.message()
    assert v.outputs[1].metrics["paired_with"] == "pred_boxes" and v.outputs[1].metrics["detection_f1"] == 1.0
    v = verdict(fb + 0.08, fs)                                 # boxes shifted
    assert not v.passed and any("boxes" in x for x in v.outputs[0].failures), v.message()
    v = verdict(fb, np.full_like(fs, -8.0))                    # scores collapsed
    assert not v.passed and v.outputs[0].passed and "F1 0.00" in v.outputs[1].failures[0]
    # x1 y1 x2 y2 boxes read as such
    xyxy = np.concatenate([fb[..., :2] - fb[..., 2:] / 2, fb[..., :2] + fb[..., 2:] / 2], -1)
    v = judge("int8", names, [xyxy, fs], [xyxy, healthy[..., 4:]], [False, False], TH)
    assert v.passed and v.outputs[1].metrics["detection_f1"] == 1.0, v.message()
    # the user's other kind keeps them apart
    v = verdict(fb, fs, kinds={"pred_logits": OutputKind.GENERIC})
    assert [o.kind for o in v.outputs] == ["generic", "generic"]
    # a one-output layout given to either output of the pair is refused, not silently replaced by DETR's
    from edgenet.verdicts import KindSpec
    from edgenet.verdicts.kinds import KindError

    with pytest.raises(KindError, match=r"pred_boxes=detection:v8: output 'pred_boxes' is one of a two-output head"):
        verdict(fb, fs, kinds=[KindSpec.parse("pred_boxes=detection:v8")])
    v = verdict(fb, fs, kinds=[KindSpec.parse("pred_logits=detection:detr")])
    assert v.passed and v.outputs[1].metrics["paired_with"] == "pred_boxes"


def test_the_benchmark_pairs_them_as_convert_does():
    from edgenet.benchmark.accuracy import compare

    rng = np.random.default_rng(4)
    y = _detr(rng, logits=True)
    q = y.copy()
    q[..., :2] += 0.08
    report = compare({"float": [y[..., :4], y[..., 4:]], "int8": [q[..., :4], q[..., 4:]]}, None, "test",
                     kinds=["detection", "detection"], names=["pred_boxes", "pred_logits"])
    assert [o["kind"] for o in report.outputs] == ["detection", "detection"]
    assert not report.outputs[0]["passed"] and report.outputs[1]["metrics"]["paired_with"] == "pred_boxes"


# -- borderline detections --------------------------------------------------------------------------
def _yolo8(rng, n=8, anchors=400, classes=3):
    y = np.zeros((n, 4 + classes, anchors), np.float32)
    y[:, 0:2] = rng.uniform(20, 300, (n, 2, anchors))
    y[:, 2:4] = rng.uniform(10, 40, (n, 2, anchors))
    y[:, 4:] = rng.uniform(0, 0.02, (n, classes, anchors))
    for k in range(n):
        for i, a in enumerate(rng.choice(anchors, 4, replace=False)):
            y[k, 4 + i % classes, a] = 0.8
            y[k, 0, a], y[k, 1, a] = 40 + 70 * i, 60 + 50 * i
    return y


def test_borderline_detections_int8_scores_under_the_threshold_are_not_misses():
    """Half of float's detections at 0.27 (threshold 0.25) that int8 scores 0.24: rounding around
    the threshold, not lost objects (counted as misses they gave F1 0.67)."""
    rng = np.random.default_rng(5)
    f = _yolo8(rng)
    q = _noisy(rng, f.transpose(0, 2, 1), box=0.1, score=0.002).transpose(0, 2, 1)
    for k in range(len(f)):
        for a in np.flatnonzero(f[k, 4:].max(0) > 0.5)[:2]:
            c = int(np.argmax(f[k, 4:, a]))
            f[k, 4 + c, a], q[k, 4 + c, a] = 0.27, 0.24
    v, o = _one(f, q)
    assert v.passed and o.metrics["borderline"] == 16 and o.metrics["detection_f1"] == 1.0, o.failures
    assert o.metrics["detections_float"] == 16
    q[:, 4:] = np.where(np.isclose(q[:, 4:], 0.24), 0.26, q[:, 4:])   # int8 keeps them: not counted either
    v, o = _one(f, q)
    assert v.passed and o.metrics["extra"] == 0 and o.metrics["detection_f1"] == 1.0
    collapsed = f.copy()
    collapsed[:, 4:] *= 0.05                  # every score near 0
    v, o = _one(f, collapsed)
    assert not v.passed and "F1 0.00" in o.failures[0]
    shifted = q.copy()
    shifted[:, 0:2] += 25.0                   # boxes 25 px off
    v, o = _one(f, shifted)
    assert not v.passed and any("F1" in x for x in o.failures)


def test_an_int8_detection_float_scores_far_under_the_threshold_is_extra():
    rng = np.random.default_rng(6)
    f = _yolo8(rng)
    q = f.copy()
    q[:, 4, 0:40] = 0.5                        # 40 anchors per image that float scores ~0.01
    q[:, 0, 0:40] = np.linspace(10, 310, 40)   # spread out: NMS keeps them
    v, o = _one(f, q)
    assert not v.passed and o.metrics["extra"] > 0 and "not float's" in o.failures[0]


def test_sigmoid_class_scores_per_anchor_are_no_detection_head():
    """An SSD head's sigmoid scores [N, anchors, C] (background near 1, objects near 0): its first
    four columns are no normalized boxes, and random features are no DETR head either."""
    rng = np.random.default_rng(7)
    s = rng.uniform(0, 0.03, (4, 1917, 91))
    s[..., 0] = rng.uniform(0.85, 1.0, (4, 1917))
    assert detect_kind(s.astype(np.float32)) is OutputKind.GENERIC
    assert detect_kind(rng.uniform(0, 1, (4, 1917, 91)).astype(np.float32)) is OutputKind.GENERIC
    assert detect_kind(rng.normal(size=(4, 49, 768)).astype(np.float32)) is OutputKind.GENERIC   # tokens
