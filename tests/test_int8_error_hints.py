"""What a failing (or suspicious) int8 conversion tells the user beyond 'the int8 model lost its
signal': preprocessed --calib arrays that reach outside the int8 input's fixed pixel range
(--mean/--std) clip at the input (a note, and in the error); --strict-int8 on a target with float
kernels turned off the repair that may fix it."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")

from edgenet.cli import main  # noqa: E402


def _conv_gap_fc(path):
    """x [1,3,8,8] -> 1x1 conv (3 -> 4) -> global average pool -> [1, 4]: each output is a channel's mean,
    so the class follows the input channel with the highest mean."""
    from onnx import TensorProto, helper

    w = np.zeros((4, 3, 1, 1), np.float32)
    w[:3, :, 0, 0] = 4 * np.eye(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
                              [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _arrays(path, scale, offset):
    rng = np.random.default_rng(0)
    x = rng.random((48, 3, 8, 8)).astype(np.float32)
    x[np.arange(48), np.arange(48) % 3] += 0.5                  # the class: one channel brighter
    np.savez(path, x=(x * scale + offset).astype(np.float32))


def test_arrays_outside_the_pixel_range_are_named(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    _conv_gap_fc(model)
    inside, outside = tmp_path / "in.npz", tmp_path / "out.npz"
    _arrays(inside, 1 / 1.5, 0.0)        # in [0, 1]: pixels / 255 with --mean 0 --std 1
    _arrays(outside, 4.0, -2.0)          # in [-2, 2]: not what --mean 0 --std 1 makes of pixels
    common = ["--int8", "--mean", "0", "--std", "1", "--calib-samples", "32", "--eval-samples", "16", "-q"]
    assert main(["convert", str(model), "--calib", str(inside), "--out", str(tmp_path / "a"), *common]) == 0
    notes = json.loads((tmp_path / "a" / "report.json").read_text())["notes"]
    assert not [n for n in notes if "clip at the int8 input" in n]
    capsys.readouterr()
    code = main(["convert", str(model), "--calib", str(outside), "--out", str(tmp_path / "b"), *common,
                 "--allow-degraded"])
    assert code == 0
    notes = json.loads((tmp_path / "b" / "report.json").read_text())["notes"]
    clipped = [n for n in notes if "clip at the int8 input" in n]
    assert len(clipped) == 1 and "fixed to [0, 1]" in clipped[0] and "--mean 0 --std 1" in clipped[0]
    share = float(clipped[0].split("% of their values")[0].rsplit(" ", 1)[1])
    assert 50 < share < 90             # values below 0 or above 1 of [-2, 4]


def test_normalized_arrays_under_normalize_in_model_are_told_to_be_pixels(tmp_path, capsys):
    """--normalize-in-model puts (x - mean) / std in the model, which then takes pixels / 255: arrays
    normalized with that --mean/--std clip at its input, and the note says to give pixels, not to pass
    the --mean/--std the arrays were normalized with (the user did)."""
    model = tmp_path / "m.onnx"
    _conv_gap_fc(model)
    normalized = tmp_path / "norm.npz"
    _arrays(normalized, 1 / (1.5 * 0.25), -2.0)     # (pixels / 255 - 0.5) / 0.25: in [-2, 2]
    code = main(["convert", str(model), "--calib", str(normalized), "--out", str(tmp_path / "o"), "--int8",
                 "--mean", "0.5", "--std", "0.25", "--normalize-in-model", "--calib-samples", "32",
                 "--eval-samples", "16", "-q", "--allow-degraded"])
    assert code == 0
    notes = json.loads((tmp_path / "o" / "report.json").read_text())["notes"]
    clipped = [n for n in notes if "clip at the int8 input" in n]
    assert len(clipped) == 1 and "pixels / 255" in clipped[0] and "--normalize-in-model" in clipped[0]
    assert "the --mean/--std the arrays were normalized with" not in clipped[0]


def test_strict_int8_on_a_target_with_float_kernels_says_what_it_turned_off(tmp_path, capsys):
    """rpi with --strict-int8: a damaged int8 model fails, and the error says that mixed precision,
    which --strict-int8 turned off, may repair it (one conv whose output channels differ 1000x)."""
    from test_onnx_to_tf_helpers import spread_conv_onnx

    path = tmp_path / "spread.onnx"
    spread_conv_onnx(path)
    code = main(["convert", str(path), "--target", "rpi", "--int8", "--strict-int8", "--calib-samples", "32",
                 "--eval-samples", "16", "--out", str(tmp_path / "o"), "-q"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "lost its signal: output 'y'" in line
    assert "--strict-int8 kept float out of mixed precision" in line and not (tmp_path / "o").exists()
