"""The balanced model's int8 against the plain one's when it fails (converters/balance_check.py):
balancing chooses its gains by a proxy (per-channel rounding error), not by the task; where its int8
model fails the verdict, the plain int8 model is judged too and kept when the task prefers it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("litert_quantizer")

import edgenet  # noqa: E402
import edgenet.converters.hswish_balance as hswish_balance  # noqa: E402
from test_hswish_balance import _calib, _model  # noqa: E402


def _convert(tmp_path, min_sqnr_db: float):
    """The hard-swish block of test_hswish_balance on an rpi profile whose SQNR thresholds are
    ``min_sqnr_db`` (and 1 dB a channel)."""
    onnx.save(_model(), str(tmp_path / "block.onnx"))
    np.save(tmp_path / "x.npy", _calib(48)[0])
    text = (Path(edgenet.__file__).resolve().parents[1] / "targets" / "rpi.toml").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("name")]
    profile = tmp_path / "board.toml"
    profile.write_text(f'name = "board"\nmin_sqnr_db = {min_sqnr_db}\nmin_channel_sqnr_db = 1.0\n'
                       + "\n".join(lines) + "\n")
    r = edgenet.convert(str(tmp_path / "block.onnx"), int8=True, calib=str(tmp_path / "x.npy"), out=tmp_path / "o",
                        calib_samples=32, eval_samples=16, target=str(profile), allow_degraded=True)
    return r, r.report.to_dict()


def test_balancing_that_damages_int8_is_undone_for_the_plain_model(tmp_path, monkeypatch):
    """Gains that blow one channel up 64x (the real rewrite, a bad choice of gains): the balanced int8
    model loses the output (-0.6 dB here), the plain one keeps it; the plain one is written."""
    def bad_gains(lo, hi, cap=None):
        s = np.ones(len(lo))
        s[int(np.argmax(hi))] = 64.0
        return s, 99.0

    monkeypatch.setattr(hswish_balance, "widened_gains", bad_gains)
    r, d = _convert(tmp_path, 5.0)
    assert any(n.startswith("activation balancing undone: its int8 model failed") for n in d["notes"])
    assert d["validation"]["quantized"][0]["passed"]
    assert "int8 without balancing" in [s["name"] for s in d["stages"]]
    from edgenet.targets.tflite_graph import read_tflite

    names = {t.name for t in read_tflite(r.int8_path.read_bytes()).tensors}
    assert not any(hswish_balance.MARK in n for n in names)      # the plain model's int8: no balancing ops


def test_balancing_is_kept_when_the_plain_model_fails_too(tmp_path):
    r, d = _convert(tmp_path, 40.0)    # neither model keeps 40 dB
    assert any(n.startswith("activation balancing kept: the int8 model without it fails too") for n in d["notes"])
    from edgenet.targets.tflite_graph import read_tflite

    names = {t.name for t in read_tflite(r.int8_path.read_bytes()).tensors}
    assert any(hswish_balance.MARK in n for n in names)
