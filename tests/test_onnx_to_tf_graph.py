"""Whole-graph behaviour: the unsupported-op error, dynamic batch, layout tracking (no transposes),
TFLite conversion, and a small torch CNN end to end."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import (assert_matches_ort, helper, make_model, onnx, op_types, rand, run_ort, single_op,
                                     tflite_bytes, tflite_run, to_tflite, transpose_inputs, with_dynamic_batch)

from edgenet.converters.onnx_to_tf import TensorInfo, supported_ops
from edgenet.errors import ConversionError, ModelError, UnsupportedOpError, UsageError

X = (1, 5, 7, 9)


def test_supported_ops_lists_the_core():
    ops = supported_ops()
    assert ops == sorted(ops)
    for op in ("Conv", "Clip", "Relu", "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "Add", "Mul",
               "BatchNormalization", "MaxPool", "AveragePool", "Concat", "Pad", "Softmax", "Transpose",
               "Identity", "Dropout", "HardSwish", "Resize", "Split", "Slice"):
        assert op in ops


def test_unsupported_ops_are_all_reported_in_one_line():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu_1"),
             helper.make_node("NonMaxSuppression", ["r"], ["n"], name="nms_1"),
             helper.make_node("Det", ["n"], ["t"], name="det_1"),
             helper.make_node("Conv", ["t", "w"], ["y"], name="conv3d", kernel_shape=[1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, list(X))],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [onnx.numpy_helper.from_array(np.array([1], np.int64), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError) as err:
        to_tflite(model)
    msg = str(err.value)
    assert "\n" not in msg
    assert "unsupported ONNX op 'NonMaxSuppression' (node 'nms_1')" in msg
    assert "unsupported ONNX op 'Det' (node 'det_1')" in msg
    assert "Conv (node 'conv3d'): 3-D window" in msg
    assert msg.endswith(f"; edgenet converts {len(supported_ops())} ONNX op types (`edgenet info --ops` lists them)")


def test_custom_domain_op_is_unsupported():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fc", domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, list(X))],
                              [helper.make_tensor_value_info("y", 1, None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    with pytest.raises(UnsupportedOpError, match=r"'com.microsoft.FusedConv' \(node 'fc'\)"):
        to_tflite(model)


def test_variant_found_while_building_is_one_line():
    model = single_op("Reshape", X, {}, extra_inputs=["x"])  # target shape computed at run time
    with pytest.raises(UnsupportedOpError, match=r"^unsupported ONNX Reshape \(node 'reshape_0'\): non-constant"):
        to_tflite(model)


def test_malformed_node_is_a_one_line_conversion_error():
    model = single_op("Concat", X)  # no axis attribute
    with pytest.raises(ConversionError, match=r"^converting ONNX Concat \(node 'concat_0'\) failed"):
        to_tflite(model)


def test_old_opset_and_dynamic_spatial_dims_are_model_errors():
    legacy = single_op("Add", X, dict(broadcast=1, axis=1), {"c": rand(5)}, ["c"], opset=6)
    with pytest.raises(UnsupportedOpError, match="opset-6 broadcasting along an axis attribute"):
        to_tflite(legacy)
    with pytest.raises(ModelError, match="dynamic dimension 2"):
        to_tflite(single_op("Relu", (1, 5, "h", 9)))


def _mobilenet_block_graph(dynamic_batch: bool = False):
    """conv s2 (torch-style pads) -> relu6 -> depthwise -> clip -> pointwise -> GAP -> Flatten -> Gemm."""
    batch = "N" if dynamic_batch else 1
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["c1", "zero", "six"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "wp"], ["c3"]),
        helper.make_node("BatchNormalization", ["c3", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("Clip", ["bn", "zero", "six"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = {"w1": rand(8, 3, 3, 3, scale=0.3), "b1": rand(8), "wd": rand(8, 1, 3, 3, scale=0.3), "bd": rand(8),
             "wp": rand(16, 8, 1, 1, scale=0.3), "s": rand(16) + 1, "b": rand(16), "m": rand(16),
             "v": np.abs(rand(16)) + 0.5, "wf": rand(10, 16), "bf": rand(10),
             "zero": np.array(0, np.float32), "six": np.array(6, np.float32)}
    return make_model(nodes, {"x": (batch, 3, 16, 16)}, ["y"], inits, opset=13)


def test_plain_cnn_has_no_transpose_in_tf_or_tflite():
    model = _mobilenet_block_graph()
    x = rand(1, 3, 16, 16)
    graph = assert_matches_ort(model, {"x": x})
    assert "TRANSPOSE" not in op_types(graph)
    assert graph.op_counts == {"Conv": 3, "Clip": 2, "Relu": 1, "BatchNormalization": 1, "GlobalAveragePool": 1,
                               "Flatten": 1, "Gemm": 1}
    assert graph.inputs == (TensorInfo("x", (1, 3, 16, 16), (1, 16, 16, 3), "float32", True),)
    assert graph.outputs == (TensorInfo("y", (1, 10), (1, 10), "float32", False),)
    outs, ops = tflite_run(tflite_bytes(graph), [x.transpose(0, 2, 3, 1).copy()])
    assert "TRANSPOSE" not in ops
    assert ops.count("CONV_2D") == 2 and ops.count("DEPTHWISE_CONV_2D") == 1
    assert "RELU6" not in ops and "RELU" not in ops  # fused into the convs
    np.testing.assert_allclose(outs[0], run_ort(model, {"x": x})[0], atol=1e-4)


def test_dynamic_batch_filled_with_3_runs_in_tflite():
    model = _mobilenet_block_graph(dynamic_batch=True)
    x = rand(3, 3, 16, 16)
    graph = assert_matches_ort(model, {"x": x}, batch_size=3)
    assert graph.inputs[0].tf_shape == (3, 16, 16, 3) and graph.inputs[0].onnx_shape == (3, 3, 16, 16)
    assert graph.outputs[0].tf_shape == (3, 10)
    expected = np.concatenate([run_ort(model, {"x": x[i:i + 1]})[0] for i in range(3)])
    outs, ops = tflite_run(tflite_bytes(graph), [x.transpose(0, 2, 3, 1).copy()])
    assert outs[0].shape == (3, 10) and "TRANSPOSE" not in ops
    np.testing.assert_allclose(outs[0], expected, atol=1e-4)


def test_static_dims_are_kept_and_batch_size_only_fills_a_dynamic_batch():
    """A static batch of 2 stays 2 (batch_size does not override it); a rank-2 input is no batch; a
    dynamic batch takes batch_size, and Shape then reports it, so Reshape(N, -1) is exact."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Shape", ["g"], ["sh"]),
             helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["g", "target"], ["flat"]),
             helper.make_node("MatMul", ["flat", "m"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    model = make_model(nodes, {"x": (2, 5, 7, 9), "m": (5, 4)}, ["y"], inits, opset=13)
    graph = to_tflite(model, batch_size=1)
    assert graph.inputs == (TensorInfo("x", (2, 5, 7, 9), (2, 7, 9, 5), "float32", True),
                            TensorInfo("m", (5, 4), (5, 4), "float32", False))
    assert graph.outputs[0].onnx_shape == (2, 4)
    feeds = {"x": rand(2, 5, 7, 9), "m": rand(5, 4)}
    assert_matches_ort(model, feeds, rtol=1e-4)
    dynamic = with_dynamic_batch(model)  # m becomes (N, 4) too: only dim 0 of each input is filled
    feeds = {"x": rand(5, 5, 7, 9), "m": rand(5, 4)}
    graph = assert_matches_ort(dynamic, feeds, batch_size=5, rtol=1e-4)
    assert [i.onnx_shape for i in graph.inputs] == [(5, 5, 7, 9), (5, 4)]


def test_dynamic_dim_without_a_size_is_a_model_error():
    model = with_dynamic_batch(single_op("Relu", X))
    with pytest.raises(ModelError, match=r"ONNX input 'x' has a dynamic dimension 0 \(N\)"):
        to_tflite(model)
    with pytest.raises(ModelError, match=r"ONNX input 'x' has a dynamic dimension 3 \(w\)"):
        to_tflite(single_op("Relu", (1, 5, 7, "w")), batch_size=1)


def test_inputs_of_rank_1_to_5_and_kept_layouts():
    """Several inputs of every rank; a rank-4 input named in keep_layout stays NCHW, the others NHWC;
    a kept rank-4 output stays in ONNX order."""
    shapes = {"a": (6,), "b": (3, 6), "c": (2, 3, 6), "d": (1, 2, 3, 6), "e": (1, 1, 2, 3, 6), "f": (1, 2, 3, 6)}
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Add", ["ab", "c"], ["abc"]),
             helper.make_node("Add", ["abc", "d"], ["abcd"]), helper.make_node("Add", ["abcd", "e"], ["y5"]),
             helper.make_node("Mul", ["abcd", "f"], ["y4"]), helper.make_node("Relu", ["f"], ["yk"])]
    model = make_model(nodes, shapes, ["y5", "y4", "yk", "abc"])
    graph = to_tflite(model, keep_layout=["f", "yk"])
    assert [(i.name, i.channels_last) for i in graph.inputs] == [
        ("a", False), ("b", False), ("c", False), ("d", True), ("e", False), ("f", False)]
    assert graph.inputs[3].tf_shape == (1, 3, 6, 2) and graph.inputs[5].tf_shape == (1, 2, 3, 6)
    assert [(o.name, o.channels_last) for o in graph.outputs] == [
        ("y5", False), ("y4", True), ("yk", False), ("abc", False)]
    feeds = {n: rand(*s) for n, s in shapes.items()}
    expected = run_ort(model, feeds)
    tf_inputs = [feeds[i.name].transpose(0, 2, 3, 1).copy() if i.channels_last else feeds[i.name]
                 for i in graph.inputs]
    outs, _ = tflite_run(tflite_bytes(graph), tf_inputs)
    for out, info, want in zip(outs, graph.outputs, expected):
        np.testing.assert_allclose(out.transpose(0, 3, 1, 2) if info.channels_last else out, want, atol=1e-6)
    with pytest.raises(UsageError, match="keep_layout names 'nope'"):
        to_tflite(model, keep_layout=["nope"])


def test_flatten_of_spatial_tensor_goes_back_to_nchw_order():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    model = make_model(nodes, {"x": X}, ["y"], {"w": rand(4, 5 * 7 * 9)})
    graph = assert_matches_ort(model, {"x": rand(*X)}, rtol=1e-4)
    assert "TRANSPOSE" in op_types(graph)  # genuinely needed: C-major flattening
    graph = assert_matches_ort(with_dynamic_batch(model), {"x": rand(2, 5, 7, 9)}, batch_size=2, rtol=1e-4)


def test_channel_shuffle_keeps_transpose_local():
    """ShuffleNet: Reshape(N,g,C/g,H,W) -> Transpose(0,2,1,3,4) -> Reshape(N,C,H,W) -> conv."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "s5"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s4"], ["b"]),
             helper.make_node("Conv", ["b", "w"], ["y"], pads=[1, 1, 1, 1])]
    inits = {"s5": np.array([1, 2, 3, 7, 9], np.int64), "s4": np.array([1, 6, 7, 9], np.int64),
             "w": rand(4, 6, 3, 3, scale=0.3)}
    model = make_model(nodes, {"x": (1, 6, 7, 9)}, ["y"], inits)
    graph = assert_matches_ort(model, {"x": rand(1, 6, 7, 9)}, atol=1e-4)
    assert transpose_inputs(graph) == [(1, 7, 9, 2, 3)]  # NHWC with the channels split


def test_transpose_chain_cancels():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Transpose", ["b"], ["y"], perm=[0, 3, 1, 2])]
    graph = assert_matches_ort(make_model(nodes, {"x": X}, ["y"]), {"x": rand(*X)})
    assert "TRANSPOSE" not in op_types(graph)


def test_nhwc_onnx_input_is_kept_as_is():
    """A model that takes NHWC and transposes it to NCHW first (tf2onnx style): no transpose at all."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": (1, 7, 9, 5)}, ["y"], {"w": rand(4, 5, 3, 3)})
    graph = assert_matches_ort(model, {"x": rand(1, 7, 9, 5)}, atol=1e-4)
    assert graph.inputs[0] == TensorInfo("x", (1, 7, 9, 5), (1, 7, 9, 5), "float32", False)
    assert "TRANSPOSE" not in op_types(graph)


