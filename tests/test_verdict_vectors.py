"""[N, K] outputs (numpy only): a classifier judged on the examples float decides, regression heads
(landmarks, a box) by SQNR and embeddings by cosine, told apart from the values; each with a
planted fault the verdict must catch and a healthy twin it must pass."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.verdicts import KindSpec, OutputKind, Status, Thresholds, detect_kind, judge, vector_kind

TH = Thresholds()


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _one(f, q, kind=None):
    v = judge("int8", ["y"], [f], [q], [False], TH, kinds=None if kind is None else [KindSpec.parse(f"y={kind}")])
    return v, v.outputs[0]


def _logits(rng, n=48, k=10, spread=(3, 9)):
    """Trained-like logits: each example's class scores a margin above the others."""
    y = rng.integers(0, k, n)
    z = rng.normal(0, 2, (n, k))
    z[np.arange(n), y] += rng.uniform(*spread, n)
    return z.astype(np.float32)


# -- 1. the classifier judges where float decides ----------------------------------------------------
def test_a_near_uniform_softmax_is_not_judged_where_it_was_refused():
    """An untrained classifier's softmax: every example's classes a hair apart, so int8 rounding
    picks another top-1 on most examples. No example is decided: not judged, not refused."""
    rng = np.random.default_rng(0)
    f = _softmax(rng.normal(0, 0.05, (40, 10)))
    q = _softmax(rng.normal(0, 0.05, (40, 10)) + np.log(f))     # int8's small error on near-equal classes
    v, o = _one(f, q)
    assert o.kind == "classifier" and o.metrics["top1_agreement_all"] < 0.9   # what used to refuse it
    assert v.passed and o.status is Status.NOT_JUDGED and "no signal in the evaluation data" in o.not_judged
    assert o.metrics["decisive_examples"] == 0 and o.metrics["undecided_examples"] == 40


def test_undecided_examples_are_counted_and_left_out_decided_ones_judged():
    rng = np.random.default_rng(1)
    f = _logits(rng)
    f[:16] = rng.normal(0, 0.01, (16, 10))          # 16 examples float barely decides
    q = f + rng.normal(0, 0.05, f.shape).astype(np.float32)
    q[:16] = rng.normal(0, 0.01, (16, 10))          # ... int8 picks anything there
    v, o = _one(f, q)
    assert v.passed and o.metrics["undecided_examples"] >= 16 and o.top1_agreement == 1.0, o.failures
    assert o.metrics["top1_agreement_all"] < 0.9


@pytest.mark.parametrize("damage", ["dead class", "shuffled"])
def test_a_damaged_classifier_still_fails(damage):
    rng = np.random.default_rng(2)
    f = _logits(rng)
    q = f + rng.normal(0, 0.05, f.shape).astype(np.float32)
    assert _one(f, q)[0].passed                       # the healthy twin
    if damage == "dead class":
        q[:, int(np.bincount(np.argmax(f, 1)).argmax())] = -50.0
    else:
        q = q[:, rng.permutation(10)]
    v, o = _one(f, q)
    assert o.kind == "classifier" and not v.passed, o.failures
    assert any("top-1 agreement" in x or "mostly lost" in x for x in o.failures)


# -- 2. classifier, coordinates or embedding, from the values --------------------------------------
def _landmarks(rng, n=48):
    """5-point face landmarks in pixels, the face anywhere in a 320-pixel image."""
    face = np.array([38, 52, 74, 52, 56, 72, 41, 92, 70, 92], np.float64).reshape(5, 2)
    shift, scale = rng.uniform(0, 200, (n, 1, 2)), rng.uniform(0.5, 2, (n, 1, 1))
    return (face[None] * scale + shift + rng.normal(0, 1, (n, 5, 2))).reshape(n, 10).astype(np.float32)


def _boxes(rng, n=48, normalized=False):
    x, y, w, h = (rng.uniform(0, 200, n), rng.uniform(0, 200, n), rng.uniform(10, 100, n), rng.uniform(10, 100, n))
    b = np.stack([x + w / 2, y + h / 2, w, h], 1) / (320 if normalized else 1)
    return b.astype(np.float32)


