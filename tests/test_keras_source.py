"""Keras and SavedModel sources: a subclassed Keras MobileNetV1 (tests/keras_models.py) converted
through TensorFlow's converter to the float model, then int8 by the LiteRT Quantizer, judged
(float against the Keras model itself, int8 against float), checked for the target and benchmarked."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

# found, not imported: TensorFlow and Keras load in the first test that needs them, not at collection
pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("tensorflow", "keras")),
                                reason="needs the keras extra (TensorFlow, Keras 3)")

import edgenet  # noqa: E402
from edgenet.cli import main  # noqa: E402
from edgenet.config import Precision  # noqa: E402
from edgenet.converters.op_precision import ops_not_in  # noqa: E402
from edgenet.converters.sources import SourceKind, source_kind  # noqa: E402
from edgenet.inference import TFLiteModel  # noqa: E402

FAST = dict(calib_samples=48, eval_samples=16, layer_report=False)
FAST_CLI = ["--calib-samples", "48", "--eval-samples", "16", "-q"]
BENCH_CLI = ["--warmup", "1", "--warmup-seconds", "0", "--runs", "5", "--min-seconds", "0.02", "--threads", "1"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The calibrated MobileNetV1 as .keras and as a SavedModel folder, with images it was set on."""
    from edgenet.converters.keras_tf import import_tensorflow

    import_tensorflow()
    from keras_models import calibrated_mobilenet

    model, x = calibrated_mobilenet()
    root = tmp_path_factory.mktemp("keras")
    model.save(root / "mobilenet.keras")
    model.export(str(root / "mobilenet_saved"), verbose=False)
    return {"model": model, "x": x, "keras": root / "mobilenet.keras", "saved_model": root / "mobilenet_saved"}


def test_source_kinds(saved, tmp_path):
    assert source_kind(str(saved["keras"])) is SourceKind.KERAS
    assert source_kind("model.h5") is SourceKind.KERAS
    assert source_kind(str(saved["saved_model"])) is SourceKind.SAVED_MODEL
    assert source_kind(str(tmp_path)) is SourceKind.ZOO    # a folder without saved_model.pb: refused later


