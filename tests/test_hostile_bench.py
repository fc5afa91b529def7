"""Hostile and careless input to bench, info, train and targets: each case is the real command in a
fresh process (`python -m edgenet ...`) with its own TMPDIR, and must end with the expected exit
code, exactly one clear line on stderr (the error, or nothing else), no traceback, nothing left in
its TMPDIR, and never hang (each process has a timeout). Kinds (issue #13): unbounded numbers,
non-regular files, garbage accepted, misleading messages, output to '-', closed stdout, noise.
SSH cases are in test_hostile_ssh.py, checkpoints and training in test_hostile_checkpoint.py.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgenet.data.preprocess import Preprocess

REPO = Path(__file__).resolve().parents[1]
FAST = ["--warmup", "1", "--warmup-seconds", "0", "--runs", "3", "--min-seconds", "0", "--threads", "1", "-q"]
CAN_DROP_READ_RIGHTS = os.geteuid() != 0 or shutil.which("setpriv") is not None


def edgenet(tmp_path: Path, *args: str, stdout=None, drop_read_rights: bool = False, timeout: float = 60):
    """Run `python -m edgenet ARGS` in a fresh process with TMPDIR = tmp_path/tmp; (returncode, out, err)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    cmd = [sys.executable, "-m", "edgenet", *args]
    if drop_read_rights and os.geteuid() == 0:   # root reads anything: run without the capability that allows it
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    proc = subprocess.run(cmd, capture_output=stdout is None, stdout=stdout,
                          stderr=subprocess.PIPE if stdout is not None else None, timeout=timeout, env=env)
    out = proc.stdout if stdout is None else b""
    err = proc.stderr.decode(errors="replace")
    # onnxruntime's import itself writes $TMPDIR/.ses (its session id file); anything else is ours
    left = [p for p in tmp.iterdir() if p.name != ".ses"]
    assert not left, f"left behind in TMPDIR: {left}"
    return proc.returncode, out, err


def fails(tmp_path: Path, code: int, needle: str, *args: str, **kw) -> str:
    """The command exits with ``code`` and stderr is exactly one 'edgenet: ...' line containing ``needle``."""
    rc, _, err = edgenet(tmp_path, *args, **kw)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("edgenet: "), err
    assert needle in lines[0], lines[0]
    return lines[0]


# -- models -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    """float32 tiny CNN variants: dynamic H/W input, NaN output, a huge input, a dynamic-range twin."""
    tf = pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("odd_models")
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
    fc = tf.constant(rng.normal(0, 0.1, (32 * 32 * 3, 64)).astype(np.float32))   # > 1024 weights: quantizable

    def convert(fn, name, dynamic_range=False):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        if dynamic_range:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        (out / name).write_bytes(conv.convert())

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
    def dynamic(x):
        return tf.reduce_mean(tf.nn.conv2d(x, w, 1, "SAME"), axis=[1, 2])

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    def nan(x):
        return tf.math.sqrt(tf.reduce_mean(tf.nn.conv2d(x, w, 1, "SAME"), axis=[1, 2]) * 0.0 - 1.0)

    @tf.function(input_signature=[tf.TensorSpec([1, 8192, 8192, 3], tf.float32)])
    def huge(x):
        return tf.reduce_mean(x, axis=[1, 2])

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    def dense(x):
        return tf.matmul(tf.reshape(x, [1, -1]), fc)

    convert(dynamic, "dynamic_hw.tflite")
    convert(nan, "nan.tflite")
    convert(huge, "huge_input.tflite")
    convert(dense, "dense_float.tflite")
    convert(dense, "dense_dynamic.tflite", dynamic_range=True)
    return out


def _folder(tmp_path: Path, src: Path, **files: Path) -> Path:
    """A bench folder with the given files (name -> source) and src's preprocess.json and labels.txt."""
    folder = tmp_path / "target"
    folder.mkdir()
    for name in ("preprocess.json", "labels.txt"):
        shutil.copy(src / name, folder / name)
    for name, path in files.items():
        shutil.copy(path, folder / name.replace("_tflite", ".tflite"))
    return folder


