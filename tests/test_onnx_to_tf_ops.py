"""Every non-conv handler vs onnxruntime on random inputs, including opset variants and layouts."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import (assert_matches_ort, helper, make_model, rand, single_op, op_types,
                                     with_dynamic_batch)

X = (1, 5, 7, 9)  # odd NCHW shape used throughout


UNARY = {
    "Relu": {}, "Sigmoid": {}, "Tanh": {}, "LeakyRelu": dict(alpha=0.1), "Elu": dict(alpha=0.5),
    "HardSigmoid": dict(alpha=0.3, beta=0.4), "HardSwish": {}, "Softplus": {}, "Abs": {}, "Neg": {},
    "Exp": {}, "Identity": {}, "Dropout": {}, "Floor": {},
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    assert_matches_ort(single_op(op, X, UNARY[op]), {"x": rand(*X, scale=3)})


def test_hard_sigmoid_mobilenetv3_form():
    graph = assert_matches_ort(single_op("HardSigmoid", X, dict(alpha=1 / 6, beta=0.5)), {"x": rand(*X, scale=4)})
    assert op_types(graph) == {"ADD", "MUL"}   # relu6(x + 3) / 6, the RELU6 fused into the ADD


@pytest.mark.parametrize("opset,bounds,tf_op", [
    (9, dict(min=0.0, max=6.0), "RELU6"),
    (9, dict(min=-1.0, max=2.5), "SUB"),      # min(t, 2.5) as t - relu(t - 2.5): no MINIMUM (no int8 one)
    (11, (0.0, 6.0), "RELU6"),
    (13, (0.0, None), "RELU"),
    (13, (None, 1.5), "SUB"),
    (17, (-0.5, 0.5), "MAXIMUM"),
    (17, (0.0, 4.0), "SUB"),
])
def test_clip_forms(opset, bounds, tf_op):
    if isinstance(bounds, dict):
        model = single_op("Clip", X, bounds, opset=opset)
    else:
        inits, names = {}, []
        for name, v in zip(("lo", "hi"), bounds):
            if v is None:
                names.append("")
            else:
                inits[name] = np.array(v, np.float32)
                names.append(name)
        while names and not names[-1]:
            names.pop()
        model = single_op("Clip", X, {}, inits, names, opset=opset)
    graph = assert_matches_ort(model, {"x": rand(*X, scale=4)})
    assert tf_op in op_types(graph) and "MINIMUM" not in op_types(graph)


BROADCAST = {
    "C11": (5, 1, 1), "1C11": (1, 5, 1, 1), "scalar": (), "W": (9,), "HW": (7, 9), "C1W": (5, 1, 9), "full": X,
}


@pytest.mark.parametrize("op,shape", [("Add", s) for s in sorted(BROADCAST)] + [("Mul", s) for s in sorted(BROADCAST)]
                         + [(op, s) for op in ("Sub", "Div") for s in ("C11", "scalar", "HW")])
def test_binary_with_constant_broadcast(op, shape):
    c = rand(*BROADCAST[shape]) + (3.0 if op == "Div" else 0.0)
    model = single_op(op, X, {}, {"c": c}, ["c"])
    graph = assert_matches_ort(model, {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
def test_binary_two_activations(op):
    """Both operands computed; the second is lower-rank (N, C, 1, 1 after a global pool) or full."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Abs", ["g"], ["ga"]),
             helper.make_node(op, ["r", "ga"], ["y"], name="op")]
    model = make_model(nodes, {"x": X}, ["y"])
    graph = assert_matches_ort(model, {"x": rand(*X)}, rtol=1e-4)
    assert "TRANSPOSE" not in op_types(graph)


def test_constant_minus_tensor_and_left_broadcast():
    nodes = [helper.make_node("Sub", ["c", "x"], ["y"])]
    model = make_model(nodes, {"x": X}, ["y"], {"c": rand(5, 1, 1)})
    assert_matches_ort(model, {"x": rand(*X)})


