"""A real benchmark of the small converted models (LiteRT), the reports, and the error cases."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgenet.benchmark import BenchResult, bench
from edgenet.benchmark import report as bench_report
from edgenet.cli import main
from edgenet.data.preprocess import ColorMode, Preprocess
from edgenet.errors import DataError, ModelError, TargetError, UsageError

REPO = Path(__file__).resolve().parents[1]
FAST = dict(warmup=2, warmup_seconds=0.0, runs=12, min_seconds=0.05, threads=1)
FAST_CLI = ["--warmup", "2", "--warmup-seconds", "0", "--runs", "12", "--min-seconds", "0.05", "--threads", "1"]


@pytest.fixture(scope="module")
def result(tiny_convert_out) -> BenchResult:
    return bench(tiny_convert_out, **FAST)


def _copy(folder: Path, dest: Path, *names: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(folder / name, dest / name)
    return dest


def _write_images(folder: Path, count: int, mode: str = "RGB", size: int = 40) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(count):
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(folder / f"img_{i}.png")


# -- a real benchmark ---------------------------------------------------------------------------
def test_bench_of_a_convert_folder(result, tiny_convert_out):
    assert [m.role for m in result.models] == ["float", "int8"]
    for m in result.models:
        path = tiny_convert_out / f"model_{m.role}.tflite"
        assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert m.size_bytes == path.stat().st_size
        assert m.input.shape == (1, 32, 32, 3) and m.output.shape == (1, 10)
        assert m.load_ms > 0 and m.init_ms > 0 and m.first_inference_ms > 0
        assert len(m.warmup_ms) >= 2
        assert m.latency.runs == len(m.times_ms) >= 12
        assert sum(m.times_ms) >= 50.0                       # min_seconds=0.05
        assert m.latency.min_ms <= m.latency.p50_ms <= m.latency.p90_ms <= m.latency.p99_ms <= m.latency.max_ms
        assert m.delegated                                   # XNNPACK took the graph
    f, q = result.model("float"), result.model("int8")
    assert f.input.dtype == "float32" and f.input.scale is None
    assert q.input.dtype == "int8" and q.input.scale > 0 and q.output.scale > 0
    assert result.speedup is not None
    assert result.speedup.p50 == pytest.approx(f.latency.p50_ms / q.latency.p50_ms)
    assert result.speedup.window_min <= result.speedup.window_max
    assert {w.role for w in result.windows} == {"float", "int8"}
    for role in ("float", "int8"):
        assert sum(w.runs for w in result.windows if w.role == role) == result.model(role).latency.runs
    env = result.environment
    assert env.runtime == "ai-edge-litert" and env.runtime_version
    assert env.cpu_cores >= 1 and env.peak_rss_bytes > 10_000_000
    assert result.settings.threads == 1 and result.settings.delegate.label == "xnnpack"
    assert result.accuracy is None


def test_edgenet_bench_is_callable_from_the_top_level_package(tiny_convert_out):
    import edgenet.benchmark.report  # noqa: F401  (binds the package as edgenet.bench first)

    r = edgenet.bench(tiny_convert_out / "model_int8.tflite", warmup=1, warmup_seconds=0, runs=3, min_seconds=0)
    assert [m.role for m in r.models] == ["int8"] and r.speedup is None


def test_accuracy_on_arrays_labelled_by_the_float_model(tiny_convert_out):
    x = np.random.default_rng(3).uniform(-1, 1, (40, 32, 32, 3)).astype(np.float32)
    from edgenet.runtime import make_interpreter

    interp = make_interpreter(tiny_convert_out / "model_float.tflite")
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    labels = []
    for sample in x:
        interp.set_tensor(d_in["index"], sample[None])
        interp.invoke()
        labels.append(int(np.argmax(interp.get_tensor(d_out["index"]))))
    r = bench(tiny_convert_out, data=(x, np.array(labels)), **FAST)
    acc = r.accuracy
    assert acc.samples == 40 and acc.labelled and acc.data == "array"
    assert acc.models["float"].top1 == 1.0                 # labels are the float model's own answers
    assert acc.models["int8"].top1 == pytest.approx(acc.agreement)
    assert acc.agreement > 0.6 and acc.sqnr_db > 10
    assert acc.models["float"].top5 == 1.0


def test_accuracy_on_a_folder_maps_class_names_to_labels(tiny_convert_out, tmp_path):
    data = tmp_path / "data"
    _write_images(data / "class_7", 3)
    _write_images(data / "class_2", 2)
    r = bench(tiny_convert_out, data=data, **FAST)
    assert r.accuracy.samples == 5 and r.accuracy.labelled
    assert r.preprocess == str(tiny_convert_out / "preprocess.json")
    assert r.labels == str(tiny_convert_out / "labels.txt")
    assert 0 <= r.accuracy.models["int8"].top1 <= 1 and r.accuracy.models["float"].top5 is not None


def test_unlabelled_folder_gives_agreement_and_sqnr(tiny_convert_out, tmp_path):
    _write_images(tmp_path / "flat", 4)
    r = bench(tiny_convert_out, data=tmp_path / "flat", **FAST)
    acc = r.accuracy
    assert not acc.labelled and acc.models["float"].top1 is None
    assert acc.agreement is not None and acc.sqnr_db is not None and acc.max_abs_diff >= 0


def test_single_float_file_and_delegate_none(tiny_convert_out):
    r = bench(tiny_convert_out / "model_float.tflite", delegate="none", **FAST)
    assert [m.role for m in r.models] == ["float"] and r.speedup is None
    assert not r.models[0].delegated and r.settings.delegate.label == "none"


def test_int8_file_with_float_option(tiny_convert_out, tmp_path):
    a = _copy(tiny_convert_out, tmp_path / "a", "model_int8.tflite")
    b = _copy(tiny_convert_out, tmp_path / "b", "model_float.tflite")
    r = bench(a / "model_int8.tflite", float_model=b / "model_float.tflite", **FAST)
    assert [m.role for m in r.models] == ["float", "int8"] and r.speedup is not None


# -- reports ------------------------------------------------------------------------------------
def test_table_and_markdown_show_the_numbers(result):
    table = bench_report.format_table(result)
    assert "ai-edge-litert" in table and "int8 speedup over float" in table
    assert bench_report.fmt_ms(result.model("int8").latency.p50_ms) in table
    md = bench_report.to_markdown(result)
    assert "| p99 |" in md and result.model("float").sha256 in md
    assert md.count("\n|---|") == 2                         # the latency table and the sha256 table


def test_the_summary_gives_an_argmax_agreement_only_where_the_argmax_is_read(result):
    """An embedding's (or a regression's) argmax is nothing its app reads: no 'top-1 agreement' beside
    its cosine; a classifier's all-examples figure is shown once, and only where it differs from its
    verdict's (decided examples)."""
    import dataclasses

    from edgenet.benchmark.accuracy import AccuracyReport

    acc = AccuracyReport("array", 40, False, {}, None, None, None, 0.0)

    def line(quality, agreement):
        r = dataclasses.replace(result, accuracy=dataclasses.replace(acc, quality=quality, agreement=agreement))
        return next(x for x in bench_report._summary_lines(r) if x.startswith("accuracy on"))

    emb = {"name": "out", "kind": "embedding", "passed": True, "failures": [], "metrics": {"cosine_mean": 0.999}}
    text = line(emb, 1.0)
    assert "top-1" not in text and "cosine" in text
    cls = {"name": "out", "kind": "classifier", "passed": True, "failures": [], "top1_agreement": 0.95,
           "metrics": {"top1_agreement": 0.95}}
    assert line(cls, 0.95).count("top-1 agreement") == 1
    assert "top-1 agreement 90.0% over all examples" in line(cls, 0.9)


