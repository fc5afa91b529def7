"""The pieces behind the hostile-input guarantees, checked in-process where a fresh process adds
nothing: the ssh option allow-list, regular-file checks, model precision from tensors, the noise
verdict, the plot's labelled markers, the quick image-folder scan, and the state_dict diff."""
from __future__ import annotations

import os

import numpy as np
import pytest

from edgenet.benchmark.ssh import ALLOWED_OPTIONS, parse_ssh_option
from edgenet.errors import DataError, ModelError, UsageError
from edgenet.limits import check_float, check_int, regular_file


@pytest.mark.parametrize("given, expected", [
    ("IdentityFile=~/.ssh/pi", "IdentityFile=~/.ssh/pi"),
    ("identityfile ~/.ssh/pi", "IdentityFile=~/.ssh/pi"),
    ("  PORT = 2222 ", "Port=2222"),
    ("StrictHostKeyChecking=accept-new", "StrictHostKeyChecking=accept-new"),
    ("HostKeyAlgorithms=+ssh-ed25519,rsa-sha2-512", "HostKeyAlgorithms=+ssh-ed25519,rsa-sha2-512"),
    ("LogLevel=quiet", "LogLevel=quiet"),
])
def test_allowed_ssh_options_are_normalised(given, expected):
    assert parse_ssh_option(given) == expected


@pytest.mark.parametrize("given, needle", [
    ("PKCS11Provider=/x.so", "PKCS11Provider is not accepted"),
    ("securitykeyprovider /x.so", "securitykeyprovider is not accepted"),
    ("ControlMaster=auto", "ControlMaster is not accepted"),
    ("SetEnv=LD_PRELOAD=/x.so", "SetEnv is not accepted"),
    ("ProxyJump=evil", "ProxyJump is not accepted"),
    ("IdentityFile=%h/key", "a plain file path"),
    ("UserKnownHostsFile=${HOME}/kh", "a plain file path"),
    ("IdentityFile=-oProxyCommand=x", "a plain file path"),
    ("StrictHostKeyChecking=ask", "one of yes, no, accept-new, off"),
    ("BatchMode=no", "one of yes"),
    ("Port=65536", "an integer in [1, 65535]"),
    ("Ciphers=aes128-ctr;touch x", "comma-separated list"),
    ("-F/etc/passwd", "expected KEY=VALUE"),
    ("User=pi\nProxyCommand=x", "expected KEY=VALUE"),
])
def test_other_ssh_options_are_refused_naming_the_option(given, needle):
    with pytest.raises(UsageError) as info:
        parse_ssh_option(given)
    assert needle in str(info.value) and "\n" not in str(info.value)
    if "is not accepted" in needle:
        assert "allowed: " + ", ".join(ALLOWED_OPTIONS) in str(info.value)


def test_bounds_name_the_option_and_the_range():
    assert check_int("--n", 5, 1, 10) == 5 and check_int("--n", 3.0, 1, 10) == 3
    for bad in (0, 11, 2 ** 63, 2.5, "x", True):
        with pytest.raises(UsageError, match=r"--n must be .*\[1, 10\]"):
            check_int("--n", bad, 1, 10)
    assert check_float("--s", "0.5", 0, 1) == 0.5
    for bad in (float("nan"), float("inf"), -0.1, 1.5, "x"):
        with pytest.raises(UsageError, match=r"--s must be a finite number in \[0, 1\]"):
            check_float("--s", bad, 0, 1)
    with pytest.raises(UsageError, match=r"\(0, 1\]"):
        check_float("--s", 0, 0, 1, low_open=True)


