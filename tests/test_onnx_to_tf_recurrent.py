"""LSTM and GRU against onnxruntime: directions, layouts, initial states, peepholes, both GRU
variants, odd sizes; and torch's nn.LSTM / nn.GRU as exported, through TFLite."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import assert_matches_ort, assert_tflite_matches, make_model, onnx, rand, to_tflite

from edgenet.errors import UnsupportedOpError

helper = onnx.helper


def _rnn(op, steps=5, batch=2, features=7, hidden=3, direction="forward", layout=0, bias=True, initial=False,
         peepholes=False, **attrs):
    gates = 4 if op == "LSTM" else 3
    dirs = 2 if direction == "bidirectional" else 1
    inits = {"W": rand(dirs, gates * hidden, features, scale=0.5), "R": rand(dirs, gates * hidden, hidden, scale=0.5)}
    names = ["x", "W", "R"]
    names.append("B" if bias else "")
    if bias:
        inits["B"] = rand(dirs, 2 * gates * hidden, scale=0.3)
    names.append("")                                           # sequence_lens
    state_shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    feeds = {}
    if initial:
        names.append("h0")
        feeds["h0"] = rand(*state_shape)
        if op == "LSTM":
            names.append("c0")
            feeds["c0"] = rand(*state_shape)
    if peepholes:
        names += [""] * (7 - len(names)) + ["P"]
        inits["P"] = rand(dirs, 3 * hidden, scale=0.3)
    outputs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, names, outputs, hidden_size=hidden, direction=direction, layout=layout, **attrs)
    x_shape = (batch, steps, features) if layout else (steps, batch, features)
    inputs = {"x": x_shape, **{k: v.shape for k, v in feeds.items()}}
    model = make_model([node], inputs, outputs, inits, opset=14)
    return model, {"x": rand(*x_shape), **feeds}


CASES = {
    "lstm_forward": ("LSTM", {}),
    "lstm_reverse_no_bias": ("LSTM", dict(direction="reverse", bias=False)),
    "lstm_bidirectional_initial": ("LSTM", dict(direction="bidirectional", initial=True)),
    "lstm_peepholes": ("LSTM", dict(peepholes=True, initial=True)),
    "lstm_batch_first": ("LSTM", dict(layout=1, direction="bidirectional", initial=True)),
    "lstm_one_step": ("LSTM", dict(steps=1, batch=1, hidden=5)),
    "gru_forward": ("GRU", {}),
    "gru_linear_before_reset": ("GRU", dict(linear_before_reset=1, direction="bidirectional", initial=True)),
    "gru_reverse_batch_first": ("GRU", dict(direction="reverse", layout=1, linear_before_reset=1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recurrent_matches_onnxruntime(case):
    op, kw = CASES[case]
    model, feeds = _rnn(op, **kw)
    if kw.get("layout"):     # onnxruntime refuses batch-first recurrences: the spec's implementation decides
        assert_tflite_matches(model, feeds, atol=1e-5, reference="spec")
    else:
        assert_matches_ort(model, feeds, atol=1e-5)


def test_unhandled_variants_are_refused_naming_the_attribute():
    for attrs, words in ((dict(clip=1.0), "clip"), (dict(input_forget=1), "input_forget"),
                         (dict(activations=["Relu", "Tanh", "Tanh"]), "activations")):
        model, _ = _rnn("LSTM", **attrs)
        with pytest.raises(UnsupportedOpError, match=words):
            to_tflite(model)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_torch_recurrent_head_through_tflite(cell, tmp_path):
    """A CRNN-style head as torch exports it: conv features -> sequence -> 2-layer bidirectional RNN."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            rnn = nn.LSTM if cell == "LSTM" else nn.GRU
            self.rnn = rnn(6 * 4, 5, num_layers=2, bidirectional=True)
            self.fc = nn.Linear(10, 11)

        def forward(self, x):
            f = torch.relu(self.conv(x))                      # [N, 6, 4, W]
            n, c, h, w = f.shape
            seq = f.reshape(n, c * h, w).permute(2, 0, 1)     # [W, N, C*H]
            y, _ = self.rnn(seq)
            return self.fc(y).log_softmax(-1)                 # [W, N, classes]

    torch.manual_seed(0)
    path = tmp_path / "crnn.onnx"
    torch.onnx.export(Head().eval(), torch.randn(1, 1, 4, 9), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    model = onnx.load(str(path))
    assert any(n.op_type == cell for n in model.graph.node)
    _, ops = assert_tflite_matches(model, {"x": rand(1, 1, 4, 9)}, atol=1e-4, rtol=1e-4)
    assert cell not in " ".join(ops)                          # builtins only, unrolled
