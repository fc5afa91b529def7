"""converters.cleanup: constant folding, Identity/Dropout removal, initializer inputs, dead code."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.converters.cleanup import CleanupStats, cleanup  # noqa: E402
from edgenet.converters.export import random_inputs, run_onnxruntime  # noqa: E402

F = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=8):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def assert_same_outputs(before, after, atol=1e-6):
    feeds = random_inputs(before, seed=3)
    expected = run_onnxruntime(before, feeds)
    actual = run_onnxruntime(after, feeds)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=0)


def ops(model):
    return [n.op_type for n in model.graph.node]


def shape_chain_model():
    """x.view(x.size(0), -1) the long way: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=const("", np.array(0, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Constant", [], ["minus1"], value_ints=[-1]),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [2, 3, 4, 4])],
        [helper.make_tensor_value_info("y", F, [None, None])],
        [const("axes0", np.array([0], np.int64))],
    )


def test_folds_shape_gather_unsqueeze_concat_into_constant_reshape():
    model = shape_chain_model()
    before = model.SerializeToString()
    cleaned, stats = cleanup(model)
    assert model.SerializeToString() == before  # input untouched
    assert ops(cleaned) == ["Reshape"]
    inits = {t.name: numpy_helper.to_array(t) for t in cleaned.graph.initializer}
    assert list(inits) == ["target"]  # dead intermediates (shape, batch, axes0 ...) are gone
    np.testing.assert_array_equal(inits["target"], [2, -1])
    assert stats == CleanupStats(constants_folded=6, nodes_removed=0, initializer_inputs_dropped=0)
    assert_same_outputs(model, cleaned)
    out = cleaned.graph.output[0].type.tensor_type.shape  # shapes inferred on the result
    assert [d.dim_value for d in out.dim] == [2, 48]


def test_folds_constant_of_shape_cast_and_arithmetic():
    nodes = [
        helper.make_node("ConstantOfShape", ["dims"], ["ones"], value=const("", np.array([1.5], np.float32))),
        helper.make_node("Cast", ["k"], ["kf"], to=F),
        helper.make_node("Mul", ["ones", "kf"], ["scale"]),
        helper.make_node("Reshape", ["scale", "new_shape"], ["scale4"]),
        helper.make_node("Mul", ["x", "scale4"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", F, [1, 3, 2, 2])],
        [const("dims", np.array([3], np.int64)), const("k", np.array([2, 3, 4], np.int32)),
         const("new_shape", np.array([3, 1, 1], np.int64))],
    )
    cleaned, stats = cleanup(model)
    assert ops(cleaned) == ["Mul"]
    assert stats.constants_folded == 4
    scale = numpy_helper.to_array(cleaned.graph.initializer[0])
    np.testing.assert_allclose(scale.ravel(), [3.0, 4.5, 6.0])
    assert scale.shape == (3, 1, 1) and scale.dtype == np.float32
    assert_same_outputs(model, cleaned)


def test_dynamic_shape_is_not_folded():
    model = shape_chain_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    cleaned, stats = cleanup(model)
    assert "Shape" in ops(cleaned) and "Reshape" in ops(cleaned)
    assert stats.constants_folded == 2  # just the two Constant nodes
    assert_same_outputs(model, cleaned)


def test_torch_view_of_size_chain_folds():
    torch = pytest.importorskip("torch")

    class Flatten(torch.nn.Module):
        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(x), 1)
            return x.view(x.size(0), -1) * 2.0

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Flatten(), (torch.zeros(2, 4, 6, 6),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], do_constant_folding=False)
    model = onnx.load_from_string(buffer.getvalue())
    assert {"Unsqueeze", "Concat"} <= set(ops(model))  # what the exporter leaves without folding
    cleaned, stats = cleanup(model)
    assert ops(cleaned) == ["Relu", "GlobalAveragePool", "Reshape", "Mul"]
    assert stats.constants_folded >= 3
    assert [o.name for o in cleaned.graph.output] == ["logits"]
    assert_same_outputs(model, cleaned)


def test_removes_identity_and_dropout_and_keeps_output_names():
    nodes = [
        helper.make_node("Identity", ["x"], ["x_id"]),
        helper.make_node("Relu", ["x_id"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d"]),  # inference dropout, no mask
        helper.make_node("Dropout", ["d", "ratio", "train"], ["d2"]),  # opset-12+ form, training off
        helper.make_node("Sigmoid", ["d2"], ["s"]),
        helper.make_node("Identity", ["s"], ["y"]),  # feeds the graph output: producer renamed
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 4])],
        [helper.make_tensor_value_info("y", F, [1, 4])],
        [const("ratio", np.array(0.5, np.float32)), const("train", np.array(False))],
    )
    cleaned, stats = cleanup(model)
    assert ops(cleaned) == ["Relu", "Sigmoid"]
    assert cleaned.graph.node[0].input[0] == "x"
    assert cleaned.graph.node[-1].output[0] == "y"
    assert [o.name for o in cleaned.graph.output] == ["y"]
    assert stats.nodes_removed == 4
    assert len(cleaned.graph.initializer) == 0  # ratio / train became dead
    assert_same_outputs(model, cleaned)