def test_rank2_operand_against_rank4():
    """A computed (7, 9) tensor broadcast against NCHW: needs the ONNX-order view, then NHWC."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0, 1], keepdims=0),
             helper.make_node("Mul", ["x", "m"], ["y"])]
    model = make_model(nodes, {"x": X}, ["y"], opset=13)
    assert_matches_ort(model, {"x": rand(*X)})


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max"])
def test_variadic(op):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["x", "r", "c"], ["y"])]
    assert_matches_ort(make_model(nodes, {"x": X}, ["y"], {"c": rand(5, 1, 1)}), {"x": rand(*X)})


def test_prelu_per_channel():
    assert_matches_ort(single_op("PRelu", X, {}, {"s": rand(5, 1, 1)}, ["s"]), {"x": rand(*X)})


def test_pow_square_and_sqrt():
    for exponent in (2.0, 0.5, 3.0):
        model = single_op("Pow", X, {}, {"e": np.array(exponent, np.float32)}, ["e"])
        assert_matches_ort(model, {"x": np.abs(rand(*X)) + 0.1}, rtol=1e-4)


@pytest.mark.parametrize("axis", [1, -3, 2, 3, 0])
def test_concat_axes_with_constant(axis):
    shape = list(X)
    shape[axis] = 2
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["x", "r", "c"], ["y"], axis=axis)]
    model = make_model(nodes, {"x": X}, ["y"], {"c": rand(*shape)})
    graph = assert_matches_ort(model, {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_flatten(axis):
    assert_matches_ort(single_op("Flatten", X, dict(axis=axis)), {"x": rand(*X)})


@pytest.mark.parametrize("shape", [(0, -1), (1, 5, 63), (-1, 9), (0, 0, 63), (1, 5, 7, 9, 1), (5, 7, 9)])
def test_reshape(shape):
    model = single_op("Reshape", X, {}, {"s": np.array(shape, np.int64)}, ["s"])
    assert_matches_ort(model, {"x": rand(*X)})


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (3, 2, 1, 0), (0, 1, 3, 2)])
def test_transpose(perm):
    assert_matches_ort(single_op("Transpose", X, dict(perm=list(perm))), {"x": rand(*X)})


def test_transpose_default_reverses():
    assert_matches_ort(single_op("Transpose", (2, 3, 4)), {"x": rand(2, 3, 4)})


@pytest.mark.parametrize("attrs,c_shape", [
    ({}, (6,)), (dict(transB=1), (6,)), (dict(alpha=0.5, beta=2.0), (1, 6)), (dict(transA=1), (3, 6)),
    (dict(beta=0.0), (6,)),
])
def test_gemm(attrs, c_shape):
    a_shape = (4, 3) if attrs.get("transA") else (3, 4)
    b = rand(6, 4) if attrs.get("transB") else rand(4, 6)
    model = single_op("Gemm", a_shape, attrs, {"b": b, "c": rand(*c_shape)}, ["b", "c"])
    assert_matches_ort(model, {"x": rand(*a_shape)})


def test_gemm_without_bias():
    assert_matches_ort(single_op("Gemm", (2, 4), dict(transB=1), {"b": rand(3, 4)}, ["b"]), {"x": rand(2, 4)})


@pytest.mark.parametrize("x_shape,w_shape", [((3, 4), (4, 6)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                             ((3, 4), (4,))])
def test_matmul(x_shape, w_shape):
    model = single_op("MatMul", x_shape, {}, {"w": rand(*w_shape)}, ["w"])
    assert_matches_ort(model, {"x": rand(*x_shape)}, rtol=1e-4)


@pytest.mark.parametrize("opset", [9, 15])
def test_batch_normalization(opset):
    inits = {"s": rand(5) + 1.5, "b": rand(5), "m": rand(5), "v": np.abs(rand(5)) + 0.5}
    model = single_op("BatchNormalization", X, dict(epsilon=1e-3), inits, ["s", "b", "m", "v"], opset=opset)
    graph = assert_matches_ort(model, {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)


def test_batch_normalization_rank2():
    inits = {"s": rand(5) + 1.5, "b": rand(5), "m": rand(5), "v": np.abs(rand(5)) + 0.5}
    assert_matches_ort(single_op("BatchNormalization", (3, 5), {}, inits, ["s", "b", "m", "v"]), {"x": rand(3, 5)})


def test_instance_and_layer_norm():
    model = single_op("InstanceNormalization", X, {}, {"s": rand(5), "b": rand(5)}, ["s", "b"])
    assert_matches_ort(model, {"x": rand(*X)}, atol=1e-4)
    model = single_op("LayerNormalization", (2, 3, 8), dict(axis=-1), {"s": rand(8), "b": rand(8)}, ["s", "b"])
    assert_matches_ort(model, {"x": rand(2, 3, 8)}, atol=1e-4)


@pytest.mark.parametrize("op,opset,axis,shape", [
    ("Softmax", 11, 1, (2, 10)), ("Softmax", 11, 1, X), ("Softmax", 11, 2, X), ("Softmax", 11, -1, X),
    ("Softmax", 13, 1, X), ("Softmax", 13, -1, X), ("Softmax", 13, 2, X), ("Softmax", 13, -1, (2, 10)),
    ("LogSoftmax", 11, 2, X), ("LogSoftmax", 13, 1, X),
])
def test_softmax_axis_semantics(op, opset, axis, shape):
    assert_matches_ort(single_op(op, shape, dict(axis=axis), opset=opset), {"x": rand(*shape)}, atol=1e-5)


def test_softmax_channel_axis_is_last_in_nhwc():
    graph = assert_matches_ort(single_op("Softmax", X, dict(axis=1), opset=13), {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)


REDUCE_AXES = [([2, 3], 1), ([2, 3], 0), ([1], 0), ([2], 0), ([-1], 1), (None, 0)]


@pytest.mark.parametrize("op,axes,keepdims,opset",
                         [("ReduceMean", a, k, o) for a, k in REDUCE_AXES for o in (13, 18)]
                         + [(op, a, k, o) for op in ("ReduceMax", "ReduceSum") for a, k in REDUCE_AXES[1:3]
                            for o in (12, 13, 18)])
def test_reductions(op, axes, keepdims, opset):
    attrs = dict(keepdims=keepdims)
    inits, extra = {}, []
    axes_as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    if axes is not None:
        if axes_as_input:
            inits, extra = {"axes": np.array(axes, np.int64)}, ["axes"]
        else:
            attrs["axes"] = axes
    assert_matches_ort(single_op(op, X, attrs, inits, extra, opset=opset), {"x": rand(*X)}, rtol=1e-4, atol=1e-5)


def test_reduce_mean_over_hw_then_gemm_has_no_transpose():
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Gemm", ["m", "w", "b"], ["y"], transB=1)]
    model = make_model(nodes, {"x": X}, ["y"], {"w": rand(4, 5), "b": rand(4)}, opset=13)
    graph = assert_matches_ort(model, {"x": rand(*X)})
    assert not {"TRANSPOSE", "RESHAPE"} & op_types(graph)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_argmax(op, keepdims):
    assert_matches_ort(single_op(op, X, dict(axis=1, keepdims=keepdims)), {"x": rand(*X)})


@pytest.mark.parametrize("opset", [9, 11, 18])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(opset, mode):
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    if opset < 11:
        model = single_op("Pad", X, dict(mode=mode, pads=pads, value=1.5), opset=opset)
    else:
        model = single_op("Pad", X, dict(mode=mode), {"p": np.array(pads, np.int64), "v": np.array(1.5, np.float32)},
                          ["p", "v"], opset=opset)
    graph = assert_matches_ort(model, {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)


def test_pad_negative_crops_and_axes_input():
    model = single_op("Pad", X, {}, {"p": np.array([0, 0, -1, 2, 0, 0, 1, -2], np.int64)}, ["p"], opset=13)
    assert_matches_ort(model, {"x": rand(*X)})
    model = single_op("Pad", X, {}, {"p": np.array([1, 2, 3, 0], np.int64), "v": np.array(0.0, np.float32),
                                     "a": np.array([2, 3], np.int64)}, ["p", "v", "a"], opset=18)
    assert_matches_ort(model, {"x": rand(*X)})


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("axis,sizes", [(1, [2, 3]), (2, [3, 4]), (3, None)])
def test_split(opset, axis, sizes):
    n = len(sizes) if sizes else 3
    attrs, inits, extra = dict(axis=axis), {}, []
    if sizes and opset < 13:
        attrs["split"] = sizes
    elif sizes:
        inits, extra = {"s": np.array(sizes, np.int64)}, ["", "s"][1:]
    elif opset >= 18:
        attrs["num_outputs"] = n
    model = single_op("Split", X, attrs, inits, extra, opset=opset, n_outputs=n)
    assert_matches_ort(model, {"x": rand(*X)})


SLICES = [([1], [4], [1], None), ([0, 2], [-1, 100], [2, 3], None), ([1], [-1000], [3], [-2]),
          ([-2], [0], [1], [-1]), ([0, 1], [4, 8], [-1, 2], [2, 3])]


@pytest.mark.parametrize("opset,starts,ends,axes,steps",
                         [(13, *case) for case in SLICES] + [(9, *case) for case in SLICES if case[3] is None])
def test_slice(opset, starts, ends, axes, steps):
    if opset < 10:
        model = single_op("Slice", X, dict(starts=starts, ends=ends, axes=axes), opset=opset)
    else:
        inits = {"st": np.array(starts, np.int64), "en": np.array(ends, np.int64), "ax": np.array(axes, np.int64)}
        names = ["st", "en", "ax"]
        if steps is not None:
            inits["sp"], names = np.array(steps, np.int64), names + ["sp"]
        model = single_op("Slice", X, {}, inits, names, opset=opset)
    assert_matches_ort(model, {"x": rand(*X)})


@pytest.mark.parametrize("indices", [2, [0, 3, 1], -1])
@pytest.mark.parametrize("axis", [1, 3])
def test_gather(indices, axis):
    model = single_op("Gather", X, dict(axis=axis), {"i": np.array(indices, np.int64)}, ["i"])
    assert_matches_ort(model, {"x": rand(*X)})


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    if opset < 13:
        nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                 helper.make_node("Squeeze", ["g"], ["s"], axes=[2, 3]),
                 helper.make_node("Unsqueeze", ["s"], ["y"], axes=[1])]
        inits = {}
    else:
        nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                 helper.make_node("Squeeze", ["g", "a"], ["s"]),
                 helper.make_node("Unsqueeze", ["s", "b"], ["y"])]
        inits = {"a": np.array([2, 3], np.int64), "b": np.array([1], np.int64)}
    graph = assert_matches_ort(make_model(nodes, {"x": X}, ["y"], inits, opset=opset), {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)


def test_shape_gather_concat_reshape_folds():
    """torch's x.view(x.size(0), -1) pattern: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Shape", ["g"], ["sh"]),
             helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["g", "target"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    model = make_model(nodes, {"x": X}, ["y"], inits, opset=13)
    graph = assert_matches_ort(model, {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)
    assert_matches_ort(with_dynamic_batch(model), {"x": rand(3, 5, 7, 9)}, batch_size=3)


def test_shape_arithmetic_without_handlers_is_folded():
    """Ops with no handler (ConstantOfShape, Range) are fine when they only compute on shapes."""
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Slice", ["sh", "one", "two"], ["c"]),
             helper.make_node("ConstantOfShape", ["c"], ["ones"], value=helper.make_tensor("v", 1, [1], [1.0])),
             helper.make_node("Range", ["zero_f", "five_f", "one_f"], ["r"]),
             helper.make_node("Mul", ["ones", "r"], ["scale"]),  # (5,) -> 5 per channel, via Unsqueeze
             helper.make_node("Unsqueeze", ["scale", "axes"], ["scale3"]),
             helper.make_node("Mul", ["x", "scale3"], ["y"])]
    inits = {"one": np.array([1], np.int64), "two": np.array([2], np.int64), "axes": np.array([1, 2], np.int64),
             "zero_f": np.array(0, np.float32), "five_f": np.array(5, np.float32), "one_f": np.array(1, np.float32)}
    assert_matches_ort(make_model(nodes, {"x": X}, ["y"], inits, opset=13), {"x": rand(*X)})


def test_cast_and_constant_node():
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", 1, [5, 1, 1], list(range(5)))),
             helper.make_node("Add", ["x", "c"], ["a"]),
             helper.make_node("Cast", ["a"], ["y"], to=7)]
    assert_matches_ort(make_model(nodes, {"x": X}, ["y"]), {"x": rand(*X, scale=10)})


