"""The divergence finder on natively written float models: the .tflite itself, run in LiteRT with every
tensor kept, against onnxruntime's intermediate values, by ONNX value name (no TensorFlow)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.converters.divergence import first_divergence  # noqa: E402
from edgenet.converters.model_inputs import ModelInput  # noqa: E402
from edgenet.converters.tflite_writer.evaluate import kept_values  # noqa: E402
from edgenet.converters.tflite_writer.side import NativeSide  # noqa: E402


def _net(path=None):
    """image [1,3,13,11] -> Conv -> Relu -> Conv -> x*Sigmoid(x) -> Concat(with the Relu, channels) ->
    Transpose(NCHW -> NHWC) -> Reshape [1, H*W, C] -> ReduceMean(axis 1) -> Gemm -> [1, 5]: NCHW
    values, a transposed one and rank-3 / rank-2 ones, a bias and a ReLU the writer fuses."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["s2"], "sigmoid2"),
        helper.make_node("Mul", ["c2", "s2"], ["m2"], "silu2"),
        helper.make_node("Concat", ["m2", "r1"], ["cat"], "concat", axis=1),
        helper.make_node("Transpose", ["cat"], ["nhwc"], "to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "rows"], ["seq"], "rows"),
        helper.make_node("ReduceMean", ["seq"], ["pooled"], "pool", axes=[1], keepdims=0),
        helper.make_node("Gemm", ["pooled", "wf", "bf"], ["y"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 13, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [init("w1", 6, 3, 3, 3), init("b1", 6), init("w2", 6, 6, 3, 3), init("b2", 6), init("wf", 5, 12),
         init("bf", 5), numpy_helper.from_array(np.array([1, 13 * 11, 12], np.int64), "rows")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


INPUTS = (ModelInput("x", (1, 3, 13, 11), True),)


def _image():
    return np.random.default_rng(1).uniform(0, 1, (1, 13, 11, 3)).astype(np.float32)   # TFLite layout


def _side(model):
    side = NativeSide()
    side.onnx_to_tflite(model)
    return side


def test_kept_values_are_the_onnx_values_in_onnx_layout():
    model = _net()
    side = _side(model)
    graph = side._graph
    # the bias ADD and the RELU fused into the first CONV_2D: its output is the Relu's value, c1 has no tensor
    assert "r1" in graph.values and "c1" not in graph.values
    assert graph.values["r1"][1] == (0, 2, 3, 1) and graph.values["nhwc"][1] == (0, 1, 2, 3)
    got = kept_values(graph, {"x": np.transpose(_image(), (0, 3, 1, 2))})
    assert got["r1"].shape == (1, 6, 13, 11) and got["nhwc"].shape == (1, 13, 11, 12)
    assert got["seq"].shape == (1, 143, 12)
    # a healthy model: every kept value agrees, so no node is named
    found = first_divergence(model, [_image()], INPUTS, 1e-4, side.evaluate_values)
    assert found.node is None and "reference kernels" in found.reason


def test_a_planted_fault_in_a_native_lowering_is_named(monkeypatch):
    """The writer's LOGISTIC lowering made wrong (+1): the Sigmoid node is named, not its readers."""
    from edgenet.converters.tflite_writer.backend import Backend

    original = Backend.sigmoid
    monkeypatch.setattr(Backend, "sigmoid",
                        lambda self, t, name=None, **kw: self._binary("add", original(self, t), 1.0))
    model = _net()
    found = first_divergence(model, [_image()], INPUTS, 1e-3, _side(model).evaluate_values)
    assert (found.node, found.op, found.value) == ("sigmoid2", "Sigmoid", "s2")
    assert found.rel_err > 0.5 and not found.onnxruntime_deviates and found.unseen == ()


def test_a_fault_in_a_value_fused_away_is_named_with_the_node_that_holds_it(monkeypatch):
    """The CONV_2D lowering scaled by 1.5: the Conv's own value is fused (with its bias and the Relu) into
    one op whose tensor is the Relu's, so the Relu is the first node seen to differ, and the Conv is
    named as fused into it."""
    from edgenet.converters.tflite_writer.backend import Backend

    original = Backend.conv2d
    monkeypatch.setattr(Backend, "conv2d",
                        lambda self, *a, **kw: self._binary("multiply", original(self, *a, **kw), 1.5))
    model = _net()
    found = first_divergence(model, [_image()], INPUTS, 1e-3, _side(model).evaluate_values)
    assert (found.node, found.op, found.unseen) == ("relu1", "Relu", ("conv1",))


_CONVERT_WITH_FAULT = """
import json, sys
FAULT = sys.argv[3]
if FAULT == "lowering":     # the native writer's LOGISTIC lowering adds 1
    from edgenet.converters.tflite_writer.backend import Backend
    original = Backend.sigmoid
    Backend.sigmoid = lambda self, t, name=None, **kw: self._binary("add", original(self, t), 1.0)
else:                       # the Relu handler scales its result by 1.5 (test_convert_user_onnx's fault)
    from edgenet.converters.onnx_to_tf import registry
    handler = registry._REGISTRY["Relu"]
    def wrong(ctx):
        (value,) = handler.convert(ctx)
        return [type(value)(value.tensor * 1.5, value.perm)]
    registry._REGISTRY["Relu"] = registry.OpHandler("Relu", wrong, handler.check)
from edgenet.cli import main
code = main(["convert", sys.argv[1], "--float", "--eval-samples", "2", "--out", sys.argv[2]])
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.parametrize("fault, node, fused", [("lowering", "'sigmoid2' (Sigmoid", None),
                                               ("handler", "'relu1' (Relu", "'conv1'")])
def test_the_cli_names_the_node_without_importing_tensorflow(tmp_path, fault, node, fused):
    path = tmp_path / "net.onnx"
    _net(path)
    proc = subprocess.run([sys.executable, "-c", _CONVERT_WITH_FAULT, str(path), str(tmp_path / "o"), fault],
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 1, "tensorflow": False}, proc.stderr[-2000:]
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgenet:")][-1]
    assert f"first diverging ONNX node: {node}" in line and "--allow-mismatch" in line
    # the Relu's fault shows in the CONV_2D it is fused into (with its Conv): both are named
    assert (f"or one fused into it whose output the model does not keep: {fused};" in line) == (fused is not None)


def test_where_onnxruntime_departs_from_the_spec_the_native_model_is_judged_against_the_spec(tmp_path):
    """Resize (linear, align_corners, downsampling): onnxruntime departs from ONNX's reference
    implementation; the node is found on the native model's kept tensors and the float verdict
    passes against the spec."""
    import edgenet

    scales = numpy_helper.from_array(np.array([1, 1, 0.6, 0.6], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], "resize", mode="linear",
                            coordinate_transformation_mode="align_corners")
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])], [scales])
    path = tmp_path / "resize.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    r = edgenet.convert(str(path), precisions=["float32"], out=tmp_path / "o", eval_samples=2, layer_report=False)
    verdict = r.report.validation.float_verdict
    assert verdict["passed"] and verdict["reference"] == "onnx.reference"
    found = verdict["first_divergence"]
    assert found["node"] == "resize" and found["onnxruntime_deviates"] and found["rel_err"] > 0.01
    assert any("onnxruntime deviates from the ONNX spec at node 'resize'" in n for n in r.report.notes)