def test_json_round_trip(result):
    d = json.loads(bench_report.to_json(result, raw_times=True))
    again = BenchResult.from_dict(d)
    assert again.to_dict() == d
    want, got = result.model("int8").latency, again.model("int8").latency
    assert got.runs == want.runs and got.p99_ms == pytest.approx(want.p99_ms, abs=1e-6)
    assert len(again.model("float").times_ms) == len(result.model("float").times_ms)


def test_json_keeps_a_summary_of_the_runs_unless_raw_times(result):
    d = json.loads(bench_report.to_json(result))
    for m, model in zip(d["models"], result.models):
        assert "times_ms" not in m and m["times_summary"]["runs"] == len(model.times_ms)
        q = m["times_summary"]["quantiles_ms"]
        assert len(q) == 21 and q == sorted(q)
        assert q[0] == pytest.approx(min(model.times_ms), abs=1e-6) and q[-1] == pytest.approx(max(model.times_ms))
        assert q[10] == pytest.approx(model.latency.p50_ms, abs=1e-6)
    again = BenchResult.from_dict(d)                      # a summary-only file still reads back
    assert again.model("int8").latency.p50_ms == pytest.approx(result.model("int8").latency.p50_ms, abs=1e-6)
    assert again.model("int8").times_ms == ()
    assert len(bench_report.to_json(result)) < len(bench_report.to_json(result, raw_times=True))


