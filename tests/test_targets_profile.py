"""Target profiles: the built-in TOMLs, validation errors, and `edgenet targets`."""
from __future__ import annotations

import json

import pytest

from edgenet.cli import main
from edgenet.config import IOType, Precision
from edgenet.errors import TargetError, UsageError
from edgenet.targets import available_targets, load_target
from edgenet.targets.profile import Check, Packager, Runtime

BUILTIN = ("android", "coral", "cortex-m", "ethos-u55", "rpi")


def _write(tmp_path, text: str, name: str = "board.toml"):
    path = tmp_path / name
    path.write_text('name = "board"\ndescription = "my board"\ndevice = "some MCU"\n' + text)
    return path


def test_builtin_profiles_load_with_their_device_settings():
    assert set(BUILTIN) <= set(available_targets())
    cm = load_target("cortex-m")
    assert cm.runtime is Runtime.TFLM and cm.input_type is IOType.INT8 and cm.output_type is IOType.INT8
    assert cm.ram_bytes == 512 * 1024 and cm.flash_bytes == 2 * 1024 * 1024
    assert cm.ram_budget == cm.ram_bytes - cm.ram_reserved_bytes < cm.ram_bytes
    assert Check.TFLM in cm.checks and Packager.C_ARRAY in cm.packagers and Packager.OP_RESOLVER in cm.packagers
    android = load_target("android")
    # uint8 camera pixels in, uint8 scores out: what MediaPipe's ImageClassifier takes (tests/test_mediapipe.py)
    assert Precision.FLOAT16 in android.variants and android.input_type is android.output_type is IOType.UINT8
    coral = load_target("coral")
    assert coral.runtime is Runtime.EDGETPU and coral.input_type is IOType.UINT8 and Check.EDGETPU in coral.checks
    ethos = load_target("ethos-u55")
    assert ethos.accelerator == "ethos-u55-128" and not ethos.allow_cpu_ops and Check.VELA in ethos.checks
    rpi = load_target("rpi")
    assert rpi.num_threads == 4 and rpi.delegate.value == "xnnpack"
    # str enums still compare equal to the plain strings other code may use
    assert rpi.runtime == "litert" and "labels" in rpi.packagers


def test_to_dict_is_plain_json():
    d = load_target("ethos-u55").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["runtime"] == "ethos-u" and d["checks"] == ["io_types", "vela"]


def test_user_profile_by_path(tmp_path):
    path = _write(tmp_path, 'runtime = "tflm"\nram_bytes = 65536\nflash_bytes = 262144\nchecks = ["tflm"]\n')
    p = load_target(path)
    assert p.name == "board" and p.ram_budget == 65536 and p.source == str(path)


