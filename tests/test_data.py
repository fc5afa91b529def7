"""Datasets: digits split, generated shapes, image folders, labels.txt."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgenet.data import Preprocess, load_dataset, read_labels, write_labels
from edgenet.data.digits import split_indices
from edgenet.data.shapes import CLASS_NAMES as SHAPE_CLASSES
from edgenet.data.shapes import render_shape
from edgenet.errors import DataError, UsageError

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")


# -- digits ----------------------------------------------------------------------------------------
@needs_sklearn
def test_digits_splits_are_fixed_disjoint_stratified_and_cover_everything():
    splits = {s: split_indices(s) for s in ("train", "calib", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 1197, "calib": 200, "test": 400}
    sets = {s: set(v.tolist()) for s, v in splits.items()}
    assert all(len(sets[s]) == len(splits[s]) for s in sets)            # no duplicates
    assert not sets["train"] & sets["calib"] and not sets["train"] & sets["test"]
    assert not sets["calib"] & sets["test"]
    assert sets["train"] | sets["calib"] | sets["test"] == set(range(1797))
    # the run's seed reorders a split but never changes its members
    for s in splits:
        reordered = split_indices(s, seed=7)
        assert set(reordered.tolist()) == sets[s]
    assert not np.array_equal(split_indices("test", seed=7), splits["test"])


@needs_sklearn
@pytest.mark.parametrize("channels", [1, 3])
def test_digits_shape_labels_and_determinism(channels):
    pre = Preprocess.default(32, channels)
    a = load_dataset("digits", pre, split="calib")
    b = load_dataset("digits", pre, split="calib")
    assert a.x.shape == (200, 32, 32, channels) and a.x.dtype == np.float32
    assert a.labels.dtype == np.int64 and np.bincount(a.labels).tolist() == [20] * 10
    assert a.class_names == tuple("0123456789") and a.name == "digits" and a.skipped == 0
    np.testing.assert_array_equal(a.x, b.x)
    assert -1.0 <= a.x.min() < -0.9 and 0.9 < a.x.max() <= 1.0   # black background, white ink
    if channels == 3:  # gray replicated to RGB
        np.testing.assert_array_equal(a.x[..., 0], a.x[..., 2])


@needs_sklearn
def test_digits_limit_takes_a_class_balanced_prefix():
    d = load_dataset("digits", Preprocess.default(32, 1), split="test", limit=30)
    assert len(d) == 30 and np.bincount(d.labels).tolist() == [3] * 10
    full = load_dataset("digits", Preprocess.default(32, 1), split="test")
    np.testing.assert_array_equal(d.x, full.x[:30])


# -- shapes ----------------------------------------------------------------------------------------
def test_shapes_is_deterministic_balanced_and_at_the_requested_resolution():
    pre = Preprocess(height=64, width=96)
    a = load_dataset("shapes", pre, split="calib", limit=80)
    b = load_dataset("shapes", pre, split="calib", limit=80)
    assert a.x.shape == (80, 64, 96, 3) and a.x.dtype == np.float32
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert len(SHAPE_CLASSES) >= 5 and a.class_names == SHAPE_CLASSES
    assert np.bincount(a.labels, minlength=len(SHAPE_CLASSES)).tolist() == [10] * len(SHAPE_CLASSES)
    assert len(load_dataset("shapes", Preprocess.default(32), split="calib")) == 200  # default size


def test_shapes_splits_and_seeds_give_different_images():
    pre = Preprocess.default(32)
    calib = load_dataset("shapes", pre, split="calib", limit=16)
    test = load_dataset("shapes", pre, split="test", limit=16)
    other_seed = load_dataset("shapes", pre, split="calib", limit=16, seed=1)
    np.testing.assert_array_equal(calib.labels, test.labels)          # same label cycle ...
    for other in (test, other_seed):                                  # ... different pictures
        diffs = np.abs(calib.x - other.x).reshape(16, -1).mean(axis=1)
        assert (diffs > 0.05).all()


def test_shapes_image_draws_its_shape():
    """The shape covers a sizeable part of the image and differs in colour from the background."""
    img, label = render_shape(3, 64, 64, "train")
    assert img.size == (64, 64) and img.mode == "RGB" and label == 3
    pixels = np.asarray(img, dtype=np.float32)
    corner = pixels[:4, :4].reshape(-1, 3).mean(axis=0)
    far = np.linalg.norm(pixels - corner, axis=-1) > 60
    assert 0.02 < far.mean() < 0.6


def test_shapes_gray_preprocess_gives_one_channel():
    d = load_dataset("shapes", Preprocess.default(32, 1), split="test", limit=8)
    assert d.x.shape == (8, 32, 32, 1)


# -- folders ---------------------------------------------------------------------------------------
def _save(path, colour, fmt=None, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def test_folder_with_class_subfolders_and_a_corrupt_image(tmp_path):
    _save(tmp_path / "cat" / "a.png", (255, 0, 0))
    _save(tmp_path / "cat" / "b.JPG", (250, 0, 0), fmt="JPEG")
    _save(tmp_path / "dog" / "nested" / "c.bmp", (0, 0, 255))
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "empty_class").mkdir()
    d = load_dataset(str(tmp_path), Preprocess.default(32), split="train")
    assert d.class_names == ("cat", "dog") and d.skipped == 1
    assert d.labels.tolist() == [0, 0, 1] and d.x.shape == (3, 32, 32, 3)
    assert d.x[0, 0, 0].tolist() == [1.0, -1.0, -1.0] and d.x[2, 0, 0].tolist() == [-1.0, -1.0, 1.0]
    assert d.name == str(tmp_path)


def test_flat_folder_is_unlabelled_and_limit_samples_with_a_seed(tmp_path):
    for i in range(6):
        _save(tmp_path / f"img{i}.jpeg", (40 * i, 0, 0), fmt="JPEG")
    d = load_dataset(str(tmp_path), Preprocess.default(32, 1))
    assert d.labels is None and d.class_names is None and d.x.shape == (6, 32, 32, 1)
    a = load_dataset(str(tmp_path), Preprocess.default(32), limit=3, seed=1)
    b = load_dataset(str(tmp_path), Preprocess.default(32), limit=3, seed=1)
    assert len(a) == 3
    np.testing.assert_array_equal(a.x, b.x)


def test_limit_skips_over_corrupt_files_to_fill_the_sample(tmp_path):
    for i in range(4):
        (tmp_path / f"bad{i}.png").write_bytes(b"garbage")
    for i in range(3):
        _save(tmp_path / f"good{i}.png", (0, 80 * i, 0))
    d = load_dataset(str(tmp_path), Preprocess.default(32), limit=3, seed=0)
    assert len(d) == 3 and 0 < d.skipped <= 4   # only the files it tried are counted
    greens = sorted(round(float(v), 3) for v in d.x[:, 0, 0, 1])
    assert greens == [round(80 * i / 127.5 - 1, 3) for i in range(3)]  # all three good images


def test_folder_errors(tmp_path):
    pre = Preprocess.default(32)
    with pytest.raises(DataError, match="no images found"):
        load_dataset(str(tmp_path), pre)
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"none of the 2 images could be decoded"):
        load_dataset(str(tmp_path), pre)
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(str(tmp_path / "missing"), pre)
    with pytest.raises(DataError, match="is a file"):
        load_dataset(str(tmp_path / "a.png"), pre)
    _save(tmp_path / "cls" / "c.png", (1, 2, 3))
    with pytest.raises(DataError, match="loose image"):
        load_dataset(str(tmp_path), pre)


def test_unknown_spec_and_bad_arguments():
    pre = Preprocess.default(32)
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_dataset("digts", pre)
    with pytest.raises(DataError, match="'digits', 'shapes' or a folder"):
        load_dataset("imagenet", pre)
    with pytest.raises(UsageError, match="unknown split"):
        load_dataset("shapes", pre, split="val")
    with pytest.raises(UsageError, match="limit"):
        load_dataset("shapes", pre, limit=0)


# -- labels.txt ------------------------------------------------------------------------------------
def test_labels_round_trip_and_errors(tmp_path):
    names = ("0", "cat", "traffic light", "ünïcode")
    path = write_labels(tmp_path / "out" / "labels.txt", names)
    assert path.read_text(encoding="utf-8") == "0\ncat\ntraffic light\nünïcode\n"
    assert read_labels(path) == names
    with pytest.raises(DataError, match="cannot be written"):
        write_labels(tmp_path / "bad.txt", ["a", "b\nc"])
    assert not (tmp_path / "bad.txt").exists()
    with pytest.raises(DataError, match="no such labels file"):
        read_labels(tmp_path / "missing.txt")
    (tmp_path / "gap.txt").write_text("a\n\nb\n")
    with pytest.raises(DataError, match="blank line 2"):
        read_labels(tmp_path / "gap.txt")


def test_data_package_imports_no_heavy_modules():
    code = ("import sys, edgenet.data, edgenet.data.shapes, edgenet.data.folder, edgenet.data.digits; "
            "heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'sklearn') if m in sys.modules]; "
            "print(','.join(heavy))")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=repo)
    assert out.stdout.strip() == ""


def test_a_class_folder_named_with_a_line_break_is_refused(tmp_path):
    """labels.txt and the model metadata hold one class name per line: a name with a newline would
    shift every later label (issue 19). `edgenet train` on such a folder: one line, no checkpoint."""
    import os

    for name in ("cat\ndog", "bird"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(tmp_path / "data" / name / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "edgenet", "train", "--dataset", str(tmp_path / "data"), "--epochs",
                           "1", "--out", str(tmp_path / "m.pt")], capture_output=True, text=True, env=env, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "line break or control character" in lines[0], proc.stderr
    assert "'cat\\ndog'" in lines[0] and not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_mean_and_std_with_preprocessed_arrays_are_said_not_applied(tmp_path):
    """--calib FILE.npz holds arrays already normalized: --mean/--std cannot act on them, and the
    conversion says so (issue 19: they were silently not applied)."""
    import os

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("the convert extra is not installed")
    np.savez(tmp_path / "cal.npz", input=np.random.default_rng(0).uniform(-1, 1, (12, 3, 32, 32)).astype(np.float32))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "edgenet", "convert", "mobilenet_v1", "--alpha", "0.25", "--resolution",
                           "32", "--num-classes", "2", "--calib", str(tmp_path / "cal.npz"), "--calib-samples", "8",
                           "--eval-samples", "4", "--mean", "0.4", "--std", "0.2", "--float", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "--mean and --std were not applied to them" in proc.stderr + proc.stdout
    pre = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert pre["mean"] == pytest.approx([0.4] * 3) and pre["std"] == pytest.approx([0.2] * 3)


@pytest.mark.parametrize("spec, why", [("/dev/zero", "not a regular file or folder"), ("no/such/place", "no such file or folder")])
def test_a_calib_that_is_no_dataset_says_what_it_is(spec, why):
    from edgenet.converters.model_data import check_calib_spec
    from edgenet.errors import DataError

    with pytest.raises(DataError, match=why):
        check_calib_spec(spec)
