"""Class distributions at many positions (an SSD head's per-anchor softmax): judged by the top
class where float is decisive, not decoded as a CTC string (numpy only)."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.verdicts import KindError, KindSpec, OutputKind, Thresholds, detect_kind, judge


def _ssd_scores(n=8, anchors=3000, classes=21, seed=0):
    """Softmax per anchor: background (class 0) decisive almost everywhere, a few anchors per image
    decisive for an object class, the rest undecided -- as a trained SSD's scores look."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 0.5, (n, anchors, classes))
    logits[..., 0] += 4.0
    for k in range(n):
        hits = rng.choice(anchors, anchors // 75, replace=False)
        logits[k, hits, 0] -= 6.0
        logits[k, hits, rng.integers(1, classes, len(hits))] += 6.0
        unsure = rng.choice(anchors, anchors // 15, replace=False)
        logits[k, unsure, 0] -= 4.0          # no class reaches 0.5 there
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _int8(p, scale):
    return ((np.clip(np.round(p / scale) - 128, -128, 127) + 128) * scale).astype(np.float32)


def test_many_positions_are_a_class_map_and_a_text_line_stays_a_sequence():
    assert detect_kind(_ssd_scores(n=2)) is OutputKind.CLASS_MAP
    assert detect_kind(_ssd_scores(n=2, anchors=40, classes=37)) is OutputKind.SEQUENCE


def test_healthy_int8_scores_pass_and_collapsed_object_classes_fail():
    f = _ssd_scores()
    healthy = judge("int8", ["scores"], [f], [_int8(f, 1 / 256)], [False]).outputs[0]
    assert healthy.kind == "class_map" and healthy.passed, healthy.failures
    assert healthy.metrics["position_agreement"] >= 0.99
    # every object class pushed under background (a head whose small logits int8 lost): a dominant
    # background keeps the overall agreement high; the per-class check catches it
    collapsed = f.copy()
    collapsed[..., 1:] *= 0.1
    collapsed[..., 0] = 1 - collapsed[..., 1:].sum(-1)
    bad = judge("int8", ["scores"], [f], [collapsed], [False]).outputs[0]
    assert not bad.passed and any("mostly lost" in x for x in bad.failures)


def test_no_decisive_position_is_not_judged():
    f = np.full((4, 1000, 5), 0.2, np.float32)
    f[:, :, 0] += np.linspace(0, 0.01, 4)[:, None]         # varies, never decisive
    out = judge("int8", ["s"], [f], [f], [False]).outputs[0]
    assert out.kind == "class_map" and out.not_judged and "no signal" in out.not_judged


def test_a_segmentation_map_can_be_named_a_class_map():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 3, 16, 16)).astype(np.float32)
    out = judge("int8", ["seg"], [logits], [logits + 0.01], [False],
                kinds=[KindSpec("seg", OutputKind.CLASS_MAP)]).outputs[0]
    assert out.kind == "class_map" and out.metrics["positions"] == 4 * 256
    with pytest.raises(KindError):
        judge("int8", ["v"], [np.zeros((2, 5), np.float32)], [np.zeros((2, 5), np.float32)], [False],
              kinds=[KindSpec("v", OutputKind.CLASS_MAP)])


def test_the_kind_parses_from_the_command_line_form():
    assert KindSpec.parse("scores=class_map").kind is OutputKind.CLASS_MAP
    assert Thresholds().min_step_agreement > 0.9


def test_scores_beside_boxes_over_the_same_anchors_are_a_class_map_however_few():
    """An SSD with 240 anchors: its scores would pass for a 240-step text line on shape alone; the
    boxes output over the same anchors says what they are."""
    scores = _ssd_scores(n=8, anchors=240, classes=5)
    boxes = np.random.default_rng(1).uniform(0, 1, (8, 240, 4)).astype(np.float32)
    alone = judge("int8", ["scores"], [scores], [scores], [False]).outputs[0]
    assert alone.kind == "sequence"
    both = judge("int8", ["boxes", "scores"], [boxes, scores], [boxes, _int8(scores, 1 / 256)], [False, False])
    assert both.outputs[1].kind == "class_map" and both.outputs[1].passed


def test_a_segmentation_softmax_is_a_class_map_and_its_logits_stay_generic():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 6, 16, 16)).astype(np.float32)
    e = np.exp(logits - logits.max(1, keepdims=True))
    probs = e / e.sum(1, keepdims=True)
    assert detect_kind(probs) is OutputKind.CLASS_MAP
    assert detect_kind(logits) is OutputKind.GENERIC
    # NHWC as the TFLite model returns it: judged in the ONNX layout
    out = judge("int8", ["seg"], [probs.transpose(0, 2, 3, 1)], [_int8(probs, 1 / 256).transpose(0, 2, 3, 1)],
                [True]).outputs[0]
    assert out.kind == "class_map" and out.passed and out.metrics["positions"] == 4 * 256


def test_logits_named_a_class_map_are_judged_through_a_softmax():
    """Negative logits are not log-probabilities: a collapsed int8 output must fail, not go unjudged."""
    rng = np.random.default_rng(0)
    logits = (rng.normal(-15, 3, (4, 6, 16, 16))).astype(np.float32)
    logits[:, 2] += 12           # class 2 wins most pixels
    spec = [KindSpec("seg", OutputKind.CLASS_MAP)]
    good = judge("int8", ["seg"], [logits], [logits + 0.01], [False], kinds=spec).outputs[0]
    bad = judge("int8", ["seg"], [logits], [np.full_like(logits, -15)], [False], kinds=spec).outputs[0]
    assert good.passed and not good.not_judged
    assert not bad.passed and not bad.not_judged
