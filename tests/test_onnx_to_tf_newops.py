"""The handlers added for ONNX files from other exporters, each with its variants, end to end through
TFLite (TFLITE_BUILTINS only) against onnxruntime or ONNX's reference implementation, on seeded
inputs of odd sizes. Variants of one family share a model (one output each): one conversion each."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import (assert_grid_matches, assert_tflite_matches, grid_model, helper, make_model,
                                     onnx, rand, to_tflite)

from edgenet.errors import UnsupportedOpError

X = (1, 3, 5, 7)
I = np.int64


def _i(*v):
    return np.array(v, I)


def test_comparisons_logic_and_where():
    b7 = np.array([True, False, True, True, False, False, True])
    examples = {
        **{f"{op}_{k}": (op, {}, X, [c], "r") for op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")
           for k, c in enumerate([np.float32(0), np.round(rand(5, 7)), np.round(rand(3, 1, 1))])},
        "not": ("Not", {}, X, [], "b"), "and": ("And", {}, X, [b7], "b"), "or": ("Or", {}, X, [b7[None, :]], "b"),
        "xor": ("Xor", {}, X, [np.ones((3, 1, 1), bool)], "b"),
        "where_consts": ("Where", {}, X, [rand(5, 7), rand(3, 1, 1)], "b"),
        "where_scalar": ("Where", {}, X, [np.float32(2), rand(1, 3, 5, 7)], "b"),
    }
    model, feeds = grid_model(examples, 13)
    _, ops = assert_grid_matches(model, feeds)
    assert {"EQUAL", "GREATER", "LESS", "GREATER_EQUAL", "LESS_EQUAL", "LOGICAL_NOT", "LOGICAL_AND", "LOGICAL_OR",
            "NOT_EQUAL", "SELECT_V2"} <= set(ops)


def test_where_on_computed_operands_keeps_nhwc():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Greater", ["x", "zero"], ["m"]),
             helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Where", ["m", "r", "n"], ["y"])]
    model = make_model(nodes, {"x": X}, ["y"], {"zero": np.array(0.1, np.float32)})
    graph, ops = assert_tflite_matches(model, {"x": rand(*X)})
    assert "TRANSPOSE" not in ops and graph.outputs[0].channels_last


def test_expand_tile_depth_space():
    examples = {
        "expand_hw": ("Expand", {}, (1, 3, 1, 1), [_i(1, 3, 5, 7)], "f"),
        "expand_rank_up": ("Expand", {}, (5, 1), [_i(2, 1, 5, 7)], "f"),
        "expand_smaller_shape": ("Expand", {}, X, [_i(5, 1)], "f"),
        "expand_noop": ("Expand", {}, X, [_i(1)], "f"),
        "tile": ("Tile", {}, X, [_i(2, 1, 3, 2)], "f"), "tile_rank2": ("Tile", {}, (3, 5), [_i(2, 3)], "f"),
        "d2s_dcr": ("DepthToSpace", dict(blocksize=2), (1, 12, 3, 5), [], "f"),
        "d2s_crd": ("DepthToSpace", dict(blocksize=2, mode="CRD"), (1, 12, 3, 5), [], "f"),
        "d2s_crd_3": ("DepthToSpace", dict(blocksize=3, mode="CRD"), (2, 18, 2, 3), [], "f"),
        "s2d": ("SpaceToDepth", dict(blocksize=2), (1, 3, 6, 4), [], "f"),
        "s2d_3": ("SpaceToDepth", dict(blocksize=3), (2, 2, 3, 9), [], "f"),
        "gather_elements": ("GatherElements", dict(axis=3), X, [np.random.default_rng(1).integers(-7, 7, (1, 3, 5, 4))],
                            "f"),
        "gather_elements_1": ("GatherElements", dict(axis=1), X,
                              [np.random.default_rng(2).integers(0, 3, (1, 2, 5, 7))], "f"),
    }
    model, feeds = grid_model(examples, 13)
    _, ops = assert_grid_matches(model, feeds)
    assert {"BROADCAST_TO", "TILE", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "GATHER_ND"} <= set(ops)


def test_scatter_nd_every_reduction_vs_spec():
    """Constant indices, data and updates from the graph (updates constant or not); repeated indices
    are combined in order, as the reference's loop does."""
    idx_slices = _i(0, 2, 0, 0, 0, 2).reshape(3, 2)  # (0, 2) twice: (5, 7) slices
    idx_elements = _i(0, 1, 4, 6, 0, 0, 3, 1, 0, 1, 4, 6).reshape(3, 4)
    examples = {
        "none": ("ScatterND", {}, X, [_i(0, 1, 0, 2).reshape(2, 2), rand(2, 5, 7)], "f"),
        "none_channels": ("ScatterND", {}, X, [_i(0, 1, 0, 0).reshape(2, 1, 2), rand(2, 1, 5, 7)], "f"),
        **{r: ("ScatterND", dict(reduction=r), X, [idx_slices, rand(3, 5, 7)], "f")
           for r in ("add", "mul", "max", "min")},
        "max_elements": ("ScatterND", dict(reduction="max"), X, [idx_elements, rand(3)], "f"),
    }
    model, feeds = grid_model(examples, 18)
    assert_grid_matches(model, feeds, reference="spec")  # constant updates: TFLite folds the scatter
    # updates computed by the graph
    nodes = [helper.make_node("Relu", ["u"], ["r"]), helper.make_node("ScatterND", ["x", "i", "r"], ["y"])]
    model = make_model(nodes, {"x": X, "u": (2, 7)}, ["y"], {"i": _i(0, 1, 4, 0, 2, 0).reshape(2, 3)}, opset=16)
    _, ops = assert_tflite_matches(model, {"x": rand(*X), "u": rand(2, 7)}, reference="spec")
    assert "SCATTER_ND" in ops


