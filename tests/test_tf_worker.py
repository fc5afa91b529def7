"""TensorFlow's stages in a child process: the same results as in-process, errors carried back."""
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from edgenet.converters.quantize import quantize_calibrated  # noqa: E402
from edgenet.converters.tf_worker import InProcessTF, WorkerTF, _ArrayFiles, _unpack, tf_stages
from edgenet.config import Precision
from edgenet.errors import ConversionError, UnsupportedOpError


@pytest.fixture(scope="module")
def small_onnx():
    from edgenet.converters.export import export_onnx
    from edgenet.converters.passes import run_passes
    from edgenet.zoo import create_model

    torch.manual_seed(0)
    model, _ = run_passes(export_onnx(create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=10).eval(),
                                      (1, 3, 32, 32)))
    return model


def _stages(side, model, calib):
    info = side.onnx_to_tf(model)
    float_model = side.float_tflite()
    half = side.float_tflite(Precision.FLOAT16)
    int8 = quantize_calibrated(float_model, [calib])        # the quantizer runs in this process, not on the TF side
    layers = side.layer_sqnr(float_model, int8.model, calib[:2])
    return info, float_model, half, int8.model, layers


def test_worker_gives_what_in_process_gives(small_onnx):
    calib = np.random.default_rng(0).uniform(-1, 1, (40, 32, 32, 3)).astype(np.float32)  # 480 kB
    big = np.random.default_rng(1).uniform(-1, 1, (300, 32, 32, 3)).astype(np.float32)   # 3.7 MB: a file
    local = InProcessTF()
    worker = WorkerTF()
    try:
        ours, theirs = _stages(local, small_onnx, calib), _stages(worker, small_onnx, calib)
        info, float_model = theirs[0], theirs[1]
        assert info.inputs[0].tf_shape == (1, 32, 32, 3) and info.op_counts["Conv"] == 27
        assert ours == theirs                        # graph info, float32, float16, int8, per-layer SQNR
        int8 = ours[3]                               # arrays too large for the pipe go through a file
        assert worker.layer_sqnr(float_model, int8, big) == local.layer_sqnr(float_model, int8, big)
    finally:
        worker.close()
        local.close()
    assert worker._proc.poll() is not None           # the child is gone after close()


def test_worker_errors_come_back_as_themselves(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    worker = WorkerTF()
    try:
        with pytest.raises(UnsupportedOpError) as info:
            worker.onnx_to_tf(model)
        assert "Hardmax" in str(info.value) and "\n" not in str(info.value)
        assert any("TensorFlow worker" in note for note in getattr(info.value, "__notes__", []))
        worker._proc.kill()
        worker._proc.wait()
        with pytest.raises(ConversionError, match="worker process stopped during float_tflite"):
            worker.float_tflite()
    finally:
        worker.close()


def test_large_arrays_travel_as_files(tmp_path):
    small, large = np.arange(10, dtype=np.float32), np.ones((512, 1024), np.float32)
    packed = _ArrayFiles(tmp_path).pack(([small, large], {"x": large}))
    assert packed[0][0] is small and sorted(p.name for p in tmp_path.iterdir()) == ["1.npy", "2.npy"]
    (a, b), d = _unpack(packed)
    np.testing.assert_array_equal(b, large)
    np.testing.assert_array_equal(d["x"], large)


def test_stages_run_in_process_when_tensorflow_is_here(monkeypatch):
    import tensorflow  # noqa: F401  (imported: the in-process twin is the cheaper one)

    assert isinstance(tf_stages(), InProcessTF)
    assert isinstance(tf_stages(in_process=True), InProcessTF)
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setenv("EDGENET_TF_WORKER", "0")
    assert isinstance(tf_stages(), InProcessTF)


def test_array_files_avoid_a_full_dev_shm(monkeypatch):
    import collections

    import edgenet.converters.tf_worker as w

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(w, "_SHARED_DIR", "/dev/shm")
    monkeypatch.setattr(w.shutil, "disk_usage", lambda path: usage(64 << 20, 60 << 20, 4 << 20))
    assert w._array_dir(120 << 20) is None                     # a container's 64 MB /dev/shm: temp folder
    monkeypatch.setattr(w.shutil, "disk_usage", lambda path: usage(24 << 30, 0, 24 << 30))
    assert w._array_dir(120 << 20) == "/dev/shm"
    assert w._large_bytes(([np.zeros(10)], {"a": np.zeros((512, 1024), np.float32)})) == 2 << 20


def test_one_worker_serves_the_conversions_of_a_process(monkeypatch):
    import edgenet.converters.tf_worker as w

    monkeypatch.delitem(sys.modules, "tensorflow")      # as in a fresh `edgenet convert` process
    monkeypatch.delenv("EDGENET_TF_WORKER", raising=False)
    monkeypatch.setattr(w, "_shared", None)
    first = tf_stages()
    try:
        assert isinstance(first, WorkerTF) and first.alive()
        first.release()                                  # a conversion that went well: kept
        assert tf_stages() is first
        first.release(failed=True)                       # one that failed: stopped, a new one next time
        assert not first.alive()
        second = tf_stages()
        assert second is not first and second.alive()
    finally:
        w._shared.close()