@pytest.mark.parametrize("text, expected", [
    ('precison = "int8"\n', "unknown key(s) precison (did you mean precision?)"),
    ('precision = "int4"\n', "precision = 'int4' is not one of: float32, float16, dynamic, int8, int16x8"),
    ('input_type = "int16"\n', "input_type = 'int16' is not one of"),
    ('runtime = "tflite"\n', "runtime = 'tflite' is not one of"),
    ('checks = ["tflm", "velaa"]\nram_bytes = 1000\n', "checks = 'velaa' is not one of"),
    ('ram_bytes = -5\n', "ram_bytes must be an integer in [1, 1099511627776] (got -5)"),
    ('ram_bytes = "512K"\n', "ram_bytes must be an integer in"),
    ('num_threads = 100000\n', "num_threads must be an integer in [1, 256] (got 100000)"),
    ('per_channel = "yes"\n', "per_channel must be true or false"),
    ('runtime = "tflm"\nprecision = "float32"\n', "precision = 'float32', but TensorFlow Lite Micro targets run "
                                                  "full-integer models"),
    ('runtime = "edgetpu"\nprecisions = ["int8", "float16"]\n', "precisions lists 'float16', but the Edge TPU runs "
                                                              "int8 models only"),
    ('precisions = ["int8"]\nvariants = ["float16"]\n', "variants lists 'float16', which is not among precisions (int8)"),
    ('precisions = ["float32"]\n', "precision = 'int8', which is not among precisions (float32)"),
    ('precisions = []\n', "precisions must list at least one precision"),
    ('precisions = "int8"\n', "precisions must be a list"),
    ('precisions = ["int4"]\n', "precisions = 'int4' is not one of"),
    ('checks = ["tflm"]\n', "the 'tflm' check needs ram_bytes"),
    ('checks = ["vela"]\naccelerator = "ethos-u55-12"\n', "did you mean ethos-u55-128"),
    ('ram_bytes = 1000\nram_reserved_bytes = 1000\n', "leaves nothing of ram_bytes"),
    ('name = "dup"\n', "invalid TOML"),
])
def test_bad_profile_gives_one_line_target_error(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(TargetError) as info:
        load_target(path)
    message = str(info.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_unknown_target_suggests_close_names():
    with pytest.raises(UsageError, match=r"did you mean cortex-m"):
        load_target("cortexm")
    with pytest.raises(UsageError, match=r"no such target profile file"):
        load_target("nowhere/board.toml")


def test_cli_lists_targets_as_table_and_json(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in BUILTIN:
        assert name in out
    assert "RAM 448 KiB / flash 1.75 MiB" in out  # cortex-m's model budget
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(BUILTIN) <= set(by_name)
    assert by_name["coral"]["input_type"] == "uint8" and by_name["cortex-m"]["ram_budget"] == 448 * 1024


def test_cli_shows_one_target_and_errors_in_one_line(capsys, tmp_path):
    assert main(["targets", "ethos-u55"]) == 0
    out = capsys.readouterr().out
    assert "ethos-u55-128" in out and "Shared_Sram" in out
    assert main(["targets", "corall"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgenet: error: unknown target 'corall'; did you mean coral") and "Traceback" not in err
    bad = _write(tmp_path, 'delegate = "cuda"\n')
    assert main(["targets", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "delegate = 'cuda' is not one of" in err


def test_each_builtin_target_lists_the_precisions_it_runs():
    everything = [p.value for p in Precision]
    expected = {"rpi": everything, "android": everything, "coral": ["int8"],
                "cortex-m": ["int8", "int16x8"], "ethos-u55": ["int8", "int16x8"]}
    for name, precisions in expected.items():
        profile = load_target(name)
        assert [p.value for p in profile.precisions] == precisions, name
        assert profile.precision in profile.precisions and set(profile.variants) <= set(profile.precisions)
        assert load_target(name).to_dict()["precisions"] == precisions


def test_a_profile_without_precisions_gets_what_its_runtime_runs(tmp_path):
    assert load_target(_write(tmp_path, "")).precisions == tuple(Precision)
    tflm = load_target(_write(tmp_path, 'runtime = "tflm"\n'))
    assert tflm.precisions == (Precision.INT8, Precision.INT16X8)
    assert load_target(_write(tmp_path, 'runtime = "edgetpu"\n')).precisions == (Precision.INT8,)
    own = load_target(_write(tmp_path, 'precisions = ["int8", "float32", "int8"]\n'))
    assert own.precisions == (Precision.INT8, Precision.FLOAT32)


@pytest.mark.parametrize("target, requested, message", [
    ("coral", "float16", "coral: cannot run float16 models: the Edge TPU runs int8 models only"),
    ("coral", [Precision.INT8, Precision.INT16X8], "coral: cannot run int16x8 models: the Edge TPU runs int8"),
    ("cortex-m", Precision.DYNAMIC, "cortex-m: cannot run dynamic models: TensorFlow Lite Micro targets run "
                                    "full-integer models (int8, int16x8)"),
    ("ethos-u55", "float32", "ethos-u55: cannot run float32 models: the Ethos-U NPU runs int8 and int16x8"),
])
def test_check_precisions_names_target_precision_and_reason(target, requested, message):
    from edgenet.targets.profile import check_precisions

    with pytest.raises(TargetError) as info:
        check_precisions(load_target(target), requested)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_check_precisions_accepts_what_the_target_runs_and_names_a_users_own_limit(tmp_path):
    from edgenet.targets.profile import check_precisions

    for name in BUILTIN:
        profile = load_target(name)
        check_precisions(profile, profile.precisions)       # no error
    check_precisions(load_target("cortex-m"), "int16x8")
    own = load_target(_write(tmp_path, 'precisions = ["int8", "float32"]\n'))
    with pytest.raises(TargetError, match=r"^board: cannot run float16 models: its profile lists only int8, float32$"):
        check_precisions(own, [Precision.FLOAT32, Precision.FLOAT16])
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        check_precisions(own, "int4")


def test_unfused_ops_name_what_the_writer_fuses(tmp_path):
    from edgenet.errors import TargetError
    from edgenet.targets import load_target

    assert load_target("coral").unfused_ops == ("HARD_SWISH",)
    assert load_target("rpi").unfused_ops == ()
    bad = tmp_path / "x.toml"
    bad.write_text('name = "x"\ndescription = "d"\ndevice = "d"\nunfused_ops = ["CONV_2D"]\n')
    with pytest.raises(TargetError, match="not an op edgenet's writer fuses"):
        load_target(bad)
    bad.write_text('name = "x"\ndescription = "d"\ndevice = "d"\nunfused_ops = "HARD_SWISH"\n')
    with pytest.raises(TargetError, match="must be a list"):
        load_target(bad)
