"""The native TFLite writer (converters/tflite_writer): each op family it lowers, against onnxruntime
on random inputs with odd sizes (the cases of the onnx_to_tf handler tests, run through the native
backend and the TFLite interpreter), TFLite's fusions, the signature and names, and what it refuses
(a ConversionError naming the ONNX node: there is no other route)."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import from_tf_output, helper, make_model, rand, run_ort, single_op, to_tf_input
from test_onnx_to_tf_conv import CONV_CASES, POOL_CASES, _conv, _random_conv_cases, _random_pool_cases
from test_onnx_to_tf_conv_transpose import CASES as TRANSPOSE_CASES, _model as _transpose_model
from test_onnx_to_tf_ops import BROADCAST, RESIZE, UNARY, X

from edgenet.config import Precision
from edgenet.converters.tflite_writer import NotNative, native_tflite
from edgenet.converters.tflite_writer.side import NativeSide


def run_native(model, feeds: dict, **options):
    """native_tflite -> ai_edge_litert; (outputs in ONNX layout, op names, NativeGraph)."""
    from ai_edge_litert.interpreter import Interpreter

    graph = native_tflite(model, **options)
    interp = Interpreter(model_content=graph.model)
    runner = interp.get_signature_runner()
    args = {name: to_tf_input(feeds[info.name], info.channels_last)
            for name, info in zip(runner.get_input_details(), graph.inputs)}
    out = runner(**args)
    got = [from_tf_output(out[f"output_{k}"], info.channels_last) for k, info in enumerate(graph.outputs)]
    return got, [op["op_name"] for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"], graph


def assert_native_matches(model, feeds: dict, atol: float = 1e-5, rtol: float = 1e-5, **options) -> list[str]:
    """The native float model computes what onnxruntime does; returns its op names."""
    got, ops, _ = run_native(model, feeds, **options)
    want = run_ort(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, atol=atol, rtol=rtol)
    return ops


# ---- op families ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv(case):
    x_shape, w_shape, attrs = CONV_CASES[case]
    ops = assert_native_matches(_conv(x_shape, w_shape, **attrs), {"x": rand(*x_shape)}, atol=1e-4)
    assert "ADD" not in ops and "TRANSPOSE" not in ops   # the bias is the conv's own


@pytest.mark.parametrize("x_shape, w_shape, attrs", _random_conv_cases(8))
def test_grouped_dilated_strided_conv(x_shape, w_shape, attrs):
    assert_native_matches(_conv(x_shape, w_shape, **attrs), {"x": rand(*x_shape)}, atol=1e-4)


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool(case):
    op, attrs = POOL_CASES[case]
    assert_native_matches(single_op(op, (1, 5, 7, 9), attrs), {"x": rand(1, 5, 7, 9)})


@pytest.mark.parametrize("op, shape, attrs", _random_pool_cases(8))
def test_pool_mixed_attributes(op, shape, attrs):
    assert_native_matches(single_op(op, shape, attrs), {"x": rand(*shape)})


def test_global_average_pool():
    assert assert_native_matches(single_op("GlobalAveragePool", (2, 5, 7, 9)), {"x": rand(2, 5, 7, 9)}) == ["MEAN"]


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu", "Identity"])
def test_unary(op):
    ops = assert_native_matches(single_op(op, X, UNARY.get(op, {})), {"x": rand(*X, scale=3)})
    if op == "HardSwish":
        assert ops == ["HARD_SWISH"]


@pytest.mark.parametrize("bounds, op", [((0.0, 6.0), "RELU6"), ((0.0, None), "RELU"), ((-1.0, 2.5), "SUB")])
def test_clip(bounds, op):
    inits = {n: np.array(v, np.float32) for n, v in zip(("lo", "hi"), bounds) if v is not None}
    names = [n if v is not None else "" for n, v in zip(("lo", "hi"), bounds)]
    names = names[:1] if not names[1] else names
    ops = assert_native_matches(single_op("Clip", X, {}, inits, names, opset=13), {"x": rand(*X, scale=4)})
    assert op in ops and "MINIMUM" not in ops   # no int8 MINIMUM in the LiteRT Quantizer: t - relu(t - hi)


@pytest.mark.parametrize("op,shape", [(op, s) for op in ("Add", "Mul") for s in sorted(BROADCAST)]
                         + [(op, s) for op in ("Sub", "Div") for s in ("C11", "scalar", "HW")])
def test_binary_with_constant_broadcast(op, shape):
    c = rand(*BROADCAST[shape]) + (3.0 if op == "Div" else 0.0)
    assert "TRANSPOSE" not in assert_native_matches(single_op(op, X, {}, {"c": c}, ["c"]), {"x": rand(*X)})


def test_conv_relu_add_relu_fuses_like_tflite():
    """Conv + bias + Relu is one CONV_2D; a residual Add + Relu one ADD with the ReLU fused."""
    w = rand(5, 5, 3, 3, scale=0.3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu2")]
    model = make_model(nodes, {"x": X}, ["y"], {"w": w, "b": rand(5)})
    assert assert_native_matches(model, {"x": rand(*X)}, atol=1e-5) == ["CONV_2D", "ADD"]
    _, _, graph = run_native(model, {"x": rand(*X)})
    assert graph.onnx_node("r") == "relu" and graph.onnx_node("y") == "relu2"


@pytest.mark.parametrize("attrs, c_shape", [({}, (4,)), (dict(transB=1, alpha=0.5, beta=2.0), (1, 4)), ({}, None)])
def test_gemm(attrs, c_shape):
    w = rand(4, 7) if attrs.get("transB") else rand(7, 4)
    inits, extra = {"w": w}, ["w"]
    if c_shape:
        inits["c"], extra = rand(*c_shape), ["w", "c"]
    ops = assert_native_matches(single_op("Gemm", (3, 7), attrs, inits, extra), {"x": rand(3, 7)})
    assert ops == ["FULLY_CONNECTED"]


@pytest.mark.parametrize("x_shape, w_shape", [((3, 7), (7, 5)), ((2, 3, 7), (7, 5)), ((2, 3, 7), (2, 7, 5))])
def test_matmul(x_shape, w_shape):
    assert_native_matches(single_op("MatMul", x_shape, {}, {"w": rand(*w_shape)}, ["w"]), {"x": rand(*x_shape)})


def test_matmul_of_two_activations():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "t"], ["y"])]
    model = make_model(nodes, {"x": (2, 5, 3)}, ["y"])
    assert "BATCH_MATMUL" in assert_native_matches(model, {"x": rand(2, 5, 3)})


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_concat(axis):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["x", "r", "c"], ["y"], axis=axis)]
    c_shape = list(X)
    c_shape[axis] = 2
    model = make_model(nodes, {"x": X}, ["y"], {"c": rand(*c_shape)})
    assert_native_matches(model, {"x": rand(*X)})


@pytest.mark.parametrize("op, attrs, extra, value", [
    ("Reshape", {}, ["s"], np.array([1, 5, 63], np.int64)),
    ("Reshape", {}, ["s"], np.array([1, -1], np.int64)),
    ("Flatten", dict(axis=1), [], None),
    ("Flatten", dict(axis=2), [], None),
    ("Transpose", dict(perm=[0, 2, 3, 1]), [], None),
    ("Transpose", dict(perm=[0, 3, 1, 2]), [], None),
    ("Unsqueeze", {}, ["s"], np.array([0], np.int64)),
])
def test_reshapes_and_transposes(op, attrs, extra, value):
    model = single_op(op, X, attrs, {"s": value} if value is not None else {}, extra)
    assert_native_matches(model, {"x": rand(*X)})


def test_squeeze():
    model = single_op("Squeeze", (1, 5, 1, 9), {}, {"a": np.array([2], np.int64)}, ["a"])
    assert_native_matches(model, {"x": rand(1, 5, 1, 9)})


@pytest.mark.parametrize("pads, value", [([0, 0, 1, 2, 0, 1, 0, 3], 0.0), ([0, 1, 2, 0, 0, 0, 1, 1], 1.5)])
def test_pad(pads, value):
    model = single_op("Pad", X, {}, {"p": np.array(pads, np.int64), "v": np.array(value, np.float32)}, ["p", "v"])
    assert_native_matches(model, {"x": rand(*X)})


@pytest.mark.parametrize("axis, shape", [(-1, (3, 7)), (1, X), (-1, X), (2, (2, 5, 7))])
def test_softmax(axis, shape):
    assert_native_matches(single_op("Softmax", shape, dict(axis=axis)), {"x": rand(*shape)}, atol=1e-6)


@pytest.mark.parametrize("case", sorted(RESIZE))
def test_resize(case):
    attrs, scales = RESIZE[case], [1, 1, 2, 2]
    inits = {"roi": np.array([], np.float32), "scales": np.array(scales, np.float32)}
    model = single_op("Resize", X, attrs, inits, ["roi", "scales"], opset=13)
    assert_native_matches(model, {"x": rand(*X)}, atol=1e-5)


@pytest.mark.parametrize("starts, ends, axes, steps", [([1], [4], [1], None), ([0, 2], [-1, 100], [2, 3], [2, 3]),
                                                        ([1], [-1000], [3], [-2])])
def test_slice(starts, ends, axes, steps):
    inits = {"s": np.array(starts, np.int64), "e": np.array(ends, np.int64), "a": np.array(axes, np.int64)}
    names = ["s", "e", "a"]
    if steps:
        inits["st"], names = np.array(steps, np.int64), names + ["st"]
    assert_native_matches(single_op("Slice", X, {}, inits, names), {"x": rand(*X)})


@pytest.mark.parametrize("axis, sizes", [(1, [2, 3]), (2, None), (3, [4, 5])])
def test_split(axis, sizes):
    n = len(sizes) if sizes else 7
    inits, extra = ({"s": np.array(sizes, np.int64)}, ["s"]) if sizes else ({}, [])
    attrs = dict(axis=axis) if sizes else dict(axis=axis, num_outputs=n)
    model = single_op("Split", X, attrs, inits, extra, opset=18, n_outputs=n)
    assert_native_matches(model, {"x": rand(*X)})


# ---- the model ------------------------------------------------------------------------------------
def test_names_signature_and_int8_through_the_quantizer():
    """Tensors carry the ONNX value names; serving_default is there, so the LiteRT Quantizer makes
    an int8 model of the native float model."""
    from edgenet.converters import _flatbuffer
    from edgenet.converters.quantize import quantize_calibrated

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["features"], name="relu"),
             helper.make_node("GlobalAveragePool", ["features"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], transB=1, name="fc")]
    model = make_model(nodes, {"x": (1, 3, 17, 15)}, ["logits"], {"w": rand(8, 3, 3, 3), "fc": rand(4, 8),
                                                                   "fb": rand(4)})
    graph = native_tflite(model)
    obj = _flatbuffer.read(graph.model)
    names = {_flatbuffer.tensor_name(t) for t in obj.subgraphs[0].tensors}
    assert {"x", "features", "logits"} <= names
    assert obj.signatureDefs[0].signatureKey.decode() == "serving_default"
    calib = to_tf_input(rand(8, 3, 17, 15), True)
    result = quantize_calibrated(graph.model, [calib], precision=Precision.INT8)
    assert len(result.model) > 0


def test_an_empty_intermediate_tensor_converts():
    """A Slice that keeps nothing, concatenated: the empty tensor holds no values, the concatenation
    is its other input; the side converts it with no note."""
    inits = {"s": np.array([3], np.int64), "e": np.array([3], np.int64), "a": np.array([1], np.int64)}
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["empty"], name="keep_nothing"),
             helper.make_node("Concat", ["x", "empty"], ["y"], axis=1, name="concat")]
    model = make_model(nodes, {"x": X}, ["y"], inits)
    assert_native_matches(model, {"x": rand(*X)})
    side = NativeSide()
    info, floats = side.start("graph_and_floats", model, (), (Precision.FLOAT32, Precision.FLOAT16)).result()
    assert set(floats) == {Precision.FLOAT32, Precision.FLOAT16} and info.outputs[0].name == "y"


def test_what_the_writer_cannot_express_fails_naming_the_node(tmp_path):
    """A graph output of no elements: a ConversionError naming it, from the side and from
    edgenet.convert (one line, no TensorFlow imported)."""
    import edgenet
    import onnx

    from edgenet.errors import ConversionError

    inits = {"s": np.array([3], np.int64), "e": np.array([3], np.int64), "a": np.array([1], np.int64)}
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Slice", ["r", "s", "e", "a"], ["y"], name="keep_nothing")]
    model = make_model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)
    with pytest.raises(NotNative, match=r"graph output 'y' is empty \(shape \(1, 0, 8, 8\)\)"):
        NativeSide().start("graph_and_floats", model).result()
    path = tmp_path / "empty.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConversionError, match="graph output 'y' is empty"):
        edgenet.convert(str(path), precisions=["float32"], out=tmp_path / "out", eval_samples=2, layer_report=False)


def test_a_node_the_writer_lacks_is_named():
    """A Mod of a computed float32 tensor by a float16 constant (malformed: ONNX's type checker would
    refuse it; integer Div, the earlier example, converts now): no FLOOR_MOD takes two float types,
    and the NotNative error names the ONNX op and node."""
    nodes = [helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=1, name="am"),
             helper.make_node("Cast", ["i"], ["f"], to=1, name="c"),
             helper.make_node("Mod", ["f", "two"], ["y"], name="halve", fmod=1)]
    model = make_model(nodes, {"x": (2, 5)}, ["y"], {"two": np.array([2], np.float16)})
    with pytest.raises(NotNative, match=r"^ONNX Mod \(node 'halve'\) cannot be written as TFLite builtin") as err:
        native_tflite(model)
    assert (err.value.node, err.value.op_type) == ("halve", "Mod")


def test_float16_and_dynamic_come_from_the_quantizer_without_tensorflow():
    """float16 / dynamic models: made from the native float32 model by the LiteRT Quantizer
    (converters/float_weights.py), no note."""
    from edgenet.converters.op_precision import model_precision

    side = NativeSide()
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")],
                       {"x": (1, 16, 9, 7)}, ["y"], {"w": rand(32, 16, 3, 3)})
    _, floats = side.graph_and_floats(model, (), (Precision.FLOAT32, Precision.FLOAT16, Precision.DYNAMIC))
    assert {p: model_precision(m) for p, m in floats.items()} == {p: p for p in floats}


@pytest.mark.parametrize("case", sorted(TRANSPOSE_CASES))
def test_conv_transpose(case):
    x_shape, w_shape, attrs = TRANSPOSE_CASES[case]
    model = _transpose_model(x_shape, w_shape, **attrs)
    assert_native_matches(model, {"x": rand(*x_shape)}, atol=1e-4, rtol=1e-4)


# ---- the zoo: the same operators as the TensorFlow-made models -----------------------------------
ZOO_SMALL = {"mobilenet_v1": dict(alpha=0.25, resolution=64), "mixnet_s": dict(resolution=64),
             "shufflenet_v2_x1_0": dict(resolution=64), "squeezenet1_1": dict(resolution=64),
             "xception_tiny": dict(resolution=32)}


# the float models TensorFlow's converter made of them (main at 9c1556b, before TensorFlow left the
# ONNX path): op type -> count, exported and cleaned as convert does
TF_MADE_OPS = {
    "mobilenet_v1": {"CONV_2D": 14, "DEPTHWISE_CONV_2D": 13, "FULLY_CONNECTED": 1, "MEAN": 1, "PAD": 5},
    "mixnet_s": {"ADD": 11, "CONCATENATION": 34, "CONV_2D": 80, "DEPTHWISE_CONV_2D": 43, "FULLY_CONNECTED": 1,
        "LOGISTIC": 85, "MEAN": 14, "MUL": 85, "PAD": 13, "SPLIT": 33, "STRIDED_SLICE": 5},
    "shufflenet_v2_x1_0": {"CONCATENATION": 18, "CONV_2D": 37, "DEPTHWISE_CONV_2D": 19, "FULLY_CONNECTED": 1,
        "MAX_POOL_2D": 1, "MEAN": 1, "PAD": 7, "RESHAPE": 32, "STRIDED_SLICE": 28, "TRANSPOSE": 16},
    "squeezenet1_1": {"CONCATENATION": 8, "CONV_2D": 26, "MAX_POOL_2D": 3, "MEAN": 1, "RESHAPE": 1},
    "xception_tiny": {"ADD": 7, "CONCATENATION": 8, "CONV_2D": 23, "DEPTHWISE_CONV_2D": 24, "FULLY_CONNECTED": 1,
        "MAX_POOL_2D": 4, "PAD": 1, "STRIDED_SLICE": 8},
}


def _op_counts(model: bytes) -> dict[str, int]:
    from collections import Counter

    from ai_edge_litert import schema_py_generated as schema

    from edgenet.converters import _flatbuffer

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    obj = _flatbuffer.read(model)
    return dict(Counter(names[_flatbuffer.builtin_code(obj, op)] for op in obj.subgraphs[0].operators))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "mixnet_s" else n
                                  for n in sorted(ZOO_SMALL)])   # MixNet-S: 404 ops
def test_zoo_float_models_match_the_tensorflow_made_ones(name):
    """Exported and cleaned as convert does (BN folded): the float model has the op types of the model
    TensorFlow's converter made (TF_MADE_OPS) and no more ops of any type (MixNet-S: 3 CONCATENATION
    and 5 SPLIT fewer, since cleanup reads a Concat's pieces where the next Split takes it apart
    again, converters/split_concat.py), and computes onnxruntime's values."""
    pytest.importorskip("torch")
    from edgenet.converters.export import export_onnx
    from edgenet.converters.passes import ONNX_PASSES
    from edgenet.zoo import create_model

    size = ZOO_SMALL[name]
    model = export_onnx(create_model(name, num_classes=10, **size), (1, 3, size["resolution"], size["resolution"]))
    for graph_pass in ONNX_PASSES:
        model, _ = graph_pass.run(model)
    ours, theirs = _op_counts(native_tflite(model).model), TF_MADE_OPS[name]
    assert ours.keys() == theirs.keys() and all(ours[k] <= theirs[k] for k in ours), (ours, theirs)
    x = rand(1, 3, size["resolution"], size["resolution"])
    got, _, _ = run_native(model, {"input": x})
    np.testing.assert_allclose(got[0], run_ort(model, {"input": x})[0], rtol=1e-4, atol=1e-5)