RESIZE = {
    "nearest_asym_floor_x2": dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "nearest_default_x2": dict(mode="nearest"),
    "nearest_align_corners": dict(mode="nearest", coordinate_transformation_mode="align_corners",
                                  nearest_mode="round_prefer_ceil"),
    "nearest_half_pixel_ceil": dict(mode="nearest", nearest_mode="ceil"),
    "linear_half_pixel": dict(mode="linear"),
    "linear_pytorch_half_pixel": dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    "linear_align_corners": dict(mode="linear", coordinate_transformation_mode="align_corners"),
    "linear_asymmetric": dict(mode="linear", coordinate_transformation_mode="asymmetric"),
}


@pytest.mark.parametrize("case", sorted(RESIZE))
@pytest.mark.parametrize("by", ["scales", "sizes"])
def test_resize(case, by):
    if by == "scales":
        inits, names = {"s": np.array([1, 1, 2, 2], np.float32)}, ["", "s"]
    else:
        inits, names = {"z": np.array([1, 5, 14, 13], np.int64)}, ["", "", "z"]
    model = single_op("Resize", X, RESIZE[case], inits, names, opset=13)
    graph = assert_matches_ort(model, {"x": rand(*X)}, atol=1e-5)
    assert "TRANSPOSE" not in op_types(graph)