def test_classifiers_stay_classifiers():
    rng = np.random.default_rng(3)
    assert vector_kind(_logits(rng)) is OutputKind.CLASSIFIER
    assert vector_kind(_logits(rng, k=1000, spread=(4, 12))) is OutputKind.CLASSIFIER
    one_class = rng.normal(0, 2, (48, 10)) + rng.normal(0, 1, 10)
    one_class[:, 3] += rng.uniform(3, 9, 48)                     # data of one class only
    assert vector_kind(one_class) is OutputKind.CLASSIFIER
    two = np.c_[rng.normal(4, 2, 48), rng.normal(-4, 2, 48)]     # binary logits, one class
    assert vector_kind(two) is OutputKind.CLASSIFIER
    sig = 1 / (1 + np.exp(-(rng.normal(-3, 2, (48, 5)) + 6 * (rng.random((48, 5)) < 0.3))))
    assert vector_kind(sig) is OutputKind.CLASSIFIER              # multi-label sigmoid scores
    assert vector_kind(_softmax(rng.normal(0, 0.05, (48, 10)))) is OutputKind.CLASSIFIER   # untrained softmax
    assert vector_kind(rng.normal(0, 0.01, (48, 10)) + rng.normal(0, 0.1, 10)) is OutputKind.CLASSIFIER
    assert vector_kind(_logits(rng, n=4)) is OutputKind.CLASSIFIER   # too few examples to tell


def test_regression_heads_and_embeddings_are_told_apart():
    rng = np.random.default_rng(4)
    assert detect_kind(_landmarks(rng)) is OutputKind.GENERIC
    assert detect_kind(_landmarks(rng) / 320) is OutputKind.GENERIC
    assert detect_kind(_boxes(rng)) is OutputKind.GENERIC
    assert detect_kind(_boxes(rng, normalized=True)) is OutputKind.GENERIC
    b = _boxes(rng)
    assert detect_kind(np.c_[b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2]) is OutputKind.GENERIC   # x1y1x2y2
    e = rng.normal(size=(48, 128))
    assert detect_kind(e / np.linalg.norm(e, axis=1, keepdims=True)) is OutputKind.EMBEDDING
    assert detect_kind((e / np.linalg.norm(e, axis=1, keepdims=True))[:, :, None, None]) is OutputKind.EMBEDDING
    assert detect_kind(100 + rng.normal(size=(48, 10))) is OutputKind.CLASSIFIER   # an offset: no embedding


def test_a_landmark_head_whose_largest_value_survives_still_fails_when_a_point_is_lost():
    """The damage top-1 cannot see: one landmark's x collapses to a constant, the largest
    coordinate (the one top-1 reads) untouched."""
    rng = np.random.default_rng(5)
    f = _landmarks(rng)
    healthy = f + rng.normal(0, 0.3, f.shape).astype(np.float32)
    v, o = _one(f, healthy)
    assert o.kind == "generic" and v.passed, o.failures
    damaged = healthy.copy()
    damaged[:, 0] = float(f[:, 0].min())            # the left eye's x no longer moves
    assert np.array_equal(np.argmax(damaged, 1), np.argmax(healthy, 1))   # top-1 cannot see it
    v, o = _one(f, damaged)
    assert not v.passed and any("value 0 " in x or "values 0" in x for x in o.failures), o.failures


def test_a_box_regressor_that_drifts_fails():
    rng = np.random.default_rng(6)
    f = _boxes(rng, normalized=True)
    assert _one(f, f + rng.normal(0, 0.002, f.shape).astype(np.float32))[0].passed
    drift = f.copy()
    drift[:, 2:] *= 0.6                               # widths and heights shrink: the largest value stays
    v, o = _one(f, drift)
    assert o.kind == "generic" and not v.passed, o.failures


