"""`edgenet convert` for each target profile, through the real checks (TFLM, vela, Edge TPU table)."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

import edgenet
from edgenet.errors import TargetError
from edgenet.inference import TFLiteModel

SMALL = dict(alpha=0.25, resolution=64, num_classes=4, calib_samples=24, eval_samples=8)


def _mcu_available():
    try:
        import ethosu.vela  # noqa: F401
        import tflite_micro  # noqa: F401
    except ImportError:
        return False
    return True


needs_mcu = pytest.mark.skipif(not _mcu_available(), reason="needs the [mcu] extra (tflite-micro, ethos-u-vela)")


@pytest.mark.slow
def test_android_uint8_io_and_float16_variant(tmp_path):
    res = edgenet.convert("mobilenet_v1", target="android", int8=True, out=tmp_path / "a", **SMALL)
    names = {p.name for p in res.files}
    assert {"model_int8.tflite", "model_float16.tflite", "model_float.tflite", "preprocess.json"} <= names
    q = TFLiteModel(res.int8_path)
    # android profile: uint8 camera pixels in (scale 1/(255 std), zero point 255 mean), uint8 out
    assert q.input_dtype == np.uint8 and np.dtype(q.outputs[0]["dtype"]) == np.uint8
    scale, zero = q.input["quantization"]
    assert zero == 128 and scale == pytest.approx(2 / 255, rel=1e-6)
    f16 = (tmp_path / "a" / "model_float16.tflite").stat().st_size
    assert f16 < 0.6 * res.report.sizes.float_bytes
    from edgenet.targets.metadata import read_metadata

    for name in ("model_int8.tflite", "model_float16.tflite", "model_float.tflite"):   # metadata in every model
        md = read_metadata((tmp_path / "a" / name).read_bytes())
        assert md.name == res.report.model["name"] == "mobilenet_v1_0.25_64" and md.inputs[0].mean == (127.5,) * 3


@pytest.mark.slow
@pytest.mark.mcu
@needs_mcu
def test_cortex_m_artifacts_and_arena(tmp_path):
    res = edgenet.convert("mobilenet_v1", target="cortex-m", int8=True, out=tmp_path / "m", **SMALL)
    t = json.loads((tmp_path / "m" / "report.json").read_text())["target"]
    assert t["ok"] and 0 < t["arena_bytes"] <= t["ram_budget"]
    assert t["flash_bytes"] == (tmp_path / "m" / "model_int8.tflite").stat().st_size
    # the symbols' prefix: the model name (mobilenet_v1_0.25_64) made a C identifier
    cc = (tmp_path / "m" / "mobilenet_v1_0_25_64_model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_mobilenet_v1_0_25_64_model_data[]" in cc
    h = (tmp_path / "m" / "mobilenet_v1_0_25_64_model_data.h").read_text()
    assert "kMobilenetV102564TensorArenaSize" in h and "kMobilenetV102564InputZeroPoint" in h
    assert "fits" in res.report.target["summary"]


@pytest.mark.slow
@pytest.mark.mcu
@needs_mcu
def test_ethos_u55_all_on_npu(tmp_path):
    res = edgenet.convert("mobilenet_v1", target="ethos-u55", int8=True, out=tmp_path / "e", c_name="person_detect",
                          **SMALL)
    t = res.report.target
    assert t["cpu_ops"] == 0 and t["npu_ops"] >= 1 and t["estimated_ms"] > 0
    from edgenet.targets.metadata import read_metadata

    assert {"person_detect_model_data.cc", "person_detect_model_data.h", "person_detect_op_resolver.h"} <= set(
        t["artifacts"])
    h = (tmp_path / "e" / "person_detect_model_data.h").read_text()
    assert "kPersonDetectTensorArenaSize" in h and "from model_int8_vela.tflite" in h
    vela_md = read_metadata((tmp_path / "e" / "model_int8_vela.tflite").read_bytes())
    assert vela_md == read_metadata(res.int8_path.read_bytes())


@pytest.mark.slow
def test_coral_operator_check(tmp_path):
    res = edgenet.convert("mobilenet_v1", target="coral", int8=True, out=tmp_path / "c", **SMALL)
    t = res.report.target
    assert TFLiteModel(res.int8_path).input_dtype == np.uint8
    assert t["edgetpu_cpu_ops"] == 0 and t["edgetpu_mappable_ops"] >= 28
    assert "edgetpu_compiler" in (t["edgetpu_command"] or "")


@pytest.mark.slow
@pytest.mark.mcu
@needs_mcu
def test_fit_picks_largest_that_fits_and_nothing_written_when_none_fits(tmp_path):
    board = tmp_path / "tiny_board.toml"
    board.write_text(
        'name = "tiny-board"\ndescription = "test board"\ndevice = "MCU with 96 KiB RAM"\nruntime = "tflm"\n'
        'precision = "int8"\ninput_type = "int8"\noutput_type = "int8"\nnum_threads = 1\ndelegate = "none"\n'
        'ram_bytes = 98304\nflash_bytes = 1048576\npacker = []\n'.replace("packer = []\n", "")
        + 'checks = ["io_types", "tflm"]\n')
    res = edgenet.convert("mobilenet_v1", target=str(board), fit=True, int8=True, num_classes=4,
                          fit_alphas=(0.5, 0.25), fit_resolutions=(96, 64, 32), calib_samples=16,
                          eval_samples=4, out=tmp_path / "f")
    fit = res.report.fit
    assert fit["chosen"]["arena_bytes"] <= 98304
    assert any(c["status"] == "too_big" for c in fit["candidates"])
    chosen = (fit["chosen"]["alpha"], fit["chosen"]["resolution"])
    assert res.report.model["alpha"] == chosen[0] and res.report.model["resolution"] == chosen[1]
    # everything with more mult-adds than the pick was rejected (or not built because dominated)
    for c in fit["candidates"]:
        if c["mult_adds"] > fit["chosen"]["mult_adds"]:
            assert c["status"] in ("too_big", "dominated"), c

    board.write_text(board.read_text().replace("98304", "4096"))
    with pytest.raises(TargetError, match="no candidate fits"):
        edgenet.convert("mobilenet_v1", target=str(board), fit=True, int8=True, num_classes=4,
                        fit_alphas=(0.25,), fit_resolutions=(32,), calib_samples=8, eval_samples=4,
                        out=tmp_path / "g")
    assert not (tmp_path / "g").exists()
