"""The ethos-u55 target: Arm vela compiles the model for the NPU; CPU fallbacks fail the check."""
from __future__ import annotations

import pytest

import _tiny_tflite as tiny
from edgenet.data.preprocess import Preprocess
from edgenet.errors import TargetError
from edgenet.targets import load_target
from edgenet.targets.c_array import ArenaEstimate
from edgenet.targets.checks import run_target
from edgenet.targets.metadata import add_metadata, associated_files, read_metadata
from edgenet.targets.tflite_graph import read_tflite
from edgenet.targets.vela import parse_stdout, run_vela

pytestmark = pytest.mark.mcu
pytest.importorskip("ethosu.vela")

VELA_STDOUT = """
Warning (supported operators) operator: SIN, ofm: 'Sin'
Reason: Unsupported opType

Network summary for with_sin
Total SRAM used                                 16.00 KiB
Total Off-chip Flash used                        3.17 KiB

CPU operators = 3 (7.3%)
NPU operators = 38 (92.7%)
"""


def test_parse_vela_summary_text():
    parsed = parse_stdout(VELA_STDOUT)
    assert parsed["cpu_ops"] == 3 and parsed["npu_ops"] == 38
    assert parsed["sram_bytes"] == 16 * 1024 and parsed["flash_bytes"] == round(3.17 * 1024)
    (fallback,) = parsed["cpu_fallbacks"]
    assert (fallback.op, fallback.tensor, fallback.reason) == ("SIN", "Sin", "Unsupported opType")


def test_mobilenet_like_runs_entirely_on_the_npu():
    out = run_vela(tiny.mobilenet_like(), "ethos-u55-128", system_config="Ethos_U55_High_End_Embedded",
                   memory_mode="Shared_Sram")
    r = out.report
    assert r.cpu_ops == 0 and r.npu_ops > 0 and r.cpu_fallbacks == ()
    assert r.sram_bytes > 0 and r.flash_bytes > 0 and r.estimated_ms > 0 and r.macs > 0
    assert r.model_ops == 6 and r.ok
    graph = read_tflite(out.optimized_model)
    assert graph.op_names() == ["CUSTOM:ethos-u"]  # the whole network became one NPU op
    assert r.model_bytes == len(out.optimized_model)


def test_ethos_u55_target_writes_vela_model_and_c_array(tmp_path):
    model = tmp_path / "model_int8.tflite"
    labels = tuple(f"c{i}" for i in range(10))
    pre = Preprocess(32, 32)
    model.write_bytes(add_metadata(tiny.mobilenet_like().read_bytes(), pre, labels, name="tiny net"))
    (tmp_path / "preprocess.json").write_text(pre.to_json())
    report = run_target(load_target("ethos-u55"), tmp_path, model, None, labels)
    assert report.ok and report.vela.cpu_ops == 0
    # the prefix comes from the model name in the metadata
    assert {"model_int8_vela.tflite", "vela_summary.csv", "tiny_net_model_data.cc", "tiny_net_model_data.h",
            "tiny_net_op_resolver.h"} <= set(report.artifacts)
    vela_model = (tmp_path / "model_int8_vela.tflite").read_bytes()
    # vela's model carries the source's metadata and labels.txt, and so does its C array
    assert read_metadata(vela_model) == read_metadata(model.read_bytes())
    assert associated_files(vela_model) == {"labels.txt": "".join(f"{n}\n" for n in labels).encode()}
    assert f"g_tiny_net_model_data_len = {len(vela_model)};" in (tmp_path / "tiny_net_model_data.cc").read_text()
    header = (tmp_path / "tiny_net_model_data.h").read_text()
    assert f"kTinyNetTensorArenaSize = {ArenaEstimate(report.vela.sram_bytes, 'vela').size};" in header
    inp = read_tflite(vela_model).input_tensors[0]
    assert inp.scales == read_tflite(model).input_tensors[0].scales
    assert f"kTinyNetInputZeroPoint = {inp.zero_points[0]};" in header and "kTinyNetLabelCount = 10;" in header
    assert "resolver.AddEthosU()" in (tmp_path / "tiny_net_op_resolver.h").read_text()
    d = report.to_dict()
    assert d["npu_ops"] == report.vela.npu_ops and d["cpu_ops"] == 0 and d["estimated_ms"] > 0
    assert d["flash_bytes"] == len(vela_model) and d["ram_bytes"] == report.vela.sram_bytes
    line = report.summary_line()
    assert "all 6 TFLite ops on the NPU" in line and f"vela's {report.vela.npu_ops} finer operators" in line


def test_cpu_fallback_fails_the_ethos_u55_target(tmp_path):
    with pytest.raises(TargetError) as info:
        run_target(load_target("ethos-u55"), tmp_path, tiny.with_op_in_the_middle("sin"), None, None)
    message = str(info.value)
    assert message.startswith("ethos-u55: 3 op(s) fall back to the CPU") and "SIN" in message
    assert "\n" not in message
    assert info.value.report.vela.cpu_ops == 3


def test_vela_error_is_one_line(tmp_path):
    with pytest.raises(TargetError, match=r"^vela failed on .*System_Config.Nope not found"):
        run_vela(tiny.mobilenet_like(), "ethos-u55-128", system_config="Nope", memory_mode="Shared_Sram")
