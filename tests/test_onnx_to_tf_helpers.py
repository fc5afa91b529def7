"""Shared helpers for the onnx_to_tf handler tests: build one-op ONNX graphs, run them in onnxruntime
(or ONNX's reference implementation) and, converted by the TFLite writer (converters/tflite_writer:
onnx_to_tf's handlers on the recording backend), in LiteRT (NCHW <-> NHWC at the boundary), compare.
No tests here, and no TensorFlow."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.converters.tflite_writer import native_tflite  # noqa: E402

RNG = np.random.default_rng(0)


def rand(*shape: int, scale: float = 1.0, dtype=np.float32) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def make_model(nodes, inputs: dict[str, Sequence], outputs: Sequence[str], initializers: dict | None = None,
               opset: int = 17, input_dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """A model from nodes; ``inputs`` maps name -> shape (None/str dims allowed), initializers name -> array."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, input_dtype, list(s)) for n, s in inputs.items()],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()],
    )
    ir = 8 if opset <= 18 else 10
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    return onnx.shape_inference.infer_shapes(model)  # output types for onnxruntime


def with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs have a dynamic dim 0 ("N")."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    del model.graph.value_info[:]
    for vi in model.graph.output:
        vi.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(model)


def single_op(op: str, x_shape, attrs: dict | None = None, initializers: dict | None = None,
              extra_inputs: Sequence[str] = (), opset: int = 17, n_outputs: int = 1) -> onnx.ModelProto:
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, ["x", *extra_inputs], outputs, name=f"{op.lower()}_0", **(attrs or {}))
    return make_model([node], {"x": x_shape}, outputs, initializers, opset)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_ort_any_batch(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on a batch, one sample at a time when the model was exported with a fixed batch
    that differs from the feed's."""
    declared = {i.name: i.type.tensor_type.shape.dim[0].dim_value if i.type.tensor_type.shape.dim else 0
                for i in model.graph.input}
    first = next(iter(feeds))
    batch = feeds[first].shape[0] if feeds[first].ndim else 0
    if not declared.get(first) or declared[first] == batch:
        return run_ort(model, feeds)
    per_sample = [run_ort(model, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(batch)]
    return [np.concatenate(outs) for outs in zip(*per_sample)]


def to_tflite(model: onnx.ModelProto, batch_size: int | None = None, keep_layout=()):
    """The TFLite writer's conversion (a NativeGraph: ``.model`` the float32 .tflite bytes);
    ``batch_size`` fills a dynamic dim 0."""
    return native_tflite(model, keep_layout=keep_layout, batch_size=batch_size)


def to_tf_input(array: np.ndarray, channels_last: bool) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1)) if channels_last else array


def from_tf_output(array: np.ndarray, channels_last: bool) -> np.ndarray:
    return array.transpose(0, 3, 1, 2) if channels_last else array


