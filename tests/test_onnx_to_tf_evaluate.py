"""evaluate_values: every ONNX value as the converted TF graph computes it, in ONNX layout."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import helper, make_model, onnx, ort, rand, with_dynamic_batch

from edgenet.converters.onnx_to_tf import evaluate_values
from edgenet.errors import UsageError


def _graph():
    """conv -> relu -> (rank-4 NHWC inside the converter) reshape/transpose/flatten -> gemm, with a
    constant-folded branch and an exact-GELU pattern."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("Div", ["relu", "sqrt2"], ["d"], name="div"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["a"], name="add"),
             helper.make_node("Mul", ["relu", "a"], ["m"], name="mul"),
             helper.make_node("Mul", ["m", "half"], ["gelu"], name="mul_half"),
             helper.make_node("Transpose", ["gelu"], ["t"], perm=[0, 2, 3, 1], name="to_nhwc"),
             helper.make_node("Shape", ["t"], ["shape"], name="shape"),
             helper.make_node("ReduceMean", ["t"], ["pooled"], axes=[1, 2], keepdims=0, name="pool"),
             helper.make_node("Gemm", ["pooled", "fc"], ["y"], transB=1, name="fc")]
    inits = {"w": rand(6, 3, 3, 3, scale=0.3), "sqrt2": np.array(np.sqrt(2), np.float32),
             "one": np.array(1, np.float32), "half": np.array(0.5, np.float32), "fc": rand(4, 6)}
    return make_model(nodes, {"x": (1, 3, 7, 9)}, ["y", "t"], inits, opset=13)


def _ort_values(model, feeds):
    """Every node output from onnxruntime (each made a graph output)."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for o in node.output:
            if o not in known:
                m.graph.output.append(helper.make_empty_tensor_value_info(o))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_every_value_in_onnx_layout_matches_onnxruntime():
    model = _graph()
    x = rand(1, 3, 7, 9)
    values = evaluate_values(model, {"x": x})
    expected = _ort_values(model, {"x": x})
    # inside the GELU pattern (converted as one op) only its output exists
    assert list(values) == ["conv", "relu", "gelu", "t", "shape", "pooled", "y"]
    for name, got in values.items():
        want = expected[name]
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    assert values["conv"].shape == (1, 6, 7, 9)  # NCHW, although the converter holds it NHWC


def test_dynamic_batch_takes_the_feeds_batch():
    model = with_dynamic_batch(_graph())
    x = rand(3, 3, 7, 9)
    values = evaluate_values(model, {"x": x})
    assert values["conv"].shape == (3, 6, 7, 9) and values["y"].shape == (3, 4)
    np.testing.assert_array_equal(values["shape"], [3, 7, 9, 6])
    np.testing.assert_allclose(values["y"], _ort_values(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_bad_feeds_are_usage_errors():
    model = _graph()
    with pytest.raises(UsageError, match="no array for input"):
        evaluate_values(model, {})
    with pytest.raises(UsageError, match=r"shape \(1, 3, 7, 8\)"):
        evaluate_values(model, {"x": rand(1, 3, 7, 8)})
