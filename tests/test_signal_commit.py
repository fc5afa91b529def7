"""A signal at the output folder's commit: before it, the folder is rolled back and the command exits
130; after it (Ctrl-C while the summary prints), the command finishes with its files published and
exits 0 -- never 130 with every file in place."""
from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_RUN = '''
import os, signal, sys
import edgenet.cli._common as common
import edgenet.outdir as outdir
when = sys.argv[1]
if when == "before":          # the signal lands just before the CLI holds signals: rolled back
    outdir.before_commit.append(lambda: os.kill(os.getpid(), signal.SIGINT))
else:                          # the signal lands once the commit has begun: held until the end
    hold = common.hold_signals
    def held():
        hold()
        os.kill(os.getpid(), signal.SIGINT)
    common.hold_signals = held
from edgenet.cli import run
sys.argv = ["edgenet", *sys.argv[2:]]
run()
'''


def _model(path):
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("when, code", [("before", 130), ("after", 0)])
def test_a_signal_at_the_commit_rolls_back_or_waits(tmp_path, when, code):
    model = _model(tmp_path / "m.onnx")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _RUN, when, "convert", str(model), "--float", "--eval-samples", "4",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    if code:
        assert proc.stderr.strip().splitlines()[-1] == "edgenet: interrupted" and not out.exists()
    else:
        assert (out / "model_float.tflite").exists() and "wrote" in proc.stdout
