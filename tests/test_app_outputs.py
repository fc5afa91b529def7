"""A classifier for apps ends in probabilities: Softmax appended to logits (converters/app_outputs.py)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.converters.app_outputs import append_softmax  # noqa: E402


def _model(last_op="Gemm", out_shape=(1, 5)):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(7, 5)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"])]
    nodes.append(helper.make_node(last_op, ["h"], ["y"]) if last_op != "Gemm"
                 else helper.make_node("Relu", ["h"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], [w])
    if out_shape != (1, 5):
        graph.node.append(helper.make_node("Reshape", ["y", "s"], ["z"]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def test_logits_get_a_softmax_under_the_same_output_name():
    model = _model()
    x = np.random.default_rng(1).normal(size=(1, 7)).astype(np.float32)
    new, appended = append_softmax(model)
    assert appended is not None and appended.output == "y" and appended.classes == 5
    assert [o.name for o in new.graph.output] == ["y"] and new.graph.node[-1].op_type == "Softmax"
    logits = _run(model, x)
    expect = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(_run(new, x), expect, rtol=1e-5, atol=1e-7)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Relu"]      # the input model is not modified


@pytest.mark.parametrize("op", ["Softmax", "Sigmoid"])
def test_scores_already_are_left_alone(op):
    model = _model(op)
    assert append_softmax(model) == (model, None)


def test_an_output_that_is_not_one_score_per_class_is_left_alone():
    model = _model(out_shape=(1, 5, 1, 2))
    assert append_softmax(model)[1] is None