def test_resize_opset10_and_upsample_opset9():
    model = single_op("Resize", X, dict(mode="nearest"), {"s": np.array([1, 1, 2, 3], np.float32)}, ["s"], opset=10)
    assert_matches_ort(model, {"x": rand(*X)})
    model = single_op("Upsample", X, dict(mode="nearest"), {"s": np.array([1, 1, 2, 2], np.float32)}, ["s"], opset=9)
    assert_matches_ort(model, {"x": rand(*X)})


def test_gemm_transposed_a_with_a_computed_row_bias():
    """transA=1 and a run-time (1, N) C: TF's grappler fused the MatMul and Add into a _FusedMatMul that
    raised "bias must be 1-dimensional" when the TF graph ran; C is now added as (N,)."""
    model = make_model([helper.make_node("Gemm", ["x", "b", "c"], ["y"], transA=1, alpha=1.5, name="gemm_0")],
                       {"x": (3, 5), "c": (1, 7)}, ["y"], {"b": rand(3, 7)})
    assert_matches_ort(model, {"x": rand(3, 5), "c": rand(1, 7)}, rtol=1e-4)


@pytest.mark.parametrize("axis, largest, shape", [(-1, 1, (2, 5, 7, 9)), (1, 1, (2, 5, 7, 9)), (2, 0, (1, 3, 6, 4)),
                                                  (-1, 1, (3, 11))])