def test_cli_writes_json_markdown_and_plot(tiny_convert_out, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(["bench", str(tiny_convert_out), *FAST_CLI, "--json", str(out / "b.json"),
                 "--md", str(out / "b.md"), "--plot", str(out / "b.png")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "int8 speedup over float" in captured.out
    assert "measuring float and int8" in captured.err       # progress on stderr
    assert json.loads((out / "b.json").read_text())["schema"] == "edgenet.bench"
    assert (out / "b.md").read_text().startswith("# edgenet bench")
    assert (out / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temp files left


def test_cli_json_to_stdout_is_pure_json(tiny_convert_out, capsys):
    code = main(["bench", str(tiny_convert_out), *FAST_CLI, "--json", "-", "-q"])
    captured = capsys.readouterr()
    assert code == 0
    d = json.loads(captured.out)
    assert [m["role"] for m in d["models"]] == ["float", "int8"]


def test_plot_without_matplotlib_says_how_to_install(tiny_convert_out, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from edgenet.cli import main\n"
            f"sys.exit(main(['bench', {str(tiny_convert_out)!r}, '--plot', {str(tmp_path / 'p.png')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 3
    assert f"pip install '{REPO}[plot]'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "p.png").exists()


# -- error cases --------------------------------------------------------------------------------
def test_missing_target_and_missing_float(tiny_convert_out, tmp_path):
    with pytest.raises(ModelError, match="no such file or folder"):
        bench(tmp_path / "nope.tflite")
    with pytest.raises(ModelError, match="no such model file \\(--float\\)"):
        bench(tiny_convert_out, float_model=tmp_path / "nope.tflite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model_int8.tflite or model_float.tflite"):
        bench(tmp_path / "empty")


@pytest.mark.parametrize("content", [b"", b"not a flatbuffer at all" * 10, "truncated"])
def test_corrupt_tflite(tiny_convert_out, tmp_path, content):
    if content == "truncated":
        content = (tiny_convert_out / "model_int8.tflite").read_bytes()[:1500]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match="not a valid .tflite model"):
        bench(bad, **FAST)


def test_float_and_int8_with_different_input_shapes(tiny_convert_out, tmp_path):
    tf = pytest.importorskip("tensorflow")
    w = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 10)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32)])
    def model(x):
        return tf.reduce_mean(tf.nn.conv2d(x, w, 2, "SAME"), axis=[1, 2])

    other = tmp_path / "float64.tflite"
    other.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()],
                                                                      model).convert())
    with pytest.raises(ModelError, match=r"takes input \(1, 64, 64, 3\) but the int8 model takes "
                                         r"\(1, 32, 32, 3\): they are not the same network"):
        bench(tiny_convert_out / "model_int8.tflite", float_model=other, **FAST)


def test_data_with_the_wrong_channel_count(tiny_convert_out, tmp_path):
    gray = _copy(tiny_convert_out, tmp_path / "gray", "model_float.tflite", "model_int8.tflite")
    (gray / "preprocess.json").write_text(Preprocess(32, 32, ColorMode.GRAY, mean=(0.5,), std=(0.5,)).to_json())
    _write_images(tmp_path / "images" / "a", 2, mode="L")
    with pytest.raises(DataError, match=r"preprocessing makes 32x32x1 inputs but model_float.tflite takes 32x32x3 "
                                        r"\(check the color mode"):
        bench(gray, data=tmp_path / "images", **FAST)
    with pytest.raises(DataError, match=r"1 channel\(s\) per pixel"):
        bench(tiny_convert_out, data=np.zeros((2, 32, 32, 1), np.float32), **FAST)


