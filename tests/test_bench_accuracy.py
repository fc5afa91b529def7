"""Accuracy metrics and benchmark data handling on arrays built here (no model needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgenet.benchmark.accuracy import AccuracyReport, agreement, compare, sqnr_db, top_k_accuracy
from edgenet.benchmark.data import BenchData, align_labels, default_preprocess, load_bench_data
from edgenet.data.preprocess import ColorMode
from edgenet.errors import DataError


def test_top_k_accuracy_by_hand():
    outputs = np.array([[0.1, 0.7, 0.2, 0.0, 0.0, 0.0],   # top-1 = 1
                        [0.5, 0.1, 0.4, 0.0, 0.0, 0.0],   # top-1 = 0, then 2
                        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # top-1 = 5; 0 is last
    labels = np.array([1, 2, 0])
    assert top_k_accuracy(outputs, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(outputs, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(outputs, labels, 5) == pytest.approx(2 / 3)   # label 0 ranks 6th in row 3
    assert top_k_accuracy(outputs, labels, 6) == pytest.approx(1.0)
    assert top_k_accuracy(outputs, labels, 7) is None


def test_agreement_and_sqnr():
    f = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    q = f + np.array([[0.0, 0.0, -2.0], [0.0, 0.0, 0.0]])     # row 0 now picks class 1
    assert agreement(f, q) == 0.5
    assert sqnr_db(f, q) == pytest.approx(10 * math.log10(28.0 / 4.0))
    assert sqnr_db(f, f) == math.inf


def test_compare_labelled_and_unlabelled():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 10)).astype(np.float32)
    q = f + rng.normal(0, 0.05, f.shape).astype(np.float32)
    labels = np.argmax(f, axis=1)
    labels[:20] = (labels[:20] + 1) % 10                    # float right on 90%
    rep = compare({"float": f, "int8": q}, labels, "array")
    assert rep.labelled and rep.samples == 200
    assert rep.models["float"].top1 == pytest.approx(0.9)
    assert 0.8 < rep.models["int8"].top1 <= 0.95
    assert rep.models["float"].top5 is not None
    assert 0.9 < rep.agreement < 1.0
    assert 20 < rep.sqnr_db < 35                            # noise 0.05 on unit signals: ~26 dB
    assert rep.max_abs_diff == pytest.approx(float(np.max(np.abs(f - q))))

    unlabelled = compare({"float": f, "int8": q}, None, "array")
    assert not unlabelled.labelled
    assert unlabelled.models["int8"].top1 is None and unlabelled.agreement == rep.agreement
    only = compare({"int8": q}, labels, "array")
    assert only.agreement is None and only.sqnr_db is None and only.models["int8"].top1 is not None


def test_accuracy_report_json_round_trip_keeps_identical_outputs():
    f = np.eye(4, dtype=np.float32)
    rep = compare({"float": f, "int8": f.copy()}, np.arange(4), "array")
    d = rep.to_dict()
    assert d["sqnr_db"] is None and d["outputs_identical"] is True
    assert AccuracyReport.from_dict(d).sqnr_db == math.inf


def test_load_bench_data_from_arrays_and_checks():
    x = np.zeros((5, 8, 8, 3), np.float32)
    data = load_bench_data((x, np.array([0, 1, 2, 3, 4])), None, limit=3)
    assert data.x.shape == (3, 8, 8, 3) and data.labels.tolist() == [0, 1, 2]
    assert load_bench_data(x, None).labels is None
    with pytest.raises(DataError, match="at least 2 dims"):
        load_bench_data(np.zeros((5,), np.float32), None)
    with pytest.raises(DataError, match="float"):
        load_bench_data(np.zeros((5, 8, 8, 3), np.uint8), None)
    with pytest.raises(DataError, match="one per sample"):
        load_bench_data((x, np.array([0, 1])), None)


def test_align_labels_maps_class_names_onto_the_model_labels():
    model_labels = ("cat", "dog", "bird", "fish")
    data = BenchData(np.zeros((3, 2, 2, 3), np.float32), np.array([0, 1, 1]), ("bird", "dog"), "folder")
    aligned = align_labels(data, model_labels, 4)
    assert aligned.labels.tolist() == [2, 1, 1]
    same = BenchData(data.x, np.array([0, 1, 3]), model_labels, "folder")
    assert align_labels(same, model_labels, 4).labels.tolist() == [0, 1, 3]
    stranger = BenchData(data.x, np.array([0, 1, 1]), ("bird", "horse"), "folder")
    with pytest.raises(DataError, match="'horse' are not among the model's labels"):
        align_labels(stranger, model_labels, 4)
    too_big = BenchData(data.x, np.array([0, 7, 1]), None, "array")
    with pytest.raises(DataError, match="label 7 but the model has 4 classes"):
        align_labels(too_big, None, 4)


def test_default_preprocess_follows_the_model_input():
    p = default_preprocess((1, 48, 64, 1))
    assert (p.height, p.width, p.color) == (48, 64, ColorMode.GRAY)
    with pytest.raises(DataError, match="preprocess.json"):
        default_preprocess((1, 10))


def test_every_output_is_judged_and_the_worst_one_shown():
    """A detector's boxes survive int8, its scores collapse to a few values: the verdict is the
    scores' (bench used to judge only the first output)."""
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 320, (64, 4, 50)).astype(np.float32)
    scores = rng.uniform(0, 1, (64, 3, 50)).astype(np.float32)
    q_boxes = boxes + rng.normal(0, 0.5, boxes.shape).astype(np.float32)
    q_scores = np.round(scores * 2) / 2                      # three values left
    rep = compare({"float": [boxes, scores], "int8": [q_boxes, q_scores]}, None, "array")
    assert [o["name"] for o in rep.outputs] == ["output_0", "output_1"]
    assert rep.outputs[0]["passed"] and not rep.outputs[1]["passed"]
    assert rep.quality["name"] == "output_1" and not rep.quality["passed"]
    assert rep.sqnr_db == pytest.approx(sqnr_db(boxes, q_boxes))   # plain figures: the first output
    again = AccuracyReport.from_dict(rep.to_dict())
    assert again.outputs == rep.outputs and again.quality == rep.quality
    one = compare({"float": boxes, "int8": q_boxes}, None, "array")
    assert one.outputs == () and one.quality["name"] == "output_0" and one.quality["passed"]


