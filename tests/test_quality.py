"""edgenet.quality: per-output and per-channel SQNR, degenerate channels, the verdict."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.quality import OutputKind, Thresholds, centered_sqnr_db, is_classifier_shaped, judge, output_quality


def _quantize(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """One int8 scale over [lo, hi], as a per-tensor activation gets."""
    scale = (hi - lo) / 255
    return np.round((np.clip(x, lo, hi) - lo) / scale) * scale + lo


def test_a_concatenated_head_is_caught_per_channel():
    """Boxes in pixels (0..320) and scores (0..1) in one tensor with one scale: the scores collapse
    to a few values while the whole tensor's plain SQNR stays high."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 320, (32, 4, 100))
    scores = rng.beta(0.5, 4, (32, 3, 100))
    head = np.concatenate([boxes, scores], 1).astype(np.float32)
    q = _quantize(head, 0, 320).astype(np.float32)
    out = output_quality("det", head, q, False, Thresholds())
    assert out.sqnr_db > 40                               # what a single number would have said
    assert out.worst_channel in (4, 5, 6) and out.worst_channel_sqnr_db < 5
    assert out.degenerate_channels == (4, 5, 6)
    assert not out.passed and "rows 4, 5, 6 of 7 below 10 dB" in out.failures[0]   # rows of [N, 7, 100], not channels
    assert out.top1_agreement is None                     # not a classifier: agreement means nothing
    # the same scores with their own scale are fine
    fine = np.concatenate([_quantize(boxes, 0, 320), _quantize(scores, 0, 1)], 1).astype(np.float32)
    assert output_quality("det", head, fine, False, Thresholds()).passed


def test_constant_offset_is_not_signal():
    rng = np.random.default_rng(1)
    f = (100 + rng.normal(0, 1.0, (64, 10))).astype(np.float32)    # input-dependent part: 1% of the value
    q = np.full_like(f, 100.0)
    assert centered_sqnr_db(f, q) < 1                     # plain SQNR would be ~40 dB
    v = judge("int8", ["logits"], [f], [q], [False], kinds={"logits": OutputKind.GENERIC})
    assert not v.passed and "SQNR" in v.message() and "'logits'" in v.message()
    # judged as what it is, a classifier (the default for [N, K]): the lost signal is a lost top-1
    v = judge("int8", ["logits"], [f], [q], [False])
    assert not v.passed and "top-1 agreement" in v.message()


def test_an_output_that_does_not_depend_on_the_input_is_judged_on_plain_sqnr():
    """A bias-dominated output (variation 1e-5 of its value, as an untrained head gives) has no
    input-dependent part to lose: the int8 error is measured against the values themselves."""
    rng = np.random.default_rng(4)
    f = (50 + rng.normal(0, 5e-4, (64, 6, 20))).astype(np.float32)
    q = (f + rng.normal(0, 0.05, f.shape)).astype(np.float32)      # ~60 dB plain, -40 dB centered
    out = output_quality("head", f, q, False, Thresholds())
    assert out.static_channels == tuple(range(6)) and out.passed and out.sqnr_centered_db > 50


def test_classifier_shapes_and_nhwc_channels():
    assert is_classifier_shaped((8, 10)) and is_classifier_shaped((8, 1, 1, 10))
    assert not is_classifier_shaped((8, 7, 64)) and not is_classifier_shaped((8, 1))
    rng = np.random.default_rng(2)
    f = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)          # NHWC feature map
    q = f.copy()
    q[..., 2] = 0.0                                                  # channel 2 (last axis in NHWC) dead
    out = output_quality("features", f, q, True, Thresholds())
    assert out.channels == 3 and out.worst_channel == 2 and not out.passed


@pytest.mark.parametrize("min_db", [5.0, 30.0])
def test_thresholds_decide(min_db):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(64, 5)).astype(np.float32)
    q = (f + rng.normal(0, 0.1, f.shape)).astype(np.float32)        # ~20 dB
    v = judge("int8", ["y"], [f], [q], [False], Thresholds(min_db, min_db / 2), kinds={"y": OutputKind.GENERIC})
    assert v.passed is (min_db < 20)
    assert v.to_dict()["outputs"][0]["passed"] is v.passed


def test_boxes_as_rows_have_their_channels_on_the_last_axis():
    """The YOLOv5 layout [N, boxes, xywh + scores]: channels are the 7 values of a row, not the
    1000 rows; the collapsed scores are named as channels of the last axis."""
    from edgenet.quality import channel_axis

    assert [channel_axis(s) for s in [(2, 1000, 7), (2, 7, 1000), (2, 26, 37), (2, 10), (2,), (2, 64, 4, 4)]] == \
        [2, 1, 1, 1, -1, 1]
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.uniform(0, 320, (32, 1000, 4)), rng.beta(0.5, 4, (32, 1000, 3))], 2).astype(np.float32)
    out = output_quality("det", rows, _quantize(rows, 0, 320).astype(np.float32), False, Thresholds())
    assert out.channels == 7 and out.channel_axis == 2 and out.shape == (1000, 7)
    assert out.degenerate_channels == (4, 5, 6)
    assert not out.passed and "columns 4, 5, 6 of 7 (last axis) below 10 dB" in out.failures[0]


