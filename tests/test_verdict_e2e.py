"""End-to-end (NMS-free) detectors' [N, K, 6] outputs (numpy only): detections as rows sorted by
score, x1 y1 x2 y2, score, class id (YOLOv10 / YOLO26 exports). A healthy int8 twin that reorders
near-equal rows must pass where the old row-wise SQNR refused it; planted damage must fail naming
the output; the layout must not catch other rank-3 outputs."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.verdicts import KindError, KindSpec, OutputKind, Status, Thresholds, detect_kind, detection_layout, \
    judge, output_quality
from edgenet.verdicts.e2e import box_format, is_e2e

TH = Thresholds()
SIZE = 320.0


def _sorted(y: np.ndarray) -> np.ndarray:
    order = np.argsort(-y[..., 4], axis=1, kind="stable")
    return np.take_along_axis(y, order[..., None], axis=1).astype(np.float32)


def _e2e(rng, n=12, k=300, classes=80, twins=True):
    """[N, K, 6] in pixels: four objects an image in four quadrants (scores 0.5-0.95), in the
    first quadrant a second candidate of another class at a score 0.005 below (near-equal), a
    borderline detection at 0.27, the rest the TopK's leftovers (scores under 0.1)."""
    y = np.zeros((n, k, 6))
    xy = rng.uniform(0, SIZE - 80, (n, k, 2))
    y[..., :2], y[..., 2:4] = xy, xy + rng.uniform(10, 70, (n, k, 2))
    y[..., 4] = rng.uniform(0, 0.1, (n, k))
    y[..., 5] = rng.integers(0, classes, (n, k))
    for e in range(n):
        for i, (cx, cy) in enumerate([(80, 80), (240, 80), (80, 240), (240, 240)]):
            w, h = rng.uniform(40, 90, 2)
            y[e, i, :4] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            y[e, i, 4] = rng.uniform(0.5, 0.95)
        if twins:
            y[e, 4] = y[e, 0]
            y[e, 4, 4] -= 0.005
            y[e, 4, 5] = (y[e, 0, 5] + 1) % classes
        y[e, 5, :4], y[e, 5, 4] = [150, 150, 190, 200], 0.27       # borderline, apart from the objects
    return _sorted(y)


def _healthy(rng, f):
    """int8 as it behaves: boxes off by ~1 px, scores by ~0.01, near-equal rows traded (the twins
    swap their scores, so their rows trade places), other leftovers selected, the borderline 0.27
    detection read 0.22 (dropped)."""
    q = f.astype(np.float64).copy()
    q[..., :4] += rng.normal(0, 1.0, q[..., :4].shape)
    q[..., 4] = np.clip(q[..., 4] + rng.normal(0, 0.01, q[..., 4].shape), 0, 1)
    for e in range(len(q)):
        hi = np.flatnonzero(f[e, :, 4] > 0.4)
        for i, j in [(i, j) for i in hi for j in hi if i < j and np.array_equal(f[e, i, :4], f[e, j, :4])]:
            q[e, [i, j], 4] = q[e, [j, i], 4] + [-0.003, 0.003]   # the twins trade places
        q[e, np.isclose(f[e, :, 4], 0.27), 4] = 0.22
        tail = slice(150, 300)                                   # the TopK picked other leftovers
        q[e, tail, :4] = np.roll(q[e, tail, :4], 7, axis=0)
        q[e, tail, 5] = np.roll(q[e, tail, 5], 7)
    return _sorted(q)


def _one(f, q, kind=None):
    v = judge("int8", ["output0"], [f], [q], [False], TH, kinds=None if kind is None else {"output0": kind})
    return v, v.outputs[0]


def test_an_e2e_output_is_read_from_its_values():
    f = _e2e(np.random.default_rng(0))
    assert is_e2e(f) and detection_layout(f) == "e2e" and detect_kind(f) is OutputKind.DETECTION
    assert box_format(f) == "xyxy"
    single = f.copy()
    single[..., 5] = 0                               # a one-class model: class ids 0 (a v5 head's shape otherwise)
    assert detection_layout(single) == "e2e"
    centre = f.copy()                                # RT-DETR's export: cx, cy, w, h normalized
    b = f[..., :4] / SIZE
    centre[..., :4] = np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                                b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], -1)
    assert detection_layout(centre) == "e2e" and box_format(centre) == "cxcywh"
    v, o = _one(centre, centre)
    assert v.passed and o.metrics["detection_f1"] == 1.0 and o.metrics["box_format"] == "cxcywh"
    untrained = f.copy()                             # an untrained head: every score its bias, class ids 0, 1, 2 ...
    untrained[..., 4], untrained[..., 5] = 0.000156, np.arange(300) % 80
    assert detection_layout(untrained) == "e2e"
    moved = untrained.copy()
    moved[..., :4] += 0.5
    assert _one(untrained, moved)[1].status is Status.NOT_JUDGED


