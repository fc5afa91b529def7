"""The `edgenet` command as a real process: what its fast exit must keep, and how TensorFlow is imported."""
import importlib.util
import json
import subprocess
import sys

import pytest

needs_convert = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "tensorflow", "onnx", "onnxruntime")),
    reason="the convert extra is not installed")


def _edgenet(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgenet", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@needs_convert
def test_convert_process_prints_all_of_its_json_and_exits_zero(tmp_path):
    out = tmp_path / "out"
    proc = _edgenet("convert", "--target", "rpi", "--int8", "--alpha", "0.25", "--resolution", "32",
                    "--calib-samples", "16", "--eval-samples", "8", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "INFO:" not in proc.stderr, proc.stderr              # no runtime chatter (LiteRT writes it to fd 2)
    report = json.loads(proc.stdout)            # the whole document reached stdout before the exit
    assert report == json.loads((out / "report.json").read_text())
    assert (out / "model_int8.tflite").stat().st_size > 0


@needs_convert
def test_convert_process_keeps_the_error_exit_code_after_loading_tensorflow(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf")
    proc = _edgenet("convert", str(bad), "--target", "rpi", "--out", str(tmp_path / "out"))
    assert proc.returncode not in (0, 70), proc.stderr   # a clear error, not an internal one
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgenet:")]
    assert len(lines) == 1 and "broken.onnx" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None,
                    reason="needs tensorflow with keras installed")
def test_tensorflow_is_imported_without_keras_and_keras_still_works():
    code = (
        "import os, sys\n"
        "from edgenet.converters.keras_tf import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
        "assert 'sklearn' not in sys.modules, 'scikit-learn was imported'\n"
        "assert 'TF_USE_LEGACY_KERAS' not in os.environ\n"
        "layer = tf.keras.layers.Dense(2)\n"       # resolved lazily, on first use
        "assert 'keras' in sys.modules\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


_NO_TENSORFLOW = '''
import sys
class _NoTensorFlow:
    """An environment with edgenet[convert] only: TensorFlow is not installed."""
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTensorFlow())
'''


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("torch", "onnx", "onnxruntime")),
                    reason="the convert extra is not installed")
def test_convert_needs_no_tensorflow_and_a_keras_source_names_the_keras_extra(tmp_path):
    """edgenet[convert] has no TensorFlow: a zoo model to int8, float16 and dynamic converts without it;
    a Keras source, which only TensorFlow reads, fails in one line naming the extra that brings it."""
    import os
    import zipfile

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "edgenet", "convert", "--alpha", "0.25", "--resolution", "32",
            "--calib-samples", "16", "--eval-samples", "8", "-q"]
    proc = subprocess.run([*args, "--precision", "float32,float16,dynamic,int8", "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert {"model_float.tflite", "model_float16.tflite", "model_dynamic.tflite", "model_int8.tflite"} <= \
        {p.name for p in (tmp_path / "a").iterdir()}
    keras_file = tmp_path / "model.keras"
    with zipfile.ZipFile(keras_file, "w") as archive:   # a .keras file is a zip archive
        archive.writestr("config.json", "{}")
    proc = subprocess.run([sys.executable, "-m", "edgenet", "convert", str(keras_file), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgenet:")]
    assert proc.returncode != 0 and len(lines) == 1 and "[keras]" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()