def test_data_classes_unknown_to_the_model(tiny_convert_out, tmp_path):
    """Labels of other classes: top-1 would mean nothing; skipped with a note, agreement and SQNR stay."""
    _write_images(tmp_path / "data" / "zebra", 1)
    r = bench(tiny_convert_out, data=tmp_path / "data", **FAST)
    assert not r.accuracy.labelled and r.accuracy.agreement is not None
    assert all(acc.top1 is None for acc in r.accuracy.models.values())
    assert any("top-1/top-5 skipped" in n and "'zebra' are not among the model's labels" in n for n in r.notes)


def test_held_out_set_from_convert_is_the_default_data(tmp_path):
    """`convert` writes eval_set.npz; bench compares the models on it with no --data (numpy + LiteRT)."""
    pytest.importorskip("tensorflow")
    import edgenet

    edgenet.convert("mobilenet_v1", alpha=0.25, resolution=32, num_classes=8, calib="shapes", calib_samples=16,
                    eval_samples=12, precisions=["int8", "int16x8"], out=tmp_path / "o")
    held = np.load(tmp_path / "o" / "eval_set.npz")
    assert held["pixels:input"].shape == (12, 32, 32, 3) and held["pixels:input"].dtype == np.uint8
    assert "labels" not in held.files   # the zoo model has no class names
    r = bench(tmp_path / "o", **FAST)
    assert r.accuracy is not None and r.accuracy.samples == 12 and r.accuracy.sqnr_db is not None
    assert any("eval_set.npz" in n for n in r.notes)
    r16 = bench(tmp_path / "o", precision="int16x8", **FAST)
    assert [m.precision for m in r16.models] == ["float32", "int16x8"]
    with pytest.raises(ModelError, match="no model_float16.tflite"):
        bench(tmp_path / "o", precision="float16", **FAST)


def test_delegates_that_cannot_load(tiny_convert_out, tmp_path):
    with pytest.raises(TargetError, match="libedgetpu.so.1.*install the Edge TPU runtime"):
        bench(tiny_convert_out, delegate="edgetpu", **FAST)
    with pytest.raises(TargetError, match="cannot load delegate library"):
        bench(tiny_convert_out, delegate=str(tmp_path / "missing.so"), **FAST)
    with pytest.raises(TargetError, match="is not a TFLite delegate"):
        bench(tiny_convert_out, delegate="libm.so.6", **FAST)
    with pytest.raises(UsageError, match="unknown delegate"):
        bench(tiny_convert_out, delegate="gpu", **FAST)


def test_cli_errors_are_one_line_without_traceback(tiny_convert_out, tmp_path):
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"\x00" * 64)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args, code in (([str(tmp_path / "missing")], 1), ([str(bad)], 1),
                       ([str(tiny_convert_out), "--delegate", "edgetpu"], 1),
                       ([str(tiny_convert_out), "--runs", "0"], 2)):
        done = subprocess.run([sys.executable, "-m", "edgenet", "bench", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        assert done.returncode == code, (args, done.stderr)
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if "rror" in line]
        assert len(errors) == 1, done.stderr


def test_device_side_imports_stay_light(tiny_convert_out):
    """The device path (runtime, bench, reports, remote, CLI) never imports torch/TF/onnx/matplotlib."""
    code = (
        "import sys\n"
        "from edgenet.cli import main\n"
        f"rc = main(['bench', {str(tiny_convert_out)!r}, '--runs', '3', '--min-seconds', '0', '--warmup', '1',"
        " '--warmup-seconds', '0', '-q', '--json', '-'])\n"
        "import edgenet.benchmark.remote, edgenet.benchmark.report\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'matplotlib', 'sklearn')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(rc or (1 if heavy else 0))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr
    assert json.loads(done.stdout)["schema"] == "edgenet.bench"


def test_the_plot_carries_the_noisy_verdict(result):
    pytest.importorskip("matplotlib")
    import dataclasses

    import matplotlib.pyplot as plt

    noisy = dataclasses.replace(result, noise=("load average 3.10 on 2 CPUs before the run",))
    for res, said in ((noisy, True), (dataclasses.replace(result, noise=()), False)):
        fig = bench_report.plot_figure(res)
        try:
            texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [fig._suptitle.get_text()]
        finally:
            plt.close(fig)
        assert any("NOISY" in t for t in texts) is said
        assert any("load average 3.10" in t for t in texts) is said
    assert bench_report.plot_png(noisy)[:8] == b"\x89PNG\r\n\x1a\n"