def _images(folder: Path, n: int = 2, suffix: str = ".png", classes=("class_1", "class_4")) -> Path:
    from PIL import Image

    for cls in classes:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((32, 32, 3), 60 * i + 10, np.uint8)).save(folder / cls / f"{i}{suffix}")
    return folder


# -- kind 3: unbounded numbers --------------------------------------------------------------------
@pytest.mark.parametrize("option, value, needle", [
    ("--threads", "100000", "--threads must be in [1, 256] (got 100000)"),
    ("--threads", "2147483648", "--threads must be in [1, 256] (got 2147483648)"),
    ("--runs", str(10 ** 12), "--runs must be in [1, 10000000]"),
    ("--warmup", "-1", "--warmup must be in [0, 1000000]"),
    ("--window", "0", "--window must be in [1, 100000]"),
    ("--min-seconds", "inf", "--min-seconds must be a finite number in [0, 86400]"),
    ("--window-seconds", "nan", "--window-seconds must be a finite number in [0, 60]"),
    ("--warmup-seconds", "1e12", "--warmup-seconds must be a finite number in [0, 3600]"),
    ("--limit", "0", "--limit must be in [1, 1000000]"),
])
def test_bench_numbers_out_of_range(tiny_convert_out, tmp_path, option, value, needle):
    fails(tmp_path, 2, needle, "bench", str(tiny_convert_out), *FAST, option, value)


@pytest.mark.parametrize("args, needle", [
    (["info", "--resolution", "3200000"], "--resolution must be a multiple of 32 in [32, 2048], got 3200000"),
    (["info", "--num-classes", "1000000000"], "--num-classes must be in [1, 100000]"),
    (["info", "--alpha", "nan"], "--alpha must be in (0, 1]"),
    (["train", "--threads", "100000", "--out", "x.pt"], "--threads must be in [1, 256] (got 100000)"),
    (["train", "--epochs", "1000000000", "--out", "x.pt"], "--epochs must be in [1, 10000]"),
    (["train", "--batch-size", "0", "--out", "x.pt"], "--batch-size must be in [2, 65536]"),
    (["train", "--resolution", "1000000", "--out", "x.pt"], "--resolution must be a multiple of 32"),
    (["train", "--seed", "-3", "--out", "x.pt"], "--seed must be in [0, 4294967295]"),
    (["train", "--out", "-", "--json"], "--out - (the checkpoint to stdout) and --json both want stdout"),
])
def test_info_and_train_numbers_out_of_range(tmp_path, args, needle):
    fails(tmp_path, 2, needle, *args)
    assert not (tmp_path / "x.pt").exists()


def test_target_profile_with_absurd_threads(tmp_path):
    board = tmp_path / "board.toml"
    board.write_text('name = "b"\ndescription = "d"\ndevice = "x"\nnum_threads = 100000\n')
    fails(tmp_path, 1, "num_threads must be an integer in [1, 256] (got 100000)", "targets", str(board))


def test_preprocessing_that_does_not_fit_the_model_is_refused_before_decoding(tiny_convert_out, tmp_path):
    folder = _folder(tmp_path, tiny_convert_out, model_float_tflite=tiny_convert_out / "model_float.tflite")
    (folder / "preprocess.json").write_text(Preprocess(200, 200).to_json())
    data = _images(tmp_path / "data")
    fails(tmp_path, 1, "preprocessing makes 200x200x3 inputs but model_float.tflite takes 32x32x3",
          "bench", str(folder), "--data", str(data), *FAST)
    # a file asking for terabytes is refused where it is read, before anything is allocated
    spec = json.loads(Preprocess(32, 32).to_json())
    (folder / "preprocess.json").write_text(json.dumps({**spec, "height": 100000, "width": 100000}))
    fails(tmp_path, 1, "height must be an integer in 1..8192, got 100000", "bench", str(folder), "--data", str(data),
          *FAST)


def test_model_with_a_huge_input_is_refused_before_allocation(odd_models, tmp_path):
    fails(tmp_path, 1, "more than the 67,108,864 the benchmark accepts",
          "bench", str(odd_models / "huge_input.tflite"), *FAST)


