"""Outputs written as parts (a split detector head) are judged joined, as the app rebuilds them:
by convert's verdict and by `edgenet bench` alike (numpy only)."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.benchmark.accuracy import compare, recorded_joins
from edgenet.verdicts import judge
from edgenet.verdicts.parts import JoinedOutput, join_arrays, join_items


def _head(n=12, classes=3, anchors=200, seed=0):
    """A YOLOv8-layout head [N, 4 + C, anchors]: boxes in pixels (0..320), class scores mostly near
    zero with one or two confident detections per image, as a trained detector's."""
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([rng.uniform(20, 300, (n, 2, anchors)), rng.uniform(10, 60, (n, 2, anchors))], 1)
    scores = rng.uniform(0, 0.02, (n, classes, anchors))
    for k in range(n):
        for a in rng.choice(anchors, 2, replace=False):
            scores[k, rng.integers(classes), a] = rng.uniform(0.6, 0.95)
    return boxes.astype(np.float32), scores.astype(np.float32)


def _int8(x, scale):
    """``x`` through int8 with ``scale`` and the zero point of a range starting at 0 (-128)."""
    return ((np.clip(np.round(x / scale) - 128, -128, 127) + 128) * scale).astype(np.float32)


def test_join_puts_the_parts_back_in_place():
    a, b, c, d = (np.full((2, k, 5), k, np.float32) for k in (1, 2, 3, 4))
    j = JoinedOutput("head", 1, 2, 1)
    out = join_arrays([a, b, c, d], (j,))
    assert len(out) == 3 and out[0] is a and out[2] is d
    np.testing.assert_array_equal(out[1], np.concatenate([b, c], 1))
    assert join_items(["a", "b", "c", "d"], (j,), lambda jo, parts: jo.name) == ["a", "head", "d"]
    with pytest.raises(ValueError):
        join_arrays([a, b], (JoinedOutput("head", 1, 2, 1),))


@pytest.mark.parametrize("record", [None, {}, {"output": "o", "parts": ["o.0"], "position": 0, "array_axis": 1},
                                    {"output": "o", "parts": ["o.0", "o.1"], "position": "x", "array_axis": 1},
                                    {"output": "o", "parts": ["o.0", "o.1"], "position": -1, "array_axis": 1}])
def test_a_join_record_that_does_not_make_sense_is_none(record):
    assert JoinedOutput.from_record(record or {}) is None


def test_parts_judged_joined_catch_collapsed_scores_and_pass_a_healthy_twin():
    boxes, scores = _head()
    joins = (JoinedOutput("output0", 0, 2, 1),)
    f = join_arrays([boxes, scores], joins)
    # each part with its own int8 scale: healthy
    healthy = join_arrays([_int8(boxes, 320 / 255), _int8(scores, 1 / 255)], joins)
    # one scale for both (what a whole int8 output does): the scores collapse to zero
    collapsed = join_arrays([_int8(boxes, 320 / 255), _int8(scores, 320 / 255)], joins)
    good = judge("int8", ["output0"], f, healthy, [False]).outputs[0]
    bad = judge("int8", ["output0"], f, collapsed, [False]).outputs[0]
    assert good.kind == "detection" and good.passed and good.metrics["detection_f1"] == 1.0
    assert bad.kind == "detection" and not bad.passed
    assert any("scores >=" in f or "detections F1" in f for f in bad.failures)


def test_bench_joins_the_parts_convert_recorded(tmp_path):
    import json

    boxes, scores = _head()
    record = {"output": "output0", "parts": ["output0.0", "output0.1"], "axis": 1, "sizes": [4, 3],
              "position": 0, "array_axis": 1}
    (tmp_path / "report.json").write_text(json.dumps({"split_outputs": record}))
    joins = recorded_joins(tmp_path)
    assert joins == (JoinedOutput("output0", 0, 2, 1),)
    outputs = {"float": [boxes, scores], "int8": [_int8(boxes, 320 / 255), _int8(scores, 320 / 255)]}
    joined = compare(outputs, None, "test", joins=joins)
    assert joined.quality["kind"] == "detection" and not joined.quality["passed"]
    apart = compare(outputs, None, "test")      # parts judged one by one: no detection question asked
    assert all(o["kind"] != "detection" for o in apart.outputs)


def test_bench_without_a_record_joins_nothing(tmp_path):
    assert recorded_joins(tmp_path) == ()
    (tmp_path / "report.json").write_text("{not json")
    assert recorded_joins(tmp_path) == ()


def test_bench_ignores_a_join_record_that_does_not_fit_its_models(tiny_convert_out, tmp_path):
    """A report.json whose split record names more outputs than the models have (files replaced
    since convert): the outputs are judged as they are, and no note claims they were joined."""
    import json
    import shutil

    import edgenet

    folder = tmp_path / "out"
    shutil.copytree(tiny_convert_out, folder)
    record = {"output": "o", "parts": ["o.0", "o.1"], "axis": 1, "sizes": [4, 6], "position": 0, "array_axis": 1}
    (folder / "report.json").write_text(json.dumps({"split_outputs": record}))
    b = edgenet.bench(folder, warmup=1, warmup_seconds=0, runs=3, min_seconds=0)
    assert not any("joined back" in n for n in b.notes)