def test_scatter_nd_repeated_indices_without_reduction_are_refused():
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="scatter")]
    model = make_model(nodes, {"x": X}, ["y"], {"i": _i(0, 1, 0, 1).reshape(2, 2), "u": rand(2, 5, 7)}, opset=16)
    with pytest.raises(UnsupportedOpError, match=r"ScatterND \(node 'scatter'\): repeated indices"):
        to_tflite(model)


def test_space_to_depth_crd_vs_spec():
    examples = {"s2d_crd": ("SpaceToDepth", dict(blocksize=2, mode="CRD"), (1, 3, 6, 4), [], "f"),
                "d2s_crd": ("DepthToSpace", dict(blocksize=2, mode="CRD"), (1, 8, 3, 5), [], "f")}
    model, feeds = grid_model(examples, 25)
    assert_grid_matches(model, feeds, reference="spec")


def test_case_02_pixel_shuffle():
    model = onnx.load("/work/shared/cases/02_pixel_shuffle_depth_to_space.onnx")
    assert_tflite_matches(model, {"input": rand(1, 3, 16, 16)})


def test_case_23_se_expand_as():
    model = onnx.load("/work/shared/cases/23_se_expand_as.onnx")
    assert_tflite_matches(model, {"input": rand(1, 3, 16, 16)})


REDUCTIONS = ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum", "ReduceMean"]


@pytest.mark.parametrize("opset", [13, 18])
def test_reductions_both_axes_forms(opset):
    """Axes as an attribute (before 18) or an input (18 on); keepdims; negative and all axes;
    noop_with_empty_axes (18)."""
    examples = {}
    for op in REDUCTIONS:
        kind = "p" if op == "ReduceLogSum" else "f"
        for k, (axes, keepdims) in enumerate([([1], 1), ([2, 3], 0), ([-1], 1), (None, 0), ([0, 2], 1)]):
            if opset < 18:
                attrs = dict(keepdims=keepdims) if axes is None else dict(axes=axes, keepdims=keepdims)
                examples[f"{op}_{k}"] = (op, attrs, X, [], kind)
            else:
                examples[f"{op}_{k}"] = (op, dict(keepdims=keepdims), X, [] if axes is None else [_i(*axes)], kind)
        if opset >= 18:
            examples[f"{op}_noop"] = (op, dict(noop_with_empty_axes=1), X, [np.zeros(0, I)], kind)
    model, feeds = grid_model(examples, opset)
    assert_grid_matches(model, feeds, reference="spec", rtol=1e-5, atol=1e-5)


def test_reduce_log_sum_exp_does_not_overflow():
    model = make_model([helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[1])], {"x": X}, ["y"], opset=13)
    x = rand(*X) * 50 + 60  # exp(x) overflows float32
    graph, _ = assert_tflite_matches(model, {"x": x}, reference="spec", rtol=1e-5)
    assert graph.outputs[0].channels_last