# -- kind 3: files that are not regular files ------------------------------------------------------
@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "fifo"])
def test_bench_on_devices_and_fifos_does_not_hang(tiny_convert_out, tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "model.tflite")
        os.mkfifo(special)
    fails(tmp_path, 1, "not a regular file", "bench", special, *FAST, timeout=30)
    fails(tmp_path, 1, "not a regular file", "bench", str(tiny_convert_out / "model_int8.tflite"),
          "--float", special, *FAST, timeout=30)


def test_special_files_inside_a_bench_folder(tiny_convert_out, tmp_path):
    folder = _folder(tmp_path, tiny_convert_out, model_float_tflite=tiny_convert_out / "model_float.tflite")
    (folder / "model_int8.tflite").symlink_to("/dev/zero")
    fails(tmp_path, 1, "model_int8.tflite: model file is a character device", "bench", str(folder), *FAST)
    (folder / "model_int8.tflite").unlink()
    os.mkfifo(folder / "preprocess.json.fifo")
    (folder / "preprocess.json").unlink()
    (folder / "preprocess.json").symlink_to(folder / "preprocess.json.fifo")
    fails(tmp_path, 1, "preprocess.json: preprocess.json is a FIFO", "bench", str(folder), *FAST, timeout=30)


# -- kind 5: garbage accepted ----------------------------------------------------------------------
def test_float_model_named_int8_is_benched_and_labelled_as_float(tiny_convert_out, tmp_path):
    folder = _folder(tmp_path, tiny_convert_out, model_int8_tflite=tiny_convert_out / "model_float.tflite")
    rc, out, err = edgenet(tmp_path, "bench", str(folder), *FAST, "--json", "-")
    assert rc == 0, err
    d = json.loads(out)
    assert [(m["role"], m["precision"]) for m in d["models"]] == [("float", "float32")]
    assert d["speedup"] is None
    assert any("model_int8.tflite holds a float32 model, not an int8 one" in n for n in d["notes"])


def test_a_model_benched_against_itself_is_refused(tiny_convert_out, tmp_path):
    same = tiny_convert_out / "model_int8.tflite"
    fails(tmp_path, 2, "are the same model (sha256", "bench", str(same), "--float", str(same), *FAST)
    folder = _folder(tmp_path, tiny_convert_out, model_float_tflite=tiny_convert_out / "model_float.tflite",
                     model_int8_tflite=tiny_convert_out / "model_float.tflite")
    fails(tmp_path, 2, "are the same model", "bench", str(folder), *FAST)


def test_two_float_models_are_not_an_int8_comparison(tiny_convert_out, odd_models, tmp_path):
    fails(tmp_path, 2, "both models are float (model_float.tflite: float32, nan.tflite: float32)",
          "bench", str(odd_models / "nan.tflite"), "--float", str(tiny_convert_out / "model_float.tflite"), *FAST)


def test_dynamic_range_model_is_labelled_dynamic_range(odd_models, tmp_path):
    rc, out, err = edgenet(tmp_path, "bench", str(odd_models / "dense_dynamic.tflite"), "--float",
                           str(odd_models / "dense_float.tflite"), *FAST)
    assert rc == 0, err
    text = out.decode()
    assert "dynamic speedup over float32" in text and "int8 speedup" not in text


def test_nan_outputs_and_nan_data_are_failures(tiny_convert_out, odd_models, tmp_path):
    fails(tmp_path, 1, "output holds NaN or infinite values", "bench", str(odd_models / "nan.tflite"), *FAST)
    folder = _folder(tmp_path, tiny_convert_out, model_float_tflite=tiny_convert_out / "model_float.tflite",
                     model_int8_tflite=tiny_convert_out / "model_int8.tflite")
    spec = json.loads(Preprocess(32, 32).to_json())
    (folder / "preprocess.json").write_text(json.dumps({**spec, "std": [1e-45] * 3}))   # would overflow to inf
    data = _images(tmp_path / "data")
    fails(tmp_path, 1, "mean/std are on the 0..1 pixel scale", "bench", str(folder), "--data", str(data), *FAST)
    (folder / "preprocess.json").write_text(json.dumps({**spec, "std": [0, 0, 0]}))
    fails(tmp_path, 1, "std must be > 0 for every channel", "bench", str(folder), "--data", str(data), *FAST)


