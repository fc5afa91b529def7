"""The sweep folder is edgenet's only where edgenet made it: `edgenet sweep --out DIR` run as a real
process against a user's folders and symbolic links (issue 19, data loss). Nothing here converts a
model: every refusal comes before the first cell, and the one accepted sweep has all its cells done."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _folders import snapshot

from edgenet.sweep import SweepSpec, expand
from edgenet.sweep.results import MARKER, RESULTS

ROOT = Path(__file__).resolve().parent.parent
GRID = ["mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--target", "rpi", "--num-classes", "2",
        "--calib-samples", "4", "--eval-samples", "4"]


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edgenet", "sweep", *GRID, "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def _users_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("two years of work")
    (path / "runs").mkdir()
    (path / "runs" / "a.csv").write_text("1,2,3\n")
    return path


def _one_line_refusal(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1, proc.stderr


def test_a_users_cells_folder_is_refused_and_untouched(tmp_path):
    out = tmp_path / "S"
    _users_folder(out / "cells")
    before = snapshot(out)
    proc = _sweep(out)
    _one_line_refusal(proc, "is not an edgenet sweep folder")
    assert snapshot(out) == before          # not even a lock file or a marker


def test_a_cells_symlink_is_never_followed(tmp_path):
    target = _users_folder(tmp_path / "precious")
    kept = snapshot(target)
    lone = tmp_path / "S1"                  # a folder holding only the link
    lone.mkdir()
    (lone / "cells").symlink_to(target)
    proc = _sweep(lone)
    _one_line_refusal(proc, "is not an edgenet sweep folder")
    marked = tmp_path / "S2"                # an edgenet sweep folder whose cells/ was replaced by the link
    marked.mkdir()
    (marked / MARKER).write_text(json.dumps({"written_by": "edgenet", "kind": "sweep"}))
    (marked / "cells").symlink_to(target)
    proc = _sweep(marked)
    _one_line_refusal(proc, "cells is a symbolic link edgenet did not make")
    assert snapshot(target) == kept and (marked / "cells").is_symlink()


def test_a_sweep_keeps_what_it_did_not_write_in_its_own_cells_folder(tmp_path):
    """A finished sweep run again: its crash leftovers go, a user's files (and a cell folder the user
    changed) stay and are named."""
    [cell], _ = expand(SweepSpec(models=("mobilenet_v1",), alphas=(0.25,), resolutions=(32,), targets=("rpi",),
                                 num_classes=2, calib_samples=4, eval_samples=4))
    out = tmp_path / "S"
    cells = out / "cells"
    (cells / cell.id).mkdir(parents=True)
    record = {"id": cell.id, "label": cell.label, "target": "rpi", "precision": "int8", "status": "ok",
              "size_bytes": 100, "sqnr_db": 30.0, "verdict": "pass"}
    (cells / cell.id / "cell.json").write_text(json.dumps({**record, "written_files": {}}))
    (out / RESULTS).write_text(json.dumps(record) + "\n")
    (out / MARKER).write_text(json.dumps({"written_by": "edgenet", "kind": "sweep"}))
    _users_folder(cells / "mine")
    (cells / "notes.txt").write_text("keep me")
    changed = cells / "0123456789abcdef"    # edgenet wrote it (no line: a crash), then the user edited it
    changed.mkdir()
    (changed / "model_int8.tflite").write_bytes(b"edited")
    (changed / "cell.json").write_text(json.dumps({"id": changed.name, "written_files": {
        "model_int8.tflite": "0" * 64}}))
    leftover = cells / ".edgenet-cell-abcd1234"
    leftover.mkdir()
    (leftover / "model_int8.tflite").write_bytes(b"half")
    outside = _users_folder(tmp_path / "elsewhere")
    (cells / "link").symlink_to(outside)
    keep = {k: v for k, v in snapshot(out).items() if not k.startswith("cells/.edgenet-cell-")}
    kept_outside = snapshot(outside)
    proc = _sweep(out)
    assert proc.returncode == 0, proc.stderr
    assert "1 already done, 0 to run" in proc.stderr
    assert "holds 4 item(s) edgenet did not write or that changed since" in proc.stderr
    now = snapshot(out)
    assert not leftover.exists()
    assert {k: now.get(k) for k in keep if k not in ("pareto.md", ".lock")} == \
        {k: v for k, v in keep.items() if k not in ("pareto.md", ".lock")}
    assert snapshot(outside) == kept_outside


# -- what the sweep says about its cells (issue 19, results that mislead) --------------------------
def test_the_summary_counts_verdicts_not_files(tmp_path):
    """Two finished cells, one whose quantized model fails its verdict on untrained weights: the
    closing line does not call both "converted" with none failing."""
    cells, _ = expand(SweepSpec(models=("mobilenet_v1",), alphas=(0.25, 0.5), resolutions=(32,), targets=("rpi",),
                                num_classes=2, calib_samples=4, eval_samples=4))
    out = tmp_path / "S"
    out.mkdir()
    lines = []
    for cell, verdict in zip(cells, ("pass", "fail")):
        lines.append(json.dumps({"id": cell.id, "label": cell.label, "target": "rpi", "precision": "int8",
                                 "status": "ok", "verdict": verdict, "trained": False, "size_bytes": 100,
                                 "sqnr_db": 30.0 if verdict == "pass" else 2.0}))
    (out / RESULTS).write_text("\n".join(lines) + "\n")
    proc = _sweep(out, "--alpha", "0.25,0.5")
    assert proc.returncode == 0, proc.stderr
    # untrained weights: a pass judges no more than a fail does
    assert ("2 cell(s): 0 pass their verdict, 2 converted but not judged (untrained weights), "
            "0 damaged by quantization (verdict fail), 0 do not fit their target, 0 failed") in proc.stderr


@pytest.mark.slow
def test_progress_lines_and_summary_on_a_real_sweep_with_a_float32_cell(tmp_path):
    """float32 and int8 cells converted for real: float32 is not refused over --allow-degraded (an
    option the user never gave), and no line says "ok" about a failing verdict."""
    import pytest

    pytest.importorskip("tensorflow")
    out = tmp_path / "S"
    proc = _sweep(out, "--precision", "float32,int8", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "allow-degraded" not in proc.stderr
    records = [json.loads(x) for x in (out / RESULTS).read_text().splitlines()]
    assert sorted(r["precision"] for r in records) == ["float32", "int8"]
    [int8] = [r for r in records if r["precision"] == "int8"]
    progress = [x for x in proc.stderr.splitlines() if x.startswith("[")]
    assert any("rpi float32: converted" in x and "the reference, no verdict" in x for x in progress), proc.stderr
    line = next(x for x in progress if "rpi int8:" in x)
    if int8["verdict"] == "fail" or int8.get("trained") is False:
        # untrained zoo weights: no verdict either way (docs/verdicts.md), so the line names none
        # (it read "verdict pass: not judged (untrained weights)")
        assert "not judged (untrained weights)" in line and ": ok" not in line and "verdict" not in line
    else:
        assert "verdict pass" in line
    assert "1 float32 (the reference, no verdict)" in proc.stderr


def test_ctrl_c_while_the_data_loads_stops_at_once(tmp_path):
    """SIGINT during the preloading of 3,000 images (about 30 s of work) ends the sweep within
    seconds (it used to wait for the loading to finish)."""
    import signal
    import time

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(1500):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgenet", "sweep", "mobilenet_v1", "--alpha", "0.25",
                             "--resolution", "224", "--num-classes", "2", "--calib", str(tmp_path / "imgs"),
                             "--calib-samples", "2900", "--eval-samples", "64", "--workers", "1",
                             "--out", str(tmp_path / "S")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert "to run" in proc.stderr.readline()
        time.sleep(2)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert time.monotonic() - t0 < 8, err
    assert proc.returncode == 130 and "Traceback" not in err