def test_an_embedding_is_judged_by_cosine():
    rng = np.random.default_rng(7)
    e = rng.normal(size=(48, 128))
    f = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    noisy = f + rng.normal(0, 0.01, f.shape).astype(np.float32)     # cosine ~0.99: about 17 dB
    v, o = _one(f, noisy)
    assert o.kind == "embedding" and v.passed and o.metrics["cosine_mean"] > 0.98, o.failures
    assert o.sqnr_db < 20                             # what an SQNR line of 20 dB would have refused
    half = f.copy()
    half[:, :64] = 0.0                                # half the dimensions lost
    v, o = _one(f, half)
    assert not v.passed and "cosine similarity" in o.failures[0] and "worst: example" in o.failures[0]
    v, o = _one(f, f[:, rng.permutation(128)])
    assert not v.passed


def test_the_user_names_the_kind_either_way():
    rng = np.random.default_rng(8)
    f = _landmarks(rng)
    v, o = _one(f, f, "classifier")
    assert o.kind == "classifier" and v.to_dict()["output_kinds_given"] == ["y=classifier"]
    logits = _logits(rng)
    assert _one(logits, logits, "generic")[1].kind == "generic"
    assert _one(logits, logits, "embedding")[1].kind == "embedding"
    with pytest.raises(ValueError, match="cannot be judged as an embedding"):
        _one(rng.normal(size=(8, 3, 5)).astype(np.float32), rng.normal(size=(8, 3, 5)).astype(np.float32),
             "embedding")


def test_a_real_direction_classifiers_logits_stay_a_classifier_on_lines_of_one_direction_too():
    """PaddleOCR's direction classifier (rapidocr 1.4.4, issue 17), its logits (the Softmax's input)
    on 32 rendered lines: a classifier on mixed lines and on lines of one direction only, where its
    two logits have levels; every line decided. Needs the cached model (never downloaded)."""
    import os
    import sys
    from pathlib import Path

    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    cache = Path(os.environ.get("EDGENET_REAL_MODELS", "/work/cache/real-models"))
    path = cache / "rapidocr_onnxruntime/rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if not path.exists():
        pytest.skip(f"no cached real model at {path}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from real_models.models import _make_cls

    model = onnx.load(str(path))
    logits = next(n for n in model.graph.node if n.op_type == "Softmax").input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    data = _make_cls(np.random.default_rng(0), 32)
    z = session.run([logits], {session.get_inputs()[0].name: data.x})[0]
    assert detect_kind(z) is OutputKind.CLASSIFIER
    for direction in (0, 1):
        assert vector_kind(z[np.argmax(z, 1) == direction]) is OutputKind.CLASSIFIER
    v, o = _one(z, z + np.random.default_rng(1).normal(0, 0.05, z.shape).astype(np.float32))
    assert v.passed and o.metrics["decisive_examples"] == 32


def test_a_head_whose_one_large_value_always_wins_reads_as_a_classifier_but_is_noted():
    """[N, 4]: three values near 0.3 and one near 300 (a scale beside offsets). Read as a classifier
    (one class on every example, a large margin); int8 with one scale crushes the small values while
    top-1 stays: the verdict passes, and a note names the values' failure and the override. A healthy
    int8 twin gets no note, nor does a classifier whose classes vary."""
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.uniform(0, 0.8, (48, 3)), rng.normal(312, 5, (48, 1))], 1).astype(np.float32)
    step = f.max() / 255
    q = (np.round(f / step) * step).astype(np.float32)        # one per-tensor int8 scale over all four
    v, o = _one(f, q)
    assert o.kind == "classifier" and v.passed
    assert len(v.notes) == 1 and "class 3 on every one of the 48 examples" in v.notes[0] and "read as a classifier" in v.notes[0]
    assert "values 0, 1, 2 of 4 below" in v.notes[0] and "--output-kind y=generic" in v.notes[0]
    assert _one(f, q, "generic")[0].passed is False
    v, _ = _one(f, f + rng.normal(0, 1e-3, f.shape).astype(np.float32))
    assert v.passed and not v.notes
    z = _logits(rng)
    v, _ = _one(z, z + rng.normal(0, 0.3, z.shape).astype(np.float32))
    assert v.passed and not v.notes


