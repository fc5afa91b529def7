"""The small first-contact promises of the CLI: whole command help, --debug anywhere, one-line usage
errors, the target named once, sizes of small models readable."""
from __future__ import annotations

import pytest

from edgenet.cli import main
from edgenet.errors import ModelError


def test_group_help_gives_each_command_its_whole_first_sentence(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    commands = out.split("Commands:", 1)[1]
    assert "..." not in commands
    assert "Convert MODEL for a device: ONNX export, BN folding, channels-last TFLite float32 and int8." in commands


def test_debug_before_the_command_name_shows_the_exception(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError):
        main(["--debug", "convert", str(bad), "--out", str(tmp_path / "o")])


def test_usage_errors_are_one_line(capsys):
    assert main(["convert", "--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edgenet: error: No such option '--bogus'. Did you mean '--out'? (see 'edgenet convert --help')"]


@pytest.mark.slow
def test_convert_summary_names_the_target_once(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    assert main(["convert", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--num-classes", "2",
                 "--calib-samples", "8", "--eval-samples", "4", "--out", str(tmp_path / "o"), "-q"]) == 0
    out = capsys.readouterr().out
    target = next(line for line in out.splitlines() if line.startswith("target "))
    assert target.count("rpi") == 1
    assert "0.00 MB" not in out
    # the quick start's untrained weights: no verdict either way, and said so
    int8 = next(line for line in out.splitlines() if line.startswith("int8 vs float"))
    assert "verdict not judged (untrained weights)" in int8 and "FAIL" not in out


def test_sizes_of_small_models_are_in_kilobytes():
    from edgenet.cli.convert import _size
    assert [_size(n) for n in (2_345, 99_999, 100_000, 850_123)] == ["2.3 kB", "100.0 kB", "0.10 MB", "0.85 MB"]


def test_info_ops_lists_the_converters_op_types_and_refuses_other_options(capsys):
    assert main(["info", "--ops"]) == 0
    ops = capsys.readouterr().out.split()
    assert {"Conv", "LSTM", "GRU", "Resize"} <= set(ops) and len(ops) > 100
    assert main(["info", "--ops", "--alpha", "5"]) == 2
    assert "--alpha cannot go with it" in capsys.readouterr().err


def test_a_mistyped_command_gets_the_closest_name(capsys):
    assert main(["conver"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'convert'?" in err and err.count("\n") == 1
    assert main(["zzz"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and "commands: convert" in err


def test_what_cannot_be_converted_or_benched_says_what_is_accepted(tmp_path, capsys):
    (tmp_path / "x.tflite").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"")
    cases = [(["convert", str(tmp_path / "x.tflite")], "already a TFLite model"),
             (["convert", str(tmp_path / "folder")], "a folder; edgenet converts a zoo name"),
             (["bench", str(tmp_path / "m.onnx")], "convert it first"),
             (["bench", str(tmp_path / "folder"), "--precision", "int16"], "--precision 'int16': one of"),
             (["convert", "--precision", ""], "--precision: name at least one of")]
    for argv, said in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, (argv, err)


def _onnx_file(path, op="Relu", dims=("N", 3, "H", "W")):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_info_of_an_onnx_file_shows_io_dynamic_dims_opset_and_unsupported_ops(tmp_path, capsys):
    import json

    path = _onnx_file(tmp_path / "m.onnx")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "opset 17" in out and "x  FLOAT[N,3,H,W]   dynamic axes [0, 2, 3]" in out
    assert "every op type has an edgenet handler" in out and "--input-shape x:1,3,H,W" in out
    odd = _onnx_file(tmp_path / "odd.onnx", op="Det", dims=(2, 3))   # a real ONNX op edgenet has no handler for
    assert main(["info", str(odd), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["unsupported"] == ["Det"] and data["inputs"][0]["dynamic_axes"] == []
    assert main(["info", str(path), "--alpha", "0.5"]) == 2
    assert "options of a zoo model" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "none.onnx")]) != 0
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_prints_each_candidate_once_even_with_a_root_logging_handler(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO)\n"   # what a library or app may do
            "from edgenet.cli import main\n"
            f"sys.exit(main(['convert', 'mobilenet_v1', '--num-classes', '2', '--target', 'cortex-m', '--fit', "
            f"'--fit-alphas', '0.25', '--fit-resolutions', '32', '--out', {str(tmp_path / 'o')!r}, "
            "'--calib-samples', '16', '--eval-samples', '8']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stderr + done.stdout
    assert said.count("fits     alpha 0.25 @ 32 px") == 1 and "INFO:edgenet.fit" not in said


def test_the_convert_line_gives_top1_agreement_only_for_a_classifier_beside_another_worst_output():
    """A regression head's argmax is nothing its app reads: its line gives SQNR, not 'top-1 agreement'
    (was: 'SQNR 29.0 dB, worst value 1 at 28.2 dB, top-1 agreement 100.0%'); a classifier whose own
    figure is the line's gives it once; a classifier beside a worse output still shows its top-1."""
    from edgenet.cli.convert import _quantized_line

    def out(name, kind, sqnr, top1):
        return {"name": name, "kind": kind, "sqnr_db": sqnr, "sqnr_centered_db": sqnr, "worst_channel": None,
                "worst_channel_sqnr_db": None, "top1_agreement": top1, "failures": [], "passed": True,
                "status": "pass", "not_judged": None,
                "metrics": {"top1_agreement": top1} if kind == "classifier" else {}}

    def line(*outs):
        return _quantized_line({"precision": "int8", "outputs": list(outs), "passed": True, "status": "pass"},
                               {}, True)

    assert "top-1" not in line(out("reg", "generic", 29.0, 1.0))
    assert line(out("logits", "classifier", 30.0, 0.97)).count("top-1 agreement") == 1
    assert "top-1 agreement 97.0%" in line(out("logits", "classifier", 30.0, 0.97), out("aux", "generic", 12.0, None))


def test_info_on_a_tflite_file_lists_its_io_precision_and_ops(tiny_convert_out, capsys):
    import json

    assert main(["info", str(tiny_convert_out / "model_int8.tflite")]) == 0
    text = capsys.readouterr().out
    assert "int8 model" in text and "scale" in text and "zero point" in text and "CONV_2D x" in text
    assert main(["info", str(tiny_convert_out / "model_float.tflite"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["precision"] == "float32" and d["inputs"][0]["dtype"] == "float32" and d["ops"]
    assert main(["info", str(tiny_convert_out / "labels.txt").replace(".txt", ".tflite")]) == 1
    assert "no such model file" in capsys.readouterr().err
