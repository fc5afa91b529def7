"""The CPU trainer and its checkpoints (tiny runs; the >=97% digits run is not a test)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("sklearn") is None,
    reason="needs torch and scikit-learn (the [convert] extra)")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from edgenet.train import train

    path = tmp_path_factory.mktemp("train") / "digits.pt"
    seen = []
    result = train("digits", alpha=0.25, resolution=32, epochs=2, out=path, in_channels=1,
                   activation="relu", train_limit=128, test_limit=50, batch_size=32,
                   threads=1, progress=seen.append)
    return result, path, seen


def test_training_reports_every_epoch_and_writes_a_checkpoint(tiny_run):
    result, path, seen = tiny_run
    assert path.is_file() and result.path == path
    assert [s.epoch for s in seen] == [1, 2] and result.history == tuple(seen)
    assert result.epochs == 2 and result.train_samples == 128 and result.test_samples == 50
    assert all(np.isfinite(s.loss) and s.seconds > 0 for s in seen)
    assert 0 <= result.test_top1 <= result.test_top5 <= 1
    assert json.loads(json.dumps(result.to_dict()))["path"] == str(path)


def test_checkpoint_round_trip_reproduces_the_trained_model(tiny_run):
    import torch

    from edgenet.checkpoint import load_checkpoint
    from edgenet.config import Activation
    from edgenet.data import load_dataset
    from edgenet.zoo import create_model

    result, path, _ = tiny_run
    ckpt = load_checkpoint(path)
    assert (ckpt.model, ckpt.alpha, ckpt.resolution, ckpt.num_classes, ckpt.in_channels) == \
        ("mobilenet_v1", 0.25, 32, 10, 1)
    assert ckpt.activation is Activation.RELU and ckpt.class_names == tuple("0123456789")
    assert ckpt.preprocess.channels == 1 and ckpt.preprocess.height == 32 and ckpt.dataset == "digits"
    assert ckpt.metrics["test_top1"] == result.test_top1 and ckpt.metrics["config"]["epochs"] == 2

    # zoo.load_weights reads the checkpoint too, and both builds agree bit for bit
    via_zoo = create_model(alpha=0.25, resolution=32, num_classes=10, in_channels=1,
                           activation="relu", weights=path)
    via_ckpt = ckpt.build_model()
    test = load_dataset("digits", ckpt.preprocess, split="test", limit=50)
    x = torch.from_numpy(test.x.transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        a, b = via_zoo(x), via_ckpt(x)
    assert torch.equal(a, b)
    # ... and they are the trained model: same test accuracy as the run measured
    top1 = float((a.argmax(1).numpy() == test.labels).mean())
    assert top1 == pytest.approx(result.test_top1)


def test_bad_checkpoints_are_one_line_model_errors(tmp_path):
    import torch

    from edgenet.checkpoint import load_checkpoint
    from edgenet.errors import ModelError

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(2)}, bare)
    cases = {garbage: "not a PyTorch file", bare: "not an edgenet checkpoint",
             tmp_path / "missing.pt": "no such checkpoint"}
    for path, message in cases.items():
        with pytest.raises(ModelError, match=message) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)


def test_train_refuses_bad_options_before_any_work(tmp_path):
    from edgenet.errors import DataError, OutputExistsError, UsageError
    from edgenet.train import train

    existing = tmp_path / "x.pt"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        train("digits", alpha=0.25, resolution=32, epochs=1, out=existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(UsageError, match="--resolution"):
        train("digits", alpha=0.25, resolution=30, epochs=1)
    with pytest.raises(UsageError, match="--epochs"):
        train("digits", alpha=0.25, resolution=32, epochs=0)
    with pytest.raises(UsageError, match="unknown training option"):
        train("digits", alpha=0.25, resolution=32, epochs=1, learning_rate=0.1)
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    with pytest.raises(DataError, match="one subfolder per class"):
        train(str(flat), alpha=0.25, resolution=32, epochs=1)


def test_cli_trains_a_folder_and_prints_json(tmp_path, capsys):
    from PIL import Image, ImageDraw

    from edgenet.checkpoint import load_checkpoint
    from edgenet.cli import main

    data = tmp_path / "data"
    for cls, draw_shape in (("box", "rectangle"), ("dot", "ellipse")):
        (data / cls).mkdir(parents=True)
        for i in range(6):
            img = Image.new("RGB", (40, 40), (20 * i, 30, 60))
            getattr(ImageDraw.Draw(img), draw_shape)((8 + i, 8, 30 + i, 30), fill=(250, 250, 0))
            img.save(data / cls / f"{i}.png")
    out = tmp_path / "folder.pt"
    args = ["train", "--dataset", str(data), "--epochs", "1", "--batch-size", "4", "--threads", "1",
            "--out", str(out)]
    assert main(args + ["--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["path"] == str(out) and report["num_classes"] == 2
    assert report["train_samples"] + report["test_samples"] == 12 and report["test_samples"] == 2
    assert "epoch 1/1" in captured.err
    ckpt = load_checkpoint(out)
    assert ckpt.class_names == ("box", "dot") and ckpt.dataset == str(data)
    assert ckpt.metrics["test_split"] == "holdout 0.2"

    assert main(args) == 2                       # exists, no --force: one line, exit code 2
    err = capsys.readouterr().err
    assert err.startswith("edgenet: error:") and "--force" in err and err.count("\n") == 1
    assert main(["train", "--dataset", "digts", "--out", str(tmp_path / "y.pt")]) == 1
    assert "did you mean 'digits'" in capsys.readouterr().err


def test_alpha_defaults_per_model(tmp_path, capsys):
    """--alpha left out: 0.25 where the model has a width multiplier, 1 where it has none."""
    from edgenet.checkpoint import load_checkpoint
    from edgenet.cli import main

    common = ["train", "--dataset", "digits", "--resolution", "32", "--epochs", "1", "--limit", "32",
              "--batch-size", "16", "--threads", "1", "--quiet"]
    assert main(common + ["--model", "squeezenet1_1", "--out", str(tmp_path / "sq.pt")]) == 0, capsys.readouterr().err
    assert load_checkpoint(tmp_path / "sq.pt").alpha == 1.0
    assert main(common + ["--out", str(tmp_path / "mb.pt")]) == 0
    assert load_checkpoint(tmp_path / "mb.pt").alpha == 0.25
    assert main(common + ["--model", "squeezenet1_1", "--alpha", "0.5", "--out", str(tmp_path / "x.pt")]) == 2
    assert "no width multiplier" in capsys.readouterr().err
