"""The coral target: Edge TPU operator check, CPU fallback after the first unsupported op."""
from __future__ import annotations

import os
import stat

import _tiny_tflite as tiny
from edgenet.targets import load_target
from edgenet.targets.checks import run_target
from edgenet.targets.edgetpu import EDGETPU_OPS, analyze_edgetpu
from edgenet.targets.edgetpu_compiler import compiler_command, parse_compiler_output

COMPILER_LOG = """Edge TPU Compiler version 16.0.384591198
Input: model_int8.tflite
Output: model_int8_edgetpu.tflite

Operator                       Count      Status

CONV_2D                        2          Mapped to Edge TPU
DEPTHWISE_CONV_2D              1          Mapped to Edge TPU
DEQUANTIZE                     1          Operation is working on an unsupported data type
SIN                            1          Operation not supported
CONV_2D                        1          More than one subgraph is not supported
"""
COMPILER_STDOUT = """Edge TPU Compiler version 16.0.384591198

Model compiled successfully in 12 ms.

Input model: model_int8.tflite
Input size: 5.10KiB
Output model: model_int8_edgetpu.tflite
Output size: 30.50KiB
On-chip memory used for caching model parameters: 3.25KiB
On-chip memory remaining for caching model parameters: 7.97MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 9
Operation log: model_int8_edgetpu.log
"""


def test_mobilenet_like_maps_entirely_to_the_edge_tpu():
    analysis = analyze_edgetpu(tiny.mobilenet_like_uint8_io())
    assert analysis.first_unsupported is None
    assert analysis.cpu_ops == 0 and analysis.mappable_ops == 8  # uint8<->int8 QUANTIZE ops map too
    assert analysis.summary() == "all 8 of 8 ops map to the Edge TPU"


def test_unsupported_op_sends_it_and_everything_after_it_to_the_cpu():
    analysis = analyze_edgetpu(tiny.with_op_in_the_middle("sin"))
    names = [o.op for o in analysis.ops]
    sin = names.index("SIN")
    stop = analysis.first_unsupported
    assert stop is not None and stop <= sin
    assert all(o.on_tpu for o in analysis.ops[:stop])
    assert not any(o.on_tpu for o in analysis.ops[stop:])
    # supported ops after the break still run on the CPU, with the reason given
    late_conv = analysis.ops[names.index("CONV_2D", sin)]
    assert not late_conv.on_tpu and late_conv.reason.startswith("after ")
    assert analysis.mappable_ops == 2 and analysis.cpu_ops == len(names) - 2
    assert "SIN" not in EDGETPU_OPS and "not an Edge TPU operation" in analysis.ops[stop].reason


def test_float_tensors_are_not_mappable():
    analysis = analyze_edgetpu(tiny.with_op_in_the_middle("sin"))
    dequantize = next(o for o in analysis.ops if o.op == "DEQUANTIZE")
    assert not dequantize.on_tpu


def test_coral_target_reports_mapping_and_the_compiler_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(tiny.with_op_in_the_middle("sin").read_bytes())
    report = run_target(load_target("coral"), tmp_path, model, None, ("cat", "dog"))
    assert report.ok  # falling back is allowed on the coral profile; it is reported
    d = report.to_dict()
    assert d["edgetpu_mappable_ops"] == 2 and d["edgetpu_cpu_ops"] == 7
    assert d["edgetpu_command"] == "edgetpu_compiler --show_operations --out_dir . model_int8.tflite"
    assert "from op 2 (DEQUANTIZE" in report.summary_line()
    assert any("int8 -> int8, profile expects uint8 -> uint8" in n for n in report.notes)
    assert (tmp_path / "labels.txt").read_text() == "cat\ndog\n"


def test_compiler_log_is_parsed():
    result = parse_compiler_output(COMPILER_LOG, COMPILER_STDOUT)
    assert result.version == "16.0.384591198"
    assert result.mapped_ops == 3 and result.cpu_ops == 3
    assert result.subgraphs == 1 and result.total_ops == 9
    assert result.on_chip_bytes == round(3.25 * 1024) and result.off_chip_bytes == 0
    assert result.compiled_model == "model_int8_edgetpu.tflite"
    assert [r.op for r in result.rows if not r.mapped] == ["DEQUANTIZE", "SIN", "CONV_2D"]


