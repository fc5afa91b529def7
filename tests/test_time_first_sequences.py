"""A CTC recognizer as PyTorch exports it (ddddocr's CRNN is one): conv features, an LSTM unrolled
into one FULLY_CONNECTED per time step that all read the same weights, and a time-first output
``[T, N, C]`` of raw scores that the app reads as ``out[:, 0, :]``. The weights are written once,
the examples stay whole sequences, and raw CTC scores are judged as a sequence."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.inference import stack_outputs
from edgenet.verdicts import OutputKind
from edgenet.verdicts.base import Thresholds
from edgenet.verdicts.kinds import detect_kind
from edgenet.verdicts.tasks import sequence_quality


def _ctc_scores(rng, n=24, steps=20, classes=37, blank=0):
    """Raw per-step scores where the blank wins most steps and a few characters the rest."""
    f = rng.normal(0, 1, (n, steps, classes)).astype(np.float32)
    f[..., blank] += 4.0
    for k in range(n):
        for t in rng.choice(steps, 5, replace=False):
            f[k, t, rng.integers(1, classes - 1)] += 9.0
    return f


def test_time_first_outputs_are_stacked_as_whole_sequences():
    rng = np.random.default_rng(0)
    runs = [rng.normal(size=(20, 1, 37)).astype(np.float32) for _ in range(3)]   # [T, N=1, C] per example
    stacked = stack_outputs(runs, [1])
    assert stacked.shape == (3, 20, 37) and np.array_equal(stacked[1], runs[1][:, 0, :])
    # batch 2: axis 0 is the batch, whatever axis 1 holds; batch unknown: as before
    assert stack_outputs([rng.normal(size=(2, 1, 5)) for _ in range(3)], [2]).shape == (6, 1, 5)
    assert stack_outputs(runs).shape == (60, 1, 37)
    # a [1, T, C] output (batch first) is untouched
    assert stack_outputs([rng.normal(size=(1, 20, 37)) for _ in range(3)], [1]).shape == (3, 20, 37)


def test_raw_ctc_scores_are_judged_as_a_sequence_and_a_lost_character_fails():
    rng = np.random.default_rng(1)
    f = _ctc_scores(rng)
    assert detect_kind(f) is OutputKind.SEQUENCE
    assert detect_kind(_ctc_scores(rng, blank=36)) is OutputKind.SEQUENCE            # blank last
    assert detect_kind(rng.normal(size=(24, 20, 64)).astype(np.float32)) is OutputKind.GENERIC   # features
    healthy = sequence_quality("y", f, f + rng.normal(0, 0.01, f.shape).astype(np.float32), False, Thresholds())
    assert healthy.passed
    damaged = f.copy()
    top = f.argmax(-1)
    for k in range(0, 24, 3):                       # every third line loses one character to the blank
        t = int(np.flatnonzero(top[k] != 0)[0])
        damaged[k, t, 0] += 20.0
    bad = sequence_quality("y", f, damaged, False, Thresholds())
    assert not bad.passed and any("decoded sequences agree" in m for m in bad.failures)
    blank_last = _ctc_scores(rng, blank=36)
    assert sequence_quality("y", blank_last, blank_last, False, Thresholds()).metrics["blank"] == 36


def test_an_unrolled_lstm_writes_its_weights_once(tmp_path):
    torch = pytest.importorskip("torch")
    import onnx

    from edgenet.converters.tflite_writer import native_tflite

    nn = torch.nn

    class CRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.rnn = nn.LSTM(8 * 4, 48, bidirectional=True)
            self.fc = nn.Linear(96, 37)

        def forward(self, x):
            f = torch.relu(self.conv(x))                          # [N, 8, 4, W]
            n, c, h, w = f.shape
            y, _ = self.rnn(f.reshape(n, c * h, w).permute(2, 0, 1))
            return self.fc(y)                                     # [W, N, 37]: time first, raw scores

    torch.manual_seed(0)
    path = tmp_path / "crnn.onnx"
    torch.onnx.export(CRNN().eval(), torch.randn(1, 1, 4, 24), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    model = onnx.load(str(path))
    graph = native_tflite(model)
    # 24 steps x 2 directions read the same weights: one copy each, not 48 (the ops themselves take more)
    from edgenet.converters import _flatbuffer

    flat = _flatbuffer.read(graph.model)
    written = sum(len(flat.buffers[t.buffer].data) for t in flat.subgraphs[0].tensors
                  if flat.buffers[t.buffer].data is not None)
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    assert written < 1.1 * weights
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=graph.model)
    fc_weights = [op["inputs"][1] for op in interp._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    assert len(fc_weights) > 24 and len(set(fc_weights)) <= 6


def test_a_rank4_output_with_a_unit_axis_1_is_stacked_alike_on_both_sides(tmp_path):
    """A batch-1 model whose output is ``[K, 1, H, W]`` (conv channels moved to the batch axis): TFLite
    gives it as ``[K, H, W, 1]``, ONNX as ``[K, 1, H, W]``; both are concatenated along axis 0, so the
    float model matches ONNX (the time-first rule on axis 1 made the two sides differ: 'relative error inf')."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgenet

    assert stack_outputs([np.zeros((4, 1, 6, 6))] * 3, [1]).shape == (12, 1, 6, 6)
    w = np.random.default_rng(0).normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Transpose", ["c"], ["y"], perm=[1, 0, 2, 3])], "k1hw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1, 16, 16])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "k1hw.onnx"))
    result = edgenet.convert(str(tmp_path / "k1hw.onnx"), precisions=["float32"], out=tmp_path / "out",
                             eval_samples=4, calib_samples=4, mean=[0.0], std=[1.0], layer_report=False)
    assert result.float_path in result.files     # the conversion raises when float differs from ONNX


def test_near_tied_steps_do_not_refuse_a_healthy_output_read_as_a_sequence():
    """DETR-style class scores [N, 100 queries, 92] whose last class ("no object") wins most queries
    look like raw CTC scores. Queries float barely decides flip under int8's rounding: no damage, so
    steps and decoded sequences are judged where float decides; a decided query changed still fails."""
    rng = np.random.default_rng(3)
    f = rng.normal(0, 1, (16, 100, 92)).astype(np.float32)
    f[..., 91] += 2.5                                          # no object: often, but rarely decisively
    for k in range(16):
        for t in rng.choice(100, 6, replace=False):
            f[k, t, rng.integers(0, 91)] += 10.0              # a few confident objects
    assert detect_kind(f) is OutputKind.SEQUENCE
    noise = np.sqrt(np.mean(f ** 2) / 1000.0)                 # 30 dB: healthy by SQNR
    healthy = sequence_quality("logits", f, f + rng.normal(0, noise, f.shape).astype(np.float32), False,
                               Thresholds())
    assert healthy.passed, healthy.failures
    damaged = f.copy()
    top = f.argmax(-1)
    for k in range(0, 16, 2):                                  # half the examples lose a confident object
        t = int(np.flatnonzero(top[k] != 91)[0])
        damaged[k, t, top[k, t]] -= 20.0
    assert not sequence_quality("logits", f, damaged, False, Thresholds()).passed