def test_affine_around_convs_folds_like_tflite():
    """conv -> Mul(per channel) -> Add -> Relu is one CONV_2D; HardSwish -> Mul(s) -> Add(b) -> a 1x1
    conv folds the affine into the conv's weights and bias; before a padded conv it stays (not exact)."""
    c = 5
    inits = {"w1": rand(c, c, 3, 3, scale=0.3), "s": rand(c, 1, 1) + 2, "b": rand(c, 1, 1), "w2": rand(c, c, 1, 1),
             "w3": rand(c, c, 3, 3, scale=0.3), "k": np.array(0.7, np.float32), "d": np.array(-0.2, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c1", "s"], ["m1"]), helper.make_node("Add", ["m1", "b"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("HardSwish", ["r1"], ["h"]),
             helper.make_node("Mul", ["h", "k"], ["m2"]), helper.make_node("Add", ["m2", "d"], ["a2"]),
             helper.make_node("Conv", ["a2", "w2"], ["c2"]), helper.make_node("HardSwish", ["c2"], ["h2"]),
             helper.make_node("Mul", ["h2", "k"], ["m3"]), helper.make_node("Add", ["m3", "d"], ["a3"]),
             helper.make_node("Conv", ["a3", "w3"], ["y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": X}, ["y"], inits)
    ops = assert_native_matches(model, {"x": rand(*X)}, atol=1e-4, rtol=1e-4)
    assert sorted(ops) == ["ADD", "CONV_2D", "CONV_2D", "CONV_2D", "HARD_SWISH", "HARD_SWISH", "MUL"]


# ---- folds TensorFlow's converter makes on PP-OCRv4 (issue #20) -----------------------------------
def test_multiply_by_one_and_add_of_zero_are_dropped():
    """PaddlePaddle's swish ``x * sigmoid(1 * x)`` after a conv is CONV_2D, LOGISTIC, MUL (the Mul by 1
    dropped, as TF does); an Add of zeros too; a Mul by constants not all one stays, and so does a
    Mul by 1 that makes a graph output."""
    c = 5
    inits = {"w": rand(c, c, 3, 3, scale=0.3), "one": np.ones(1, np.float32), "zeros": np.zeros((c, 1, 1), np.float32),
             "s": np.array([1, 1, 2, 1, 1], np.float32).reshape(c, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "one"], ["m"]), helper.make_node("Sigmoid", ["m"], ["g"]),
             helper.make_node("Mul", ["c", "g"], ["sw"]), helper.make_node("Add", ["zeros", "sw"], ["a"]),
             helper.make_node("Mul", ["a", "s"], ["y"]), helper.make_node("Mul", ["y", "one"], ["y2"])]
    model = make_model(nodes, {"x": X}, ["y", "y2"], inits)
    ops = assert_native_matches(model, {"x": rand(*X)})
    assert sorted(ops) == ["CONV_2D", "LOGISTIC", "MUL", "MUL", "MUL"]   # swish, the per-channel Mul, y2's


def _layer_norm_then_matmul(n: int, k: int, out: int):
    """PaddlePaddle's LayerNorm as exported (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add)
    then MatMul + Add: (1, n, k) -> (1, n, out)."""
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32), "gamma": rand(k) + 1.5,
             "beta": rand(k), "w": rand(k, out, scale=0.3), "b": rand(out)}
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), helper.make_node("Sub", ["x", "mu"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["d2"]), helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["nx"]), helper.make_node("Mul", ["nx", "gamma"], ["g"]),
             helper.make_node("Add", ["g", "beta"], ["ln"]), helper.make_node("MatMul", ["ln", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["y"])]
    return make_model(nodes, {"x": (1, n, k)}, ["y"], inits, opset=13)