def test_nhwc_onnx_output_is_kept_as_is():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])]
    model = make_model(nodes, {"x": X}, ["y"], {"w": rand(4, 5, 3, 3)})
    graph = assert_matches_ort(model, {"x": rand(*X)}, atol=1e-4)
    assert graph.outputs[0] == TensorInfo("y", (1, 7, 9, 4), (1, 7, 9, 4), "float32", False)
    assert "TRANSPOSE" not in op_types(graph)


def test_elementwise_prefers_the_channels_last_operand():
    """An ONNX-order operand (from a reshape) meets an NHWC one: the result stays NHWC."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]),  # (1, 5, 63) -> (1, 5, 7, 9): ONNX order
             helper.make_node("Relu", ["x4"], ["a"]),
             helper.make_node("Add", ["r", "a"], ["y"])]
    model = make_model(nodes, {"x": (1, 5, 63), "x4": X}, ["y"], {"s": np.array([1, 5, 7, 9], np.int64)})
    graph = assert_matches_ort(model, {"x": rand(1, 5, 63), "x4": rand(*X)})
    assert len(transpose_inputs(graph)) == 1  # only the reshaped operand moves to NHWC; the output needs none


def test_multiple_outputs_keep_their_order_in_tflite():
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Relu", ["x"], ["act"])]
    model = make_model(nodes, {"x": X}, ["flat", "act", "pooled"])
    x = rand(*X)
    graph = assert_matches_ort(model, {"x": x})
    assert [o.name for o in graph.outputs] == ["flat", "act", "pooled"]
    assert [o.channels_last for o in graph.outputs] == [False, True, True]
    expected = run_ort(model, {"x": x})
    outs, _ = tflite_run(tflite_bytes(graph), [x.transpose(0, 2, 3, 1).copy()])
    assert [o.shape for o in outs] == [(1, 5), (1, 7, 9, 5), (1, 1, 1, 5)]
    np.testing.assert_allclose(outs[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(outs[1], expected[1].transpose(0, 2, 3, 1), atol=1e-5)


def test_hard_swish_and_swish_convert_to_tflite():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("Mul", ["h", "s"], ["y"])]
    model = make_model(nodes, {"x": X}, ["y"], {"w": rand(4, 5, 3, 3, scale=0.3)}, opset=14)
    x = rand(*X)
    graph = assert_matches_ort(model, {"x": x}, atol=1e-5)
    outs, ops = tflite_run(tflite_bytes(graph), [x.transpose(0, 2, 3, 1).copy()])
    assert "HARD_SWISH" in ops and "TRANSPOSE" not in ops
    np.testing.assert_allclose(outs[0], run_ort(model, {"x": x})[0].transpose(0, 2, 3, 1), atol=1e-5)


@pytest.mark.parametrize("alpha, order, fused", [(1 / 6, ("c", "h"), True), (1 / 6, ("h", "c"), True),
                                                 (0.2, ("c", "h"), False)])
def test_x_times_hard_sigmoid_is_one_hard_swish_only_at_alpha_one_sixth(alpha, order, fused):
    """torch below opset 14 exports hardswish as x * HardSigmoid(x) (alpha 1/6, beta 0.5): one
    HARD_SWISH, either operand order; another alpha is another function and stays arithmetic."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["c"], ["h"], alpha=alpha, beta=0.5),
             helper.make_node("Mul", list(order), ["y"])]
    model = make_model(nodes, {"x": X}, ["y"], {"w": rand(4, 5, 3, 3, scale=0.3)}, opset=11)
    x = rand(*X) * 4
    graph = assert_matches_ort(model, {"x": x}, atol=1e-5)
    outs, ops = tflite_run(tflite_bytes(graph), [x.transpose(0, 2, 3, 1).copy()])
    assert (ops.count("HARD_SWISH") == 1 and "MUL" not in ops) == fused, ops
    np.testing.assert_allclose(outs[0], run_ort(model, {"x": x})[0].transpose(0, 2, 3, 1), atol=1e-4)


