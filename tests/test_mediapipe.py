"""MediaPipe Tasks' ImageClassifier (PyPI mediapipe, the `test-app` extra) loads what a real
`edgenet convert --target android` run writes, the way an Android/iOS/web/Python app does, and
returns our labels with the scores our own LiteRT run gives on the same image."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
mp = pytest.importorskip("mediapipe")

from edgenet.data.preprocess import Preprocess
from edgenet.data.shapes import CLASS_NAMES, render_shape
from edgenet.inference import TFLiteModel
from edgenet.runtime import make_interpreter

pytestmark = pytest.mark.slow
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _convert(tmp_path, name: str, pre: Preprocess, *extra: str):
    """A checkpoint with labels (an untrained MobileNetV1 0.25 at 32 px) converted in a fresh process."""
    from edgenet.checkpoint import save_checkpoint
    from edgenet.zoo import create_model

    model = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=len(CLASS_NAMES))
    ckpt = save_checkpoint(tmp_path / f"{name}.pt", model="mobilenet_v1", alpha=0.25, resolution=32,
                           num_classes=len(CLASS_NAMES), in_channels=3, activation="relu6",
                           state_dict=model.state_dict(), class_names=CLASS_NAMES, preprocess=pre, dataset="shapes")
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "edgenet", "convert", str(ckpt), "--target", "android",
                           "--calib", "shapes", "--calib-samples", "16", "--eval-samples", "4", "--out", str(out),
                           "--allow-degraded",   # untrained weights: int8 quality is not what is tested here
                           "--strict-int8",      # nor a repair (which may turn an output float32): the uint8 I/O is
                           "-q", *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def android_out(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("mp"), "shapes", Preprocess(32, 32))


@pytest.fixture(scope="module")
def imagenet_out(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("mp"), "imagenet", Preprocess(32, 32, **IMAGENET))


@pytest.fixture(scope="module")
def imagenet_inside_out(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("mp"), "imagenet_inside", Preprocess(32, 32, **IMAGENET),
                    "--normalize-in-model")


def _images() -> list[np.ndarray]:
    return [np.asarray(render_shape(i, 32, 32, "test")[0], dtype=np.uint8) for i in range(6)]


def _mediapipe_scores(model_path, image: np.ndarray) -> tuple[list[str], np.ndarray]:
    """MediaPipe's category names by index and its scores, for every class."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                            max_results=-1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    categories = sorted(result.classifications[0].categories, key=lambda c: c.index)
    return [c.category_name for c in categories], np.array([c.score for c in categories], np.float32)


def _litert_pixels(model_path, image: np.ndarray) -> tuple[np.ndarray, float]:
    """Our LiteRT run of a uint8-input model on the camera's pixels, as they are: (scores, output scale)."""
    interp = make_interpreter(model_path, 1)
    d, o = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(d["index"], image[None])
    interp.invoke()
    scale, zero = o["quantization"]
    return (interp.get_tensor(o["index"])[0].astype(np.float32) - zero) * scale, scale


def test_android_int8_model_is_uint8_and_mediapipe_returns_our_labels_and_scores(android_out):
    labels = (android_out / "labels.txt").read_text().splitlines()
    assert labels == list(CLASS_NAMES)
    model = android_out / "model_int8.tflite"
    q = TFLiteModel(model)
    assert q.input_dtype == np.uint8 and q.input["quantization"][1] == 128   # camera pixels in, unchanged
    float_model, pre = TFLiteModel(android_out / "model_float.tflite"), Preprocess.load(android_out / "preprocess.json")
    for image in _images():
        names, scores = _mediapipe_scores(model, image)
        ours, step = _litert_pixels(model, image)
        assert names == labels
        np.testing.assert_allclose(scores, ours, atol=1.01 * step, rtol=0)   # the same model on the same pixels
        reference = float_model.predict(pre.normalize(image)[None])[0]       # and close to the float model
        assert np.abs(scores - reference).max() < 0.25 * np.abs(reference).max() + 2 * step
        # the app shows probabilities: the model (ending in logits) got a Softmax for this target
        assert scores.min() >= 0 and abs(scores.sum() - 1) < 0.05 and abs(reference.sum() - 1) < 1e-5
    report = json.loads((android_out / "report.json").read_text())
    assert any("a Softmax over its" in n for n in report["notes"])


@pytest.mark.parametrize("name", ["model_float.tflite", "model_float16.tflite"])
def test_mediapipe_normalizes_float_models_from_the_metadata(android_out, name):
    labels = (android_out / "labels.txt").read_text().splitlines()
    model, pre = TFLiteModel(android_out / name), Preprocess.load(android_out / "preprocess.json")
    for image in _images():
        names, scores = _mediapipe_scores(android_out / name, image)
        assert names == labels
        np.testing.assert_allclose(scores, model.predict(pre.normalize(image)[None])[0], rtol=1e-3, atol=1e-6)


