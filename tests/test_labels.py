"""Class names for a user's own model: --labels FILE, or the class subfolders of --calib, feed
labels.txt, the model metadata and top-1 (issue 19)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
from PIL import Image  # noqa: E402

import edgenet  # noqa: E402
from edgenet.errors import DataError, UsageError  # noqa: E402

FAST = dict(calib_samples=16, eval_samples=8)


class _Classifier(torch.nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cls") / "cls.onnx"
    torch.onnx.export(_Classifier().eval(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["logits"])
    return path


def _folder(root, classes):
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(rng.normal(60 * k + 40, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _metadata_labels(tflite: bytes) -> list[str]:
    import zipfile
    import io

    with zipfile.ZipFile(io.BytesIO(tflite)) as z:   # TFLite metadata packs labels.txt into the model file
        name = next(n for n in z.namelist() if n.endswith(".txt"))
        return z.read(name).decode().splitlines()


def test_labels_file_names_the_classes_of_an_onnx_model(classifier, tmp_path):
    labels = tmp_path / "names.txt"
    labels.write_text("cat\ndog\nbird\n\n")
    r = edgenet.convert(str(classifier), labels=labels, mean=0.5, std=0.25, out=tmp_path / "o", **FAST)
    assert (tmp_path / "o" / "labels.txt").read_text() == "cat\ndog\nbird\n"
    assert _metadata_labels((tmp_path / "o" / "model_float.tflite").read_bytes()) == ["cat", "dog", "bird"]
    assert r.report.model["name"]


def test_class_subfolders_of_calib_become_the_labels_and_give_top1(classifier, tmp_path):
    data = _folder(tmp_path / "imgs", ["ant", "bee", "cow"])
    r = edgenet.convert(str(classifier), calib=str(data), mean=0.5, std=0.25, int8=True, allow_degraded=True,
                        out=tmp_path / "o", **FAST)
    assert (tmp_path / "o" / "labels.txt").read_text().split() == ["ant", "bee", "cow"]
    assert r.report.accuracy is not None and r.report.accuracy["n_eval"] > 0
    assert any("class subfolders of --calib" in n for n in r.report.notes)


@pytest.mark.parametrize("text, error, said", [
    ("a\nb\n", DataError, "2 class names, but the model's output 'logits' has 3 classes"),
    ("a\n\nc\n", DataError, "line 2 is blank"),
    ("a\nb\x1bc\nd\n", DataError, "control character"),
    ("", DataError, "no class names"),
])
def test_bad_labels_files_are_one_line(classifier, tmp_path, text, error, said):
    labels = tmp_path / "names.txt"
    labels.write_text(text)
    with pytest.raises(error, match=said):
        edgenet.convert(str(classifier), labels=labels, out=tmp_path / "o", **FAST)
    assert not (tmp_path / "o").exists()


def test_labels_for_a_checkpoint_is_refused(tmp_path):
    labels = tmp_path / "names.txt"
    labels.write_text("a\n")
    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(UsageError, match="records the class names"):
        edgenet.convert(str(tmp_path / "m.pt"), labels=labels, out=tmp_path / "o")
