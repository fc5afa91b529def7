"""--input-shape parsing and the static shapes of a user's ONNX inputs (converters.model_inputs)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from edgenet.converters.model_inputs import (  # noqa: E402
    MAX_INPUT_ELEMENTS, check_input_types, fix_input_shapes, parse_input_shape)
from edgenet.config import InputShape  # noqa: E402
from edgenet.errors import ModelError, UsageError  # noqa: E402


def _conv_model(dims, name="x", elem=TensorProto.FLOAT):
    """x (dims) -> Conv 3->4, 3x3 -> Reshape(N, -1) through Shape/Gather: the usual dynamic-batch head."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(108, np.float32))
    nodes = [helper.make_node("Conv", [name, "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["c", "shape"], ["y"])]
    inits = [w, helper.make_tensor("zero", TensorProto.INT64, [], [0]),
             helper.make_tensor("zero1", TensorProto.INT64, [1], [0]),
             helper.make_tensor("minus1", TensorProto.INT64, [1], [-1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(name, elem, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("text, expected", [
    ("1,3,224,224", InputShape(None, (1, 3, 224, 224))),
    ("images:1,3,640,640", InputShape("images", (1, 3, 640, 640))),
    ("input_1:0:1,3,32,32", InputShape("input_1:0", (1, 3, 32, 32))),
    ("1x3x64x64", InputShape(None, (1, 3, 64, 64))),
    ("feats:1,8", InputShape("feats", (1, 8))),
    ("7", InputShape(None, (7,))),
])
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text, words", [
    ("1,3,a,4", "expected comma-separated dims"),
    (":1,3", "expected"),
    ("1,0,4,4", "positive"),
    ("1,-1,4,4", "positive"),
    ("1,2,3,4,5,6", "rank 1 to 5"),
    ("1,3,100000,100000", "more than an edge model"),
])
def test_parse_input_shape_refuses(text, words):
    with pytest.raises(UsageError, match=words):
        parse_input_shape(text)


def test_dynamic_batch_becomes_one_and_is_reported():
    model = _conv_model(["N", 3, 8, 8])
    fixed = fix_input_shapes(model, (), (), "m.onnx")
    assert fixed.batch_fixed == ("x",)
    assert fixed.inputs[0].shape == (1, 3, 8, 8) and fixed.inputs[0].image
    assert fixed.inputs[0].tflite_shape == (1, 8, 8, 3)
    # shape inference ran again on the static input; no symbolic dim is left to contradict it
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.value_info}
    assert shapes["c"] == [1, 4, 8, 8]
    assert not any(d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim)


def test_input_shape_sets_batch_and_spatial_dims():
    model = _conv_model(["batch", 3, "height", "width"])
    fixed = fix_input_shapes(model, (parse_input_shape("2,3,10,12"),), (), "m.onnx")
    assert fixed.batch_fixed == ()
    assert fixed.inputs[0].shape == (2, 3, 10, 12) and fixed.inputs[0].batch == 2
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.value_info}
    assert shapes["c"] == [2, 4, 10, 12]


def test_dynamic_height_width_without_input_shape_is_one_line_naming_axes():
    model = _conv_model(["N", 3, "H", "W"])
    with pytest.raises(ModelError) as err:
        fix_input_shapes(model, (), (), "det.onnx")
    msg = str(err.value)
    assert "'x'" in msg and "axis 2 (H), 3 (W)" in msg and "--input-shape 1,3,?,?" in msg
    assert "\n" not in msg


def test_input_shape_contradicting_a_static_dim_names_input_and_axis():
    model = _conv_model(["N", 3, 8, 8])
    with pytest.raises(UsageError, match=r"axis 1 is fixed to 3 in the model, not 4"):
        fix_input_shapes(model, (parse_input_shape("1,4,8,8"),), (), "m.onnx")
    with pytest.raises(UsageError, match="rank 4"):
        fix_input_shapes(_conv_model(["N", 3, 8, 8]), (parse_input_shape("1,3,8"),), (), "m.onnx")


def test_named_shapes_for_several_inputs():
    a = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4])
    b = helper.make_tensor_value_info("meta", TensorProto.FLOAT, ["N", 5])
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Concat", ["m", "meta"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [a, b], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UsageError, match="has 2 inputs .*name each one"):
        fix_input_shapes(model, (parse_input_shape("1,3,4,4"),), (), "m.onnx")
    with pytest.raises(UsageError, match="no input 'img'"):
        fix_input_shapes(model, (parse_input_shape("img:1,3,4,4"),), (), "m.onnx")
    fixed = fix_input_shapes(model, (parse_input_shape("image:2,3,4,4"), parse_input_shape("meta:2,5")),
                             ("image",), "m.onnx")
    assert [(i.name, i.shape, i.image) for i in fixed.inputs] == [("image", (2, 3, 4, 4), False),
                                                                  ("meta", (2, 5), False)]


def test_non_float_inputs_are_refused_naming_the_input():
    with pytest.raises(ModelError, match=r"input 'ids' is int64"):
        check_input_types(_conv_model([1, 3, 8, 8], name="ids", elem=TensorProto.INT64), "m.onnx")
    with pytest.raises(ModelError, match=r"input 'mask' is bool"):
        check_input_types(_conv_model([1, 3, 8, 8], name="mask", elem=TensorProto.BOOL), "m.onnx")


def test_huge_input_refused_before_any_allocation():
    model = _conv_model([1, 3, 100000, 100000])
    with pytest.raises(ModelError, match="more than an edge model"):
        fix_input_shapes(model, (), (), "m.onnx")
    assert MAX_INPUT_ELEMENTS < 3 * 100000 * 100000


def test_keep_layout_must_name_a_rank4_input():
    with pytest.raises(UsageError, match="no input 'y'"):
        fix_input_shapes(_conv_model([1, 3, 8, 8]), (), ("y",), "m.onnx")


def test_held_out_images_are_stored_as_their_exact_pixels():
    from edgenet.converters.model_data import pixels_of
    from edgenet.data.preprocess import Preprocess

    pre = Preprocess(height=5, width=7, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channel_order="BGR")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 7, 3)).astype(np.uint8)
    x = np.stack([pre.normalize(p) for p in pixels])
    back = pixels_of(x, pre)                      # in the model's (BGR) channel order
    assert np.array_equal(back, pixels[..., ::-1])
    again = (back / np.float32(255.0) - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    np.testing.assert_allclose(again, x, rtol=0, atol=1e-6)


def test_calibration_images_may_come_channels_last(tmp_path):
    """Arrays in the TFLite layout (Keras and TensorFlow users' habit) are taken as they are where the
    shape says so unambiguously; the same data in NCHW gives the same examples."""
    from edgenet.converters.model_data import read_arrays
    from edgenet.converters.model_inputs import ModelInput

    spec = ModelInput("images", (1, 3, 8, 10), image=True)
    nchw = np.random.default_rng(0).normal(size=(5, 3, 8, 10)).astype(np.float32)
    np.save(tmp_path / "nchw.npy", nchw)
    np.save(tmp_path / "nhwc.npy", nchw.transpose(0, 2, 3, 1))
    a = read_arrays(tmp_path / "nchw.npy", [spec])[0][0]
    b = read_arrays(tmp_path / "nhwc.npy", [spec])[0][0]
    assert a.shape == (5, 8, 10, 3) and np.array_equal(a, b)


def test_uint8_calibration_arrays_are_pixels_normalized_as_images(tmp_path):
    """A uint8 array is what a camera gives: normalized with the model's mean and std, as images are;
    float arrays go in as they are (already preprocessed)."""
    from edgenet.converters.model_data import read_arrays
    from edgenet.converters.model_inputs import ModelInput
    from edgenet.data.preprocess import Preprocess

    spec = ModelInput("images", (1, 3, 8, 10), image=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 3, 8, 10)).astype(np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    pre = Preprocess.default(8, 3)
    (x,), normalized = read_arrays(tmp_path / "pixels.npy", [spec], pre)
    want = (pixels.transpose(0, 2, 3, 1) / 255.0 - np.asarray(pre.mean)) / np.asarray(pre.std)
    assert normalized and np.allclose(x, want, atol=1e-6)
    np.save(tmp_path / "float.npy", pixels.astype(np.float32))
    (y,), normalized = read_arrays(tmp_path / "float.npy", [spec], pre)
    assert not normalized and np.array_equal(y, pixels.transpose(0, 2, 3, 1).astype(np.float32))


def test_inputs_of_different_batch_filling_different_invocations_say_so(tmp_path):
    """Two inputs of batch 1 and 2 with 64 rows each: 64 and 32 invocations, said in those terms (the
    message read 'different numbers of examples (a: 64, b: 64)')."""
    from edgenet.converters.model_data import load_data
    from edgenet.converters.model_inputs import ModelInput
    from edgenet.errors import DataError

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ab.npz", a=rng.normal(size=(64, 8)).astype(np.float32),
             b=rng.normal(size=(64, 8)).astype(np.float32))
    inputs = [ModelInput("a", (1, 8), image=False), ModelInput("b", (2, 8), image=False)]
    with pytest.raises(DataError, match=r"a: 64 rows = 64 invocation\(s\) of batch 1, b: 64 rows = 32 invocation"):
        load_data(str(tmp_path / "ab.npz"), inputs, None, int8=True, calib_samples=32, eval_samples=8, seed=0,
                  explicit=True)
