"""edgenet sweep without converting anything: the grid and cell ids, the precision mapping, the
crash-safe results folder, the Pareto front, the preloaded-data hook, the CLI's bad input."""
from __future__ import annotations

import json
import math
import subprocess
import time
import sys
from pathlib import Path

import numpy as np
import pytest

from edgenet.config import Precision
from edgenet.errors import ConversionError, UsageError
from edgenet.sweep import SweepSpec, expand
from edgenet.sweep.cells import convert_precisions, precision_numbers
from edgenet.sweep.pareto import fronts, render, to_markdown
from edgenet.sweep.results import RESULTS, SweepStore, read_results

ROOT = Path(__file__).resolve().parent.parent


def _spec(**kw) -> SweepSpec:
    base = dict(models=("mobilenet_v1",), alphas=(0.25, 0.5), resolutions=(32, 64), targets=("rpi", "cortex-m"),
                num_classes=2, calib_samples=8, eval_samples=4)
    return SweepSpec(**{**base, **kw})


# -- the grid --------------------------------------------------------------------------------------
def test_grid_is_the_cross_product_with_stable_distinct_ids():
    spec = _spec(targets=("rpi", "android"), precisions=(Precision.INT8, Precision.FLOAT32))
    cells, notes = expand(spec)
    assert len(cells) == 2 * 2 * 2 * 2 and not notes
    assert len({c.id for c in cells}) == len(cells)
    again, _ = expand(spec)
    assert [c.id for c in again] == [c.id for c in cells]
    assert cells[0].label == "mobilenet_v1 0.25/32 rpi int8"


@pytest.mark.parametrize("change", [{"calib_samples": 9}, {"eval_samples": 5}, {"num_classes": 3}, {"seed": 1},
                                    {"calib": "digits"}, {"bench": True}])
def test_a_changed_option_makes_new_cells(change):
    old = {c.id for c in expand(_spec())[0]}
    new = {c.id for c in expand(_spec(**change))[0]}
    assert not old & new


def test_model_files_are_one_cell_per_target_and_precision_and_hashed_by_content(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"first")
    cells, notes = expand(_spec(models=("mobilenet_v1", str(model))))
    files = [c for c in cells if c.kind == "onnx"]
    assert len(files) == 2 and all(c.alpha is None and c.resolution is None for c in files)
    assert any("do not apply" in n and "m.onnx" in n for n in notes)
    moved = tmp_path / "sub" / "n.onnx"
    moved.parent.mkdir()
    moved.write_bytes(b"first")
    assert {c.id for c in expand(_spec(models=(str(moved),)))[0]} == {c.id for c in files}  # same bytes, same cells
    model.write_bytes(b"second")
    assert not {c.id for c in expand(_spec(models=(str(model),)))[0]} & {c.id for c in files}


def test_float_cells_of_int8_only_targets_are_left_out_with_a_note():
    cells, notes = expand(_spec(targets=("rpi", "cortex-m", "ethos-u55"), precisions=(Precision.FLOAT32, Precision.INT8)))
    assert sorted({(c.target, c.precision.value) for c in cells}) == [
        ("cortex-m", "int8"), ("ethos-u55", "int8"), ("rpi", "float32"), ("rpi", "int8")]
    assert any("cortex-m takes int8 models only" in n for n in notes)
    with pytest.raises(UsageError, match="no cell to run"):
        expand(_spec(targets=("coral",), precisions=(Precision.FLOAT32,)))


def test_zoo_model_without_width_multiplier_takes_alpha_one():
    cells, notes = expand(_spec(models=("squeezenet1_1",), targets=("rpi",)))
    assert sorted({(c.alpha, c.resolution) for c in cells}) == [(1.0, 32), (1.0, 64)]
    assert any("no width multiplier" in n for n in notes)


@pytest.mark.parametrize("kw, words", [({"targets": ("rpii",)}, "unknown target"),
                                       ({"models": ("mobilenet_v2",)}, "unknown model"),
                                       ({"alphas": (1.5,)}, "--alpha"),
                                       ({"resolutions": (50,)}, "--resolution"),
                                       ({"models": ("missing.onnx",)}, "no such file"),
                                       ({"calib": "no/such/folder"}, "no such folder"),
                                       ({"models": ("pkg.mod:build",)}, "a sweep takes")])
def test_bad_grid_is_one_clear_error(kw, words):
    with pytest.raises(UsageError, match=words):
        expand(_spec(**kw))