def test_per_channel_normalization_is_refused_by_mediapipe_and_the_report_says_what_an_app_does(imagenet_out):
    """ImageNet mean/std: the metadata carries them per channel (0..255 scale), MediaPipe's
    ImageClassifier refuses per-channel normalization (its own limit), and the report says how an
    app feeds the uint8 model instead."""
    from edgenet.targets.metadata import read_metadata

    pre = Preprocess.load(imagenet_out / "preprocess.json")
    assert pre.mean == IMAGENET["mean"]
    image = read_metadata((imagenet_out / "model_float.tflite").read_bytes()).inputs[0]
    np.testing.assert_allclose(image.mean, [255 * m for m in IMAGENET["mean"]], rtol=1e-6)
    with pytest.raises(NotImplementedError, match="Per-channel image normalization"):
        _mediapipe_scores(imagenet_out / "model_float.tflite", _images()[0])
    notes = json.loads((imagenet_out / "report.json").read_text())["target"]["notes"]
    note = next(n for n in notes if "per-channel mean/std" in n)
    q = TFLiteModel(imagenet_out / "model_int8.tflite")
    scale, zero = q.input["quantization"]
    assert f"/ {scale:.6g} + {zero})" in note and "MediaPipe" in note


def test_mediapipes_own_schema_reads_our_metadata(android_out):
    """The metadata parsed with the generated code MediaPipe ships for metadata_schema.fbs."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    from edgenet.targets.metadata import metadata_bytes

    blob = metadata_bytes((android_out / "model_int8.tflite").read_bytes())
    assert fb.ModelMetadata.ModelMetadataBufferHasIdentifier(blob, 0)
    md = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(blob, 0))
    assert md.author == b"edgenet" and md.name == b"mobilenet_v1_0.25_32" and md.minParserVersion == b"1.0.0"
    image = md.subgraphMetadata[0].inputTensorMetadata[0]
    assert image.content.contentPropertiesType == fb.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == fb.ColorSpaceType.RGB
    norm = image.processUnits[0].options
    assert image.processUnits[0].optionsType == fb.ProcessUnitOptions.NormalizationOptions
    np.testing.assert_allclose(norm.mean, [127.5] * 3) and np.testing.assert_allclose(norm.std, [127.5] * 3)
    scores = md.subgraphMetadata[0].outputTensorMetadata[0]
    assert scores.content.contentPropertiesType == fb.ContentProperties.FeatureProperties
    assert scores.associatedFiles[0].name == b"labels.txt"
    assert scores.associatedFiles[0].type == fb.AssociatedFileType.TENSOR_AXIS_LABELS


def test_per_channel_normalization_inside_the_model_runs_in_mediapipe(imagenet_inside_out, imagenet_out):
    """--normalize-in-model: ImageNet's per-channel mean/std move into the graph; the model takes
    0..1 pixels, its uint8 input is the camera's pixels (scale 1/255, zero point 0), and MediaPipe
    runs the int8 and the float model with our labels -- computing what the model with the
    normalization outside computes on the same pixels."""
    pre = Preprocess.load(imagenet_inside_out / "preprocess.json")
    assert pre.mean == (0.0, 0.0, 0.0) and pre.std == (1.0, 1.0, 1.0)
    q = TFLiteModel(imagenet_inside_out / "model_int8.tflite")
    scale, zero = q.input["quantization"]
    assert q.input_dtype == np.uint8 and zero == 0 and abs(scale - 1 / 255) < 1e-9
    labels = (imagenet_inside_out / "labels.txt").read_text().splitlines()
    outside = TFLiteModel(imagenet_out / "model_float.tflite")
    outside_pre = Preprocess.load(imagenet_out / "preprocess.json")
    inside = TFLiteModel(imagenet_inside_out / "model_float.tflite")
    for image in _images():
        names, scores = _mediapipe_scores(imagenet_inside_out / "model_float.tflite", image)
        assert names == labels
        np.testing.assert_allclose(scores, inside.predict(pre.normalize(image)[None])[0], rtol=1e-3, atol=1e-6)
        same = outside.predict(outside_pre.normalize(image)[None])[0]       # the same network, normalized outside
        np.testing.assert_allclose(scores, same, rtol=1e-3, atol=1e-5)
        names, scores = _mediapipe_scores(imagenet_inside_out / "model_int8.tflite", image)
        ours, step = _litert_pixels(imagenet_inside_out / "model_int8.tflite", image)
        assert names == labels
        np.testing.assert_allclose(scores, ours, atol=1.01 * step, rtol=0)
    notes = json.loads((imagenet_inside_out / "report.json").read_text())["notes"]
    assert any("inside the model" in n for n in notes)
