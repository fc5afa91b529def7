"""End to end: `edgenet convert` of a small MobileNetV1, its outputs and report, and bad input."""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

import edgenet
from edgenet.cli import main
from edgenet.inference import TFLiteModel, op_counts

SMALL = ["--alpha", "0.25", "--resolution", "96", "--num-classes", "10", "--calib-samples", "32",
         "--eval-samples", "16"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "out"
    assert main(["convert", "--target", "rpi", "--int8", "--out", str(out), "-q", *SMALL]) == 0
    return out


@pytest.mark.slow
def test_outputs_and_report(converted):
    names = {p.name for p in converted.iterdir()}
    assert {"model.onnx", "model_float.tflite", "model_int8.tflite", "report.json", "report.md",
            "preprocess.json"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".edgenet-manifest.json"], "no temp files left behind"
    r = json.loads((converted / "report.json").read_text())
    assert isinstance(r["bn_folded"], int)
    # the per-layer error as a Model Explorer overlay, keyed by the int8 model's op output tensors
    overlay = json.loads((converted / "model_int8.node_data.json").read_text())
    assert overlay["results"] == {layer["name"]: {"value": round(layer["sqnr_db"], 2)} for layer in r["layers"]
                                  if layer["sqnr_db"] is not None}
    from edgenet.runtime import make_interpreter
    tensors = {t["name"] for t in make_interpreter(converted / "model_int8.tflite").get_tensor_details()}
    assert overlay["results"] and set(overlay["results"]) <= tensors
    assert [t["value"] for t in overlay["thresholds"]] == sorted(t["value"] for t in overlay["thresholds"])
    assert [s["name"] for s in r["stages"]][:5] == ["load libraries", "export", "cleanup", "bn fold", "data"]
    assert all(s["seconds"] >= 0 for s in r["stages"])
    v = r["validation"]
    assert v["float_max_abs_err"] < 1e-4 and v["float_rel_err"] < 1e-3
    assert v["int8_top1_agreement"] >= 0.75 and v["int8_sqnr_db"] > 15
    assert r["sizes"]["int8_bytes"] < r["sizes"]["float_bytes"] / 2.5
    assert r["sizes"]["int8_bytes"] == (converted / "model_int8.tflite").stat().st_size
    assert r["ops"] == op_counts(converted / "model_int8.tflite")
    assert r["ops"]["CONV_2D"] == 14 and r["ops"]["DEPTHWISE_CONV_2D"] == 13
    assert "TRANSPOSE" not in r["ops"] and "TRANSPOSE" not in r["ops_float"]
    assert "DELEGATE" not in r["ops"]
    # the deployed models: NHWC input, int8 I/O for rpi, float model keeps float I/O
    q = TFLiteModel(converted / "model_int8.tflite")
    assert q.input_shape == (1, 96, 96, 3) and q.input_dtype == np.int8
    assert TFLiteModel(converted / "model_float.tflite").input_dtype == np.float32
    md = (converted / "report.md").read_text()
    assert "int8 vs float" in md and "| input input |" not in md and "| input | [1, 3, 96, 96]" in md


@pytest.mark.slow
def test_models_carry_the_serving_signature(converted):
    from ai_edge_litert.interpreter import Interpreter

    for name in ("model_float.tflite", "model_int8.tflite"):
        interp = Interpreter(model_path=str(converted / name))
        assert interp.get_signature_list() == {"serving_default": {"inputs": ["input"], "outputs": ["output_0"]}}
        runner = interp.get_signature_runner()
        (key, detail), = runner.get_output_details().items()
        assert detail["index"] == interp.get_output_details()[0]["index"]


@pytest.mark.slow
def test_conversion_is_deterministic(converted, tmp_path):
    again = tmp_path / "again"
    assert main(["convert", "--target", "rpi", "--int8", "--out", str(again), "-q", *SMALL]) == 0
    for name in ("model_float.tflite", "model_int8.tflite", "model.onnx"):
        assert (again / name).read_bytes() == (converted / name).read_bytes(), name


@pytest.mark.slow
def test_existing_out_refused_then_forced(converted, capsys):
    before = (converted / "model_int8.tflite").read_bytes()
    assert main(["convert", "--out", str(converted), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and err.count("\n") == 1
    assert (converted / "model_int8.tflite").read_bytes() == before


@pytest.mark.slow
def test_onnx_with_batchnorm_folds_and_uint8_io(tmp_path):
    """An ONNX file that still carries BatchNormalization (exported with TrainingMode.PRESERVE)."""
    import torch

    from edgenet.zoo import create_model

    m = create_model(alpha=0.25, resolution=64, num_classes=5)
    with torch.no_grad():  # non-trivial BN statistics
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
    path = tmp_path / "bn.onnx"
    torch.onnx.export(m.eval(), torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=13,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    import onnx

    assert any(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)
    res = edgenet.convert(str(path), int8=True, io_type="uint8", calib_samples=16, eval_samples=8, allow_degraded=True,
                          out=tmp_path / "out")
    assert res.report.bn_folded == 27
    assert res.report.bn_fold_max_abs_diff < 1e-4
    assert res.report.validation.float_max_abs_err < 1e-4
    assert TFLiteModel(res.int8_path).input_dtype == np.uint8


# -- bad input: one line on stderr, a non-zero exit, nothing written ---------------------------
def _one_line_error(capsys, argv, code, *needles):
    """Exactly one error line; anything else on stderr is a progress line ('[i/n] stage ... 0.12 s')."""
    import re

    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == code, err
    lines = err.splitlines()
    assert "Traceback" not in err, err
    assert len([ln for ln in lines if ln.startswith("edgenet: error:")]) == 1 and lines[-1].startswith("edgenet: error:"), err
    assert all(re.match(r"\[\d+/\d+\] .* \.\.\. (\d+\.\d+ s|failed)$", ln) for ln in lines[:-1]), err
    for n in needles:
        assert n in err, err
    return err


def test_bad_alpha_and_resolution(capsys, tmp_path):
    out = tmp_path / "o"
    _one_line_error(capsys, ["convert", "--alpha", "1.5", "--out", str(out)], 2, "--alpha")
    _one_line_error(capsys, ["convert", "--alpha", "0", "--out", str(out)], 2, "--alpha")
    _one_line_error(capsys, ["convert", "--resolution", "100", "--out", str(out)], 2, "multiple of 32")
    _one_line_error(capsys, ["convert", "--resolution", "16", "--out", str(out)], 2, "multiple of 32")
    assert not out.exists()


def test_unknown_target_suggests(capsys, tmp_path):
    _one_line_error(capsys, ["convert", "--target", "rpii", "--out", str(tmp_path / "o")], 2, "did you mean rpi")


def test_missing_and_corrupt_onnx(capsys, tmp_path):
    _one_line_error(capsys, ["convert", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "o")], 1,
                    "nope.onnx", "no such ONNX model file")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    _one_line_error(capsys, ["convert", str(bad), "--out", str(tmp_path / "o")], 1, "not a valid ONNX model")
    assert not (tmp_path / "o").exists()


def test_unsupported_op(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    node = helper.make_node("Det", ["x"], ["y"], name="det_node")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    _one_line_error(capsys, ["convert", str(path), "--float", "--out", str(tmp_path / "o")], 1,
                    "Det", "det_node", "edgenet info --ops")


def test_tflite_failure_is_explained():
    from edgenet.converters.keras_tf import explain_failure

    text = ("Could not translate MLIR to FlatBuffer.<stdin>:9:1: error: 'tf.Erf' op is neither a custom op nor a "
            "flex op\n<unknown>:0: error: failed while converting: 'main':\nTF Select ops: Erf\nDetails: ...")
    assert "no kernel for Erf" in explain_failure(text)
    assert explain_failure("x\nloc(foo): error: 'tf.Foo' op bad shape\n") == "'tf.Foo' op bad shape"


def test_calibration_folder_errors(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--alpha", "0.25", "--resolution", "32", "--num-classes", "2"]
    _one_line_error(capsys, ["convert", *args, "--calib", str(empty), "--out", str(tmp_path / "o")], 1, "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"img{i}.png").write_bytes(b"not a png")
    _one_line_error(capsys, ["convert", *args, "--calib", str(broken), "--out", str(tmp_path / "o")], 1,
                    "could be decoded")
    _one_line_error(capsys, ["convert", *args, "--calib", str(tmp_path / "missing"), "--out",
                             str(tmp_path / "o")], 1, "missing")
    assert not (tmp_path / "o").exists()


def test_checkpoint_errors(capsys, tmp_path):
    _one_line_error(capsys, ["convert", str(tmp_path / "gone.pt"), "--out", str(tmp_path / "o")], 1, "gone.pt")
    import torch

    from edgenet.zoo import create_model

    w = tmp_path / "w.pt"
    torch.save(create_model(alpha=0.5, resolution=32, num_classes=2).state_dict(), w)
    _one_line_error(capsys, ["convert", "--alpha", "0.25", "--resolution", "32", "--num-classes", "2",
                             "--weights", str(w), "--out", str(tmp_path / "o")], 1, "do not match")


def test_debug_shows_traceback(capsys, tmp_path):
    with pytest.raises(edgenet.EdgenetError):
        main(["convert", "--alpha", "3", "--out", str(tmp_path / "o"), "--debug"])


def test_report_md_says_not_judged_for_untrained_weights_as_the_console_does(converted):
    """The zoo model's weights are seeded random: its int8 row reads "not judged", never "pass"."""
    md = (converted / "report.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| int8 vs float |"))
    assert "**not judged**" in row and "**pass**" not in row