def test_calibration_folder_content_is_part_of_the_id(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    one = {c.id for c in expand(_spec(calib=str(folder)))[0]}
    (folder / "a.png").write_bytes(b"y")
    assert not one & {c.id for c in expand(_spec(calib=str(folder)))[0]}


# -- precisions ------------------------------------------------------------------------------------
def _verdict(sqnr, agreement, passed=True):
    return {"passed": passed, "outputs": [{"sqnr_centered_db": sqnr, "top1_agreement": agreement}]}


REPORT = {"precisions": [{"precision": "float32", "file": "model_float.tflite", "bytes": 1000, "verdict": None},
                         {"precision": "int8", "file": "model_int8.tflite", "bytes": 300,
                          "verdict": _verdict(30.5, 0.99)}],
          "accuracy": {"float_top1": 0.9, "int8_top1": 0.88}}


def test_precision_maps_to_convert_precisions_and_report_fields():
    assert convert_precisions(Precision.FLOAT32) == (Precision.FLOAT32,)
    assert convert_precisions(Precision.INT8) == (Precision.FLOAT32, Precision.INT8)
    assert convert_precisions(Precision.FLOAT16) == (Precision.FLOAT32, Precision.FLOAT16)
    f = precision_numbers(REPORT, Precision.FLOAT32)
    assert (f["file"], f["size_bytes"], f["sqnr_db"], f["top1"]) == ("model_float.tflite", 1000, None, 0.9)
    q = precision_numbers(REPORT, Precision.INT8)
    assert (q["file"], q["size_bytes"], q["sqnr_db"], q["top1"]) == ("model_int8.tflite", 300, 30.5, 0.88)
    with pytest.raises(ConversionError, match="float16"):
        precision_numbers(REPORT, Precision.FLOAT16)
    h = precision_numbers({**REPORT, "precisions": [*REPORT["precisions"], {
        "precision": "float16", "file": "model_float16.tflite", "bytes": 500, "verdict": _verdict(60.0, 1.0)}]},
        Precision.FLOAT16)
    assert (h["file"], h["size_bytes"], h["sqnr_db"], h["top1"], h["verdict"]) == (
        "model_float16.tflite", 500, 60.0, None, "pass")


# -- the results folder ----------------------------------------------------------------------------
def _record(cell_id: str, **kw) -> dict:
    return {"id": cell_id, "label": kw.pop("label", cell_id), "target": "t", "status": "ok", "precision": "int8",
            "size_bytes": 100, "sqnr_db": 20.0, **kw}


def test_commit_writes_folder_then_line_and_reopen_repairs_a_crash(tmp_path):
    with SweepStore(tmp_path / "S") as store:
        store.commit(_record("aaa"), {"model_int8.tflite": b"\x01\x02", "sub/x.txt": b"hi"})
    folder = tmp_path / "S"
    assert (folder / "cells" / "aaa" / "model_int8.tflite").read_bytes() == b"\x01\x02"
    assert (folder / "cells" / "aaa" / "sub" / "x.txt").read_bytes() == b"hi"
    assert json.loads((folder / "cells" / "aaa" / "cell.json").read_text())["id"] == "aaa"
    # what a kill leaves: a cell folder whose line was never written, a staging folder, a torn last line
    with SweepStore(folder) as store:
        store.commit(_record("bbb"), {"model_int8.tflite": b"whole"})
    lines = (folder / RESULTS).read_text().splitlines(keepends=True)
    (folder / RESULTS).write_text(lines[0])
    (folder / "cells" / ".edgenet-cell-x1").mkdir()
    (folder / "cells" / ".edgenet-cell-x1" / "model_int8.tflite").write_bytes(b"half")
    with open(folder / RESULTS, "a") as fh:
        fh.write('{"id": "ddd", "sta')
    assert set(read_results(folder)) == {"aaa"}
    with SweepStore(folder) as store:
        assert set(store.finished()) == {"aaa"} and not store.notes
        assert sorted(p.name for p in (folder / "cells").iterdir()) == ["aaa"]
        assert (folder / RESULTS).read_text().endswith("}\n")
        store.commit(_record("bbb"), {})
    lines = (folder / RESULTS).read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["aaa", "bbb"]


def test_a_folder_holding_something_else_or_in_use_is_refused(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not an edgenet sweep folder"):
        SweepStore(other).open()
    store = SweepStore(tmp_path / "S").open()
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from edgenet.sweep.results import SweepStore\n"
            "try:\n    SweepStore(sys.argv[1]).open()\nexcept Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "S"), str(ROOT)], capture_output=True,
                         text=True, timeout=60)
    assert "another sweep is writing" in out.stdout
    store.close()


# -- the Pareto front --------------------------------------------------------------------------------
def test_front_keeps_exactly_the_unbeaten_cells():
    rows = [_record("a", label="A", size_bytes=100, sqnr_db=20.0, arena_bytes=10, fits=True),
            _record("b", label="B", size_bytes=200, sqnr_db=30.0, arena_bytes=10, fits=True),
            _record("c", label="C", size_bytes=200, sqnr_db=25.0, arena_bytes=20, fits=True),   # beaten by B
            _record("d", label="D", size_bytes=400, sqnr_db=40.0, arena_bytes=90, fits=False, verdict="fail",
                    trained=False),
            _record("e", label="E", size_bytes=800, sqnr_db=None, precision="float32", arena_bytes=90, fits=True),
            _record("f", label="F", status="failed", error="boom"),
            _record("g", label="G", status="does_not_fit", size_bytes=50, sqnr_db=None, error="over RAM")]
    [front] = fronts(rows)
    assert front.cost == "arena_bytes" and front.quality == "sqnr_db"
    assert [r["label"] for r in front.front] == ["A", "B", "D", "E"]   # float32: the reference, best quality
    assert [(r["label"], by["label"]) for r, by in front.beaten] == [("C", "B")]
    assert sorted(r["label"] for r in front.other) == ["F", "G"]
    md = to_markdown([front])
    assert "| D | 40.0 dB | not judged (untrained) | 0.4 | 0.1 | **no** | `d` |" in md and "ref (float32)" in md
    assert "| E | ref (float32) | reference |" in md
    assert "**Untrained weights:** 1 of 5 ranked cell(s)" in md      # said before any table
    assert "- C (25.0 dB" in md and "by B" in md and "F: failed: boom" in md


def test_front_uses_top1_and_latency_when_every_cell_has_them():
    rows = [_record("a", size_bytes=100, top1=0.8, latency_ms=2.0, arena_bytes=5),
            _record("b", size_bytes=100, top1=0.9, latency_ms=3.0, arena_bytes=9)]
    [front] = fronts(rows)
    assert (front.quality, front.cost) == ("top1", "arena_bytes") and len(front.front) == 2
    for r in rows:
        r.pop("arena_bytes")
    [front] = fronts(rows)
    assert front.cost == "latency_ms" and len(front.front) == 2
    rows[0]["latency_ms"] = 3.0
    [front] = fronts(rows)
    assert [r["id"] for r in front.front] == ["b"]
    assert not math.isinf(front.front[0]["top1"])


def test_render_writes_markdown_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    with SweepStore(tmp_path) as store:
        store.commit(_record("a", target="cortex-m", arena_bytes=1000, fits=True), {})
        store.commit(_record("b", target="cortex-m", size_bytes=50, sqnr_db=10.0, arena_bytes=2000, fits=False), {})
    md, png, all_fronts = render(tmp_path)
    assert "## cortex-m" in md.read_text() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(all_fronts[0].front) == 2


# -- the preloaded-data hook -------------------------------------------------------------------------
def test_served_from_loads_once_and_serves_the_same_arrays():
    from edgenet.data.datasets import load_dataset, served_from
    from edgenet.data.preprocess import Preprocess

    pre = Preprocess.default(32, 3)
    with served_from({}) as memory:
        first = load_dataset("shapes", pre, split="calib", limit=4, seed=0)
        assert len(memory) == 1
        assert load_dataset("shapes", pre, split="calib", limit=4, seed=0) is first
    frozen = {key: first.__class__(x=np.zeros_like(first.x), labels=first.labels, class_names=first.class_names,
                                   name="shapes") for key in memory}
    with served_from(frozen):
        assert not load_dataset("shapes", pre, split="calib", limit=4, seed=0).x.any()
    again = load_dataset("shapes", pre, split="calib", limit=4, seed=0)   # the hook is gone
    assert again is not first and np.array_equal(again.x, first.x)


# -- the command line --------------------------------------------------------------------------------
def _cli(*args, cwd=None):
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edgenet", "sweep", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, words", [(["--target", "nope", "--out", "S"], "unknown target"),
                                         (["--precision", "int4", "--out", "S"], "not a precision"),
                                         (["--alpha", "x", "--out", "S"], "not a comma-separated list"),
                                         (["mobilenet_v1"], "--out DIR is required"),
                                         (["--report", "nowhere"], "not a sweep folder"),
                                         (["--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", "S"],
                                          "nothing answers at 127.0.0.1:1 within 3 s"),
                                         (["--executor", "ray", "--ray-address", "head:port", "--out", "S"],
                                          "not HOST:PORT")])
