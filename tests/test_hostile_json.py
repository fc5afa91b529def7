"""Hostile values in JSON and arrays a user or a folder hands edgenet (issue 19): one clear line and a
plain exit code, never "internal error" (exit 70). JSON is read in one place, edgenet.safe_json."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgenet.errors import DataError, UsageError
from edgenet.safe_json import load_file, loads

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"height": 32, "width": 32, "color": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
HOSTILE = {
    "deep": ("[" * 200_000 + "]" * 200_000, "nested too deep"),
    "1e999": (json.dumps(GOOD).replace('"height": 32', '"height": 1e999'), "overflows to infinity"),
    "nan": (json.dumps(GOOD).replace("[0.5, 0.5, 0.5]", "[NaN, 0.5, 0.5]", 1), "NaN is not a number"),
    "5000 digits": (json.dumps(GOOD).replace('"height": 32', '"height": ' + "9" * 5000), "5000 digits"),
}


# -- the reader ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_safe_json_refuses_each_hostile_value_in_one_line(name):
    text, needle = HOSTILE[name]
    with pytest.raises(DataError, match=needle) as info:
        loads(text, "x.json")
    assert str(info.value).startswith("x.json: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("text, needle", [("-Infinity", "Infinity is not a number"),
                                          (str(2 ** 63), "out of the 64-bit range"),
                                          ('{"a": [[[1]]]}', "nested too deep"),
                                          ("{'a': 1}", "not valid JSON"),
                                          (b"\xff\xfe{}", "not UTF-8")])
def test_safe_json_limits(text, needle):
    with pytest.raises(UsageError, match=needle):
        loads(text, "--x", max_depth=3, error=UsageError)


def test_safe_json_reads_what_edgenet_writes(tmp_path):
    obj = {"a": [1, -2, 2 ** 63 - 1, 1.5e300, None, True, "x"], "b": {"c": [[]]}}
    assert loads(json.dumps(obj), "x") == obj
    (tmp_path / "big.json").write_text(json.dumps(list(range(1000))))
    with pytest.raises(DataError, match="at most 100 are read"):
        load_file(tmp_path / "big.json", max_bytes=100)


# -- the commands --------------------------------------------------------------------------------
def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edgenet", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=cwd)


def _one_line(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgenet: ") and needle in lines[0], proc.stderr


@pytest.mark.parametrize("name", ["deep", "5000 digits"])
def test_convert_preprocess_file_with_hostile_values(tmp_path, name):
    text, needle = HOSTILE[name]
    (tmp_path / "pre.json").write_text(text)
    proc = _run("convert", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--num-classes", "2",
                "--preprocess", str(tmp_path / "pre.json"), "--out", str(tmp_path / "out"), "-q")
    _one_line(proc, 1, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_bench_folder_preprocess_json_with_hostile_values(tiny_convert_out, tmp_path, name):
    text, needle = HOSTILE[name]
    folder = tmp_path / "conv"
    shutil.copytree(tiny_convert_out, folder)
    (folder / "preprocess.json").write_text(text)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(images / "a.png")
    proc = _run("bench", str(folder), "--data", str(images), "--runs", "3", "--warmup", "1", "--min-seconds", "0",
                "-q")
    _one_line(proc, 1, needle)


@pytest.mark.parametrize("kind", ["numeric strings", "complex"])
def test_bench_eval_set_of_strings_or_complex_numbers_is_refused(tiny_convert_out, tmp_path, kind):
    folder = tmp_path / "conv"
    shutil.copytree(tiny_convert_out, folder)
    x = np.zeros((2, 32, 32, 3), np.float32)
    x = x.astype(str) if kind == "numeric strings" else x + 1j
    np.savez(folder / "eval_set.npz", **{"input:input": x})
    proc = _run("bench", str(folder), "--runs", "3", "--warmup", "1", "--min-seconds", "0", "-q")
    _one_line(proc, 1, "not real numbers")


def test_sweep_report_on_a_crafted_results_file(tmp_path):
    folder = tmp_path / "S"
    folder.mkdir()
    good = {"id": "a1", "label": "A", "status": "ok", "target": "rpi", "precision": "int8", "size_bytes": 100,
            "sqnr_db": 30.0, "verdict": "pass"}
    crafted = [{**good, "id": "b", "target": ["x"]}, {**good, "id": "c", "size_bytes": "big"},
               {**good, "id": "d", "label": {"a": 1}}, {**good, "id": "e", "arena_bytes": [1]},
               {**good, "id": "f", "size_bytes": -5}, {**good, "id": "../../g"}, {"id": "h"}]
    lines = [json.dumps(r) for r in crafted] + ["[" * 100_000, '{"id": "i", "sqnr_db": 1e999}']
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    _one_line(_run("sweep", "--report", str(folder)), 2, "--report")   # not a sweep folder: nothing written
    assert sorted(os.listdir(folder)) == ["results.jsonl"]
    (folder / ".edgenet-sweep.json").write_text(json.dumps({"written_by": "edgenet", "kind": "sweep"}))
    _one_line(_run("sweep", "--report", str(folder)), 2, "holds no record of a sweep cell")
    with open(folder / "results.jsonl", "a") as fh:
        fh.write(json.dumps(good) + "\n")
    proc = _run("sweep", "--report", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "note: 9 line(s)" in proc.stderr and "Traceback" not in proc.stderr
    assert "| A |" in (folder / "pareto.md").read_text()


def test_bench_on_a_tflite_with_no_outputs(tmp_path):
    """A .tflite whose subgraph lists no output (its flatbuffer edited with TensorFlow's own schema)."""
    pytest.importorskip("tensorflow")
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    from _tiny_tflite import mobilenet_like

    model = schema.ModelT.InitFromPackedBuf(bytearray(mobilenet_like().read_bytes()), 0)
    model.subgraphs[0].outputs = []
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "no_outputs.tflite"
    path.write_bytes(bytes(builder.Output()))
    proc = _run("bench", str(path), "--runs", "3", "--warmup", "1", "--min-seconds", "0", "-q")
    _one_line(proc, 1, "has no outputs")