def test_keras_int8_for_rpi_judged_against_keras_then_benched(saved, tmp_path):
    out = tmp_path / "out"
    # a classifier (its seeded logits keep each class's level: read as values unless named)
    r = edgenet.convert(str(saved["keras"]), int8=True, target="rpi", out=out, output_kinds=["output_0=classifier"],
                        **FAST)
    report = r.report
    verdict = report.validation.float_verdict
    assert verdict["reference"] == "keras" and verdict["passed"] and report.validation.float_rel_err < 1e-4
    assert report.model["format"] == "keras" and report.model["input_shape"] == [1, 32, 32, 3]
    assert "model.onnx" not in {p.name for p in r.files}
    # the float model against Keras, measured here on the images the BN statistics came from
    x = saved["x"][:8]
    want = saved["model"](x, training=False).numpy()
    got = TFLiteModel(out / Precision.FLOAT32.file_name).predict(x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    # int8: every op integer, the verdict passes without any repair
    int8 = (out / Precision.INT8.file_name).read_bytes()
    assert ops_not_in(int8, Precision.INT8) == []
    # both models carry the serving_default signature and edgenet's metadata
    from edgenet.converters import _flatbuffer
    from edgenet.targets.metadata import read_metadata

    for blob in (int8, (out / Precision.FLOAT32.file_name).read_bytes()):
        assert [sig.signatureKey for sig in _flatbuffer.read(blob).signatureDefs] == [b"serving_default"]
        md = read_metadata(blob)
        assert md.name == "mobilenet" and (md.inputs[0].width, md.inputs[0].height) == (32, 32)
    q = report.validation.quantized[0]
    assert q["precision"] == "int8" and q["passed"] and report.mixed_precision is None
    assert report.validation.int8_sqnr_db > 15
    # the folder benchmarks like any other
    assert main(["bench", str(out), *BENCH_CLI, "--json", str(tmp_path / "b.json"), "-q"]) == 0
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["accuracy"]["samples"] == 16 and bench["accuracy"]["quality"]["passed"]


def test_saved_model_folder_converts_from_the_cli(saved, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(saved["saved_model"]), "--int8", "--target", "rpi", "--out", str(out), "--json",
                 "--output-kind", "output_0=classifier", *FAST_CLI]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["format"] == "SavedModel"
    assert report["validation"]["float_verdict"]["reference"] == "saved_model"
    assert report["validation"]["float_verdict"]["passed"] and report["validation"]["float_rel_err"] < 1e-4
    int8 = (out / Precision.INT8.file_name).read_bytes()
    assert ops_not_in(int8, Precision.INT8) == []
    # tensors named as Keras names the layers: no fused ';'-joined names, no SavedModel function scopes
    from edgenet.converters import _flatbuffer

    names = [_flatbuffer.tensor_name(t) for t in _flatbuffer.read(int8).subgraphs[0].tensors]
    assert len(set(names)) == len(names) and not [n for n in names if ";" in n or "StatefulPartitionedCall" in n]
    assert sum(n.endswith("/Relu") and "depthwise_separable" in n for n in names) == 8   # 4 blocks, 2 ReLUs each
    a = TFLiteModel(out / Precision.FLOAT32.file_name).predict(saved["x"][:4])
    assert np.allclose(a, saved["model"](saved["x"][:4], training=False).numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def functional(tmp_path_factory):
    """A functional model with dynamic height and width, as .keras and .h5."""
    import keras

    keras.utils.set_random_seed(1)
    i = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(5)(x))
    root = tmp_path_factory.mktemp("functional")
    model.save(root / "dyn.keras")
    model.save(root / "dyn.h5")
    return {"model": model, "keras": root / "dyn.keras", "h5": root / "dyn.h5"}


def test_dynamic_spatial_dims_need_input_shape_in_nhwc(functional, tmp_path, capsys):
    assert main(["convert", str(functional["keras"]), "--float", "--out", str(tmp_path / "a"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dynamic dims" in err[0] and "--input-shape N,H,W,C" in err[0]
    assert main(["convert", str(functional["h5"]), "--float", "--input-shape", "1,3,24,24",
                 "--out", str(tmp_path / "b"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contradicts axis 3" in err[0]
    r = edgenet.convert(str(functional["h5"]), input_shape=(2, 24, 20, 3), int8=False, out=tmp_path / "c", **FAST)
    assert r.report.model["tflite_input_shape"] == [2, 24, 20, 3] and r.report.validation.float_verdict["passed"]
    x = np.random.default_rng(0).uniform(-1, 1, (4, 24, 20, 3)).astype(np.float32)
    got = TFLiteModel(r.float_path).predict(x)
    assert np.allclose(got, functional["model"](x).numpy(), atol=1e-5)


@pytest.mark.parametrize("flags, words", [
    (["--input-shape", "x:1,32,32,3"], "without an input name"),
    (["--equalize", "--int8"], "--equalize works on the ONNX graph"),
    (["--keep-layout", "x"], "--keep-layout applies to .onnx models"),
    (["--alpha", "0.5"], "--alpha applies to zoo models"),
])
def test_options_that_do_not_apply_are_one_line(saved, tmp_path, capsys, flags, words):
    assert main(["convert", str(saved["keras"]), *flags, "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o").exists()


def test_damaged_files_are_one_line_naming_the_file(saved, tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(saved["keras"].read_bytes()[:3000])        # cut short: not a zip archive any more
    h5 = tmp_path / "bad.h5"
    h5.write_bytes(b"not hdf5 at all")
    for path, words in ((bad, "not a .keras model"), (h5, "not an HDF5 Keras model"),
                        (tmp_path / "missing.keras", "no such Keras model file")):
        assert main(["convert", str(path), "--float", "--out", str(tmp_path / "o"), "-q"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path.name) in err[0] and words in err[0], err


def test_a_subclassed_model_whose_module_cannot_be_found(saved, tmp_path, capsys):
    """A .keras file names the module of its custom classes; one line says where it must be."""
    moved = tmp_path / "elsewhere.keras"
    with zipfile.ZipFile(saved["keras"]) as src, zipfile.ZipFile(moved, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b'"keras_models"', b'"no_such_module_here"')
            dst.writestr(item, data)
    assert main(["convert", str(moved), "--float", "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'no_such_module_here'" in err[0] and "model.export" in err[0], err


def test_without_tensorflow_the_keras_extra_is_named(saved, tmp_path):
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from edgenet.cli import main\n"
            f"sys.exit(main(['convert', {str(saved['keras'])!r}, '--float', '--out', {str(tmp_path / 'o')!r}, '-q']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "tensorflow is not installed" in lines[0] and "[keras]" in lines[0]


def test_two_outputs_keep_their_keras_names_and_order_and_labels_name_the_first(tmp_path):
    import keras

    keras.utils.set_random_seed(2)
    i = keras.Input((16, 16, 3))
    feat = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="feat")(i)
    logits = keras.layers.Dense(5, name="logits")(keras.layers.GlobalAveragePooling2D()(feat))
    model = keras.Model(i, [logits, feat])
    model.save(tmp_path / "two.keras")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")
    r = edgenet.convert(str(tmp_path / "two.keras"), int8=True, labels=str(labels), out=tmp_path / "o", **FAST)
    assert [o["name"] for o in r.report.model["outputs"]] == ["logits", "feat"]
    assert [o["name"] for o in r.report.validation.quantized[0]["outputs"]] == ["logits", "feat"]
    assert (tmp_path / "o" / "labels.txt").read_text().split() == list("abcde")
    x = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    got = TFLiteModel(r.float_path).predict_all([x])
    for g, want in zip(got, model(x)):
        assert g.shape == tuple(want.shape) and np.allclose(g, want.numpy(), atol=1e-5)
    labels.write_text("a\nb\n")
    with pytest.raises(edgenet.errors.DataError, match="2 class names, but the model's output 'logits' has 5"):
        edgenet.convert(str(tmp_path / "two.keras"), labels=str(labels), out=tmp_path / "p", **FAST)


@pytest.mark.slow
def test_cli_process_imports_the_subclassed_models_module_from_the_working_directory(saved, tmp_path):
    """The user's flow: `edgenet convert model.keras` run where the module of its classes lives."""
    import shutil

    shutil.copy(Path(__file__).with_name("keras_models.py"), tmp_path / "keras_models.py")
    root = Path(__file__).resolve().parent.parent
    env = {**__import__("os").environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "edgenet", "convert", str(saved["keras"]), "--int8", "--target",
                           "rpi", "--out", "out", *FAST_CLI], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "float vs Keras" in proc.stdout and "verdict pass" in proc.stdout
    assert (tmp_path / "out" / "model_int8.tflite").is_file()


def test_a_keras_model_object_is_asked_for_as_a_file(saved, tmp_path):
    with pytest.raises(edgenet.errors.UsageError, match=r"save it with model.save\('model.keras'\)"):
        edgenet.convert(saved["model"], out=tmp_path / "o")


def test_a_uint8_input_is_refused_saying_how_to_feed_pixels(tmp_path, capsys):
    import keras

    i = keras.Input((8, 8, 3), dtype="uint8")
    keras.Model(i, keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(i)))).save(
        tmp_path / "u8.keras")
    assert main(["convert", str(tmp_path / "u8.keras"), "--float", "--out", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its input is uint8" in err[0] and "--std 0.00392156862745098" in err[0], err


def test_info_says_a_keras_model_is_read_by_convert(saved, capsys):
    assert main(["info", str(saved["saved_model"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a Keras model or SavedModel" in err[0] and "edgenet convert" in err[0]


def test_an_op_without_a_builtin_kernel_is_named(tmp_path, capsys):
    import tensorflow as tf

    class Svd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def __call__(self, x):
            return {"s": tf.linalg.svd(tf.reshape(x, [1, 64, 3]), compute_uv=False)}

    module = Svd()
    tf.saved_model.save(module, str(tmp_path / "svd"), signatures=module.__call__)
    assert main(["convert", str(tmp_path / "svd"), "--float", "--out", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no kernel for the TensorFlow op Svd" in err[0], err


def test_class_subfolders_of_calib_name_the_classes_and_give_top1(tmp_path):
    import keras
    from PIL import Image

    rng = np.random.default_rng(3)
    for k, name in enumerate(("dark", "light")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for j in range(12):
            pixels = rng.integers(0, 100, (24, 24, 3)) + 150 * k
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "images" / name / f"{j}.png")
    keras.utils.set_random_seed(3)
    i = keras.Input((24, 24, 3))
    brightness = keras.layers.GlobalAveragePooling2D()(i)
    out = keras.layers.Dense(2)(brightness)   # mean brightness above 0.5: "light"
    model = keras.Model(i, out)
    model.layers[-1].set_weights([np.array([[-1, 1]] * 3, np.float32), np.array([1.5, -1.5], np.float32)])
    model.save(tmp_path / "bright.keras")
    r = edgenet.convert(str(tmp_path / "bright.keras"), int8=True, calib=str(tmp_path / "images"), mean=0, std=1,
                        out=tmp_path / "o", **FAST)
    assert (tmp_path / "o" / "labels.txt").read_text().split() == ["dark", "light"]
    assert r.report.accuracy["float_top1"] == 1.0 and r.report.accuracy["int8_top1"] == 1.0
    assert any("class names from the 2 class subfolders" in n for n in r.report.notes)


def test_a_failing_int8_verdict_is_repaired_as_for_every_source(saved, tmp_path):
    """Seeded weights, BatchNormalization statistics set from images: logits that keep each class's
    own level, read as values (not a decisive classifier) and judged by SQNR, which int8 misses on
    48 calibration images; the mixed-precision repair promotes a few ops, as for an ONNX source."""
    r = edgenet.convert(str(saved["keras"]), int8=True, target="rpi", out=tmp_path / "o", **FAST)
    repair = r.report.mixed_precision
    assert repair is not None and repair["passed"] and repair["verdict_before"]["passed"] is False, repair
    assert r.report.validation.quantized[0]["passed"]
    kept = r.report.precisions[1]["ops_in_other_precision"]
    assert 0 < len(kept) <= 8 and all(op["precision"] == "float32" for op in kept)