def test_compiler_on_path_is_run_and_its_files_kept(tmp_path, monkeypatch):
    """A stand-in edgetpu_compiler (the real one is x86-64 Linux only and not installable here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "log.txt").write_text(COMPILER_LOG)
    (bin_dir / "stdout.txt").write_text(COMPILER_STDOUT)
    script = bin_dir / "edgetpu_compiler"
    script.write_text(
        "#!/bin/sh\n# args: --show_operations --out_dir DIR MODEL\n"
        f'cp "$4" "$3/model_int8_edgetpu.tflite"\ncp "{bin_dir}/log.txt" "$3/model_int8_edgetpu.log"\n'
        f'cat "{bin_dir}/stdout.txt"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    model = tiny.with_op_in_the_middle("sin")
    report = run_target(load_target("coral"), out, model, None, None)
    assert report.edgetpu_compiler is not None and report.edgetpu_compiler.mapped_ops == 3
    assert {"model_int8_edgetpu.tflite", "model_int8_edgetpu.log"} <= set(report.artifacts)
    assert (out / "model_int8_edgetpu.tflite").read_bytes() == model.read_bytes()
    assert "edgetpu_compiler: 3 mapped, 3 on the CPU" in report.summary_line()


def test_compiler_command_quotes_paths():
    assert compiler_command("my model.tflite", "out dir") == \
        "edgetpu_compiler --show_operations --out_dir 'out dir' 'my model.tflite'"


def test_hard_swish_stays_arithmetic_for_the_edge_tpu_and_is_one_op_elsewhere(tmp_path):
    """The Edge TPU has no HARD_SWISH: coral's int8 model keeps hard-swish as MUL / ADD / MUL and
    maps whole; rpi's float model has the one fused op."""
    import numpy as np
    import pytest

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    import edgenet
    from edgenet.converters.op_precision import op_precisions

    def op_types(model: bytes) -> list[str]:
        return [o.op for o in op_precisions(model)]

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.2, (4, 8, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["d"]),
             helper.make_node("GlobalAveragePool", ["d"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    path = tmp_path / "hs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    fast = dict(calib_samples=16, eval_samples=8, allow_degraded=True)
    coral = edgenet.convert(str(path), target="coral", out=tmp_path / "coral", **fast)
    ops = op_types((tmp_path / "coral" / "model_int8.tflite").read_bytes())
    assert "HARD_SWISH" not in ops and "MUL" in ops
    assert coral.report.target["failures"] == [] and "all" in str(coral.report.target).lower()
    edgenet.convert(str(path), target="rpi", int8=False, out=tmp_path / "rpi", calib_samples=16, eval_samples=8)
    assert op_types((tmp_path / "rpi" / "model_float.tflite").read_bytes()).count("HARD_SWISH") == 1


def test_a_clip_other_than_relu6_is_int8_and_maps_to_the_edge_tpu(tmp_path):
    """Hardtanh(0, 4) and Clip(-1, 3): no MINIMUM (the LiteRT Quantizer has no int8 one: it stayed
    float and coral refused the model), every op int8 and mapped."""
    import numpy as np
    import pytest

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    import edgenet
    from edgenet.converters.op_precision import op_precisions

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.float32(0), "lo1"), numpy_helper.from_array(np.float32(4), "hi1"),
             numpy_helper.from_array(np.float32(-1), "lo2"), numpy_helper.from_array(np.float32(3), "hi2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo1", "hi1"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["d"]),
             helper.make_node("Clip", ["d", "lo2", "hi2"], ["y"])]
    graph = helper.make_graph(nodes, "clips", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    path = tmp_path / "clips.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    r = edgenet.convert(str(path), target="coral", calib_samples=16, eval_samples=8, allow_degraded=True,
                        out=tmp_path / "coral")
    ops = op_precisions((tmp_path / "coral" / "model_int8.tflite").read_bytes())
    assert "MINIMUM" not in [o.op for o in ops] and r.report.target["failures"] == []
    assert "all" in str(r.report.target).lower()
