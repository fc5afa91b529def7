"""edgenet[onnx]: a user's .onnx file converts with no torch (and no TensorFlow) installed; a zoo
model then asks for the extra that brings torch, in one line."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "litert_quantizer")),
                                reason="the onnx extra is not installed")

_HIDDEN = '''
import sys
class _NotInstalled:
    """An environment with edgenet[onnx] only: torch, TensorFlow and TFLite Micro are not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "tensorflow", "torchvision", "tflite_micro"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NotInstalled())
'''


def _conv_net(path):
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 21, 19])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _edgenet(tmp_path, *args):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_HIDDEN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "edgenet", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_onnx_file_converts_to_int8_without_torch_and_zoo_names_the_convert_extra(tmp_path):
    model = _conv_net(tmp_path / "net.onnx")
    proc = _edgenet(tmp_path, "convert", str(model), "--int8", "--calib-samples", "16", "--eval-samples", "8",
                    "-q", "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"model_float.tflite", "model_int8.tflite"} <= {p.name for p in (tmp_path / "a").iterdir()}
    proc = _edgenet(tmp_path, "convert", "--alpha", "0.25", "--resolution", "32", "-q", "--out", str(tmp_path / "b"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgenet:")]
    assert proc.returncode != 0 and len(lines) == 1 and "torch" in lines[0] and "[convert]" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "b").exists()


def test_a_target_whose_check_needs_a_missing_package_says_so_before_converting(tmp_path):
    model = _conv_net(tmp_path / "net.onnx")
    proc = _edgenet(tmp_path, "convert", str(model), "--target", "cortex-m", "--out", str(tmp_path / "a"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgenet:")]
    assert proc.returncode != 0 and len(lines) == 1 and "tflite_micro" in lines[0] and "[mcu]" in lines[0], proc.stderr
    assert not any(ln.startswith("[") for ln in proc.stderr.splitlines())   # no stage ran