def test_float_check_sees_a_wrong_score_column_beside_pixel_boxes():
    from edgenet.converters.validate import check_float

    rng = np.random.default_rng(1)
    ref = np.concatenate([rng.uniform(0, 640, (4, 2000, 4)), rng.uniform(0, 1, (4, 2000, 2))], 2).astype(np.float32)
    wrong = ref.copy()
    wrong[..., 5] = 1 - wrong[..., 5]                      # a score column inverted: 0.1% of the boxes' scale
    assert check_float(ref, wrong).rel_err > 0.5
    assert check_float(ref, ref.copy()).rel_err == 0


def test_outputs_of_indices_are_judged_by_agreement_not_sqnr():
    from edgenet.quality import judge, level_text, worst_output

    rng = np.random.default_rng(3)
    f = rng.integers(0, 5, (8, 1, 6, 6)).astype(np.float32)      # ArgMax class maps, as runners return them
    close, far = f.copy(), f.copy()
    close.reshape(-1)[:10] = (close.reshape(-1)[:10] + 1) % 5     # 10 of 288 differ
    far.reshape(-1)[:100] = (far.reshape(-1)[:100] + 1) % 5
    ok = judge("int8", ["mask"], [f], [close], [False], Thresholds(), indices=[True])
    assert ok.passed and ok.outputs[0].index_agreement == pytest.approx(278 / 288)
    assert ok.outputs[0].sqnr_db is None and level_text(ok.outputs[0].to_dict()) == "index agreement 96.5%"
    bad = judge("int8", ["logits", "mask"], [rng.normal(size=(8, 5)).astype(np.float32), f],
                [rng.normal(size=(8, 5)).astype(np.float32), far], [False, False], Thresholds(), indices=[False, True])
    assert not bad.outputs[1].passed and "34.7% of its indices differ" in bad.outputs[1].failures[0]
    assert worst_output([o.to_dict() for o in bad.outputs])["name"] in ("logits", "mask")
    assert bad.worst.name in ("logits", "mask")


def test_the_io_type_hint_is_given_only_where_parts_of_an_output_collapsed():
    """"--io-type float32 keeps them float" helps a head whose scores collapse beside its boxes, not
    a classifier that int8 damaged as a whole."""
    from types import SimpleNamespace

    from edgenet.converters.verdict_stage import Checked, enforce
    from edgenet.errors import ConversionError
    from edgenet.report import Validation

    rng = np.random.default_rng(0)
    head = np.concatenate([rng.uniform(0, 320, (32, 4, 100)), rng.beta(0.5, 4, (32, 3, 100))], 1).astype(np.float32)
    logits = rng.normal(size=(32, 10)).astype(np.float32)
    cases = {"head": (head, _quantize(head, 0, 320).astype(np.float32)),
             "classifier": (logits, logits + rng.normal(0, 1, logits.shape).astype(np.float32))}
    opts = SimpleNamespace(io_type=None, strict_int8=False, allow_degraded=False)
    profile = SimpleNamespace(output_type=SimpleNamespace(value="int8"), runtime=SimpleNamespace(value="litert"))
    source = SimpleNamespace(info={"trained": True})
    hinted = {}
    for name, (f, q) in cases.items():
        verdict = judge("int8", [name], [f], [q], [False], Thresholds())
        checked = Checked(Validation(0, 0, None, None, 1, (), {}, ()), None, [f], {"int8": verdict})
        with pytest.raises(ConversionError) as err:
            enforce(checked, source, opts, [], profile)
        hinted[name] = "--io-type float32" in str(err.value)
    assert hinted == {"head": True, "classifier": False}
    # an integer-only runtime: no float I/O to keep parts apart, no such hint
    coral = SimpleNamespace(output_type=SimpleNamespace(value="int8"), runtime=SimpleNamespace(value="edgetpu"))
    f, q = cases["head"]
    checked = Checked(Validation(0, 0, None, None, 1, (), {}, ()), None, [f],
                      {"int8": judge("int8", ["head"], [f], [q], [False], Thresholds())})
    with pytest.raises(ConversionError) as err:
        enforce(checked, source, opts, [], coral)
    assert "--io-type" not in str(err.value)


def test_a_class_lost_behind_a_dominant_background_fails_its_index_verdict():
    """95% background: a quantized map that drops class 2 everywhere still agrees on 97% of pixels."""
    f = np.zeros((8, 1, 10, 10), np.float32)
    f[:, :, :2, :3] = 2                                          # 6% of the pixels
    q = np.zeros_like(f)
    q[:, :, :2, :1] = 2                                          # a third of them kept
    out = judge("int8", ["mask"], [f], [q], [False], Thresholds(), indices=[True]).outputs[0]
    assert out.index_agreement == pytest.approx(0.96) and not out.passed
    assert out.failures == ("index 2 (33% kept) mostly lost where float has it (< 50% of its positions kept)",)