def test_an_embedding_collapsed_onto_its_shared_direction_fails_though_its_cosine_stays_high():
    """Unit vectors sharing one large direction (ReLU features are all positive): int8 that keeps the
    shared direction and loses what tells the examples apart keeps cosine ~0.995 with float's; the
    pairwise similarities no longer follow float's and the verdict fails. Its healthy twin (one int8
    scale) passes."""
    rng = np.random.default_rng(0)
    n, k = 48, 64
    shared = np.zeros(k)
    shared[0] = 1
    d = rng.normal(0, 1, (n, k))
    f = shared + 0.1 * d / np.linalg.norm(d, axis=1, keepdims=True)
    f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
    q = shared + 0.001 * rng.normal(0, 1, (n, k))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    v, o = _one(f, q)
    assert o.kind == "embedding" and o.metrics["cosine_mean"] > 0.99
    assert not v.passed and "collapsed" in o.failures[0] and o.metrics["similarity_correlation"] < 0.5
    step = (f.max() - f.min()) / 255
    v, o = _one(f, (np.round(f / step) * step).astype(np.float32))
    assert v.passed and o.metrics["similarity_correlation"] > 0.9


def test_landmarks_read_as_an_undecided_classifier_get_a_note_when_their_values_fail():
    """Ten values at their own levels in [0.2, 0.8] moving together by a little (a face's points): the
    largest always wins by more than 3 within-column deviations, so they read as a classifier whose
    softmax decides no example: not judged. When int8 crushes their movement the note says that,
    judged by their values, they fail; a healthy int8 gets none."""
    rng = np.random.default_rng(0)
    move = rng.normal(0, 1, (48, 1))
    f = (np.linspace(0.2, 0.8, 10) + 0.02 * move + rng.normal(0, 0.002, (48, 10))).astype(np.float32)
    step = 1 / 64                                                # a coarse grid: the movement lost
    v, o = _one(f, (np.round(f / step) * step).astype(np.float32))
    assert o.kind == "classifier" and o.not_judged is not None and "--output-kind y=generic" in o.not_judged
    assert len(v.notes) == 1 and "float decides none of the 48 examples" in v.notes[0]
    v, o = _one(f, (np.round(f / 1e-4) * 1e-4).astype(np.float32))
    assert o.not_judged is not None and not v.notes


def test_a_binary_classifier_on_data_of_one_class_gets_no_regression_note():
    """Two logits, float picking class 0 everywhere (lines of one direction): a classifier, as
    vector_kind reads two values; int8's coarse losing logit is no reason for a note."""
    rng = np.random.default_rng(1)
    f = np.stack([rng.normal(6, 0.3, 48), rng.normal(-6, 0.05, 48)], 1).astype(np.float32)
    step = 12 / 255
    v, o = _one(f, (np.round(f / step) * step).astype(np.float32))
    assert o.kind == "classifier" and v.passed and not v.notes


def test_the_similarity_check_of_many_examples_takes_a_bounded_sample():
    """Pairs grow as N^2: 3,000 examples are compared over 512 of them (130,816 pairs), quickly."""
    from edgenet.verdicts.vectors import MAX_SIMILARITY_EXAMPLES, similarity_agreement

    rng = np.random.default_rng(2)
    f = rng.normal(size=(3000, 16))
    assert MAX_SIMILARITY_EXAMPLES == 512
    assert similarity_agreement(f, f + 0.01 * rng.normal(size=f.shape)) > 0.99
    assert similarity_agreement(f, rng.normal(size=f.shape)) < 0.1


def test_four_class_logits_ordered_like_a_box_stay_a_classifier():
    """4-class logits on data of one class can satisfy x2 >= x1 and y2 >= y1 on every example; the
    winning class standing out of every row says classifier, not box."""
    from edgenet.verdicts import OutputKind
    from edgenet.verdicts.vectors import vector_kind

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (32, 4))
    logits[:, 2] += 3
    logits[:, 3] += 8
    assert vector_kind(logits) is OutputKind.CLASSIFIER
    centres, sizes = rng.uniform(50, 250, (32, 2)), rng.uniform(10, 60, (32, 2))
    assert vector_kind(np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)) is OutputKind.GENERIC
