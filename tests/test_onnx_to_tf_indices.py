"""Index tensors are int32 in the TFLite model (TFLite Micro's kernels take int32 positions only), and
an int8 model with a channel gather runs in the real TFLite Micro interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import assert_tflite_matches, grid_model, onnx, rand, tflite_bytes, to_tflite


X = (1, 3, 8, 6)


def _tensor_types(model: bytes) -> dict[str, np.dtype]:
    from ai_edge_litert.interpreter import Interpreter

    return {t["name"]: np.dtype(t["dtype"]) for t in Interpreter(model_content=model).get_tensor_details()}


def test_no_int64_index_tensors():
    i64 = np.int64
    examples = {
        "gather_channels": ("Gather", dict(axis=1), X, [np.array([2, 0, 1], i64)], "f"),
        "gather_scalar": ("Gather", dict(axis=3), X, [np.array(-1, i64)], "f"),
        "gather_2d": ("Gather", dict(axis=2), X, [np.array([[0, 7], [3, 3]], i64)], "f"),
        "gather_elements": ("GatherElements", dict(axis=2), X, [np.random.default_rng(0).integers(0, 8, (1, 3, 2, 6))],
                            "f"),
        "slice": ("Slice", {}, X, [np.array([1], i64), np.array([-1], i64), np.array([2], i64), np.array([2], i64)],
                  "f"),
        "pad": ("Pad", {}, X, [np.array([0, 0, 1, 0, 0, 0, 0, 2], i64)], "f"),
        "tile": ("Tile", {}, X, [np.array([1, 2, 1, 1], i64)], "f"),
        "expand": ("Expand", {}, (1, 3, 1, 1), [np.array([1, 3, 8, 6], i64)], "f"),
        "resize_nearest": ("Resize", dict(mode="nearest"), X, [np.array([1, 1, 0.6, 1.5], np.float32)], "f"),
        "reshape": ("Reshape", {}, X, [np.array([1, -1], i64)], "f"),
    }
    model, feeds = grid_model(examples, 13)
    graph = to_tflite(model)
    types = _tensor_types(tflite_bytes(graph))
    assert not [n for n, t in types.items() if t == np.int64]


@pytest.mark.slow
def test_channel_gather_case_runs_int8_in_tflite_micro(tmp_path):
    """Case 24 (x[:, [2, 1, 0]]): an evenly spaced gather is one strided slice; any other constant
    gather is a GATHER with int32 positions; both run in TFLM as int8."""
    pytest.importorskip("tflite_micro")
    from edgenet.converters.quantize import quantize_calibrated
    from edgenet.targets.tflm import run_tflm

    case = onnx.load("/work/shared/cases/24_channel_gather_bgr.onnx")
    shuffled = onnx.ModelProto.FromString(case.SerializeToString())
    for init in shuffled.graph.node:
        if init.op_type == "Constant":
            init.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array([2, 0, 1], np.int64)))
    calib = np.random.default_rng(0).standard_normal((16, 32, 32, 3)).astype(np.float32)
    for name, model, op in (("case", case, "STRIDED_SLICE"), ("shuffled", shuffled, "GATHER")):
        graph, ops = assert_tflite_matches(model, {"input": rand(1, 3, 32, 32)}, atol=1e-5)
        assert op in ops
        int8 = quantize_calibrated(graph.model, [calib]).model
        assert np.dtype(np.int64) not in _tensor_types(int8).values()
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(int8)
        run = run_tflm(path, samples=2)
        assert run.ok, run.error
        assert run.outputs[0].shape == (2, 1, 32, 32, 8) and run.outputs[0].dtype == np.int8