def run_converted(graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The converted model run in LiteRT on ``feeds`` (ONNX layout in, ONNX layout out)."""
    outs, _ = tflite_run(graph.model, [to_tf_input(feeds[i.name], i.channels_last) for i in graph.inputs])
    return [from_tf_output(o, info.channels_last) for o, info in zip(outs, graph.outputs)]


def _compare_all(got: list[np.ndarray], want: list[np.ndarray], atol: float, rtol: float) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (k, g.shape, w.shape)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=f"output {k}")
        else:
            np.testing.assert_allclose(g, w, atol=atol, rtol=rtol, err_msg=f"output {k}")


def assert_matches_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], atol: float = 1e-5,
                       rtol: float = 1e-5, batch_size: int | None | str = "feed"):
    """Convert (a dynamic batch filled with the batch of the first feed, or ``batch_size``), run the
    model in LiteRT and onnxruntime, compare every output; returns the NativeGraph."""
    if batch_size in ("feed", None):
        first = next(iter(feeds.values()))
        batch_size = int(first.shape[0]) if first.ndim >= 2 else 1
    graph = to_tflite(model, batch_size)
    _compare_all(run_converted(graph, feeds), run_ort_any_batch(model, feeds), atol, rtol)
    return graph


def check_native(model: onnx.ModelProto, feeds: dict[str, np.ndarray], atol: float, rtol: float,
                 reference: str = "ort", batch_size: int | None = None, keep_layout=()) -> list[str]:
    """The writer's float model of ``model`` computes what ``reference`` does, in LiteRT; returns
    its op names."""
    graph = to_tflite(model, batch_size, keep_layout)
    want = run_ort_any_batch(model, feeds) if reference == "ort" else run_reference(model, feeds)
    outs, ops = tflite_run(graph.model, [to_tf_input(feeds[i.name], i.channels_last) for i in graph.inputs])
    _compare_all([from_tf_output(o, i.channels_last) for o, i in zip(outs, graph.outputs)], want, atol, rtol)
    return ops


def op_types(graph) -> set[str]:
    """The TFLite builtin op names in the converted model (``TRANSPOSE``, ``CONV_2D`` ...)."""
    from edgenet.converters import _flatbuffer

    names = {v: k for k, v in vars(_flatbuffer.schema().BuiltinOperator).items() if not k.startswith("_")}
    obj = _flatbuffer.read(graph.model)
    return {names[_flatbuffer.builtin_code(obj, op)] for op in obj.subgraphs[0].operators}


def transpose_inputs(graph) -> list[tuple[int, ...]]:
    """The shape of the data input of every TRANSPOSE op in the converted model."""
    from edgenet.converters import _flatbuffer

    code = _flatbuffer.schema().BuiltinOperator.TRANSPOSE
    obj = _flatbuffer.read(graph.model)
    sub = obj.subgraphs[0]
    return [tuple(int(d) for d in sub.tensors[op.inputs[0]].shape) for op in sub.operators
            if _flatbuffer.builtin_code(obj, op) == code]


def tflite_bytes(graph) -> bytes:
    """The float32 .tflite of a conversion."""
    return graph.model


def tflite_run(model_bytes: bytes, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """Run a TFLite model in ai_edge_litert; returns outputs and the op names in the model."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    details = interp.get_input_details()
    for d, x in zip(details, inputs):
        if list(d["shape"]) != list(x.shape):
            interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    # the TFLite subgraph may list outputs in another order; the signature's output_<k> keys keep
    # the concrete function's order
    by_key = interp.get_signature_runner().get_output_details()
    order = sorted(by_key, key=lambda k: int(k.rsplit("_", 1)[1]))
    outs = [interp.get_tensor(by_key[k]["index"]) for k in order]
    ops = [op["op_name"] for op in interp._get_ops_details()]
    return outs, ops


def run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX's reference implementation (the spec)."""
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]


def assert_tflite_matches(model: onnx.ModelProto, feeds: dict[str, np.ndarray], atol: float = 1e-5,
                          rtol: float = 1e-5, reference: str = "ort", **convert_options):
    """The writer's float32 .tflite -> ai_edge_litert, every output compared with onnxruntime
    (``reference="ort"``) or ONNX's reference implementation (``"spec"``), in ONNX layout.
    Returns (NativeGraph, TFLite op names)."""
    graph = to_tflite(model, **convert_options)
    expected = run_ort(model, feeds) if reference == "ort" else run_reference(model, feeds)
    inputs = [to_tf_input(feeds[i.name], i.channels_last) for i in graph.inputs]
    outs, ops = tflite_run(tflite_bytes(graph), inputs)
    assert len(outs) == len(expected)
    for got, info, want in zip(outs, graph.outputs, expected):
        got = from_tf_output(got, info.channels_last)
        assert got.shape == want.shape, (got.shape, want.shape)
        if want.dtype.kind in "biu":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
    return graph, ops


def grid_feed(shape, kind: str) -> np.ndarray:
    """A seeded input: "f" normal, "p" positive, "r" rounded (ties), "b" bool."""
    rng = np.random.default_rng(len(shape) * 7 + sum(shape))
    if kind == "b":
        return rng.random(shape) > 0.5
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "p":
        return np.abs(x) + 0.1
    if kind == "r":  # rounded: ties for comparisons and arg-min/max
        return np.round(x)
    return x


