"""converters.bn_fold: BatchNormalization folded into Conv / Gemm / MatMul, or turned into Mul + Add."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.converters.bn_fold import BNFoldStats, fold_batchnorm  # noqa: E402
from edgenet.converters.cleanup import cleanup  # noqa: E402
from edgenet.converters.export import random_inputs, run_onnxruntime  # noqa: E402
from edgenet.errors import ModelError  # noqa: E402

F = TensorProto.FLOAT
RNG = np.random.default_rng(42)


def rand(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


def bn_inits(prefix, c, shape=None):
    """Non-trivial statistics: gamma, beta, mean, var (var well away from 0 and 1)."""
    shape = shape or (c,)
    return [
        numpy_helper.from_array(rand(*shape, low=0.5, high=2.0), f"{prefix}_gamma"),
        numpy_helper.from_array(rand(*shape), f"{prefix}_beta"),
        numpy_helper.from_array(rand(*shape, low=-2, high=2), f"{prefix}_mean"),
        numpy_helper.from_array(rand(*shape, low=0.1, high=4.0), f"{prefix}_var"),
    ]


def bn_node(x, y, prefix, **attrs):
    names = [f"{prefix}_{k}" for k in ("gamma", "beta", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [y], epsilon=1e-3, **attrs)


def make_model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model)
    return model


def vi(name, shape):
    return helper.make_tensor_value_info(name, F, shape)


def check_fold(model, folded, to_mul_add):
    """Fold, then check counts, that no BN is left, and outputs against onnxruntime (before vs after)."""
    before = model.SerializeToString()
    result, stats = fold_batchnorm(model)
    assert model.SerializeToString() == before  # input not mutated
    assert "BatchNormalization" not in {n.op_type for n in result.graph.node}
    assert (stats.folded, stats.to_mul_add) == (folded, to_mul_add)
    assert [o.name for o in result.graph.output] == [o.name for o in model.graph.output]
    feeds = random_inputs(model, seed=7)
    expected = run_onnxruntime(model, feeds)
    actual = run_onnxruntime(result, feeds)
    for a, e in zip(actual, expected):
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(a, e, atol=1e-5 * scale, rtol=0)
    assert stats.max_abs_diff is not None and stats.max_abs_diff < 1e-5 * max(
        1.0, max(float(np.abs(e).max()) for e in expected))
    return result


def conv_bn_model(bias: bool, groups: int = 1, opset: int = 17, c_in: int = 4, c_out: int = 4):
    w = numpy_helper.from_array(rand(c_out, c_in // groups, 3, 3), "w")
    inits = [w] + bn_inits("bn", c_out)
    conv_inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rand(c_out), "b"))
        conv_inputs.append("b")
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], group=groups),
        bn_node("c", "bn_out", "bn"),
        helper.make_node("Relu", ["bn_out"], ["y"]),
    ]
    return make_model(nodes, [vi("x", [2, c_in, 6, 6])], [vi("y", [2, c_out, 6, 6])], inits, opset)


@pytest.mark.parametrize("bias", [False, True])
def test_conv_bn_folds(bias):
    result = check_fold(conv_bn_model(bias), folded=1, to_mul_add=0)
    conv = result.graph.node[0]
    assert conv.op_type == "Conv" and len(conv.input) == 3  # a bias exists after folding
    assert conv.output[0] == "bn_out"
    assert len(result.graph.initializer) == 2  # old weight / bias / BN stats dropped


def test_depthwise_conv_bn_folds():
    check_fold(conv_bn_model(bias=False, groups=6, c_in=6, c_out=6), folded=1, to_mul_add=0)


@pytest.mark.parametrize("opset", [9, 14, 15, 21])
def test_conv_bn_folds_across_opsets(opset):
    check_fold(conv_bn_model(bias=True, opset=opset), folded=1, to_mul_add=0)


def test_conv_bn_with_spatial_attribute_opset7():
    model = conv_bn_model(bias=True, opset=7)
    model.graph.node[1].attribute.append(helper.make_attribute("spatial", 1))
    check_fold(model, folded=1, to_mul_add=0)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [False, True])
def test_gemm_bn_folds(trans_b, with_c):
    k, n = 5, 3
    w = rand(n, k) if trans_b else rand(k, n)
    inits = [numpy_helper.from_array(w, "w")] + bn_inits("bn", n)
    inputs = ["x", "w"]
    if with_c:
        inits.append(numpy_helper.from_array(rand(n), "c"))
        inputs.append("c")
    nodes = [
        helper.make_node("Gemm", inputs, ["g"], transB=trans_b, alpha=0.7, beta=1.3),
        bn_node("g", "y", "bn"),
    ]
    model = make_model(nodes, [vi("x", [4, k])], [vi("y", [4, n])], inits)
    result = check_fold(model, folded=1, to_mul_add=0)
    assert [n.op_type for n in result.graph.node] == ["Gemm"]


@pytest.mark.parametrize("with_add", [False, True])
def test_matmul_bn_folds(with_add):
    k, n = 6, 4
    inits = [numpy_helper.from_array(rand(k, n), "w")] + bn_inits("bn", n)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"])]
    if with_add:
        inits.append(numpy_helper.from_array(rand(n), "bias"))
        nodes.append(helper.make_node("Add", ["bias", "m"], ["a"]))  # bias first: either order works
    nodes.append(bn_node("a" if with_add else "m", "y", "bn"))
    model = make_model(nodes, [vi("x", [3, k])], [vi("y", [3, n])], inits)
    result = check_fold(model, folded=1, to_mul_add=0)
    assert [n.op_type for n in result.graph.node] == ["MatMul", "Add"]


def test_lone_bn_after_input_becomes_mul_add():
    model = make_model([bn_node("x", "y", "bn")], [vi("x", [2, 5, 3, 3])], [vi("y", [2, 5, 3, 3])], bn_inits("bn", 5))
    result = check_fold(model, folded=0, to_mul_add=1)
    assert [n.op_type for n in result.graph.node] == ["Mul", "Add"]
    shapes = {tuple(t.dims) for t in result.graph.initializer}
    assert shapes == {(5, 1, 1)}


def test_bn_after_add_and_on_2d_becomes_mul_add():
    nodes = [
        helper.make_node("Add", ["x", "x2"], ["s"]),
        bn_node("s", "t", "bn"),
        helper.make_node("ReduceMean", ["t"], ["p"], axes=[2, 3], keepdims=0),
        bn_node("p", "y", "bn2"),  # 2-D input, producer is not foldable
    ]
    model = make_model(
        nodes, [vi("x", [1, 3, 4, 4]), vi("x2", [1, 3, 4, 4])], [vi("y", [1, 3])],
        bn_inits("bn", 3) + bn_inits("bn2", 3), opset=13,
    )
    result = check_fold(model, folded=0, to_mul_add=2)
    assert {tuple(t.dims) for t in result.graph.initializer} == {(3, 1, 1), (3,)}


def test_conv_output_with_two_readers_is_not_folded():
    model = conv_bn_model(bias=True)
    model.graph.node.append(helper.make_node("Sigmoid", ["c"], ["side"]))
    model.graph.output.append(vi("side", [2, 4, 6, 6]))
    result = check_fold(model, folded=0, to_mul_add=1)
    assert "Conv" in {n.op_type for n in result.graph.node}


def test_shared_conv_weight_folds_twice_without_clobbering():
    inits = [numpy_helper.from_array(rand(3, 3, 1, 1), "w")] + bn_inits("bnA", 3) + bn_inits("bnB", 3)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"]),
        bn_node("c1", "y1", "bnA"),
        helper.make_node("Conv", ["x", "w"], ["c2"]),
        bn_node("c2", "y2", "bnB"),
    ]
    model = make_model(nodes, [vi("x", [1, 3, 2, 2])], [vi("y1", [1, 3, 2, 2]), vi("y2", [1, 3, 2, 2])], inits)
    result = check_fold(model, folded=2, to_mul_add=0)
    w1, w2 = (n.input[1] for n in result.graph.node)
    assert w1 != w2


def test_spatial0_bn_opset7_becomes_mul_add():
    model = make_model(
        [bn_node("x", "y", "bn", spatial=0)], [vi("x", [2, 3, 2, 2])], [vi("y", [2, 3, 2, 2])],
        bn_inits("bn", 3, shape=(3, 2, 2)), opset=7,
    )
    check_fold(model, folded=0, to_mul_add=1)


def test_training_mode_bn_raises():
    model = conv_bn_model(bias=False)
    model.graph.node[1].attribute.append(helper.make_attribute("training_mode", 1))
    with pytest.raises(ModelError, match="training mode.*eval mode"):
        fold_batchnorm(model)


def test_bn_with_running_stat_outputs_raises():
    """Opset 9: five outputs mean training mode (onnxruntime then normalizes with batch statistics)."""
    names = [f"bn_{k}" for k in ("gamma", "beta", "mean", "var")]
    outputs = ["y", "running_mean", "running_var", "saved_mean", "saved_var"]
    node = helper.make_node("BatchNormalization", ["x", *names], outputs)
    model = make_model([node], [vi("x", [4, 2])], [vi("y", [4, 2])], bn_inits("bn", 2), opset=9)
    with pytest.raises(ModelError, match="training mode .*running statistics 'running_mean'"):
        fold_batchnorm(model)


def test_no_bn_reports_none():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], [])
    result, stats = fold_batchnorm(model)
    assert stats == BNFoldStats(folded=0, to_mul_add=0, max_abs_diff=None)
    assert result.SerializeToString() == model.SerializeToString()


def test_torch_preserve_export_keeps_bn_and_folds_after_cleanup():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4),
    )
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.3, 3)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, 16, 16),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    model = onnx.load_from_string(buffer.getvalue())
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 3 and all(len(n.output) == 1 for n in bns)  # eval module: inference BN kept

    cleaned, _ = cleanup(model)
    folded = check_fold(cleaned, folded=3, to_mul_add=0)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnxruntime(folded, {"input": x})[0], expected, atol=1e-5)

    module.train()  # a training-mode export carries training_mode=1 BNs: refused with a clear message
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, 3, 16, 16),), buffer, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    with pytest.raises(ModelError, match="training mode"):
        fold_batchnorm(cleanup(onnx.load_from_string(buffer.getvalue()))[0])


def test_zoo_conversion_folds_its_own_batchnorms(tmp_path):
    """MobileNetV1's 27 BatchNorms are folded by edgenet's pass (not by torch's exporter) and the
    change they cause is measured."""
    pytest.importorskip("tensorflow")
    import edgenet

    r = edgenet.convert("mobilenet_v1", alpha=0.25, resolution=32, num_classes=2, int8=False, calib_samples=4,
                        eval_samples=4, out=tmp_path / "o")
    assert r.report.bn_folded == 27 and r.report.bn_to_mul_add == 0
    assert r.report.bn_fold_max_abs_diff is not None and 0 <= r.report.bn_fold_max_abs_diff < 1e-4
    assert "BatchNormalization" not in r.report.ops_float
