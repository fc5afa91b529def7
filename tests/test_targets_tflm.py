"""The cortex-m target: the real TFLite Micro interpreter, arena, budgets and firmware files."""
from __future__ import annotations

import numpy as np
import pytest

import _tiny_tflite as tiny
from edgenet.errors import TargetError
from edgenet.targets import load_target
from edgenet.targets.c_array import ArenaEstimate
from edgenet.targets.checks import run_target
from edgenet.targets.tflite_graph import read_tflite
from edgenet.targets.tflm import litert_outputs, random_inputs, run_tflm

pytestmark = pytest.mark.mcu
pytest.importorskip("tflite_micro")


def _board(tmp_path, ram: int, flash: int = 1 << 20):
    path = tmp_path / "tiny_board.toml"
    path.write_text(
        'name = "tiny-board"\ndescription = "a very small MCU"\ndevice = "Cortex-M0+"\n'
        'runtime = "tflm"\ndelegate = "none"\nnum_threads = 1\n'
        f"ram_bytes = {ram}\nflash_bytes = {flash}\n"
        'checks = ["io_types", "tflm"]\npackagers = ["c_array", "op_resolver"]\n')
    return load_target(path)


def test_tflm_and_litert_agree_on_the_same_int8_inputs():
    model = tiny.mobilenet_like()
    inputs = random_inputs(read_tflite(model), samples=8, seed=3)
    run = run_tflm(model, inputs)
    assert run.ok and run.error is None
    reference = litert_outputs(model, inputs)
    assert run.outputs[0].shape == reference[0].shape == (8, 1, 10)
    top1_tflm = run.outputs[0].reshape(8, -1).argmax(axis=1)
    top1_litert = reference[0].reshape(8, -1).argmax(axis=1)
    np.testing.assert_array_equal(top1_tflm, top1_litert)
    assert np.abs(run.outputs[0].astype(int) - reference[0].astype(int)).max() <= 1


def test_arena_is_measured_and_does_not_depend_on_the_arena_given():
    model = tiny.mobilenet_like()
    small, large = run_tflm(model, samples=1, arena_size=64 * 1024), run_tflm(model, samples=1)
    assert small.ok and large.ok
    assert small.arena_bytes == large.arena_bytes
    # the activations alone: 16x16x8 + 16x16x16 int8 buffers live at the same time
    assert large.arena_head_bytes >= 16 * 16 * 8 + 16 * 16 * 16
    assert large.arena_bytes == large.arena_head_bytes + large.arena_tail_bytes
    too_small = run_tflm(model, samples=1, arena_size=2048)
    assert not too_small.ok and "tensor arena too small" in too_small.error


def test_cortex_m_target_writes_firmware_files_and_reports_the_fit(tmp_path):
    model = tiny.mobilenet_like()
    labels = tuple("abcdefghij")
    report = run_target(load_target("cortex-m"), tmp_path, model, None, labels)
    assert report.ok and report.tflm.runs
    assert 0 < report.arena_bytes < report.ram_budget
    assert report.tflm.litert_top1_agreement == 1.0
    # no metadata in this model: the symbols' prefix falls back to "model"
    assert {"model_model_data.cc", "model_model_data.h", "model_op_resolver.h", "labels.txt"} <= set(report.artifacts)
    assert (tmp_path / "labels.txt").read_text() == "".join(f"{n}\n" for n in labels)
    header = (tmp_path / "model_model_data.h").read_text()
    assert f"kModelTensorArenaSize = {ArenaEstimate(report.arena_bytes, 'tflm').size};" in header
    d = report.to_dict()
    assert d["arena_bytes"] == report.arena_bytes and d["flash_bytes"] == model.stat().st_size
    assert d["ram_budget"] == 448 * 1024 and d["checks"]["tflm"]["ops"][0] == "CONV_2D"
    assert report.summary_line().startswith("cortex-m: fits")


def test_over_budget_model_fails_with_target_error_and_keeps_the_report(tmp_path):
    arena = run_tflm(tiny.mobilenet_like(), samples=1).arena_bytes
    with pytest.raises(TargetError) as info:
        run_target(_board(tmp_path, ram=arena - 1), tmp_path / "out", tiny.mobilenet_like(), None, None)
    message = str(info.value)
    assert message.startswith("tiny-board: tensor arena") and "> RAM budget" in message and "\n" not in message
    report = info.value.report
    assert not report.ok and report.arena_bytes == arena
    assert not (tmp_path / "out" / "model_model_data.cc").exists()  # nothing to flash when it does not fit
    assert any("firmware files (c_array, op_resolver) not written" in n for n in report.notes)
    with pytest.raises(TargetError, match="> flash budget"):
        run_target(_board(tmp_path, ram=1 << 20, flash=1000), tmp_path / "out2", tiny.mobilenet_like(), None, None)


def test_op_without_a_tflm_kernel_is_named(tmp_path):
    model = tiny.with_op_in_the_middle("atan2")
    with pytest.raises(TargetError, match="TFLite Micro has no kernel for ATAN2"):
        run_target(_board(tmp_path, ram=1 << 20), tmp_path, model, None, None)