def test_top_k_values_and_indices_match_onnxruntime(axis, largest, shape):
    """TopK (a YOLOv10 / DETR head's selection) as TOPK_V2, on any axis, largest or smallest; ties
    broken by the lower index as ONNX's."""
    import onnx
    from onnx import TensorProto, helper

    k = 3
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)
    graph = helper.make_graph([node], "topk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("i", TensorProto.INT64, None)],
                              [onnx.numpy_helper.from_array(np.array([k], np.int64), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.round(rand(*shape) * 4) / 4       # repeated values: the tie-break is checked too
    graph_out = assert_matches_ort(model, {"x": x}, atol=0)
    assert "TOPK_V2" in op_types(graph_out)


def test_top_k_larger_than_its_axis_is_refused_as_an_invalid_model():
    """K above the axis' size is an invalid ONNX model (onnxruntime refuses it when run): one line
    naming the node, not LiteRT's "cannot prepare" blamed on the converted model."""
    import onnx
    from onnx import TensorProto, helper

    from edgenet.errors import ModelError
    from test_onnx_to_tf_helpers import to_tflite

    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, name="top")
    graph = helper.make_graph([node], "topk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7])],
                              [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(np.array([9], np.int64), "k")])
    with pytest.raises(ModelError, match=r"TopK 'top': K=9 but axis 1 has 7 element"):
        to_tflite(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _int_pair(shape_a, shape_b, dtype, seed=0):
    """Dividends in [-60, 60] and non-zero divisors of both signs, some dividing exactly."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-60, 61, shape_a).astype(dtype)
    b = (rng.integers(1, 10, shape_b) * rng.choice([-1, 1], shape_b)).astype(dtype)
    return a, b


def _binary_model(op, onnx_type, shapes, attrs=None, opset=17):
    node = helper.make_node(op, ["a", "b"], ["y"], **(attrs or {}))
    return make_model([node], {"a": shapes[0], "b": shapes[1]}, ["y"], opset=opset, input_dtype=onnx_type)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op, attrs", [("Div", {}), ("Mod", {}), ("Mod", dict(fmod=1))])
@pytest.mark.parametrize("shapes", [((3, 7, 5), (3, 7, 5)), ((1, 5, 7, 9), (5, 1, 1))])
def test_integer_div_and_mod_match_onnxruntime_exactly(op, attrs, dtype, shapes):
    """ONNX Div truncates toward zero, Mod(fmod=0) takes the divisor's sign, Mod(fmod=1) the
    dividend's: from FLOOR_DIV / FLOOR_MOD with a sign correction, in int32."""
    from onnx import TensorProto

    onnx_type = TensorProto.INT32 if dtype == np.int32 else TensorProto.INT64
    a, b = _int_pair(*shapes, dtype)
    graph = assert_matches_ort(_binary_model(op, onnx_type, shapes, attrs), {"a": a, "b": b}, atol=0, rtol=0,
                               batch_size=1 if len(shapes[0]) == 4 else None)
    assert ("FLOOR_DIV" if op == "Div" else "FLOOR_MOD") in op_types(graph)


def test_integer_div_by_a_constant_broadcast():
    from onnx import TensorProto, numpy_helper

    node = helper.make_node("Div", ["a", "c"], ["y"])
    graph = helper.make_graph([node], "div", [helper.make_tensor_value_info("a", TensorProto.INT64, [3, 11])],
                                   [helper.make_tensor_value_info("y", TensorProto.INT64, [3, 11])],
                                   [numpy_helper.from_array(np.array([-4, 3, 7, -1, 2, 5, -6, 9, 11, -13, 8], np.int64), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    a, _ = _int_pair((3, 11), (3, 11), np.int64, seed=1)
    assert_matches_ort(model, {"a": a}, atol=0, rtol=0)


def test_float_fmod_matches_onnxruntime_and_fmod0_floats_are_refused_before_opset_28():
    from onnx import TensorProto

    from edgenet.errors import UnsupportedOpError

    rng = np.random.default_rng(2)
    a = rng.normal(0, 5, (3, 7, 5)).astype(np.float32)
    b = (rng.uniform(0.3, 3, (3, 7, 5)) * rng.choice([-1, 1], (3, 7, 5))).astype(np.float32)
    assert_matches_ort(_binary_model("Mod", TensorProto.FLOAT, ((3, 7, 5), (3, 7, 5)), dict(fmod=1)),
                       {"a": a, "b": b}, atol=0, rtol=0)
    with pytest.raises(UnsupportedOpError, match="fmod=0 on floats"):
        assert_matches_ort(_binary_model("Mod", TensorProto.FLOAT, ((3, 7, 5), (3, 7, 5))), {"a": a, "b": b})


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
@pytest.mark.parametrize("axis, exclusive, reverse", [(-1, 0, 0), (1, 1, 0), (2, 0, 1), (1, 1, 1), (0, 1, 1)])
def test_cumsum_matches_onnxruntime(dtype, axis, exclusive, reverse):
    """CumSum over any axis of an NCHW tensor (the channels too, laid out NHWC), exclusive and / or
    reversed, as CUMSUM."""
    from onnx import TensorProto, numpy_helper

    onnx_type = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT32, np.int64: TensorProto.INT64}[dtype]
    shape = [2, 5, 7, 3]
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    graph = helper.make_graph([node], "cumsum", [helper.make_tensor_value_info("x", onnx_type, shape)],
                                   [helper.make_tensor_value_info("y", onnx_type, shape)],
                                   [numpy_helper.from_array(np.array(axis, np.int64), "axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rand(*shape, scale=3) if dtype == np.float32 else np.random.default_rng(3).integers(-20, 21, shape).astype(dtype)
    out = assert_matches_ort(model, {"x": x}, atol=1e-5 if dtype == np.float32 else 0, rtol=1e-5)
    assert "CUMSUM" in op_types(out)


def test_yolov10_style_index_arithmetic_matches_onnxruntime_exactly():
    """A YOLOv10-style end-to-end head: TopK over the flattened class scores of every anchor, the
    anchor as index // classes and the class as index % classes, the anchors' boxes gathered by
    GatherElements: boxes, scores and class ids exactly as onnxruntime's."""
    from onnx import TensorProto, numpy_helper

    anchors, classes, k = 37, 5, 7
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Reshape", ["scores", "flat_shape"], ["flat"]),                 # [1, A * C]
        helper.make_node("TopK", ["flat", "k"], ["top_scores", "top_idx"], axis=1),      # [1, k]
        helper.make_node("Div", ["top_idx", "classes"], ["anchor"]),
        helper.make_node("Mod", ["top_idx", "classes"], ["label"]),
        helper.make_node("Unsqueeze", ["anchor", "last"], ["anchor3"]),                  # [1, k, 1]
        helper.make_node("Tile", ["anchor3", "reps"], ["anchor4"]),                      # [1, k, 4]
        helper.make_node("GatherElements", ["boxes", "anchor4"], ["top_boxes"], axis=1),  # [1, k, 4]
    ]
    graph = helper.make_graph(
        nodes, "yolov10_head",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, anchors, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, anchors, classes])],
        [helper.make_tensor_value_info("top_boxes", TensorProto.FLOAT, [1, k, 4]),
         helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, [1, k]),
         helper.make_tensor_value_info("label", TensorProto.INT64, [1, k])],
        [i64("flat_shape", [1, anchors * classes]), i64("k", [k]), i64("classes", classes),
         i64("last", [2]), i64("reps", [1, 1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(4)
    feeds = {"boxes": rng.uniform(0, 320, (1, anchors, 4)).astype(np.float32),
             "scores": rng.uniform(0, 1, (1, anchors, classes)).astype(np.float32)}
    out = assert_matches_ort(model, feeds, atol=0, rtol=0)
    assert {"TOPK_V2", "FLOOR_DIV", "FLOOR_MOD"} <= op_types(out)
