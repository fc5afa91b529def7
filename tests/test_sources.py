"""Model sources: zoo names, .onnx files (any input name/shape), `package.module:function` callables,
torch.export .pt2 programs, several outputs, and the one-line refusals (missing pieces, several inputs)."""
import itertools
import json
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgenet
from edgenet.converters.sources import SourceKind, check_source, load_source, source_kind
from edgenet.converters.user_models import load_callable
from edgenet.api import _options
from edgenet.cli import main
from edgenet.errors import ModelError, UsageError

_ids = itertools.count()

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class TwoOut(Net):
    def forward(self, x):
        features = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)), features


class TwoIn(Net):
    def forward(self, x, mask):
        return super().forward(x * mask)


def build():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


def two_outputs():
    return TwoOut()


def two_inputs():
    return TwoIn()


def not_a_model():
    return "resnet"


def fails():
    raise RuntimeError("no weights here")


threshold = 0.5
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module file written in a fresh working directory (not on sys.path): its import name."""
    name = f"user_models_{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NET))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def _opts(source, **kw):
    return _options(source, kw)


def test_source_kinds():
    cases = {"mobilenet_v1": SourceKind.ZOO, "model.onnx": SourceKind.ONNX, "dir/M.ONNX": SourceKind.ONNX,
             "digits.pt": SourceKind.CHECKPOINT, "w.ckpt": SourceKind.CHECKPOINT, "prog.pt2": SourceKind.EXPORTED_PROGRAM,
             "my_pkg.models:build_model": SourceKind.CALLABLE, "mod:Factory.create": SourceKind.CALLABLE,
             "not a:thing": SourceKind.ZOO}
    for source, kind in cases.items():
        assert source_kind(source) is kind, source


def test_callable_converts_non_square(user_module, tmp_path):
    pytest.importorskip("tensorflow")
    result = edgenet.convert(f"{user_module}:build", input_shape=(1, 3, 40, 56), calib_samples=8, eval_samples=4,
                             allow_degraded=True,  # random weights, 8 calibration images: int8 quality is not the point
                             layer_report=False, out=tmp_path / "o")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["model"]["source"] == f"{user_module}:build" and report["model"]["name"] == "build"
    assert report["model"]["input_shape"] == [1, 3, 40, 56] and report["model"]["tflite_input_shape"] == [1, 40, 56, 3]
    assert report["validation"]["float_rel_err"] <= 1e-4
    assert report["validation"]["int8_sqnr_db"] > 15 and result.int8_path is not None
    pre = json.loads((tmp_path / "o" / "preprocess.json").read_text())
    assert (pre["height"], pre["width"]) == (40, 56)


def test_callable_errors(user_module):
    shape = {"input_shape": (1, 3, 32, 32)}
    cases = [
        (f"{user_module}:build", {}, UsageError, "needs --input-shape N,C,H,W"),
        ("no_such_module_here:build", shape, UsageError, "no module named 'no_such_module_here' in the working"),
        (f"{user_module}:missing", shape, UsageError, f"{user_module} has no attribute 'missing'"),
        (f"{user_module}:threshold", shape, UsageError, "threshold is not callable"),
        (f"{user_module}:not_a_model", shape, ModelError, "returned an object of type str, not a torch.nn.Module"),
        (f"{user_module}:fails", shape, ModelError, r"calling fails\(\) failed: RuntimeError: no weights here"),
        (f"{user_module}:two_inputs", shape, ModelError, r"forward\(\) takes 2 inputs \(x, mask\)"),
        (f"{user_module}:build", {"input_shape": (1, 0, 32, 32)}, UsageError, "positive integer"),
        (f"{user_module}:build", {"input_shape": (1, 3, 32, 32, 2, 2)}, UsageError, "rank 1 to 5"),
    ]
    for source, kw, error, message in cases:
        with pytest.raises(error, match=message) as info:
            load_source(_opts(source, **kw))
        assert "\n" not in str(info.value), source


def test_callable_cli_errors_are_one_line(user_module, capsys, tmp_path):
    assert main(["convert", f"{user_module}:build", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"edgenet: error: {user_module}:build: a `module:function` model needs "
                                        "--input-shape N,C,H,W (e.g. --input-shape 1,3,224,224)"]
    assert main(["convert", f"{user_module}:missing", "--input-shape", "1,3,32,32", "--out", str(tmp_path / "o")]) == 2
    assert "has no attribute 'missing'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_input_shape_only_where_it_applies(tmp_path):
    with pytest.raises(UsageError, match=r"not to a zoo model \(mobilenet_v1\); zoo models take --resolution"):
        check_source(_opts("mobilenet_v1", input_shape=(1, 3, 64, 64)))
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "c.pt").write_bytes(b"")
    with pytest.raises(UsageError, match=r"not to a checkpoint \(c.pt\): the checkpoint records its input size"):
        check_source(_opts(str(tmp_path / "c.pt"), input_shape=(1, 3, 64, 64)))
    with pytest.raises(UsageError, match=r"--alpha, --resolution apply to zoo models, not to an .onnx model \(m.onnx\)"):
        check_source(_opts(str(tmp_path / "m.onnx"), alpha=0.5, resolution=64))
    with pytest.raises(UsageError, match=r"--keep-layout applies to .onnx models"):
        check_source(_opts("mobilenet_v1", keep_layout=["x"]))
    with pytest.raises(UsageError, match=r"--mean, --std: a checkpoint \(c.pt\) records the preprocessing"):
        check_source(_opts(str(tmp_path / "c.pt"), mean=[0.5], std=[0.5]))
    with pytest.raises(ModelError, match=r"gone\.pt2: no such torch.export program \(\.pt2\) file"):
        check_source(_opts(str(tmp_path / "gone.pt2")))
    with pytest.raises(UsageError, match="no width multiplier"):
        check_source(_opts("squeezenet1_1", alpha=0.5))


# -- torch.export programs ------------------------------------------------------------------
def _save_program(module, path, *inputs, **kw):
    torch.export.save(torch.export.export(module, inputs, **kw), str(path))
    return path


def test_exported_program_converts(user_module, tmp_path):
    pytest.importorskip("tensorflow")
    net = load_callable(f"{user_module}:build")
    path = _save_program(net, tmp_path / "net.pt2", torch.randn(1, 3, 40, 56))
    result = edgenet.convert(str(path), calib_samples=8, eval_samples=4, layer_report=False, allow_degraded=True,
                             out=tmp_path / "o")
    report = result.report
    assert report.model["input_shape"] == [1, 3, 40, 56] and report.model["name"] == "net"
    assert report.validation.float_rel_err <= 1e-4 and report.export_max_abs_err < 1e-5
    assert report.validation.int8_sqnr_db > 15


def test_exported_program_refusals(user_module, tmp_path):
    load_callable(f"{user_module}:build")  # imports the module from the working directory
    mod = sys.modules[user_module]
    x = torch.randn(1, 3, 32, 32)
    training = _save_program(mod.build().train(), tmp_path / "train.pt2", torch.randn(2, 3, 32, 32))
    two_out = _save_program(mod.two_outputs().eval(), tmp_path / "two_out.pt2", x)
    two_in = _save_program(mod.two_inputs().eval(), tmp_path / "two_in.pt2", x, torch.ones(1, 3, 32, 32))
    height = torch.export.Dim("height", min=16, max=128)
    dynamic = _save_program(mod.build().eval(), tmp_path / "dyn.pt2", x, dynamic_shapes={"x": {2: height}})
    static = _save_program(mod.build().eval(), tmp_path / "static.pt2", x)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip archive")
    cases = [
        (training, {}, ModelError, "exported in training mode"),
        (two_in, {}, ModelError, "takes 2 inputs"),
        (dynamic, {}, UsageError, "input shape is dynamic; give --input-shape"),
        (static, {"input_shape": (1, 3, 64, 64)}, UsageError, "exported for input 1,3,32,32, not --input-shape"),
        (junk, {}, ModelError, "not a torch.export program"),
    ]
    for path, kw, error, message in cases:
        with pytest.raises(error, match=message) as info:
            load_source(_opts(str(path), **kw))
        assert "\n" not in str(info.value), path
    assert len(load_source(_opts(str(two_out))).onnx.graph.output) == 2   # several outputs are converted
    # a dynamic dim takes the size given
    source = load_source(_opts(str(dynamic), input_shape=(1, 3, 48, 32), opset=17))
    assert source.input_shape == (1, 3, 48, 32) and source.export_max_abs_err < 1e-5


# -- ONNX files -----------------------------------------------------------------------------
def test_onnx_any_input_name_and_shape(user_module, tmp_path):
    pytest.importorskip("tensorflow")
    net = load_callable(f"{user_module}:build")
    path = tmp_path / "custom.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 40, 56),), str(path), dynamo=False, input_names=["image_bgr"],
                      output_names=["scores"], dynamic_axes={"image_bgr": {0: "batch"}})
    result = edgenet.convert(str(path), calib_samples=8, eval_samples=4, layer_report=False, allow_degraded=True,
                             out=tmp_path / "o")
    report = result.report
    assert report.model["inputs"][0]["name"] == "image_bgr" and report.model["input_shape"] == [1, 3, 40, 56]
    assert report.model["tflite_input_shape"] == [1, 40, 56, 3]
    assert report.validation.float_rel_err <= 1e-4 and report.validation.int8_sqnr_db > 15


def test_onnx_several_inputs_are_loaded_in_graph_order(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["b", "a"], ["y"])], "two_in",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in "ba"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "two_in.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    source = load_source(_opts(str(path)))
    assert [i.name for i in source.inputs] == ["b", "a"] and source.image_input is None
    assert source.preprocess is None     # images cannot feed two inputs: no preprocess.json


def test_several_outputs_are_converted_and_validated_each_in_order(user_module, tmp_path):
    """Logits and a feature map: both outputs validated, the TFLite models give them in the model's order."""
    pytest.importorskip("tensorflow")
    import onnx

    from edgenet.converters.validate import onnx_outputs
    from edgenet.inference import TFLiteModel

    result = edgenet.convert(f"{user_module}:two_outputs", input_shape=(1, 3, 32, 32), calib_samples=16,
                             allow_degraded=True,
                             eval_samples=8, out=tmp_path / "o")
    v = result.report.validation
    assert [o.name for o in v.outputs] == [n.name for n in onnx.load(str(tmp_path / "o" / "model.onnx")).graph.output]
    assert len(v.outputs) == 2 and all(o.float_rel_err < 1e-4 and o.int8_sqnr_db > 15 for o in v.outputs)
    assert v.float_max_abs_err == max(o.float_max_abs_err for o in v.outputs)
    assert v.int8_sqnr_db == min(o.int8_sqnr_db for o in v.outputs)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    from edgenet.converters.model_inputs import ModelInput

    spec = result.report.model["inputs"][0]
    ref = onnx_outputs(onnx.load(str(tmp_path / "o" / "model.onnx")), [x],
                       [ModelInput(spec["name"], tuple(spec["shape"]), spec["image"])])
    for path in (result.float_path, result.int8_path):
        logits, features = TFLiteModel(path).predict_all(x)
        assert logits.shape == (3, 4) and features.shape == (3, 16, 16, 8)   # feature map channels-last
        atol = 0.15 if path == result.int8_path else 1e-4
        np.testing.assert_allclose(features, ref[1].transpose(0, 2, 3, 1), atol=atol)
        np.testing.assert_allclose(logits, ref[0], atol=atol)
    report_md = (tmp_path / "o" / "report.md").read_text()
    assert "## Outputs" in report_md

    # a runtime's subgraph may list outputs in another order: the signature still gives the model's
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    obj = fbu.read_model(str(result.float_path))
    obj.subgraphs[0].outputs = obj.subgraphs[0].outputs[::-1]
    swapped = bytes(fbu.convert_object_to_bytearray(obj))
    logits, features = TFLiteModel(swapped).predict_all(x)
    assert logits.shape == (3, 4) and features.shape == (3, 16, 16, 8)