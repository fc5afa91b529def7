"""Hostile checkpoints and training options, through the real commands in fresh processes.

A checkpoint that records an impossible architecture names the file, not an option the user never
passed; weights that do not fit list the missing/unexpected/misshapen keys; a pickle that would run
code is refused with our own line (and does not run); `train` refuses a non-finite or non-positive
--lr before any work, and a run whose loss stops being finite saves nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_hostile_bench import edgenet, fails

torch = pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path, **changes) -> Path:
    from edgenet.checkpoint import save_checkpoint
    from edgenet.data.preprocess import Preprocess
    from edgenet.zoo import create_model

    model = create_model(alpha=0.25, resolution=32, num_classes=2)
    fields = dict(model="mobilenet_v1", alpha=0.25, resolution=32, num_classes=2, in_channels=3,
                  activation="relu6", state_dict=model.state_dict(), class_names=["a", "b"],
                  preprocess=Preprocess.default(32), dataset="digits")
    fields.update(changes)
    save_checkpoint(path, **fields)
    return path


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1", "1e9"])
def test_train_refuses_a_bad_learning_rate_up_front(tmp_path, lr):
    fails(tmp_path, 2, "--lr must be a finite number in (0, 10] (got ", "train", "--lr", lr, "--out",
          str(tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_checkpoint_with_an_impossible_alpha_blames_the_file(tmp_path):
    ck = _checkpoint(tmp_path / "ck.pt", alpha=5.0)
    line = fails(tmp_path, 1, "the checkpoint records an invalid architecture (alpha must be in (0, 1], got 5)",
                 "convert", str(ck), "--quiet", "--out", str(tmp_path / "out"))
    assert "--alpha" not in line and str(ck) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_checkpoint_weights_that_do_not_fit_are_listed(tmp_path):
    from edgenet.zoo import create_model

    wrong = create_model(alpha=0.5, resolution=32, num_classes=2).state_dict()
    wrong["extra.weight"] = torch.zeros(1)
    del wrong["classifier.bias"]
    ck = _checkpoint(tmp_path / "ck.pt", state_dict=wrong)
    line = fails(tmp_path, 1, "weights do not match the mobilenet_v1 alpha=0.25 it records: 1 missing keys "
                 "(classifier.bias); 1 unexpected keys (extra.weight);", "convert", str(ck), "--quiet", "--out",
                 str(tmp_path / "out"))
    assert "with a shape mismatch (file vs model:" in line and "Error(s) in loading state_dict" not in line


@pytest.mark.slow
@pytest.mark.parametrize("how", ["checkpoint", "weights"])
def test_pickle_that_would_run_code_is_refused(tmp_path, how):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": _RunsCode(str(marker))}, evil)
    args = ["convert", str(evil)] if how == "checkpoint" else ["convert", "mobilenet_v1", "--weights", str(evil)]
    line = fails(tmp_path, 1, "refused: the ", *args, "--quiet", "--out", str(tmp_path / "out"))
    assert "holds pickled Python objects" in line and line.rstrip().endswith("torch.save")
    assert not marker.exists()


@pytest.mark.slow
def test_training_whose_loss_stops_being_finite_saves_nothing(tmp_path):
    code = ("from edgenet.train import train\n"
            f"train('digits', alpha=0.25, resolution=32, epochs=1, lr=10, weight_decay=10, threads=1, batch_size=2,"
            f" train_limit=64, test_limit=16, augment=False, out={str(tmp_path / 'x.pt')!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0
    assert "TrainingDivergedError: training diverged at epoch 1" in proc.stderr
    assert "nothing was saved" in proc.stderr and not (tmp_path / "x.pt").exists()


def test_info_describes_a_checkpoint_and_refuses_a_file_that_is_no_tflite(tmp_path, capsys):
    import json

    from edgenet.cli import main

    path = _checkpoint(tmp_path / "ckpt.pt")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v1 alpha 0.25, 32x32" in out and "2 classes (a, b)" in out and "trained on digits" in out
    assert main(["info", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] == 2 and summary["qat"] is False
    assert main(["info", str(path), "--alpha", "0.5"]) == 2
    assert "a checkpoint has its own sizes" in capsys.readouterr().err
    (tmp_path / "m.tflite").write_bytes(b"x")          # info reads .tflite files: this one is no model
    assert main(["info", str(tmp_path / "m.tflite")]) == 1
    assert "not a .tflite model" in capsys.readouterr().err


def test_train_refuses_an_out_that_names_a_model_file(tmp_path, capsys):
    from edgenet.cli import main

    assert main(["train", "--qat", "--out", str(tmp_path / "y.onnx")]) == 2
    err = capsys.readouterr().err
    assert "names the checkpoint" in err and "QDQ ONNX" in err and not (tmp_path / "y.onnx").exists()