def grid_model(examples: dict, opset: int, constant_outputs=()):
    """One model holding many single-node examples side by side, each on its own input and output:
    name -> (op, attrs, first input shape, other inputs as constants, first input kind (grid_feed)).
    Returns (model, feeds)."""
    nodes, inputs, inits, outputs = [], {}, {}, []
    dtypes = {}
    for name, (op, attrs, shape, consts, kind) in examples.items():
        x = f"{name}_x"
        inputs[x] = shape
        dtypes[x] = kind
        names = [x]
        for k, c in enumerate(consts):
            inits[f"{name}_c{k}"] = c
            names.append(f"{name}_c{k}")
        if op == "Resize":
            names.insert(1, "")  # no roi
        out = name if name not in constant_outputs else f"{name}_raw"
        if op == "Split":  # one output per piece
            pieces = [f"{name}_{k}" for k in range(len(consts[0]))]
            nodes.append(helper.make_node(op, names, pieces, name=f"node_{name}", **attrs))
            outputs.extend(pieces)
            continue
        nodes.append(helper.make_node(op, names, [out], name=f"node_{name}", **attrs))
        if name in constant_outputs:  # make the constant depend on the input, as a real graph would
            nodes.append(helper.make_node("Cast", [out], [f"{name}_f"], to=1, name=f"cast_{name}"))
            nodes.append(helper.make_node("ReduceSum", [x], [f"{name}_s"], keepdims=0, name=f"sum_{name}"))
            nodes.append(helper.make_node("Add", [f"{name}_f", f"{name}_s"], [name], name=f"add_{name}"))
        outputs.append(name)
    graph = helper.make_graph(
        nodes, "examples",
        [helper.make_tensor_value_info(n, onnx.TensorProto.BOOL if dtypes[n] == "b" else onnx.TensorProto.FLOAT,
                                       list(s)) for n, s in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [onnx.numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8 if opset < 19 else 10)
    model = onnx.shape_inference.infer_shapes(model)
    feeds = {n: grid_feed(s, dtypes[n]) for n, s in inputs.items()}
    return model, feeds


def assert_grid_matches(model, feeds, reference: str = "ort", atol: float = 1e-5, rtol: float = 1e-5):
    """Convert a grid model (see grid_model), run it in TFLite, compare every output with
    onnxruntime or the reference implementation ("spec"); returns (NativeGraph, TFLite op names)."""
    graph = to_tflite(model)
    outs, ops = tflite_run(tflite_bytes(graph), [to_tf_input(feeds[i.name], i.channels_last) for i in graph.inputs])
    expected = run_ort(model, feeds) if reference == "ort" else run_reference(model, feeds)
    bad = []
    for out, info, want in zip(outs, graph.outputs, expected):
        got = from_tf_output(out, info.channels_last)
        if got.shape != want.shape:
            bad.append(f"{info.name}: shape {got.shape} != {want.shape}")
        elif want.dtype.kind == "f" and not np.allclose(got, want, rtol=rtol, atol=atol):
            bad.append(f"{info.name}: max error {np.abs(got - want).max():.3g}")
        elif want.dtype.kind != "f" and not np.array_equal(got, want):
            bad.append(f"{info.name}: values differ")
    assert not bad, bad
    return graph, ops


def through_layout(rng, name: str, shape, how: str | None = None):
    """Nodes that make the ONNX value ``name`` of ``shape`` from a new graph input, so that the op
    reading it sees it in one of the layouts the converter holds values in: "plain" (a graph input:
    rank 4 is NHWC, others ONNX order), "conv" (a 1x1 Conv: channels-last), "transpose" (Conv then a
    random Transpose: any layout), "reshape" (Conv then Reshape to rank 2, 3 or 5). ``how`` None:
    drawn from those that fit the rank. Returns (nodes, inputs, initializers, feeds, how)."""
    shape = tuple(int(d) for d in shape)
    fits = ["plain"] + (["conv", "transpose"] if len(shape) == 4 else ["reshape"] if len(shape) in (2, 3, 5) else [])
    how = how or fits[int(rng.integers(len(fits)))]
    if how == "plain":
        return [], {name: shape}, {}, {name: rng.standard_normal(shape).astype(np.float32)}, how
    if how == "conv":
        source = shape
    elif how == "transpose":
        perm = [int(p) for p in rng.permutation(4)]
        source = tuple(shape[perm.index(d)] for d in range(4))  # Transpose(perm) of it is `shape`
        how = f"transpose{perm}"
    elif len(shape) == 5:
        source = (shape[0], shape[1] * shape[2], shape[3], shape[4])
    else:
        source = (*shape, 1, 1)[:4] if len(shape) == 2 else (*shape, 1)
    raw = f"{name}_in"
    conv_out = name if how == "conv" else f"{name}_conv"
    weight = (rng.standard_normal((source[1], source[1], 1, 1)) * 0.7).astype(np.float32)
    nodes = [helper.make_node("Conv", [raw, f"{name}_w"], [conv_out], name=f"{name}_conv")]
    inits = {f"{name}_w": weight}
    if how.startswith("transpose"):
        nodes.append(helper.make_node("Transpose", [conv_out], [name], perm=perm, name=f"{name}_transpose"))
    elif how == "reshape":
        inits[f"{name}_shape"] = np.array(shape, np.int64)
        nodes.append(helper.make_node("Reshape", [conv_out, f"{name}_shape"], [name], name=f"{name}_reshape"))
    return nodes, {raw: source}, inits, {raw: rng.standard_normal(source).astype(np.float32)}, how


def spread_conv_onnx(path) -> None:
    """Save to ``path`` one 3x3 conv (3 -> 4 channels, 16x16) whose output channel 0 is 1000x the others
    in range: per-tensor int8 activations crush channels 1-3 (the int8 verdict tests' damaged model)."""
    w = np.random.default_rng(0).normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    w[0] *= 1000
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