def test_the_layout_does_not_catch_other_rank3_outputs():
    rng = np.random.default_rng(1)
    f = _e2e(rng)
    unsorted = f.copy()
    unsorted[:, [0, 5]] = unsorted[:, [5, 0]]                       # scores not in descending order
    fractional = f.copy()
    fractional[..., 5] += 0.5                                       # column 5 no class ids
    features = rng.normal(0, 1, (4, 300, 6)).astype(np.float32)     # any [N, K, 6] tensor
    probs = rng.dirichlet(np.ones(6), (4, 40)).astype(np.float32)   # a CTC distribution over 6 classes
    v5 = np.concatenate([rng.uniform(0, 320, (4, 2000, 4)), rng.uniform(0, 0.2, (4, 2000, 2))], -1)
    for y in (unsorted, fractional, features, probs, v5, np.zeros((4, 300, 6), np.float32)):
        assert not is_e2e(y) and detection_layout(y) != "e2e"
    assert detect_kind(probs) is OutputKind.SEQUENCE and detection_layout(v5) == "v5"


def test_a_healthy_int8_passes_where_the_row_wise_sqnr_refused_it():
    rng = np.random.default_rng(2)
    f = _e2e(rng)
    q = _healthy(rng, f)
    v, o = _one(f, q)
    assert v.passed and o.status is Status.PASS, o.failures
    m = o.metrics
    assert m["layout"] == "e2e" and m["detection_f1"] == 1.0 and m["detections_float"] == 5 * 12
    assert m["borderline"] == 12 and m["extra"] == 0 and m["box_iou_mean"] > 0.9 and m["box_sqnr_db"] > 40
    old = output_quality("output0", f, q, False, TH)                 # what judged it before: SQNR of the tensor
    assert not old.passed


def test_damaged_int8_fails_naming_the_output():
    rng = np.random.default_rng(3)
    f = _e2e(rng)
    q = _healthy(rng, f)
    wrong_class = q.copy()
    wrong_class[..., 5] = (wrong_class[..., 5] + 3) % 80
    shifted = q.copy()
    w, h = shifted[..., 2] - shifted[..., 0], shifted[..., 3] - shifted[..., 1]
    shifted[..., [0, 2]] += w[..., None] / 2
    shifted[..., [1, 3]] += h[..., None] / 2
    missing = q.copy()
    missing[:, :2, 4] = 0.01                                          # the two best detections lost
    missing = _sorted(missing)
    for damaged in (wrong_class, shifted, missing):
        v, o = _one(f, damaged)
        assert not v.passed and "output 'output0'" in v.message() and "detections F1" in o.failures[0], o.failures
    halved = q.copy()
    halved[..., 4] *= np.where(halved[..., 4] > 0.5, 0.5, 1.0)        # still detected, scores collapsed
    v, o = _one(f, _sorted(halved))
    assert not v.passed and any(x.startswith("scores of the") for x in o.failures), o.failures
    nan = q.copy()
    nan[0, 0, 0] = np.nan
    assert "NaN or infinite values" in _one(f, nan)[1].failures


def test_float_detecting_nothing_is_not_judged_unless_int8_detects():
    rng = np.random.default_rng(4)
    f = _e2e(rng)
    f[..., 4] *= 0.2                                                  # an untrained head: nothing over 0.19
    f = _sorted(f)
    v, o = _one(f, _healthy(rng, f))
    assert v.passed and o.status is Status.NOT_JUDGED and "float detects nothing" in o.not_judged
    spurious = f.copy()
    spurious[:, 0, 4] = 0.9
    v, o = _one(f, spurious)
    assert not v.passed and "where float detects none" in o.failures[0]


def test_the_layout_is_named_and_refused_where_it_does_not_fit():
    assert KindSpec.parse("output0=detection:e2e").layout == "e2e"
    rng = np.random.default_rng(5)
    f = _e2e(rng, k=8, twins=False)[:, :1]                             # K = 1: not read, but named it is judged
    assert detection_layout(f) is None
    v, o = _one(f, f, KindSpec("output0", OutputKind.DETECTION, layout="e2e"))
    assert v.passed and o.metrics["layout"] == "e2e"
    with pytest.raises(KindError, match="detection:e2e"):
        _one(np.zeros((2, 300, 84), np.float32), np.zeros((2, 300, 84), np.float32),
             KindSpec("output0", OutputKind.DETECTION, layout="e2e"))


