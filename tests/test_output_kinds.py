"""--output-kind on the CLI and in the API, thresholds from a target profile: refused with one line
when wrong, recorded in report.json when right."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")

import edgenet  # noqa: E402
from edgenet.cli import main  # noqa: E402
from edgenet.errors import TargetError, UsageError  # noqa: E402


def _sigmoid_map(tmp_path):
    """A one-conv text-map head: [1, 3, 16, 16] -> Sigmoid [1, 1, 16, 16] (a DENSE_MAP by shape)."""
    from onnx import TensorProto, helper

    w = np.random.default_rng(0).normal(0, 1, (1, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Sigmoid", ["c"], ["prob"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, 16, 16])],
                              [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "map.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_kinds_are_detected_overridden_recorded_and_refused(tmp_path, capsys):
    path = _sigmoid_map(tmp_path)
    r = edgenet.convert(str(path), int8=True, calib_samples=16, eval_samples=8, out=tmp_path / "a",
                        mean=0, std=1)
    out = r.report.validation.quantized[0]["outputs"][0]
    assert out["kind"] == "map" and "map_iou" in out["metrics"] and out["cosine"] is not None
    assert "## Outputs judged" in (tmp_path / "a" / "report.md").read_text()
    code = main(["convert", str(path), "--int8", "--mean", "0", "--std", "1", "--calib-samples", "16",
                 "--eval-samples", "8", "--output-kind", "prob=generic", "--out", str(tmp_path / "b")])
    assert code == 0
    saved = json.loads((tmp_path / "b" / "report.json").read_text())["validation"]["quantized"][0]
    assert saved["outputs"][0]["kind"] == "generic" and saved["output_kinds_given"] == ["prob=generic"]
    capsys.readouterr()
    for bad, words in ((["prob=boxes"], "unknown kind 'boxes'"), (["nope=classifier"], "no output 'nope'"),
                       (["prob=sequence"], "cannot be judged as a sequence")):
        code = main(["convert", str(path), "--int8", "--mean", "0", "--std", "1", "--calib-samples", "16",
                     "--eval-samples", "8", "--output-kind", *bad, "--out", str(tmp_path / "c")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and words in err[-1] and "Traceback" not in "\n".join(err), err
    with pytest.raises(UsageError, match="unknown kind"):
        edgenet.convert(str(path), output_kinds={"prob": "boxes"}, out=tmp_path / "d")


def test_profile_thresholds_override_the_defaults_and_are_checked(tmp_path):
    from edgenet.targets.profile import load_target

    base = (tmp_path / "t.toml")
    base.write_text('name = "t"\ndescription = "d"\ndevice = "x"\nmin_top1_agreement = 0.99\nmin_map_iou = 0.95\n')
    th = load_target(base).thresholds
    assert th.min_top1_agreement == 0.99 and th.min_map_iou == 0.95 and th.min_sqnr_db == 20.0
    base.write_text('name = "t"\ndescription = "d"\ndevice = "x"\nmin_top1_agreement = 99\n')
    with pytest.raises(TargetError, match=r"min_top1_agreement must be a number in \[0, 1\]"):
        load_target(base)


def test_output_kind_without_a_quantized_model_is_refused(tmp_path, capsys):
    assert main(["convert", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--float",
                 "--output-kind", "logits=classifier", "--out", str(tmp_path / "o")]) == 2
    assert "--output-kind: no int8 or int16x8 model is made" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