def _dyn(op, attrs=None, inits=None, extra=(), opset=17, x_shape=("N", 5, 7, 9), n_outputs=1):
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, ["x", *extra], outputs, **(attrs or {}))
    return make_model([node], {"x": x_shape}, outputs, inits, opset)


DYNAMIC_CASES = {
    "conv_asym": lambda: _dyn("Conv", dict(pads=[0, 2, 1, 0], strides=[2, 2]), {"w": rand(4, 5, 3, 3)}, ["w"]),
    "conv_grouped": lambda: _dyn("Conv", dict(group=5, pads=[1, 1, 1, 1]), {"w": rand(10, 1, 3, 3)}, ["w"]),
    "avgpool_explicit": lambda: _dyn("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "maxpool_ceil": lambda: _dyn("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "softmax_v11_axis1": lambda: _dyn("Softmax", dict(axis=1), opset=11),
    "pad_reflect": lambda: _dyn("Pad", dict(mode="reflect"), {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)},
                                ["p"]),
    "flatten": lambda: _dyn("Flatten"),
    "reshape_0_-1": lambda: _dyn("Reshape", {}, {"s": np.array([0, -1], np.int64)}, ["s"]),
    "resize": lambda: _dyn("Resize", dict(mode="linear"), {"s": np.array([1, 1, 2, 2], np.float32)}, ["", "s"]),
    "split": lambda: _dyn("Split", dict(axis=1), {"s": np.array([2, 3], np.int64)}, ["s"], n_outputs=2),
    "slice": lambda: _dyn("Slice", {}, {"a": np.array([1], np.int64), "b": np.array([-1], np.int64),
                                        "c": np.array([3], np.int64)}, ["a", "b", "c"]),
    "reduce_keepdims0": lambda: _dyn("ReduceMean", dict(axes=[2, 3], keepdims=0), opset=13),
    "transpose": lambda: _dyn("Transpose", dict(perm=[0, 3, 2, 1])),
    "gemm": lambda: _dyn("Gemm", dict(transB=1), {"w": rand(3, 6), "b": rand(3)}, ["w", "b"], x_shape=("N", 6)),
}


