"""Only TFLite builtin ops come out of the writer, and they compute what onnxruntime does.

One model holds an example of every handler (and of the variants that emit other ops) side by
side, each on its own input and output, so one conversion checks them all; every output is compared
with onnxruntime, and no FLEX or CUSTOM op may appear. Also: the mapping from TFLite tensor names back
to ONNX nodes, and the refusal of what no builtin expresses, which names the ONNX node."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import (from_tf_output, grid_model, helper, make_model, onnx, rand, run_ort,
                                     tflite_bytes, tflite_run, to_tf_input, to_tflite)


from edgenet.converters.onnx_to_tf import supported_ops
from edgenet.errors import UnsupportedOpError

X4 = (1, 4, 5, 7)
I64 = np.int64


def _f(*values):
    return np.array(values, np.float32)


def _i(*values):
    return np.array(values, I64)


# name -> (op, attrs, first input shape, other inputs as constants, first input dtype ("f" / "b"))
EXAMPLES = {
    "abs": ("Abs", {}, X4, [], "f"), "neg": ("Neg", {}, X4, [], "f"), "exp": ("Exp", {}, X4, [], "f"),
    "log_of_abs": ("Log", {}, X4, [], "p"), "sqrt": ("Sqrt", {}, X4, [], "p"), "floor": ("Floor", {}, X4, [], "f"),
    "ceil": ("Ceil", {}, X4, [], "f"), "round": ("Round", {}, X4, [], "f"), "sin": ("Sin", {}, X4, [], "f"),
    "cos": ("Cos", {}, X4, [], "f"), "sign": ("Sign", {}, X4, [], "f"), "reciprocal": ("Reciprocal", {}, X4, [], "p"),
    "relu": ("Relu", {}, X4, [], "f"), "leaky": ("LeakyRelu", dict(alpha=0.2), X4, [], "f"),
    "elu": ("Elu", {}, X4, [], "f"), "elu_alpha": ("Elu", dict(alpha=0.5), X4, [], "f"),
    "selu": ("Selu", {}, X4, [], "f"), "celu": ("Celu", dict(alpha=0.7), X4, [], "f"),
    "thresholded": ("ThresholdedRelu", dict(alpha=0.3), X4, [], "f"), "softsign": ("Softsign", {}, X4, [], "f"),
    "sigmoid": ("Sigmoid", {}, X4, [], "f"), "tanh": ("Tanh", {}, X4, [], "f"),
    "softplus": ("Softplus", {}, X4, [], "f"),
    "hard_sigmoid": ("HardSigmoid", {}, X4, [], "f"), "hard_swish": ("HardSwish", {}, X4, [], "f"),
    "fmod": ("Mod", dict(fmod=1), X4, [_f(-0.3)], "f"), "cumsum": ("CumSum", dict(exclusive=1), X4, [np.array(1, I64)], "f"),
    "clip": ("Clip", {}, X4, [_f(-0.5), _f(0.7)], "f"), "clip6": ("Clip", {}, X4, [_f(0), _f(6)], "f"),
    "identity": ("Identity", {}, X4, [], "f"), "dropout": ("Dropout", {}, X4, [], "f"),
    "add": ("Add", {}, X4, [rand(4, 1, 1)], "f"), "sub": ("Sub", {}, X4, [rand(7)], "f"),
    "mul": ("Mul", {}, X4, [rand(5, 7)], "f"), "div": ("Div", {}, X4, [rand(4, 1, 1) + 3], "f"),
    "pow": ("Pow", {}, X4, [_f(3)], "p"), "max": ("Max", {}, X4, [rand(7)], "f"),
    "min": ("Min", {}, X4, [rand(7)], "f"),
    "sum": ("Sum", {}, X4, [rand(7)], "f"), "mean": ("Mean", {}, X4, [rand(7)], "f"),
    "prelu": ("PRelu", {}, X4, [rand(4, 1, 1)], "f"),
    "equal": ("Equal", {}, X4, [_f(0)], "r"), "greater": ("Greater", {}, X4, [rand(7)], "f"),
    "less": ("Less", {}, X4, [rand(7)], "f"), "greater_eq": ("GreaterOrEqual", {}, X4, [_f(0.1)], "f"),
    "less_eq": ("LessOrEqual", {}, X4, [_f(0.1)], "f"), "not": ("Not", {}, X4, [], "b"),
    "and": ("And", {}, X4, [np.array([True, False] * 3 + [True])], "b"),
    "or": ("Or", {}, X4, [np.array([True, False] * 3 + [True])], "b"),
    "xor": ("Xor", {}, X4, [np.array([True, False] * 3 + [True])], "b"),
    "where": ("Where", {}, X4, [rand(7), rand(4, 1, 1)], "b"),
    "conv": ("Conv", dict(pads=[1, 1, 1, 1]), X4, [rand(3, 4, 3, 3)], "f"),
    "conv_1d": ("Conv", dict(pads=[1, 0], strides=[2]), (1, 4, 9), [rand(3, 4, 3)], "f"),
    "conv_dw_dilated": ("Conv", dict(group=4, dilations=[2, 2], pads=[2, 2, 2, 2]), X4, [rand(4, 1, 3, 3)], "f"),
    "conv_grouped": ("Conv", dict(group=2, pads=[0, 1, 1, 0]), X4, [rand(6, 2, 2, 2), rand(6)], "f"),
    "conv_transpose": ("ConvTranspose", dict(strides=[2, 2], pads=[1, 1, 1, 1]), X4, [rand(4, 3, 4, 4)], "f"),
    "conv_transpose_dw": ("ConvTranspose", dict(strides=[2, 2], group=4), X4, [rand(4, 1, 3, 3)], "f"),
    "max_pool": ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]), X4, [], "f"),
    "max_pool_dilated": ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 2]), X4, [], "f"),
    "avg_pool": ("AveragePool", dict(kernel_shape=[2, 3], pads=[1, 0, 0, 1]), X4, [], "f"),
    "avg_pool_3d": ("AveragePool", dict(kernel_shape=[2, 2, 2]), (1, 2, 3, 4, 5), [], "f"),
    "gap": ("GlobalAveragePool", {}, X4, [], "f"), "gmp": ("GlobalMaxPool", {}, X4, [], "f"),
    "batch_norm": ("BatchNormalization", {}, X4, [rand(4), rand(4), rand(4), np.abs(rand(4)) + 1], "f"),
    "instance_norm": ("InstanceNormalization", {}, X4, [rand(4), rand(4)], "f"),
    "layer_norm": ("LayerNormalization", {}, X4, [rand(7), rand(7)], "f"),
    "lp_norm": ("LpNormalization", dict(axis=1, p=2), X4, [], "f"),
    "lp_norm_1": ("LpNormalization", dict(axis=-1, p=1), X4, [], "f"),
    "lrn": ("LRN", dict(size=3, alpha=1e-2, beta=0.75, bias=1.0), X4, [], "f"),
    "softmax": ("Softmax", dict(axis=2), X4, [], "f"), "log_softmax": ("LogSoftmax", dict(axis=1), X4, [], "f"),
    "gemm": ("Gemm", dict(transB=1), (3, 7), [rand(5, 7), rand(5)], "f"),
    "matmul": ("MatMul", {}, (2, 3, 7), [rand(2, 7, 4)], "f"),
    "matmul_vector": ("MatMul", {}, (2, 3, 7), [rand(7)], "f"),
    "einsum": ("Einsum", dict(equation="bij,bkj->bik"), (2, 3, 7), [rand(2, 5, 7)], "f"),
    "reduce_mean": ("ReduceMean", dict(axes=[2, 3]), X4, [], "f"),
    "reduce_max": ("ReduceMax", dict(axes=[1], keepdims=0), X4, [], "f"),
    "reduce_min": ("ReduceMin", dict(axes=[3]), X4, [], "f"), "reduce_sum": ("ReduceSum", {}, X4, [_i(1)], "f"),
    "reduce_prod": ("ReduceProd", dict(axes=[1]), X4, [], "f"),
    "reduce_l1": ("ReduceL1", dict(axes=[2]), X4, [], "f"), "reduce_l2": ("ReduceL2", dict(axes=[1, 2]), X4, [], "f"),
    "reduce_sum_square": ("ReduceSumSquare", dict(axes=[3]), X4, [], "f"),
    "reduce_log_sum": ("ReduceLogSum", dict(axes=[1]), X4, [], "p"),
    "reduce_log_sum_exp": ("ReduceLogSumExp", dict(axes=[1]), X4, [], "f"),
    "argmax": ("ArgMax", dict(axis=1), X4, [], "f"),
    "argmin_last": ("ArgMin", dict(axis=3, select_last_index=1), X4, [], "r"),
    "reshape": ("Reshape", {}, X4, [_i(1, 4, 35)], "f"), "flatten": ("Flatten", {}, X4, [], "f"),
    "squeeze": ("Squeeze", {}, (1, 4, 1, 7), [_i(2)], "f"), "unsqueeze": ("Unsqueeze", {}, (4, 7), [_i(0, 3)], "f"),
    "transpose": ("Transpose", dict(perm=[0, 3, 1, 2]), X4, [], "f"), "cast": ("Cast", dict(to=6), X4, [], "f"),
    "concat": ("Concat", dict(axis=1), X4, [rand(1, 2, 5, 7)], "f"),
    "split": ("Split", dict(axis=1), X4, [_i(2, 2)], "f"), "split_3": ("Split", dict(axis=3), X4, [_i(2, 2, 3)], "f"),
    "slice": ("Slice", {}, X4, [_i(1, 6), _i(-1, 0), _i(2, 3), _i(1, -2)], "f"),
    "gather": ("Gather", dict(axis=1), X4, [_i(3, 0, 2)], "f"),
    "gather_range": ("Gather", dict(axis=1), X4, [_i(2, 1, 0)], "f"),
    "gather_elements": ("GatherElements", dict(axis=2), X4, [np.random.default_rng(0).integers(0, 5, (1, 4, 2, 7))],
                        "f"),
    "scatter_nd": ("ScatterND", dict(reduction="max"), X4, [_i(0, 2, 0, 0, 0, 2).reshape(3, 2), rand(3, 5, 7)], "f"),
    "pad": ("Pad", {}, X4, [_i(0, 0, 1, 2, 0, 0, 2, 1)], "f"),
    "pad_value": ("Pad", {}, X4, [_i(0, 0, 1, 2, 0, 0, 2, 1), _f(0.5)], "f"),
    "pad_reflect": ("Pad", dict(mode="reflect"), X4, [_i(0, 0, 1, 2, 0, 0, 2, 1)], "f"),
    "pad_edge": ("Pad", dict(mode="edge"), X4, [_i(0, 0, 1, 2, 0, 0, 2, 1)], "f"),
    "pad_crop": ("Pad", {}, X4, [_i(0, 0, -1, 2, 0, 0, 2, -1)], "f"),
    "expand": ("Expand", {}, (1, 4, 1, 1), [_i(1, 4, 5, 7)], "f"), "tile": ("Tile", {}, X4, [_i(1, 2, 1, 3)], "f"),
    "depth_to_space": ("DepthToSpace", dict(blocksize=2, mode="CRD"), (1, 8, 3, 5), [], "f"),
    "space_to_depth": ("SpaceToDepth", dict(blocksize=2), (1, 3, 4, 6), [], "f"),
    "resize_nearest": ("Resize", dict(mode="nearest"), X4, [_f(1, 1, 2, 2)], "f"),
    "resize_nearest_frac": ("Resize", dict(mode="nearest"), X4, [_f(1, 1, 0.6, 1.5)], "f"),
    "resize_linear": ("Resize", dict(mode="linear"), X4, [_f(1, 1, 2, 2)], "f"),
    "resize_cubic": ("Resize", dict(mode="cubic"), X4, [_f(1, 1, 1.5, 0.5)], "f"),
    "shape": ("Shape", {}, X4, [], "f"), "size": ("Size", {}, X4, [], "f"),
    "lstm": ("LSTM", dict(hidden_size=3, direction="bidirectional"), (4, 1, 7),
             [rand(2, 12, 7), rand(2, 12, 3), rand(2, 24)], "f"),
    "gru": ("GRU", dict(hidden_size=3, linear_before_reset=1), (4, 1, 7), [rand(1, 9, 7), rand(1, 9, 3), rand(1, 18)], "f"),
}
# ops that need a newer opset than the main examples model's (17)
EXAMPLES_20 = {
    "mish": ("Mish", {}, X4, [], "f"), "swish": ("Swish", dict(alpha=1.5), X4, [], "f"),
    "gelu": ("Gelu", {}, X4, [], "f"),
    "gelu_tanh": ("Gelu", dict(approximate="tanh"), X4, [], "f"),
    "reduce_mean_axes_input": ("ReduceMean", dict(keepdims=0), X4, [_i(1, 3)], "f"),
}
NOT_EMITTED = {"Constant": "folded before any handler runs", "Erf": "refused unless inside the GELU pattern",
               "Upsample": "Resize's handler (Upsample is gone from opset 17; see test_onnx_to_tf_resize)"}
# ops whose every output is required and the grid reads one: checked by their own tests
OWN_TESTS = {"TopK": "Values and Indices: test_onnx_to_tf_ops.py::test_top_k_values_and_indices_match_onnxruntime"}
# Shape/Size outputs are constants: TFLite turns a constant graph output into another shape/dtype
CONSTANT_OUTPUTS = {"shape", "size"}


def _converted(examples: dict, opset: int):
    model, feeds = grid_model(examples, opset, constant_outputs=CONSTANT_OUTPUTS)
    graph = to_tflite(model)
    return model, feeds, graph, tflite_bytes(graph)


@pytest.fixture(scope="module")
def examples():
    return _converted(EXAMPLES, 17)


@pytest.fixture(scope="module")
def examples_20():
    return _converted(EXAMPLES_20, 24)


def test_every_handler_has_an_example():
    covered = {op for op, *_ in (*EXAMPLES.values(), *EXAMPLES_20.values())}
    assert set(supported_ops()) - covered - set(NOT_EMITTED) - set(OWN_TESTS) == set()


@pytest.mark.parametrize("which", ["examples", "examples_20"])
def test_every_example_matches_onnxruntime_in_tflite(which, request):
    model, feeds, graph, tflite = request.getfixturevalue(which)
    outs, ops = tflite_run(tflite, [to_tf_input(feeds[i.name], i.channels_last) for i in graph.inputs])
    expected = run_ort(model, feeds)
    bad = []
    for out, info, want in zip(outs, graph.outputs, expected):
        got = from_tf_output(out, info.channels_last)
        if got.shape != want.shape:
            bad.append(f"{info.name}: shape {got.shape} != {want.shape}")
        elif want.dtype.kind == "f" and not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            bad.append(f"{info.name}: max error {np.abs(got - want).max():.3g}")
        elif want.dtype.kind != "f" and not np.array_equal(got, want):
            bad.append(f"{info.name}: values differ")
    assert not bad, bad
    assert not any(op.startswith("FLEX") or op == "CUSTOM" for op in ops)
    if which == "examples_20":
        assert ops.count("GELU") == 2


def test_tflite_names_map_back_to_onnx_nodes(examples):
    """Every TFLite tensor the writer computes names its ONNX node: ONNX values by their own name,
    tensors inside a node's lowering as ``<scope>/<op>``. Only graph inputs are unnamed."""
    model, _, graph, tflite = examples
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite)
    inputs = {i.name for i in model.graph.input}
    producers = {o: n.name for n in model.graph.node for o in n.output}
    runner = interp.get_signature_runner()
    tensor_names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    twins = set()   # an output in another layout than its ONNX value: the value's name, made unique
    for key, detail in runner.get_output_details().items():
        onnx_output = graph.outputs[int(key.split("_")[1])].name
        name = tensor_names[detail["index"]]
        if name in inputs:  # Identity/Dropout: the output is the input itself
            continue
        if name != onnx_output and graph.onnx_node(name) is None:
            assert name.startswith(f"{onnx_output}_"), (name, onnx_output)
            twins.add(name)
            continue
        assert graph.onnx_node(name) == producers[onnx_output]
    computed = {i for op in interp._get_ops_details() for i in op["outputs"]}
    for index in computed:
        name = tensor_names[index]
        assert name in twins or graph.onnx_node(name) is not None, name
        if "/" in name:  # "<scope>/<op>": the scope is the node's, made a valid name
            assert graph.onnx_node(name) == name.split("/")[0]
    constants = {t["name"] for t in interp.get_tensor_details() if t["index"] not in computed}
    unnamed = {n for n in tensor_names.values() if graph.onnx_node(n) is None}
    assert unnamed <= inputs | twins | constants, unnamed - inputs - twins - constants


def test_what_no_builtin_expresses_is_refused_naming_the_node():
    """Unsigned 32-bit division: TFLite's FLOOR_DIV has no uint32 kernel (and int32 cannot hold
    every uint32): refused, naming the node (signed integer Div is converted: test_onnx_to_tf_ops)."""
    node = helper.make_node("Div", ["x", "c"], ["y"], name="int_div")
    model = make_model([node], {"x": (2, 3)}, ["y"], {"c": np.array([2, 3, 4], np.uint32)},
                       input_dtype=onnx.TensorProto.UINT32)
    with pytest.raises(UnsupportedOpError, match=r"Div \(node 'int_div'\).*Div of uint32"):
        to_tflite(model)