def test_outputs_are_matched_by_name_when_both_models_name_them_alike():
    from types import SimpleNamespace

    from edgenet.benchmark.models import output_order

    f = SimpleNamespace(output_names=["boxes", "scores", "mask"])
    assert output_order(f, SimpleNamespace(output_names=["scores", "mask", "boxes"])) == [2, 0, 1]
    assert output_order(f, SimpleNamespace(output_names=["Identity", "Identity_1", "Identity_2"])) == [0, 1, 2]


def test_outputs_of_indices_are_judged_by_agreement():
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 4, (16, 1, 8, 8)).astype(np.float32)
    moved = mask.copy()
    moved.reshape(-1)[:200] = (moved.reshape(-1)[:200] + 1) % 4          # 200 of 1024 indices differ
    rep = compare({"float": [mask], "int8": [moved]}, None, "array", indices=[True])
    assert rep.quality["index_agreement"] == pytest.approx(824 / 1024) and not rep.quality["passed"]
    assert rep.quality["sqnr_centered_db"] is None
    assert rep.sqnr_db is None and rep.max_abs_diff is None and rep.agreement is None   # labels: no magnitude


def test_untrained_weights_recorded_by_convert_make_the_bench_verdict_not_judged(tiny_convert_out, tmp_path):
    """convert's report.json says the weights are untrained: bench keeps the figures, judges nothing."""
    import json
    import shutil

    from edgenet.benchmark.accuracy import recorded_verdict_settings
    from edgenet.benchmark.report import format_table
    from edgenet.benchmark.run import bench

    folder = tmp_path / "out"
    shutil.copytree(tiny_convert_out, folder)
    assert recorded_verdict_settings(folder)[2] is False
    (folder / "report.json").write_text(json.dumps({"model": {"trained": False}, "validation": {"quantized": [
        {"precision": "int8", "outputs": [{"kind": "generic"}], "thresholds": {"min_sqnr_db": 99.0}}]}}))
    assert recorded_verdict_settings(folder)[2] is True
    x = np.random.default_rng(0).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    result = bench(folder, data=(x, None), warmup=1, warmup_seconds=0, runs=3, min_seconds=0.0)
    assert result.accuracy.untrained and result.to_dict()["accuracy"]["untrained"] is True
    table = format_table(result)
    assert "verdict not judged (untrained weights)" in table and "FAIL" not in table
    assert result.accuracy.quality["passed"] is False       # the 99 dB threshold fails: the figure is kept


def test_a_recorded_kind_that_does_not_fit_the_output_falls_back_to_its_own():
    """A report.json from another model (files replaced since convert): the bench still judges."""
    import numpy as np

    from edgenet.benchmark.accuracy import compare

    f = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
    r = compare({"float": [f], "int8": [f]}, None, "x", kinds=["sequence"])
    assert r.quality["kind"] == "classifier" and r.quality["passed"]


def test_bench_keeps_the_options_of_the_users_output_kind(tmp_path):
    """--output-kind o=sequence:blank=3 at convert: bench decodes with blank 3 too."""
    import json

    from edgenet.benchmark.accuracy import recorded_verdict_settings
    from edgenet.verdicts import KindSpec

    report = {"validation": {"quantized": [{"precision": "int8", "thresholds": {},
                                             "output_kinds_given": ["o=sequence:blank=3"],
                                             "outputs": [{"name": "o", "kind": "sequence"}]}]}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    kinds, _, _ = recorded_verdict_settings(tmp_path)
    assert kinds == [KindSpec.parse("o=sequence:blank=3")]


def test_the_benchmark_does_not_judge_data_that_does_not_vary_as_convert_does():
    """One image forty times: convert says 'not judged (it does not vary)'; the benchmark on the same
    eval_set.npz said 'top-1 agreement 100.0%; verdict pass'. Damage that shows even so still fails."""
    f = np.tile(np.array([[0.1, 6.0, -1.0]], np.float32), (40, 1))
    rep = compare({"float": f, "int8": f + 0.01}, None, "array")
    assert rep.quality["status"] == "not judged" and "does not vary" in rep.quality["not_judged"]
    q = f.copy()
    q[:, 1] = np.nan
    assert compare({"float": f, "int8": q}, None, "array").quality["passed"] is False
    varied = f + np.random.default_rng(0).normal(0, 1, f.shape).astype(np.float32)
    assert compare({"float": varied, "int8": varied}, None, "array").quality["status"] == "pass"