def test_cli_bad_input_is_one_line(tmp_path, args, words):
    t0 = time.monotonic()
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode != 0 and words in out.stderr
    assert time.monotonic() - t0 < 30                    # an unreachable Ray cluster: seconds, not minutes
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "S").exists()


def test_cli_help_has_examples():
    out = _cli("--help")
    assert out.returncode == 0 and "--executor ray" in out.stdout and "--report S" in out.stdout


def test_longest_cells_are_estimated_first(tmp_path):
    from edgenet.sweep.cells import estimated_work

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    cells, _ = expand(SweepSpec(models=("mobilenet_v1", str(model)), alphas=(0.25, 1.0), resolutions=(64, 224),
                                targets=("rpi",)))
    order = [(c.kind, c.alpha, c.resolution) for c in sorted(cells, key=estimated_work, reverse=True)]
    assert order == [("onnx", None, None), ("zoo", 1.0, 224), ("zoo", 1.0, 64), ("zoo", 0.25, 224), ("zoo", 0.25, 64)]


def test_preload_keeps_within_its_memory_budget():
    """A grid of many resolutions does not preload every resolution's arrays at once (issue 19: a
    6,400-cell grid held 13.7 GB): past the budget, cells load their own data."""
    from edgenet.sweep.worker import preload, preload_budget

    cells, _ = expand(_spec(resolutions=(32, 64), alphas=(0.25,), calib_samples=4, eval_samples=4))
    one = (4 + 4) * 32 * 32 * 3 * 4
    notes: list[str] = []
    memories = preload(cells, budget=one, notes=notes)
    assert sorted(m is None for m in memories.values()) == [False, True]
    assert notes and "1 preprocessing(s) not preloaded" in notes[0]
    assert all(m is not None for m in preload(cells, budget=10 * one).values())
    assert 0 < preload_budget() <= 2 << 30