def test_lp_normalization():
    """Against onnxruntime and ONNX's own test data, which take |x| for p = 1 (ONNX's reference
    implementation sums x ** p, so its L1 norm of negative values is wrong)."""
    examples = {
        "l2_axis1": ("LpNormalization", dict(axis=1), X, [], "f"),
        "l1_last": ("LpNormalization", dict(p=1), X, [], "f"),
        "l2_rank2": ("LpNormalization", dict(axis=0), (3, 5), [], "f"),
        "l1_rank3": ("LpNormalization", dict(axis=1, p=1), (2, 3, 5), [], "f"),
    }
    model, feeds = grid_model(examples, 13)
    assert_grid_matches(model, feeds)
    # a zero vector stays zero (as in the reference), no NaN
    model = make_model([helper.make_node("LpNormalization", ["x"], ["y"], axis=1)], {"x": (2, 3)}, ["y"])
    assert_tflite_matches(model, {"x": np.array([[0, 0, 0], [3, 4, 0]], np.float32)}, reference="spec")


def test_new_activations():
    examples = {
        "selu": ("Selu", {}, X, [], "f"), "selu_args": ("Selu", dict(alpha=1.2, gamma=0.9), X, [], "f"),
        "celu": ("Celu", {}, X, [], "f"), "celu_alpha": ("Celu", dict(alpha=2.5), X, [], "f"),
        "thresholded": ("ThresholdedRelu", {}, X, [], "f"),
        "thresholded_a": ("ThresholdedRelu", dict(alpha=0.2), X, [], "f"),
        "softsign": ("Softsign", {}, X, [], "f"), "sign": ("Sign", {}, X, [], "r"),
    }
    model, feeds = grid_model(examples, 13)
    assert_grid_matches(model, feeds, reference="spec")


def test_dilated_and_nd_pools():
    examples = {
        "max_dilated": ("MaxPool", dict(kernel_shape=[3, 2], dilations=[2, 3], strides=[1, 2], pads=[1, 0, 2, 1]),
                        (1, 3, 9, 11), [], "f"),
        "avg_dilated": ("AveragePool", dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]), (1, 3, 9, 11),
                        [], "f"),
        "avg_dilated_include": ("AveragePool", dict(kernel_shape=[3, 3], dilations=[2, 1], pads=[2, 1, 1, 1],
                                                    count_include_pad=1, ceil_mode=1, strides=[2, 2]), (1, 3, 9, 11),
                                [], "f"),
        "max_1d": ("MaxPool", dict(kernel_shape=[3], strides=[2], pads=[1, 1]), (2, 3, 11), [], "f"),
        "avg_1d_dilated": ("AveragePool", dict(kernel_shape=[3], dilations=[2]), (2, 3, 11), [], "f"),
        "max_3d": ("MaxPool", dict(kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[0, 1, 1, 1, 1, 0]),
                   (1, 2, 5, 7, 6), [], "f"),
        "avg_3d_include": ("AveragePool", dict(kernel_shape=[3, 2, 2], pads=[1, 1, 0, 1, 0, 1], count_include_pad=1),
                           (1, 2, 5, 7, 6), [], "f"),
        "avg_3d_same": ("AveragePool", dict(kernel_shape=[3, 3, 3], auto_pad="SAME_UPPER", strides=[2, 2, 2]),
                        (1, 2, 5, 7, 6), [], "f"),
    }
    model, feeds = grid_model(examples, 19)
    assert_grid_matches(model, feeds, reference="spec", atol=1e-5)
    assert_grid_matches(model, feeds, reference="ort", atol=1e-5)


