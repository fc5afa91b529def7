"""Activation balancing (converters/act_balance.py): a conv -> depthwise pair's tensor rescaled per channel,
the function kept, nothing else touched."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgenet.converters.act_balance import balance_activations, channel_gains  # noqa: E402
from edgenet.converters.equalize import _outputs  # noqa: E402


def _model(between: str | None = None, depthwise: bool = True) -> "onnx.ModelProto":
    """x [N, 3, 12, 12] -> Conv 3->4 (channel ranges 1 : 40) -> [between] -> 3x3 conv (depthwise or full, pad 1)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 3, 1, 1)).astype(np.float32) * np.array([1, 40, 3, 0.5], np.float32)[:, None, None, None]
    b1 = np.array([0.1, -2.0, 0.3, 0.0], np.float32)
    w2 = rng.normal(size=(4, 1 if depthwise else 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["t"], name="first")]
    tensor = "t"
    if between == "relu":
        nodes.append(helper.make_node("Relu", ["t"], ["a"], name="act"))
        tensor = "a"
    elif between == "relu6":
        nodes.append(helper.make_node("Clip", ["t", "lo", "hi"], ["a"], name="act"))
        tensor = "a"
    nodes.append(helper.make_node("Conv", [tensor, "w2"], ["y"], name="second", pads=[1, 1, 1, 1],
                                  group=4 if depthwise else 1))
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _calib(n: int = 16) -> list[np.ndarray]:
    return [np.random.default_rng(1).normal(size=(n, 3, 12, 12)).astype(np.float32)]


@pytest.mark.parametrize("between", [None, "relu"])
def test_conv_depthwise_tensor_shares_its_range_and_the_function_is_kept(between):
    model, calib = _model(between), _calib()
    twin, stats = balance_activations(model, calib)
    assert stats is not None and stats.pairs == ("a" if between else "t",)
    before, after = _outputs(model, calib)[0], _outputs(twin, calib)[0]
    assert np.array_equal(before, after)      # powers of two: exact, not only up to rounding
    # the tensor between: every channel now reaches the tensor's own range, which did not grow
    probe = onnx.ModelProto()
    for m in (model, twin):
        probe.CopyFrom(m)
        del probe.graph.output[:]
        probe.graph.output.extend([helper.make_tensor_value_info(stats.pairs[0], TensorProto.FLOAT, None)])
        v = _outputs(probe, calib)[0]
        peak = np.abs(v).max(axis=(0, 2, 3))
        if m is model:
            old_peak, old_spread = np.abs(v).max(), peak.max() / peak.min()
    assert np.abs(v).max() <= old_peak * (1 + 1e-5)
    assert peak.max() / peak.min() < old_spread / 5
    assert stats.max_gain >= 8 and "1 tensor(s) between a conv and a depthwise conv" in stats.note()


@pytest.mark.parametrize("between,depthwise", [("relu6", True), (None, False)])
def test_no_pair_leaves_the_model_alone(between, depthwise):
    """ReLU6 does not commute with scaling; a full conv reads every channel (scaling its inputs moves
    the precision of its per-output-channel weights): neither is rescaled."""
    model = _model(between, depthwise)
    twin, stats = balance_activations(model, _calib())
    assert stats is None and twin is model


def test_channel_gains_keep_each_channel_inside_the_tensor_range():
    lo = np.array([-1.0, -0.1, 0.0, 0.0, -4.0])
    hi = np.array([2.0, 0.5, 0.0, 8.0, 1.0])
    s = channel_gains(lo, hi)
    assert s.tolist() == [4.0, 16.0, 1.0, 1.0, 1.0]
    assert channel_gains(np.array([0.0, 0.0]), np.array([1.0, 0.15])).tolist() == [1.0, 4.0]   # 6.7 -> 4
    assert np.all(s * lo >= lo.min() - 1e-12) and np.all(s * hi <= hi.max() + 1e-12)


def test_balanced_twin_writes_the_twin_or_notes_why_not():
    from edgenet.converters.act_balance import balanced_twin

    notes: list[str] = []
    written = balanced_twin(_model(), _calib(), lambda m: b"tflite of " + m.graph.name.encode(), notes)
    assert written == (b"tflite of g", None) and notes[0].startswith("activation balancing: 1 tensor(s)")
    notes.clear()
    assert balanced_twin(_model(), [np.zeros((4, 3, 7, 7), np.float32)], lambda m: b"", notes) is None
    assert len(notes) == 1 and notes[0].startswith("activation balancing skipped: ")   # wrong input shape: skipped


def test_int8_conversion_quantizes_the_balanced_twin(tmp_path):
    """edgenet.convert on the pair: the stage runs, report.md says so, model.onnx keeps the user's weights
    (only the int8 model is quantized from the twin) and the float model is still checked exact."""
    pytest.importorskip("litert_quantizer")
    import edgenet

    path = tmp_path / "pair.onnx"
    onnx.save(_model(), str(path))
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(48, 3, 12, 12)).astype(np.float32))
    r = edgenet.convert(str(path), int8=True, calib=str(tmp_path / "x.npy"), out=tmp_path / "o", calib_samples=32,
                        eval_samples=16, target="rpi", allow_degraded=True)
    text = (tmp_path / "o" / "report.md").read_text()
    assert "balance activations" in text and "activation balancing: 1 tensor(s)" in text
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "o" / "model.onnx")).graph.initializer}
    assert np.array_equal(written["w2"], numpy_helper.to_array(_model().graph.initializer[2]))
    assert r.report.to_dict()["validation"]["float_rel_err"] < 1e-4


def test_per_tensor_weights_are_not_balanced(tmp_path):
    """Scaling a channel by 2**k moves per-tensor weights' precision (CLE's question, --equalize): not done."""
    pytest.importorskip("litert_quantizer")
    import edgenet

    path = tmp_path / "pair.onnx"
    onnx.save(_model(), str(path))
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(48, 3, 12, 12)).astype(np.float32))
    edgenet.convert(str(path), int8=True, calib=str(tmp_path / "x.npy"), out=tmp_path / "o", calib_samples=32,
                    eval_samples=16, target="rpi", per_tensor=True, allow_degraded=True)
    assert "balance activations" not in (tmp_path / "o" / "report.md").read_text()