def test_a_sweep_folder_of_an_earlier_edgenet_is_taken_and_marked(tmp_path):
    """Before the marker: results.jsonl, cells/, pareto.md and .lock only. Its crash leftovers with
    the names edgenet gave them are removed; a cell folder whose files cannot be proven edgenet's
    (no hashes in its cell.json) is kept and named."""
    from edgenet.sweep.results import MARKER

    folder = tmp_path / "S"
    (folder / "cells" / "aaa").mkdir(parents=True)
    (folder / "cells" / "aaa" / "cell.json").write_text(json.dumps(_record("aaa")))
    (folder / "cells" / "bbb").mkdir()
    (folder / "cells" / "bbb" / "cell.json").write_text(json.dumps(_record("bbb")))
    (folder / "cells" / ".work-abcd1234").mkdir()
    (folder / RESULTS).write_text(json.dumps(_record("aaa")) + "\n")
    (folder / "pareto.md").write_text("# old\n")
    (folder / ".lock").write_text("")
    with SweepStore(folder) as store:
        assert any("sweep folder of an earlier edgenet" in n for n in store.notes)
        assert any("holds 1 item(s)" in n and "bbb" in n for n in store.notes)
    assert (folder / MARKER).is_file()
    assert sorted(p.name for p in (folder / "cells").iterdir()) == ["aaa", "bbb"]
    (folder / MARKER).unlink()
    (folder / "mine.txt").write_text("x")           # not only a sweep's files: not taken
    with pytest.raises(UsageError, match="is not an edgenet sweep folder"):
        SweepStore(folder).open()


def test_a_folder_whose_results_jsonl_holds_no_record_is_not_taken_for_an_old_sweep(tmp_path):
    """A user's one-line results.jsonl and pareto.md: not a sweep's (the torn-last-line allowance
    does not make any single line a record); refused, nothing written or replaced."""
    folder = tmp_path / "S"
    folder.mkdir()
    (folder / RESULTS).write_text("my notes\n")
    (folder / "pareto.md").write_text("# my own pareto analysis\n")
    with pytest.raises(UsageError, match="is not an edgenet sweep folder"):
        SweepStore(folder).open()
    assert sorted(p.name for p in folder.iterdir()) == ["pareto.md", RESULTS]
    assert (folder / "pareto.md").read_text() == "# my own pareto analysis\n"
