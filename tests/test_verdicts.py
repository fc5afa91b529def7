"""edgenet.verdicts: each output kind's metric, a planted fault it must catch and a healthy twin it
must pass; kinds from shapes and values; "not judged" when the data carries no signal."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.verdicts import (KindError, KindSpec, OutputKind, Status, Thresholds, detect_kind, judge, nms,
                              otsu_threshold)

TH = Thresholds()


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _int8(x, lo=0.0, hi=1.0):
    """One int8 scale over [lo, hi] (a softmax output's fixed 1/256 steps)."""
    scale = (hi - lo) / 255
    return (np.round((np.clip(x, lo, hi) - lo) / scale) * scale + lo).astype(np.float32)


def _one(f, q, kind=None, th=TH, cl=False):
    v = judge("int8", ["y"], [f], [q], [cl], th, kinds=None if kind is None else {"y": kind})
    return v, v.outputs[0]


# -- classifier -------------------------------------------------------------------------------------
def _probs(rng, n=64, k=10):
    return _softmax(rng.normal(0, 4, (n, k))).astype(np.float32)


def test_a_confident_softmax_in_int8_steps_passes_and_is_not_degenerate():
    f = _probs(np.random.default_rng(0))
    v, o = _one(f, _int8(f))
    assert o.kind == "classifier" and v.passed and o.top1_agreement >= 0.98
    assert o.degenerate_channels == () and o.metrics["top5_agreement"] == 1.0
    assert o.cosine > 0.99 and o.rmse < 0.01 and o.mae < o.rmse + 1e-9 and 0 < o.l2_rel_err < 0.05


def test_a_dead_class_column_fails_naming_the_class():
    f = _probs(np.random.default_rng(1))
    q = _int8(f)
    q[:, 3] = 0.0                      # class 3 never scores
    v, o = _one(f, q)
    assert not v.passed and any("class 3 (0% kept)" in x for x in o.failures), o.failures


def test_swapped_top1_classes_fail_on_agreement():
    f = _probs(np.random.default_rng(2), k=4)
    q = _int8(f)[:, [1, 0, 2, 3]]      # classes 0 and 1 swapped: about half the examples change
    v, o = _one(f, q)
    assert not v.passed and o.top1_agreement < 0.7 and "top-1 agreement" in o.failures[0]


# -- sequence ---------------------------------------------------------------------------------------
def _ctc(rng, n=32, t=24, c=30):
    """Confident CTC distributions: characters at some steps, blank (0) between."""
    idx = np.where(rng.random((n, t)) < 0.4, rng.integers(1, c, (n, t)), 0)
    logits = rng.normal(0, 0.5, (n, t, c))
    np.put_along_axis(logits, idx[..., None], 8.0, axis=-1)
    return _softmax(logits).astype(np.float32), idx


def test_a_ctc_sequence_in_int8_steps_passes():
    f, _ = _ctc(np.random.default_rng(3))
    v, o = _one(f, _int8(f))
    assert o.kind == "sequence" and v.passed and o.axis_name == "step"
    assert o.metrics["step_agreement"] == 1.0 and o.metrics["sequence_agreement"] == 1.0


def test_a_collapsed_time_step_fails_naming_the_step():
    f, idx = _ctc(np.random.default_rng(4))
    q = _int8(f)
    q[:, 5, :] = 0.0
    q[:, 5, 0] = 1.0                   # step 5 always blank: its characters vanish from the strings
    v, o = _one(f, q)
    assert not v.passed and o.metrics["worst_step"] == 5
    assert any("decoded sequences" in x for x in o.failures), o.failures
    assert any("step 5" in x for x in o.failures)


def test_the_blank_is_configurable():
    f, _ = _ctc(np.random.default_rng(5), c=6)
    q = f.copy()
    q[..., [0, 5]] = q[..., [5, 0]]    # blank and class 5 swapped: with blank=5 the decoded strings differ
    assert judge("int8", ["y"], [f], [q], [False], TH, kinds=[KindSpec("y", OutputKind.SEQUENCE, blank=0)]) \
        .outputs[0].metrics["blank"] == 0
    assert not _one(f, q)[0].passed


def test_a_sequence_of_blanks_only_is_not_judged():
    f = np.zeros((8, 10, 5), np.float32)
    f[..., 0] = 1.0
    v, o = _one(f, f.copy())
    assert v.passed and o.status is Status.NOT_JUDGED and "no signal" in o.not_judged


def test_character_boundaries_moved_between_steps_are_not_damage_but_changed_characters_are():
    """CTC's alignment: a character read one step later (its step turned blank, the next step the
    character) decodes to the same text, the app's answer; the English PP-OCRv4 recognizer's int8 was
    refused on such steps (95.6% per-step) with 99.2% of its strings kept. A character changed into
    another still fails."""
    rng = np.random.default_rng(4)
    n, t, c = 32, 24, 30
    idx = np.zeros((n, t), int)
    idx[:, 2:20:3] = rng.integers(1, c, (n, 6))                  # a character every third step, blanks between
    shifted = idx.copy()
    shifted[:4] = 0
    shifted[:4, 3:21:3] = idx[:4, 2:20:3]                        # 4 of 32 lines: every character one step later
    def probs(ix):
        logits = rng.normal(0, 0.5, (n, t, c))
        np.put_along_axis(logits, ix[..., None], 8.0, axis=-1)
        return _softmax(logits).astype(np.float32)

    f = probs(idx)
    v, o = _one(f, _int8(probs(shifted)))
    assert o.kind == "sequence" and v.passed, o.failures
    assert o.metrics["step_agreement_raw"] < 0.98 and o.metrics["step_agreement"] == 1.0
    assert o.metrics["steps_shifted_in_kept_sequences"] > 0 and o.metrics["sequence_agreement"] == 1.0
    changed = idx.copy()
    changed[:4, 2] = changed[:4, 2] % (c - 1) + 1                # 4 of 32 lines: a character turned into another
    changed[:4, 5] = changed[:4, 5] % (c - 1) + 1
    v, o = _one(f, _int8(probs(changed)))
    assert not v.passed and o.metrics["sequence_agreement"] == 28 / 32
    assert any("per-step agreement" in x for x in o.failures) or any("decoded sequences" in x for x in o.failures)
    # the same shift on every line, "ll" read as "l" on 2 of them: strings 30 / 32 agree, but a shift this
    # common is refused (it merges doubled characters that 32 lines may not show)
    doubled = idx.copy()
    doubled[:2, 5] = doubled[:2, 2] = 7
    doubled[:2, 3:5] = 0
    doubled[:2, 3] = 7                                           # "7 _ 7": two equal characters, one blank between
    every = np.zeros_like(doubled)
    every[:, 1:] = doubled[:, :-1]                               # every step one later: the blank swallowed on 2 lines
    every[:2, 4] = 7
    f2 = probs(doubled)
    v, o = _one(f2, _int8(probs(every)))
    assert not v.passed and any("only moved" in x for x in o.failures), o.failures


def test_an_undecided_sequence_is_not_judged_and_a_decided_one_still_fails():
    """An untrained recognizer's near-uniform softmax at every step: int8's rounding picks another
    argmax on most steps, which is no damage (float decides none): not judged, as a classifier's
    undecided examples. Confident steps that int8 changes still fail."""
    rng = np.random.default_rng(6)
    f = _softmax(rng.normal(0, 0.01, (16, 20, 12))).astype(np.float32)
    q = _softmax(np.log(f) + rng.normal(0, 0.01, f.shape)).astype(np.float32)
    v, o = _one(f, q, OutputKind.SEQUENCE)
    assert o.metrics["step_agreement"] < 0.9 and o.metrics["decisive_steps"] == 0
    assert v.status is Status.NOT_JUDGED and "every step of the 16 examples" in o.not_judged
    f, _ = _ctc(rng)
    q = np.roll(f, 1, axis=-1)                                   # every step's class moved
    v, o = _one(f, q)
    assert not v.passed and o.metrics["decisive_steps"] == f.shape[0] * f.shape[1]


# -- dense map --------------------------------------------------------------------------------------
def _text_map(rng, n=8, h=48, w=64):
    """A DB-style probability map: text-line bands 4-6 pixels high on an empty page."""
    m = np.full((n, 1, h, w), 0.02, np.float32)
    for k in range(n):
        for _ in range(4):
            y, x, hh, ww = rng.integers(2, h - 8), rng.integers(0, w - 20), rng.integers(4, 7), rng.integers(10, 20)
            m[k, 0, y:y + hh, x:x + ww] = 0.9
    return m


def test_a_map_with_int8_noise_passes():
    rng = np.random.default_rng(6)
    f = _text_map(rng)
    q = _int8(f + rng.normal(0, 0.02, f.shape))
    v, o = _one(f, q)
    assert o.kind == "map" and v.passed and o.metrics["map_iou"] > 0.95 and o.metrics["map_threshold"] == 0.3


def test_a_map_shifted_by_one_pixel_fails_on_iou():
    f = _text_map(np.random.default_rng(7))
    q = np.roll(f, 1, axis=2)
    v, o = _one(f, q)
    assert not v.passed and o.metrics["map_iou"] < 0.85 and "IoU" in o.failures[0]


def test_a_map_in_nhwc_and_not_in_0_1_uses_otsu():
    rng = np.random.default_rng(8)
    f = (_text_map(rng) * 20 - 10).transpose(0, 2, 3, 1)      # logits, NHWC as the runner gives
    t = otsu_threshold(f)
    assert -9.6 < t < 8
    assert detect_kind(f.transpose(0, 3, 1, 2)) is OutputKind.GENERIC          # logits: a map only when told
    v, o = _one(f, f + rng.normal(0, 0.05, f.shape).astype(np.float32), OutputKind.DENSE_MAP, cl=True)
    assert v.passed and o.metrics["threshold_from"].startswith("Otsu")


def test_an_empty_map_is_not_judged_and_a_spurious_region_fails():
    f = np.full((4, 1, 16, 16), 0.01, np.float32)
    v, o = _one(f, f.copy())
    assert v.passed and o.status is Status.NOT_JUDGED and v.status is Status.NOT_JUDGED
    assert "not judged" in v.message()
    q = f.copy()
    q[:, :, 4:8, 4:8] = 0.8
    assert not _one(f, q)[0].passed


# -- detection --------------------------------------------------------------------------------------
def _yolo8(rng, n=6, anchors=400, classes=3, objects=3):
    """A YOLOv8 head [N, 4 + C, anchors]: boxes in pixels, a few confident anchors per image."""
    y = np.zeros((n, 4 + classes, anchors), np.float32)
    y[:, 0:2] = rng.uniform(20, 300, (n, 2, anchors))
    y[:, 2:4] = rng.uniform(10, 40, (n, 2, anchors))
    y[:, 4:] = rng.uniform(0, 0.02, (n, classes, anchors))
    for k in range(n):
        for a in rng.choice(anchors, objects, replace=False):
            y[k, 4 + rng.integers(classes), a] = rng.uniform(0.5, 0.95)
            y[k, 0, a], y[k, 1, a] = 40 + 80 * (a % 4), 40 + 60 * (a % 5)   # apart: NMS keeps each
    return y


def test_a_detector_head_with_small_noise_passes():
    rng = np.random.default_rng(9)
    f = _yolo8(rng)
    q = f + rng.normal(0, 0.3, f.shape).astype(np.float32) * np.r_[[1] * 4, [0.01] * 3][None, :, None]
    v, o = _one(f, q)
    assert o.kind == "detection" and o.axis_name == "anchor" and v.passed, o.failures
    assert o.metrics["detection_f1"] == 1.0 and o.metrics["box_sqnr_db"] > 30


def test_a_lost_detection_and_a_shifted_box_fail():
    rng = np.random.default_rng(10)
    f = _yolo8(rng)
    lost = f.copy()
    lost[:, 4:, :] = np.minimum(lost[:, 4:, :], 0.1)     # every detection's score under the threshold
    v, o = _one(f, lost)
    assert not v.passed and "F1 0.00" in o.failures[0]
    shifted = f.copy()
    shifted[:, 0:2] += 25.0                               # every box 25 px off: IoU under 0.5
    v, o = _one(f, shifted)
    assert not v.passed and any("F1" in x for x in o.failures) and any("boxes" in x for x in o.failures)


def test_a_detector_with_nothing_to_detect_is_not_judged():
    rng = np.random.default_rng(11)
    f = _yolo8(rng, objects=0)
    v, o = _one(f, f + rng.normal(0, 0.002, f.shape).astype(np.float32))
    assert v.passed and o.status is Status.NOT_JUDGED and "no signal in the evaluation data" in o.not_judged
    assert v.to_dict()["not_judged"] == {"y": o.not_judged}


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert list(nms(boxes, scores, 0.5)) == [0, 3]
    assert list(nms(boxes, scores, 0.5, np.array([0, 0, 1, 0]))) == [0, 2, 3]


# -- kinds ------------------------------------------------------------------------------------------
def test_kinds_from_shapes_and_values():
    rng = np.random.default_rng(12)
    assert detect_kind(rng.normal(size=(4, 10))) is OutputKind.CLASSIFIER
    assert detect_kind(rng.normal(size=(4, 1, 1, 10))) is OutputKind.CLASSIFIER
    assert detect_kind(rng.normal(size=(4, 10, 1, 1))) is OutputKind.CLASSIFIER   # a conv head
    assert detect_kind(rng.normal(size=(4, 1))) is OutputKind.GENERIC            # one score: no top-1
    assert detect_kind(_ctc(rng, n=4)[0]) is OutputKind.SEQUENCE
    assert detect_kind(np.log(_ctc(rng, n=4)[0])) is OutputKind.SEQUENCE          # log-softmax
    assert detect_kind(rng.normal(size=(4, 24, 30))) is OutputKind.GENERIC       # no distribution
    assert detect_kind(_yolo8(rng)) is OutputKind.DETECTION
    assert detect_kind(_yolo8(rng).transpose(0, 2, 1)) is OutputKind.DETECTION   # [N, anchors, values]
    assert detect_kind(_text_map(rng)) is OutputKind.DENSE_MAP
    assert detect_kind(rng.normal(size=(4, 64, 8, 8))) is OutputKind.GENERIC     # features
    assert detect_kind(rng.normal(size=(4, 10)), index=True) is OutputKind.INDEX


def test_kind_specs_parse_and_refuse_with_one_line():
    assert KindSpec.parse("out:0=sequence:blank=5") == KindSpec("out:0", OutputKind.SEQUENCE, blank=5)
    assert str(KindSpec.parse("head=detection:v5")) == "head=detection:v5"
    for bad in ("head", "head=boxes", "head=sequence:v5", "=map"):
        with pytest.raises(KindError, match="--output-kind"):
            KindSpec.parse(bad)
    f = np.zeros((2, 4), np.float32)
    with pytest.raises(KindError, match="no output 'z'"):
        judge("int8", ["y"], [f], [f], [False], TH, kinds={"z": OutputKind.GENERIC})
    with pytest.raises(KindError, match="cannot be judged as a sequence"):
        judge("int8", ["y"], [f], [f], [False], TH, kinds={"y": OutputKind.SEQUENCE})


def test_an_override_changes_the_metric_and_is_recorded():
    rng = np.random.default_rng(13)
    f = rng.normal(size=(64, 5)).astype(np.float32)
    q = (f + rng.normal(0, 0.1, f.shape)).astype(np.float32)
    v = judge("int8", ["y"], [f], [q], [False], TH, kinds={"y": OutputKind.GENERIC})
    assert v.outputs[0].kind == "generic" and v.outputs[0].top1_agreement is not None
    assert v.to_dict()["output_kinds_given"] == ["y=generic"]


def test_data_that_does_not_vary_cannot_judge_a_model():
    from edgenet.verdicts import Status, judge

    f = np.tile(np.array([[0.1, 2.0, -1.0]], np.float32), (40, 1))   # one black image forty times
    q = f + 0.01                                                      # close, but nothing varies to judge by
    v = judge("int8", ["logits"], [f], [q], [False])
    assert v.status is Status.NOT_JUDGED and v.outputs[0].failures == ()
    assert "the evaluation data: it does not vary (all 40 examples" in v.outputs[0].not_judged
    one = judge("int8", ["logits"], [f[:1]], [q[:1]], [False])
    assert one.status is Status.NOT_JUDGED and "a single example" in one.outputs[0].not_judged
    varied = f + np.random.default_rng(0).normal(0, 1, f.shape).astype(np.float32)
    assert judge("int8", ["logits"], [varied], [varied], [False]).status is Status.PASS


def test_a_classifier_whose_float_top1_never_changes_still_fails_when_classes_collapse():
    """float picks class 0 for every example (a bias of 1000): top-1 agreement is 100% whatever int8
    does; the other classes' scores collapsing to one value is the damage to catch, and a healthy
    twin (small noise) passes."""
    from edgenet.verdicts import judge

    rng = np.random.default_rng(0)
    f = np.concatenate([1000 + rng.normal(0, 1, (32, 1)), rng.normal(0, 1, (32, 2))], axis=1).astype(np.float32)
    damaged = f.copy()
    damaged[:, 1:] = 0.0
    v = judge("int8", ["logits"], [f], [damaged], [False])
    assert not v.passed and "classes 1, 2 take one value" in v.outputs[0].failures[0]
    healthy = f + rng.normal(0, 0.05, f.shape).astype(np.float32)
    assert judge("int8", ["logits"], [f], [healthy], [False]).passed


@pytest.mark.parametrize("kind, shape, said", [
    ("index", (8, 3), "non-integer values"),
    ("classifier", (8, 4, 6, 6), "cannot be judged as a classifier"),
    ("map", (8, 5), "cannot be judged as a map"),
    ("sequence:blank=5", (8, 7, 5), "the blank must be a class of the output, 0 to 4"),
])
def test_a_kind_the_user_names_must_fit_the_output(kind, shape, said):
    from edgenet.verdicts import KindError, KindSpec, judge

    f = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with pytest.raises(KindError, match=said):
        judge("int8", ["y"], [f], [f], [False], kinds=[KindSpec.parse(f"y={kind}")])