def test_shape_range_constant_of_shape_fold_to_constants():
    """Shape of a static tensor is a constant, so Range/ConstantOfShape/Size computed from it fold."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Shape", ["r"], ["sh"], start=1, end=2),
             helper.make_node("Size", ["r"], ["n"]),
             helper.make_node("Squeeze", ["sh"], ["c"]),
             helper.make_node("Cast", ["c"], ["cf"], to=1),
             helper.make_node("Range", ["zero", "cf", "one"], ["ramp"]),
             helper.make_node("ConstantOfShape", ["sh"], ["ones"], value=helper.make_tensor("v", 1, [1], [2.0])),
             helper.make_node("Mul", ["ramp", "ones"], ["w"]),
             helper.make_node("Unsqueeze", ["w", "axes"], ["w3"]),
             helper.make_node("Cast", ["n"], ["nf"], to=1),
             helper.make_node("Mul", ["r", "w3"], ["m"]),
             helper.make_node("Div", ["m", "nf"], ["y"])]
    inits = {"zero": np.array(0, np.float32), "one": np.array(1, np.float32), "axes": _i(1, 2)}
    model = make_model(nodes, {"x": X}, ["y"], inits, opset=15)
    graph, ops = assert_tflite_matches(model, {"x": rand(*X)})
    assert graph.op_counts["Range"] == 1 and set(ops) <= {"RELU", "MUL", "DELEGATE"}


def test_erf_alone_is_refused_before_tensorflow():
    model = make_model([helper.make_node("Erf", ["x"], ["y"], name="lonely_erf")], {"x": X}, ["y"])
    with pytest.raises(UnsupportedOpError, match=r"Erf \(node 'lonely_erf'\): TFLite has no builtin Erf"):
        to_tflite(model)


@pytest.mark.parametrize("order", ["x_w_then_half", "half_first", "w_half_then_x", "mul_by_inverse_sqrt2"])
def test_exact_gelu_pattern_becomes_tflite_gelu(order):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    if order == "mul_by_inverse_sqrt2":
        nodes.append(helper.make_node("Mul", ["c", "inv_sqrt2"], ["d"]))
    else:
        nodes.append(helper.make_node("Div", ["c", "sqrt2"], ["d"]))
    nodes += [helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["one", "e"], ["a"])]
    if order == "half_first":
        nodes += [helper.make_node("Mul", ["c", "half"], ["h"]), helper.make_node("Mul", ["h", "a"], ["y"])]
    elif order == "w_half_then_x":
        nodes += [helper.make_node("Mul", ["a", "half"], ["h"]), helper.make_node("Mul", ["c", "h"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["c", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    inits = {"w": rand(4, 3, 3, 3, scale=0.5), "sqrt2": np.array(np.sqrt(2), np.float32),
             "inv_sqrt2": np.array(1 / np.sqrt(2), np.float32), "one": np.array(1, np.float32),
             "half": np.array(0.5, np.float32)}
    model = make_model(nodes, {"x": X}, ["y"], inits, opset=17)
    graph, ops = assert_tflite_matches(model, {"x": rand(*X)}, atol=2e-5)
    assert [op for op in ops if op != "DELEGATE"] == ["CONV_2D", "GELU"]
    assert graph.op_counts.get("Gelu") == 1 and "Erf" not in graph.op_counts


def test_gelu_pattern_with_a_shared_intermediate_is_not_fused():
    """The Erf output is also a graph output: no fusion, so the lone Erf is refused."""
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    inits = {"sqrt2": np.array(np.sqrt(2), np.float32), "one": np.array(1, np.float32),
             "half": np.array(0.5, np.float32)}
    model = make_model(nodes, {"x": X}, ["y", "e"], inits)
    with pytest.raises(UnsupportedOpError, match=r"Erf \(node 'erf'\)"):
        to_tflite(model)


def test_case_12_gelu_erf():
    model = onnx.load("/work/shared/cases/12_gelu_erf.onnx")
    graph, ops = assert_tflite_matches(model, {"input": rand(1, 3, 32, 32)}, atol=2e-5)
    assert ops.count("GELU") == 2


def test_onnx_gelu_opset20_both_approximations():
    examples = {"gelu": ("Gelu", {}, X, [], "f"), "gelu_tanh": ("Gelu", dict(approximate="tanh"), X, [], "f")}
    model, feeds = grid_model(examples, 20)
    _, ops = assert_grid_matches(model, feeds, reference="spec", atol=2e-5)
    assert ops.count("GELU") == 2


def test_case_18_convnextv2_grn_layernorm():
    """ReduceL2 used to become TF's EuclideanNorm, which TFLite's builtins lack: now sqrt(sum(x * x))."""
    model = onnx.load("/work/shared/cases/18_convnextv2_grn_layernorm.onnx")
    _, ops = assert_tflite_matches(model, {"input": rand(1, 3, 32, 32)}, atol=2e-5)
    assert "SUM" in ops and "SQRT" in ops
