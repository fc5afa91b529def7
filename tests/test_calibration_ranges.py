"""Range statistics of the calibrator on models edgenet writes itself (no TensorFlow): what each
activation's recorded range is, against the values LiteRT computes."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

from edgenet.converters import _flatbuffer
from edgenet.converters.calibration import RangeCalibrator, non_negative
from edgenet.converters.probe import with_outputs
from edgenet.converters.tflite_writer import native_tflite
from edgenet.config import CalibMethod
from edgenet.runtime import make_interpreter


def _model():
    """x -> Conv(bias +5) -> Relu (every value > 4) -> Conv -> y (no activation; positive on this data)."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.uniform(-0.1, 0.1, (4, 3, 3, 3)).astype(np.float32), "b1": np.full(4, 5.0, np.float32),
             "w2": rng.normal(0, 1, (2, 4, 1, 1)).astype(np.float32)}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 7])],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return native_tflite(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).model


def _values(model: bytes, data: np.ndarray) -> dict[str, np.ndarray]:
    """Every float activation of ``model`` on ``data``, by tensor name (LiteRT, one sample at a time)."""
    obj = _flatbuffer.read(model)
    tensors = obj.subgraphs[0].tensors
    targets = [i for i, t in enumerate(tensors) if t.type == 0 and obj.buffers[t.buffer].data is None]
    interp = make_interpreter(with_outputs(model, targets), 1)
    seen: dict[str, list] = {}
    for x in data:
        interp.set_tensor(interp.get_input_details()[0]["index"], x[None])
        interp.invoke()
        for i in targets:
            seen.setdefault(_flatbuffer.tensor_name(tensors[i]), []).append(interp.get_tensor(i).copy())
    return {k: np.stack(v) for k, v in seen.items()}


def test_minmax_ranges_are_what_the_values_span_from_zero_for_non_negative_ops():
    """minmax records each activation's min and max; a tensor whose op cannot write a negative value
    (the conv with its fused ReLU) starts at 0 whatever the data's own minimum (every value is > 4
    here), which is where the LiteRT Quantizer puts the int8 range's low end anyway."""
    model = _model()
    obj = _flatbuffer.read(model)
    graph = obj.subgraphs[0]
    relu_out = non_negative(obj)
    assert len(relu_out) == 1                       # the first conv (ReLU fused into it), not the second
    data = np.random.default_rng(0).uniform(-1, 1, (12, 9, 7, 3)).astype(np.float32)
    values = _values(model, data)
    ranges = RangeCalibrator([data], CalibMethod.MINMAX, batch_size=5, num_threads=2).ranges(model)
    assert ranges.keys() == values.keys()
    positive = _flatbuffer.tensor_name(graph.tensors[next(iter(relu_out))])
    assert values[positive].min() > 4.0 and ranges[positive] == (0.0, pytest.approx(values[positive].max()))
    for name, v in values.items():
        if name != positive:
            assert ranges[name] == (pytest.approx(v.min()), pytest.approx(v.max())), name
    assert values["y"].min() > 0 and ranges["y"][0] > 0     # positive here, but a conv without ReLU: its own min