def test_float_check_compares_the_rows_listed_not_row_by_row():
    """float TFLite vs ONNX: rows whose scores differ by a float rounding come out in either order
    (refused as "relative error 1" on an untrained YOLO26 before); a row whose class changed, or a
    box moved, is still a conversion error."""
    from edgenet.converters.validate import FloatCheck, e2e_float_checks

    rng = np.random.default_rng(5)
    onnx_out = _sorted(_e2e(rng, n=4, twins=False))
    onnx_out[:, 10, 4] = onnx_out[:, 11, 4] = 0.05        # two tied rows in the middle
    onnx_out = _sorted(onnx_out)
    reordered = onnx_out.copy()
    tied = np.flatnonzero(onnx_out[0, :, 4] == np.float32(0.05))[:2]
    reordered[:, tied] = reordered[:, tied[::-1]]
    reordered[:, -1] = onnx_out[:, -1] + [1.0, 0, 0, 0, 0, 0]   # the cut: another candidate at the lowest score
    reordered[:, -1, 4] = onnx_out[:, -1, 4]
    wrong_class = reordered.copy()
    wrong_class[:, 0, 5] = (wrong_class[:, 0, 5] + 1) % 80
    moved = reordered.copy()
    moved[:, 1, :4] += 20.0
    start = [FloatCheck(300.0, 1.0, 4)]
    assert e2e_float_checks(start, [onnx_out], [reordered], 1e-3)[0].rel_err == 0.0
    for bad in (wrong_class, moved):
        assert e2e_float_checks(start, [onnx_out], [bad], 1e-3)[0].rel_err == 1.0


def test_float_check_of_an_output_written_as_parts_compares_them_joined():
    """The repair's split head writes boxes, score and class id as three outputs: each part's rows
    are reordered like the whole's, so they are compared joined, as the app rebuilds the output."""
    from edgenet.converters.validate import FloatCheck
    from edgenet.converters.verdict_stage import _joined_e2e_checks
    from edgenet.verdicts.parts import JoinedOutput

    rng = np.random.default_rng(6)
    onnx_out = _sorted(_e2e(rng, n=3, twins=False))
    onnx_out[:, 10, 4] = onnx_out[:, 11, 4] = 0.05
    onnx_out = _sorted(onnx_out)
    tflite_out = onnx_out.copy()
    tied = np.flatnonzero(onnx_out[0, :, 4] == np.float32(0.05))[:2]
    tflite_out[:, tied] = tflite_out[:, tied[::-1]]
    parts = lambda y: [y[..., :4], y[..., 4:5], y[..., 5:]]
    join = JoinedOutput("output0", 0, 3, 2)
    failing = [FloatCheck(300.0, 1.0, 3)] * 3
    got = _joined_e2e_checks(failing, parts(onnx_out), parts(tflite_out), join, 1e-3)
    assert all(c.rel_err == 0.0 for c in got)
    tflite_out[:, 0, 5] += 1                                  # a class changed: still an error
    assert _joined_e2e_checks(failing, parts(onnx_out), parts(tflite_out), join, 1e-3) == failing


def test_boxes_written_with_their_corners_swapped_are_the_rectangle_they_span():
    """An untrained YOLO26's distances have either sign: most of its boxes come out x2 < x1 (92% of
    the detections of /work's yolo26n-detecting). Read as written they have no area and matched
    nothing, the float model not even itself (F1 0.08); read as the rectangle the corners span, a
    model matches itself and a healthy twin passes, while boxes moved off their objects still fail."""
    rng = np.random.default_rng(3)
    f = _e2e(rng)
    flip = rng.random(f.shape[:2]) < 0.7
    f[flip] = f[flip][:, [2, 3, 0, 1, 4, 5]]           # x1 <-> x2, y1 <-> y2 on most rows
    f[:, -1, :4] = [40, 30, -60, -20]                   # a leftover row off the image (what tells corners)
    assert box_format(f) == "xyxy"
    v, o = _one(f, f)
    assert v.passed and o.metrics["detection_f1"] == 1.0 and o.metrics["box_iou_mean"] == pytest.approx(1.0)
    v, o = _one(f, _healthy(rng, f))
    assert v.passed, v.message()
    moved = f.copy()
    moved[..., [0, 2]] += 30.0                          # every box 30 px to the right of its object
    v, o = _one(f, moved)
    assert not v.passed and "output0" in v.message()


def test_swapped_corners_are_a_damage_where_floats_boxes_are_in_order():
    """A trained detector writes x1 <= x2: int8 boxes with their corners swapped give an app negative
    widths; they are judged as written, not read as the rectangle they span."""
    rng = np.random.default_rng(4)
    f = _e2e(rng)
    assert box_format(f) == "xyxy"
    swapped = f.copy()
    swapped[..., :4] = f[..., [2, 3, 0, 1]]
    v, o = _one(f, swapped)
    assert not v.passed and o.metrics["detection_f1"] < 0.5


def test_a_small_six_column_output_forced_to_detection_is_refused_in_one_line():
    """[N, 3, 6] values that are no end-to-end detector's rows, given --output-kind y=detection: a
    KindError naming the shapes a detection head needs (it crashed on an empty match: internal error)."""
    from edgenet.verdicts import KindSpec, Thresholds
    from edgenet.verdicts.kinds import KindError, output_verdict

    f = np.random.default_rng(0).random((2, 3, 6)).astype(np.float32)
    with pytest.raises(KindError, match="cannot be judged as a detection head"):
        output_verdict("y", f, f, False, Thresholds(), KindSpec.parse("y=detection"))