def test_regular_file_refuses_everything_else_without_blocking(tmp_path):
    good = tmp_path / "m.tflite"
    good.write_bytes(b"x" * 10)
    assert regular_file(good, "model file", ModelError) == good
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "nowhere")
    cases = {fifo: "is a FIFO (named pipe)", "/dev/zero": "is a character device", tmp_path: "is a folder",
             loop: "symbolic link loop", broken: "is a broken symbolic link", tmp_path / "none": "no such model file"}
    for path, needle in cases.items():
        with pytest.raises(ModelError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            regular_file(path, "model file", ModelError)
    with pytest.raises(DataError, match="is 10 bytes, more than the 5 allowed"):
        regular_file(good, "labels", DataError, max_bytes=5)


def test_model_precision_comes_from_the_tensors(tiny_convert_out, tmp_path):
    tf = pytest.importorskip("tensorflow")
    from conftest import _tiny_tf_cnn
    from edgenet.converters.op_precision import model_precision
    from edgenet.config import Precision as ModelPrecision
    from edgenet.runtime import make_interpreter

    fn = _tiny_tf_cnn(tf)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    (tmp_path / "f16.tflite").write_bytes(conv.convert())
    found = {name: model_precision(path) for name, path in (
        ("float", tiny_convert_out / "model_float.tflite"), ("int8", tiny_convert_out / "model_int8.tflite"),
        ("f16", tmp_path / "f16.tflite"))}
    assert found == {"float": ModelPrecision.FLOAT32, "int8": ModelPrecision.INT8, "f16": ModelPrecision.FLOAT16}
    assert ModelPrecision.INT8.quantized and not ModelPrecision.FLOAT16.quantized


def _report(precision: str, times: list[float]):
    from edgenet.benchmark.models import TensorInfo
    from edgenet.benchmark.result import ModelReport
    from edgenet.benchmark.stats import LatencyStats

    info = TensorInfo((1, 4), "float32", None, None)
    return ModelReport(role="float" if precision.startswith("float") else "int8", precision=precision,
                       path=f"/m/{precision}.tflite", sha256="0" * 64, size_bytes=1, input=info, output=info,
                       delegated=True, load_ms=1, init_ms=1, first_inference_ms=1, rss_after_load_bytes=None,
                       warmup_ms=(1.0,), latency=LatencyStats.of(times), times_ms=tuple(times))


def test_noise_verdict():
    from edgenet.benchmark.stats import Speedup, noise_reasons

    steady = _report("float32", [1.0, 1.05, 1.1, 1.02, 1.2])
    jumpy = _report("int8", [1.0, 2.0, 2.1, 2.2, 1.9])
    assert noise_reasons([steady], None, 0.1, 1.2, cpus=2, threads=1) == []
    reasons = noise_reasons([steady, jumpy], Speedup(1, 1, 0.5, 1.0, 4), 1.5, None, cpus=2, threads=1)
    assert len(reasons) == 3
    assert reasons[0].startswith("int8: p50 is 2.00x the fastest run")
    assert "paired windows ranges 0.50x-1.00x" in reasons[1] and "load average 1.50 on 2" in reasons[2]
    # after the run our own threads count in the load: 2.4 with 2 of ours on 2 CPUs is not "busy"
    assert noise_reasons([steady], None, 0.2, 2.4, cpus=2, threads=2) == []
    assert "after the run" in noise_reasons([steady], None, 0.2, 3.5, cpus=2, threads=2)[0]


def test_plot_labels_every_marker():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from edgenet.benchmark.report import _label_markers

    fig, axes = plt.subplots()
    try:
        _label_markers(axes, 1, _report("float32", [1.0, 1.1, 1.2, 1.3, 5.0]), span=1.0)
        texts = [t.get_text() for t in axes.texts]
    finally:
        plt.close(fig)
    assert [t.split()[0] for t in texts] == ["min", "p50", "p90", "p99", "max"]
    assert texts[0] == "min 1.00 ms" and texts[-1] == "max 5.00 ms"


def test_scan_image_folder_is_quick_and_says_why(tmp_path):
    from PIL import Image

    from edgenet.data.folder import scan_image_folder

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0_bad.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "a" / "1.webp")
    scan = scan_image_folder(tmp_path)
    assert (scan.files, scan.class_names, scan.first_image.name, scan.first_size, scan.tried) == \
        (2, ("a",), "1.webp", (7, 5), 2)
    (tmp_path / "a" / "1.webp").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"none of the 2 images could be decoded \(e.g. 0_bad.png\)"):
        scan_image_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images found"):
        scan_image_folder(empty)


def test_state_dict_mismatch_lists_a_few_of_each_with_counts():
    torch = pytest.importorskip("torch")
    from edgenet.checkpoint import state_dict_mismatch

    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(6)])
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("bias")}
    state.update({f"extra{i}": torch.zeros(1) for i in range(2)})
    state["0.weight"] = torch.zeros(3, 2)
    text = state_dict_mismatch(model, state)
    assert text.startswith("6 missing keys (0.bias, 1.bias, 2.bias, 3.bias (+2 more)); "
                           "2 unexpected keys (extra0, extra1); 1 with a shape mismatch")
    assert state_dict_mismatch(model, model.state_dict()) is None