def test_layer_norm_before_a_matmul_folds_like_tflite():
    """Division by SQRT is a MUL by RSQRT, and gamma / beta (one per channel) fold into the FC's weights
    and bias: no DIV, SQRT, nor a Mul / Add by constants left (TF's converter writes the same ops)."""
    model = _layer_norm_then_matmul(7, 12, 9)
    ops = assert_native_matches(model, {"x": rand(1, 7, 12) * 3 + 1}, atol=1e-4, rtol=1e-4)
    assert sorted(ops) == ["ADD", "FULLY_CONNECTED", "MEAN", "MEAN", "MUL", "MUL", "RSQRT", "SUB"]


def test_reshape_of_a_reshape_is_one_reshape():
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r"]), helper.make_node("Reshape", ["r", "s2"], ["y"])]
    model = make_model(nodes, {"x": (2, 3, 20)}, ["y"], {"s1": np.array([6, 20], np.int64),
                                                          "s2": np.array([1, 2, 60], np.int64)})
    assert assert_native_matches(model, {"x": rand(2, 3, 20)}) == ["RESHAPE"]


def test_relu_after_conv_transpose_fuses_into_it():
    """ConvTranspose + Relu is one TRANSPOSE_CONV with the ReLU fused (builtin version 4, as TF writes it)."""
    from edgenet.targets.tflite_graph import read_tflite

    x_shape, w_shape, attrs = TRANSPOSE_CASES["k4_s2_p1_upsampler"]
    model = _transpose_model(x_shape, w_shape, **attrs)
    model.graph.node.append(helper.make_node("Relu", ["y0"], ["r"]))
    model.graph.output[0].name = "r"
    x = rand(*x_shape)
    assert assert_native_matches(model, {"x": x}, atol=1e-4, rtol=1e-4) == ["TRANSPOSE_CONV"]
    op = read_tflite(native_tflite(model).model).operators[0]
    assert (op.name, op.version) == ("TRANSPOSE_CONV", 4)