@pytest.mark.parametrize("case", sorted(DYNAMIC_CASES))
def test_dynamic_batch_per_op(case):
    model = DYNAMIC_CASES[case]()
    shape = [3 if isinstance(d, str) or i == 0 else d for i, d in
             enumerate(d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)]
    graph = assert_matches_ort(model, {"x": rand(*shape)}, batch_size=3)
    assert graph.inputs[0].tf_shape[0] == 3


def test_awkward_variants_convert_to_tflite_and_match():
    """Forms that are easy in TF but could trip the TFLite converter, chained in one model."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 2, 1, 2], dilations=[2, 1], strides=[2, 2]),
        helper.make_node("Conv", ["a", "w2"], ["b"], group=6, dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["b", "w3"], ["c"], group=3, pads=[0, 1, 1, 0]),
        helper.make_node("MaxPool", ["c"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["d"], ["e"], kernel_shape=[2, 2], pads=[1, 0, 0, 1]),
        helper.make_node("Resize", ["e", "", "scales"], ["f"], mode="nearest"),
        helper.make_node("LeakyRelu", ["f"], ["g"], alpha=0.2),
        helper.make_node("Softmax", ["g"], ["y"], axis=1),
    ]
    inits = {"w1": rand(6, 5, 3, 3, scale=0.3), "w2": rand(6, 1, 3, 3, scale=0.3), "w3": rand(9, 2, 3, 3, scale=0.3),
             "scales": np.array([1, 1, 2, 2], np.float32)}
    model = make_model(nodes, {"x": (1, 5, 15, 17)}, ["y"], inits, opset=13)
    x = rand(1, 5, 15, 17)
    graph = assert_matches_ort(model, {"x": x}, atol=1e-5)
    outs, ops = tflite_run(tflite_bytes(graph), [x.transpose(0, 2, 3, 1).copy()])
    assert "TRANSPOSE" not in ops
    expected = run_ort(model, {"x": x})[0].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(outs[0], expected, atol=1e-5)


def test_shared_cases_batch_and_float_conversion():
    """Case 28 keeps its static batch of 2; case 17's dynamic batch needs a size (here 3) and then
    matches onnxruntime; cases 07 and 15 convert to float TFLite and match."""
    from test_onnx_to_tf_helpers import assert_tflite_matches

    cases = "/work/shared/cases"
    graph, _ = assert_tflite_matches(onnx.load(f"{cases}/28_static_batch2.onnx"), {"input": rand(2, 3, 16, 16)},
                                     atol=1e-4)
    assert graph.inputs[0].tf_shape == (2, 16, 16, 3) and graph.outputs[0].tf_shape[0] == 2
    dynamic = onnx.load(f"{cases}/17_dynamic_batch.onnx")
    with pytest.raises(ModelError, match=r"ONNX input 'input' has a dynamic dimension 0 \(N\)"):
        to_tflite(dynamic)
    graph, _ = assert_tflite_matches(dynamic, {"input": rand(3, 3, 16, 16)}, atol=1e-4, batch_size=3)
    assert graph.outputs[0].tf_shape[0] == 3
    for case, shape in (("07_pad_reflect_edge", (1, 3, 16, 16)), ("15_detect_head_concat_int8", (1, 3, 64, 64))):
        _, ops = assert_tflite_matches(onnx.load(f"{cases}/{case}.onnx"), {"input": rand(*shape)}, atol=1e-4)
        assert "GATHER" not in ops
