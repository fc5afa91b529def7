"""A kernel that stops on the data (an integer division by 0) is one line naming the example, not an
internal error; and the target's own run does not trip on the zeros it used to feed."""
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper


def _integer_division(path):
    """y = float(int64(a) / int64(b)): the divisor comes from the input."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["a"], ["ai"], to=TensorProto.INT64),
         helper.make_node("Cast", ["b"], ["bi"], to=TensorProto.INT64),
         helper.make_node("Div", ["ai", "bi"], ["q"]),
         helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 7]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _convert(tmp_path, divisors):
    model, data = tmp_path / "div.onnx", tmp_path / "data.npz"
    _integer_division(model)
    rng = np.random.default_rng(0)
    np.savez(data, a=rng.integers(-50, 50, (12, 1, 7)).astype(np.float32), b=divisors.astype(np.float32))
    return subprocess.run([sys.executable, "-m", "edgenet", "convert", str(model), "--float", "--target", "rpi",
                           "--calib", str(data), "--out", str(tmp_path / "out")], capture_output=True, text=True)


def test_division_by_zero_in_the_data_is_one_line_naming_the_example(tmp_path):
    divisors = np.random.default_rng(1).integers(1, 9, (12, 1, 7))
    divisors[:, 0, 3] = 0          # in every example: whichever the held-out ones are
    run = _convert(tmp_path, divisors)
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert "Traceback" not in run.stderr and "internal error" not in last
    assert "could not run the model on example 0" in last and "Division by 0; Node number" in last
    assert not (tmp_path / "out").exists()


def test_target_check_runs_the_model_on_a_held_out_example_when_zeros_stop_it(tmp_path):
    """rpi's check ran every input as zeros: a divisor taken from the input made it refuse a model
    that validation had just run on every example."""
    run = _convert(tmp_path, np.random.default_rng(1).integers(1, 9, (12, 1, 7)))
    assert run.returncode == 0, run.stderr
    assert "target rpi: runs in LiteRT" in run.stdout + run.stderr