def test_keeps_identity_between_input_and_output_and_used_dropout_mask():
    nodes = [
        helper.make_node("Identity", ["x"], ["y"]),
        helper.make_node("Dropout", ["x"], ["d", "mask"]),
        helper.make_node("Cast", ["mask"], ["mask_f"], to=F),
        helper.make_node("Add", ["d", "mask_f"], ["z"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [3])],
        [helper.make_tensor_value_info("y", F, [3]), helper.make_tensor_value_info("z", F, [3])],
    )
    cleaned, stats = cleanup(model)
    assert ops(cleaned) == ["Identity", "Dropout", "Cast", "Add"]
    assert stats.nodes_removed == 0
    assert_same_outputs(model, cleaned)


def test_drops_initializers_listed_as_inputs_ir3():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", F, [1, 3, 5, 5]),
        helper.make_tensor_value_info("w", F, list(w.shape)),
        helper.make_tensor_value_info("b", F, list(b.shape)),
    ]
    model = make_model(nodes, inputs, [helper.make_tensor_value_info("y", F, [1, 4, 5, 5])],
                       [const("w", w), const("b", b)], opset=9, ir_version=3)
    cleaned, stats = cleanup(model)
    assert [i.name for i in cleaned.graph.input] == ["x"]
    assert {t.name for t in cleaned.graph.initializer} == {"w", "b"}
    assert stats.initializer_inputs_dropped == 2
    assert cleaned.ir_version >= 4
    onnx.checker.check_model(cleaned)
    assert_same_outputs(model, cleaned)


def test_removes_dead_nodes_and_unused_initializers():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Exp", ["x"], ["unused"]),
        helper.make_node("Add", ["unused", "bias"], ["unused2"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
        [const("bias", np.ones(2, np.float32)), const("orphan", np.zeros(5, np.float32))],
    )
    cleaned, stats = cleanup(model)
    assert ops(cleaned) == ["Relu"]
    assert len(cleaned.graph.initializer) == 0
    assert stats.nodes_removed == 2
    assert_same_outputs(model, cleaned)


def test_random_ops_are_not_folded():
    nodes = [
        helper.make_node("RandomUniform", [], ["noise"], shape=[2], seed=1.0),
        helper.make_node("Add", ["x", "noise"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    cleaned, stats = cleanup(model)
    assert ops(cleaned) == ["RandomUniform", "Add"]
    assert stats.constants_folded == 0


def test_maxpool_indices_nothing_reads_are_left_unnamed_and_the_pool_converts():
    """torch's max_pool2d(return_indices=True) with the indices thrown away: the Indices output is
    dropped (no TFLite builtin makes it), a read one stays (and the converter refuses it)."""
    from edgenet.converters.tflite_writer import native_tflite

    x = helper.make_tensor_value_info("x", F, [1, 2, 6, 6])
    nodes = [helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["p"], ["y"])]
    model = make_model(nodes, [x], [helper.make_tensor_value_info("y", F, [1, 2, 3, 3])])
    cleaned, _ = cleanup(model)
    assert list(cleaned.graph.node[0].output) == ["p", ""]
    assert_same_outputs(model, cleaned)
    native_tflite(cleaned)
    read = make_model(nodes, [x], [helper.make_tensor_value_info("y", F, [1, 2, 3, 3]),
                                   helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 2, 3, 3])])
    assert list(cleanup(read)[0].graph.node[0].output) == ["p", "idx"]