# -- kind 6: misleading messages -------------------------------------------------------------------
def test_symlink_loop_in_the_data_folder_is_named(tiny_convert_out, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data / "loose.png")
    (data / "again").symlink_to(data)
    fails(tmp_path, 1, f"{data / 'again'}: symbolic link loop", "bench", str(tiny_convert_out),
          "--data", str(data), *FAST)


@pytest.mark.skipif(not CAN_DROP_READ_RIGHTS, reason="running as root without setpriv")
def test_unreadable_images_say_permission_denied(tiny_convert_out, tmp_path):
    data = _images(tmp_path / "data")
    for png in data.rglob("*.png"):
        png.chmod(0)
    fails(tmp_path, 1, "permission denied reading all 4 image(s)", "bench", str(tiny_convert_out),
          "--data", str(data), *FAST, drop_read_rights=True)


def test_broken_or_odd_model_files_in_a_bench_folder_are_not_skipped(tiny_convert_out, tmp_path):
    folder = _folder(tmp_path, tiny_convert_out, model_float_tflite=tiny_convert_out / "model_float.tflite")
    (folder / "model_int8.tflite").symlink_to(tmp_path / "gone.tflite")
    fails(tmp_path, 1, "model_int8.tflite: model file is a broken symbolic link", "bench", str(folder), *FAST)
    (folder / "model_int8.tflite").unlink()
    (folder / "model_int8.tflite").mkdir()
    fails(tmp_path, 1, "model_int8.tflite: model file is a folder", "bench", str(folder), *FAST)
    (folder / "model_int8.tflite").rmdir()
    (folder / "model_int8.tflite").write_bytes(b"TFL3 but not really")
    fails(tmp_path, 1, "model_int8.tflite: not a valid .tflite model", "bench", str(folder), *FAST)


def test_dynamic_height_and_width_are_refused(odd_models, tmp_path):
    fails(tmp_path, 1, "has dynamic dimensions [1, -1, -1, 3]", "bench", str(odd_models / "dynamic_hw.tflite"), *FAST)


def test_dash_means_stdout_for_every_output_option(tiny_convert_out, tmp_path):
    os.chdir(tmp_path)
    rc, out, err = edgenet(tmp_path, "bench", str(tiny_convert_out), *FAST, "--md", "-")
    assert rc == 0, err
    assert out.decode().startswith("# edgenet bench") and not (tmp_path / "-").exists()
    pytest.importorskip("matplotlib")
    rc, out, err = edgenet(tmp_path, "bench", str(tiny_convert_out), *FAST, "--plot", "-", "--json",
                           str(tmp_path / "b.json"))
    assert rc == 0, err
    assert out.startswith(b"\x89PNG") and json.loads((tmp_path / "b.json").read_text())["schema"] == "edgenet.bench"
    fails(tmp_path, 2, "--json and --md both ask for stdout", "bench", str(tiny_convert_out), *FAST,
          "--json", "-", "--md", "-")


@pytest.mark.parametrize("args", [["models"], ["targets", "rpi"], ["bench", "{tiny}", *FAST],
                                  ["info", "--alpha", "0.25", "--resolution", "32"]])
def test_closed_stdout_is_one_line_not_a_traceback(tiny_convert_out, tmp_path, args):
    args = [a.replace("{tiny}", str(tiny_convert_out)) for a in args]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    line = shlex.join([sys.executable, "-m", "edgenet", *args]) + " >&-"      # stdout closed by the shell
    proc = subprocess.run(["bash", "-c", line], stderr=subprocess.PIPE, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines == ["edgenet: error: cannot write the output: stdout is closed (or not writable)"], proc.stderr


def test_webp_images_are_read(tiny_convert_out, tmp_path):
    data = _images(tmp_path / "data", n=3, suffix=".webp")
    rc, out, err = edgenet(tmp_path, "bench", str(tiny_convert_out), "--data", str(data), *FAST, "--json", "-")
    assert rc == 0, err
    d = json.loads(out)
    assert d["accuracy"]["samples"] == 6 and d["accuracy"]["labelled"]
