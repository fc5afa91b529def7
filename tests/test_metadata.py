"""TFLite model metadata (targets/metadata.py): what is written, where, and that the model computes
the same. MediaPipe reading it is tests/test_mediapipe.py."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import _tiny_tflite as tiny
from edgenet.data.preprocess import ColorMode, Preprocess
from edgenet.runtime import make_interpreter
from edgenet.targets.c_array import model_data_sources
from edgenet.targets.metadata import (add_metadata, associated_files, describe, metadata_bytes, read_metadata,
                              with_metadata, without_metadata)
from edgenet.targets.metadata_schema import AssociatedFileType, ColorSpace, ModelMetadata
from edgenet.targets.tflite_graph import read_tflite

LABELS = tuple(f"class {i}" for i in range(10))


def _run(model: bytes, inputs: np.ndarray) -> np.ndarray:
    interp = make_interpreter(model, 1, use_xnnpack=False)
    d, o = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for x in inputs:
        interp.set_tensor(d["index"], x[None])
        interp.invoke()
        out.append(interp.get_tensor(o["index"])[0].copy())
    return np.stack(out)


def test_metadata_says_name_normalization_color_labels_and_ranges():
    model = tiny.mobilenet_like().read_bytes()                     # int8 in/out, ends in SOFTMAX
    pre = Preprocess(32, 32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    out = add_metadata(model, pre, LABELS, name="tiny")
    md = read_metadata(out)
    assert (md.name, md.author, md.min_parser_version) == ("tiny", "edgenet", "1.0.0")
    assert md.version == hashlib.sha256(without_metadata(out)).hexdigest()[:16]
    assert md.description == "tiny converted by edgenet: int8 (full-integer), int8 input/output"
    (image,), (scores,) = md.inputs, md.outputs
    assert image.color_space is ColorSpace.RGB and (image.width, image.height) == (32, 32)
    # NormalizationOptions on the 0..255 pixel scale
    np.testing.assert_allclose(image.mean, [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(image.std, [58.395, 57.12, 57.375], rtol=1e-6)
    inp, outp = read_tflite(model).input_tensors[0], read_tflite(model).output_tensors[0]
    lo = np.clip(np.round(-np.array(pre.mean) / pre.std / inp.scales[0] + inp.zero_points[0]), -128, 127)
    np.testing.assert_array_equal(image.stats.min, lo)             # pixel 0 per channel, as int8 input values
    assert scores.name == "scores" and scores.associated_files[0].name == "labels.txt"
    assert scores.associated_files[0].type is AssociatedFileType.TENSOR_AXIS_LABELS
    # softmax output: probabilities 0..1, in the int8 output's own values
    assert scores.stats.min == (float(outp.zero_points[0]),)
    assert scores.stats.max == (float(min(127, round(1 / outp.scales[0] + outp.zero_points[0]))),)
    assert associated_files(out) == {"labels.txt": "".join(f"{n}\n" for n in LABELS).encode()}


def test_grayscale_float_model_and_no_labels():
    model = tiny.mobilenet_like_float_io().read_bytes()
    md = describe(model, Preprocess(32, 32), None, name="f")
    assert md.inputs[0].stats.min == (-1.0, -1.0, -1.0) and md.inputs[0].stats.max == (1.0, 1.0, 1.0)
    assert md.outputs[0].associated_files == () and md.outputs[0].stats.max == (1.0,)
    gray = Preprocess(32, 32, color=ColorMode.GRAY, mean=(0.5,), std=(0.5,))
    with pytest.raises(Exception, match="preprocessing describes a 32x32x1 image"):
        describe(model, gray, None, name="f")           # a 3-channel model is not a gray image model


def test_labels_of_another_size_are_not_attached():
    out = add_metadata(tiny.mobilenet_like().read_bytes(), Preprocess(32, 32), ("a", "b"), name="tiny")
    assert read_metadata(out).outputs[0].associated_files == () and associated_files(out) == {}


def test_metadata_does_not_change_what_the_model_computes():
    for path, dtype in ((tiny.mobilenet_like(), np.int8), (tiny.mobilenet_like_float_io(), np.float32)):
        model = path.read_bytes()
        rng = np.random.default_rng(0)
        x = (rng.integers(-128, 128, (6, 32, 32, 3)) if dtype is np.int8 else rng.uniform(-1, 1, (6, 32, 32, 3)))
        x = x.astype(dtype)
        out = add_metadata(model, Preprocess(32, 32), LABELS, name="m")
        np.testing.assert_array_equal(_run(model, x), _run(out, x))
        g0, g1 = read_tflite(model), read_tflite(out)
        assert g0.tensors == g1.tensors and [op.name for op in g0.operators] == [op.name for op in g1.operators]


def test_adding_again_replaces_and_is_deterministic():
    model = tiny.mobilenet_like().read_bytes()
    once = add_metadata(model, Preprocess(32, 32), LABELS, name="m")
    assert add_metadata(model, Preprocess(32, 32), LABELS, name="m") == once          # no timestamps
    assert add_metadata(once, Preprocess(32, 32), LABELS, name="m") == once           # replaced, not stacked
    renamed = add_metadata(once, Preprocess(32, 32), None, name="other")
    assert read_metadata(renamed).name == "other" and associated_files(renamed) == {}
    plain = without_metadata(once)
    assert metadata_bytes(plain) is None and associated_files(plain) == {}
    assert read_metadata(model) is None


def test_flatbuffer_round_trip_and_identifier():
    md = describe(tiny.mobilenet_like().read_bytes(), Preprocess(32, 32), LABELS, name="m", description="d")
    blob = md.to_flatbuffer()
    assert blob[4:8] == b"M001" and ModelMetadata.from_flatbuffer(blob) == md
    with pytest.raises(ValueError, match="M001"):
        ModelMetadata.from_flatbuffer(b"\0" * 16)
    # raw metadata bytes move to another model unchanged (what vela's model gets)
    other = with_metadata(tiny.mobilenet_like_uint8_io().read_bytes(), blob, {"labels.txt": b"x\n"})
    assert metadata_bytes(other) == blob and associated_files(other) == {"labels.txt": b"x\n"}


def test_metadata_and_labels_survive_in_the_c_array():
    out = add_metadata(tiny.mobilenet_like().read_bytes(), Preprocess(32, 32), LABELS, name="m")
    source, _ = model_data_sources(out, "model_int8.tflite", c_name="m")
    body = source.split("{", 1)[1].split("}", 1)[0]
    embedded = bytes(int(tok, 16) for tok in body.replace(",", " ").split())
    assert embedded == out
    assert read_metadata(embedded).outputs[0].associated_files[0].name == "labels.txt"
    assert associated_files(embedded)["labels.txt"].decode().splitlines() == list(LABELS)
