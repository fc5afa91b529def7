"""run_target for the LiteRT targets (rpi, android) and the shape of the report."""
from __future__ import annotations

import json

import pytest

import _tiny_tflite as tiny
from edgenet.errors import ModelError, TargetError, UsageError
from edgenet.targets import load_target
from edgenet.targets.checks import run_target


def test_rpi_runs_in_litert_and_writes_labels(tmp_path):
    (tmp_path / "preprocess.json").write_text("{}")  # written by the convert pipeline
    report = run_target(load_target("rpi"), tmp_path, tiny.mobilenet_like(), None, ("zero", "one"))
    assert report.ok and report.litert[0].runs and report.litert[0].num_threads == 4
    assert report.io_types.matches
    assert report.artifacts == ("labels.txt", "preprocess.json")
    assert (tmp_path / "labels.txt").read_text() == "zero\none\n"
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    for key in ("arena_bytes", "flash_bytes", "ram_budget", "npu_ops", "cpu_ops", "edgetpu_mappable_ops",
                "edgetpu_cpu_ops", "estimated_ms"):
        assert key in d and d[key] is None  # a stable schema: not applicable on a Raspberry Pi
    assert report.summary_line().startswith("rpi: runs in LiteRT (ai-edge-litert")


def test_android_notes_int8_io_where_uint8_is_the_default(tmp_path):
    report = run_target(load_target("android"), tmp_path, tiny.mobilenet_like(), None, None)
    assert report.ok  # I/O types are selectable on a phone: a note, not a failure
    assert any("profile expects uint8 -> uint8" in n for n in report.notes)
    assert any("labels.txt not written" in n for n in report.notes)


def test_mcu_target_needs_the_int8_model(tmp_path):
    with pytest.raises(UsageError, match="needs the int8 model"):
        run_target(load_target("cortex-m"), tmp_path, None, tiny.mobilenet_like(), None)


def test_float_io_on_a_microcontroller_fails(tmp_path):
    profile = tmp_path / "board.toml"
    profile.write_text('name = "board"\ndescription = "d"\ndevice = "MCU"\nruntime = "tflm"\n'
                       'ram_bytes = 100000\nchecks = ["io_types"]\ninput_type = "int8"\n')
    float_io = tiny.mobilenet_like_float_io()
    with pytest.raises(TargetError, match="this device needs integer input and output"):
        run_target(load_target(profile), tmp_path, float_io, None, None)


def test_truncated_model_is_a_one_line_model_error(tmp_path):
    bad = tmp_path / "model_int8.tflite"
    bad.write_bytes(tiny.mobilenet_like().read_bytes()[:2000])
    with pytest.raises(ModelError, match="corrupt .tflite flatbuffer") as info:
        run_target(load_target("rpi"), tmp_path / "out", bad, None, None)
    assert "\n" not in str(info.value)
