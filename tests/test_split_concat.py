"""Cleanup's bypass of a Split / Slice that takes a Concat apart again (converters/split_concat.py):
the same values as onnxruntime on the original, and each piece on its own int8 scale."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from edgenet.converters.cleanup import cleanup


def _head(transpose=True, slices=False, other_reader=False, sizes=(4, 7)):
    """boxes [1, 4, 9] (pixels) and scores [1, 7, 9] (sigmoid) concatenated on the channels,
    (transposed,) split again -- an end-to-end detector head's round trip (odd sizes)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 1)).astype(np.float32) * 100, "wb"),
             numpy_helper.from_array(rng.normal(size=(7, 3, 1)).astype(np.float32), "ws")]
    nodes = [helper.make_node("Conv", ["x", "wb"], ["boxes"]),
             helper.make_node("Conv", ["x", "ws"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["cat"], axis=1)]
    src, axis = "cat", 1
    if transpose:
        nodes.append(helper.make_node("Transpose", ["cat"], ["t"], perm=[0, 2, 1]))
        src, axis = "t", -1
    if slices:
        bounds = [(0, sizes[0]), (sizes[0], sizes[0] + sizes[1])]
        for k, (a, b) in enumerate(bounds):
            for n, v in (("s", a), ("e", b)):
                inits.append(numpy_helper.from_array(np.array([v], np.int64), f"{n}{k}"))
            inits.append(numpy_helper.from_array(np.array([axis], np.int64), f"a{k}"))
            nodes.append(helper.make_node("Slice", [src, f"s{k}", f"e{k}", f"a{k}"], [f"p{k}"]))
    else:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        nodes.append(helper.make_node("Split", [src, "sizes"], ["p0", "p1"], axis=axis))
    nodes += [helper.make_node("ReduceMax", ["p1"], ["best"], axes=[-1 if transpose else 1], keepdims=0),
              helper.make_node("Mul", ["p0", "p0"], ["b2"])]
    outs = ["best", "b2"] + (["cat"] if other_reader else [])
    shape = {"best": [1, 9], "b2": [1, 9, 4] if transpose else [1, 4, 9], "cat": [1, 11, 9]}
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape[o]) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize("transpose,slices,other_reader", [(True, False, False), (False, False, False),
                                                           (True, True, False), (True, False, True)])
def test_pieces_are_read_directly_and_values_do_not_change(transpose, slices, other_reader):
    model = _head(transpose, slices, other_reader)
    cleaned, stats = cleanup(model)
    assert stats.split_pieces_read == 2
    ops = [n.op_type for n in cleaned.graph.node]
    assert "Split" not in ops and "Slice" not in ops
    assert ("Concat" in ops) == other_reader          # kept only while something else reads it
    x = np.random.default_rng(1).normal(size=(1, 3, 9)).astype(np.float32)
    for a, b in zip(_run(model, x), _run(cleaned, x)):
        np.testing.assert_array_equal(a, b)


def test_a_transpose_without_perm_reverses_the_axes():
    """ONNX's Transpose without ``perm`` reverses the axes; read as no Transpose at all, the pieces
    came out untransposed (a breaker's model was refused, blaming its file)."""
    model = _head()
    t = next(n for n in model.graph.node if n.op_type == "Transpose")
    del t.attribute[:]                                   # [1, 11, 9] -> [9, 11, 1]
    split = next(n for n in model.graph.node if n.op_type == "Split")
    split.attribute[0].i = 1                             # the channels, now axis 1 of [9, 11, 1]
    reduce = next(n for n in model.graph.node if n.op_type == "ReduceMax")
    reduce.attribute[0].ints[:] = [1]
    for o in model.graph.output:
        dims = {"best": [9, 1], "b2": [9, 4, 1]}[o.name]
        del o.type.tensor_type.shape.dim[:]
        for d in dims:
            o.type.tensor_type.shape.dim.add().dim_value = d
    cleaned, stats = cleanup(model)
    assert stats.split_pieces_read == 2
    x = np.random.default_rng(4).normal(size=(1, 3, 9)).astype(np.float32)
    for a, b in zip(_run(model, x), _run(cleaned, x)):
        np.testing.assert_array_equal(a, b)


def test_a_split_across_pieces_is_left_alone():
    model = _head(sizes=(5, 6))                       # the boundary falls inside the scores
    cleaned, stats = cleanup(model)
    assert stats.split_pieces_read == 0 and "Split" in [n.op_type for n in cleaned.graph.node]


def test_int8_scores_keep_their_own_scale(tmp_path):
    """Through the round trip the int8 CONCATENATION gives the scores the boxes' scale (pixels /
    255): every score rounds to 0 and the verdict fails (the repair then keeps the CONCATENATION
    and the slices in float). Read directly, the scores keep their own scale: all int8, passing."""
    import edgenet

    path = tmp_path / "head.onnx"
    onnx.save(_head(), path)
    rng = np.random.default_rng(2)
    np.save(tmp_path / "calib.npy", rng.normal(size=(64, 1, 3, 9)).astype(np.float32))
    r = edgenet.convert(str(path), int8=True, calib=str(tmp_path / "calib.npy"), out=tmp_path / "o",
                        output_kinds=["best=generic", "b2=generic"])
    by = {o["name"]: o for o in r.report.validation.quantized[0]["outputs"]}
    assert by["best"]["sqnr_db"] > 30, by["best"]
    # without the bypass the verdict failed and the repair kept CONCATENATION and both slices in float
    assert not any("mixed precision" in n for n in r.report.notes), r.report.notes
