"""Hostile and faulty situations around --out, each with the real `python -m edgenet convert` in a
fresh process: the exit code, one clear line and no traceback, --out byte for byte unchanged or
completely new, and nothing left behind (/dev/shm, the temp folder, staging folders, the
TensorFlow worker process).

Every process gets a temp folder of its own (TMPDIR), so that "nothing left" is checked exactly;
/dev/shm is shared with the machine, so only entries naming the process's pid are checked. The
mount tests need root (a tmpfs, a read-only remount) and skip where that fails.
"""
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _folders import immutable, leftovers, remount_read_only, shm_of, snapshot, tmpfs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "tensorflow", "onnx", "onnxruntime")),
    reason="the convert extra is not installed")

TINY = ["mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--num-classes", "2", "--calib-samples", "8",
        "--eval-samples", "4"]
FLOAT = [*TINY, "--float", "-q"]
# int8 calibration arrays over 1 MB (64 px x 128 samples): they travel through /dev/shm
SHM_INT8 = ["mobilenet_v1", "--alpha", "0.25", "--resolution", "64", "--num-classes", "2", "--calib-samples", "128",
            "--eval-samples", "4", "--int8", "--calib-method", "mse"]
FLOAT_FILES = {"model.onnx", "model_float.tflite", "preprocess.json", "report.json", "report.md", "eval_set.npz",
               ".edgenet-manifest.json"}


class Env:
    """A private temp folder (and HOME) for the edgenet processes of one test."""

    def __init__(self, base: Path):
        self.tmp = base / "tmp"
        self.home = base / "home"
        self.tmp.mkdir()
        self.home.mkdir()
        self.vars = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(self.tmp), "HOME": str(self.home)}
        self.vars.pop("EDGENET_TF_WORKER", None)
        subprocess.run([sys.executable, "-c", "pass"], env=self.vars, check=True)   # what python itself leaves
        self.baseline = set(os.listdir(self.tmp))

    def run(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgenet", *map(str, args)], capture_output=True, text=True,
                              env=self.vars, timeout=600, **kwargs)

    def start(self, *args) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "edgenet", *map(str, args)], stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True, env=self.vars)

    def left(self) -> list[str]:
        return leftovers(self.tmp, self.baseline)


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """An earlier conversion's folder: int8 for cortex-m (model files, C headers, op resolver)."""
    base = tmp_path_factory.mktemp("earlier")
    e = Env(base)
    out = base / "out"
    proc = e.run("convert", *TINY, "--int8", "--target", "cortex-m", "-q", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _one_line(stderr: str, needle: str) -> str:
    """The stderr of a failed command: progress lines, then exactly one `edgenet:` line."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    ours = [ln for ln in lines if ln.startswith("edgenet:")]
    assert len(ours) == 1 and lines[-1] == ours[0], stderr
    assert all(ln.startswith("[") for ln in lines[:-1]), stderr      # the rest: progress lines
    assert needle in ours[0], stderr
    return ours[0]


def _wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.01)


def _read_until(proc: subprocess.Popen, text: str) -> str:
    seen = ""
    while text not in seen:
        ch = proc.stderr.read(1)
        assert ch, f"the process ended before {text!r}: {seen}"
        seen += ch
    return seen


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# -- refused at the start, before any slow stage -------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", ["root", "home", "proc", "dangling", "under_file", "folder_in_the_way",
                                  "users_file", "immutable", "read_only", "full"])
def test_refused_at_once_and_nothing_changes(env, earlier, tmp_path, case):
    out, args, code, needle = tmp_path / "out", ["--force"], 1, ""
    if case in ("folder_in_the_way", "users_file", "immutable"):
        _copy(earlier, out)
    if case == "root":
        out, code, needle = Path("/"), 2, "is the filesystem root"
    elif case == "home":
        out, code, needle = env.home, 2, "is a home folder"
    elif case == "proc":
        out, code, needle = Path("/proc/edgenet"), 2, "kernel pseudo-filesystem"
    elif case == "dangling":
        (tmp_path / "link").symlink_to(tmp_path / "gone")
        out, code, needle = tmp_path / "link", 2, "which does not exist"
    elif case == "under_file":
        (tmp_path / "f").write_text("x")
        out, code, needle = tmp_path / "f" / "out", 2, "is a file, not a folder"
    elif case == "folder_in_the_way":
        (out / "model_int8.tflite").unlink()
        (out / "model_int8.tflite").mkdir()
        needle = "model_int8.tflite is a folder in the way"
    elif case == "users_file":
        (out / "labels.txt").write_text("the user's own labels\n")
        needle = "labels.txt is not a file of the earlier conversion"
    before = snapshot(out) if out != Path("/") else None
    if case == "immutable":
        ctx = immutable(out / "report.md")
        needle = "report.md is immutable"
    elif case in ("read_only", "full"):
        ctx = tmpfs(out, size="32k" if case == "full" else "8m")
        needle = "read-only filesystem" if case == "read_only" else "no space left on the device"
    else:
        ctx = None
    t0 = time.monotonic()
    if ctx is None:
        proc = env.run("convert", *FLOAT, "--out", out, *args)
    else:
        with ctx:
            if case == "read_only":
                remount_read_only(out)
            before = snapshot(out)
            proc = env.run("convert", *FLOAT, "--out", out, *args)
            assert snapshot(out) == before
    assert proc.returncode == code, proc.stderr
    line = _one_line(proc.stderr, needle)
    assert str(out) in line
    assert time.monotonic() - t0 < 30          # no model was built first
    if before is not None:
        assert snapshot(out) == before
    assert env.left() == []


# -- publishing ------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_conversions_into_one_folder_exactly_one_publishes(env, tmp_path):
    out = tmp_path / "out"
    first = env.start("convert", *TINY, "--int8", "-q", "--out", out)
    time.sleep(0.3)
    second = env.start("convert", *TINY, "--float", "-q", "--out", out)
    results = [(p.wait(timeout=600), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    _one_line(loser, "another edgenet conversion")
    winner_int8 = results[0][0] == 0
    expected = FLOAT_FILES | ({"model_int8.tflite", "model_int8.node_data.json"} if winner_int8 else set())
    assert set(os.listdir(out)) == expected            # one run's files, nothing of the other's
    assert env.left() == []


@pytest.mark.slow
def test_force_replaces_the_earlier_conversion_and_keeps_the_users_files(env, earlier, tmp_path):
    out = _copy(earlier, tmp_path / "out")
    names = set(os.listdir(out))
    assert "model_int8.tflite" in names and {n.rsplit("_", 1)[-1] if n.endswith("resolver.h") else n
                                             for n in names if n.endswith((".cc", ".h"))} >= {"resolver.h"}
    assert any(n.endswith("_model_data.cc") for n in names) and any(n.endswith("_model_data.h") for n in names)
    (out / "notes.txt").write_text("my notes\n")
    (out / "runs").mkdir()
    (out / "runs" / "a.json").write_text("{}")
    proc = env.run("convert", *FLOAT, "--target", "rpi", "--out", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert set(os.listdir(out)) == FLOAT_FILES | {"notes.txt", "runs"}   # no stale int8 model or C header
    assert (out / "notes.txt").read_text() == "my notes\n" and (out / "runs" / "a.json").read_text() == "{}"
    assert env.left() == []


@pytest.mark.slow
def test_force_removes_only_files_edgenet_wrote_as_it_wrote_them(env, earlier, tmp_path):
    """report.json is the user's to edit: a file it lists is not edgenet's for that (issue 19). Only
    .edgenet-manifest.json's files whose sha256 still matches are edgenet's."""
    import json

    out = _copy(earlier, tmp_path / "out")
    (out / "thesis.tex").write_text("two years of work\n")
    report = json.loads((out / "report.json").read_text())
    report["files"].append("thesis.tex")
    (out / "report.json").write_text(json.dumps(report))       # hand-edited: also changed since edgenet wrote it
    proc = env.run("convert", *FLOAT, "--target", "rpi", "--out", out, "--force")
    _one_line(proc.stderr, "report.json changed since edgenet wrote it")
    assert proc.returncode == 1 and (out / "thesis.tex").read_text() == "two years of work\n"
    manifest = json.loads((out / ".edgenet-manifest.json").read_text())
    manifest["files"]["report.json"] = hashlib.sha256((out / "report.json").read_bytes()).hexdigest()
    (out / ".edgenet-manifest.json").write_text(json.dumps(manifest))   # the edit made to look like edgenet's
    (out / "model_int8.tflite").write_bytes(b"my own int8 model")       # changed; not written again: kept
    proc = env.run("convert", *FLOAT, "--target", "rpi", "--out", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert "kept model_int8.tflite: changed since edgenet wrote it" in proc.stderr
    assert (out / "thesis.tex").read_text() == "two years of work\n"
    assert (out / "model_int8.tflite").read_bytes() == b"my own int8 model"
    assert set(os.listdir(out)) == FLOAT_FILES | {"thesis.tex", "model_int8.tflite"}
    # a folder of an earlier edgenet (file names without hashes): nothing is provably edgenet's
    (out / "model_int8.tflite").unlink()
    (out / ".edgenet-manifest.json").unlink()
    before = snapshot(out)
    proc = env.run("convert", *FLOAT, "--target", "rpi", "--out", out, "--force")
    _one_line(proc.stderr, "written by an earlier edgenet that recorded no file hashes")
    assert proc.returncode == 1 and snapshot(out) == before
    assert env.left() == []


@pytest.mark.slow
def test_a_publish_that_fails_halfway_restores_every_earlier_file(env, earlier, tmp_path):
    """The earlier int8 model becomes immutable while the conversion runs (after the start
    checks): removing it, the last step of publishing, fails after the new files' earlier versions
    were moved away. Everything is put back."""
    out = _copy(earlier, tmp_path / "out")
    proc = env.start("convert", *FLOAT, "--target", "rpi", "--out", out, "--force")
    _wait_for(lambda: any(n.startswith(".edgenet-staging-") for n in os.listdir(out)), what="staging")
    with immutable(out / "model_int8.tflite"):
        before = snapshot(out)
        before = {k: v for k, v in before.items()
                  if not k.startswith((".edgenet.lock", ".edgenet-staging-"))}   # the run's own lock, staging
        proc.wait(timeout=600)
        err = proc.stderr.read()
        assert proc.returncode == 1, err
        _one_line(err, "model_int8.tflite: operation not permitted")
        assert "--out is as it was before" in err
        assert snapshot(out) == before
    assert env.left() == []


# -- another filesystem ------------------------------------------------------------------------
@pytest.mark.slow
def test_out_on_another_filesystem_is_staged_there(env, tmp_path):
    with tmpfs(tmp_path / "mnt") as mnt:                # --out is itself a mount point
        proc = env.run("convert", *FLOAT, "--out", mnt)
        assert proc.returncode == 0, proc.stderr
        assert set(os.listdir(mnt)) == FLOAT_FILES
    assert env.left() == []


@pytest.mark.slow
def test_a_disk_that_fills_up_during_the_run_fails_in_one_line(env, tmp_path):
    with tmpfs(tmp_path / "mnt", size="1m") as mnt:     # room for the write probe, not for the models
        proc = env.run("convert", *FLOAT, "--out", mnt)
        assert proc.returncode == 1, proc.stderr
        _one_line(proc.stderr, "no space left on the device")
        assert os.listdir(mnt) == []
    assert env.left() == []


# -- signals -----------------------------------------------------------------------------------
# the signal is sent as soon as the int8 stage's progress text appears: right between the text and the
# flag that says the line is open, where it used to leave the line open under 'edgenet: interrupted'
# (edgenet/cli/_common.py defers it until both are done)
@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_mid_int8_stops_cleanly(env, earlier, tmp_path, sig, code):
    new, forced = tmp_path / "new", _copy(earlier, tmp_path / "forced")
    before = snapshot(forced)
    for out, extra in ((new, []), (forced, ["--force"]))[: 2 if sig == signal.SIGTERM else 1]:
        proc = env.start("convert", *SHM_INT8, "--out", out, *extra)
        seen = _read_until(proc, "tflite int8")
        proc.send_signal(sig)
        proc.wait(timeout=120)
        err = seen + proc.stderr.read()
        assert proc.returncode == code, err
        _one_line(err, "edgenet: interrupted")
        assert shm_of(proc.pid) == [] and _children(proc.pid) == []
        assert env.left() == []
    assert not new.exists()
    assert snapshot(forced) == before


@pytest.mark.slow
def test_after_sigkill_the_next_run_removes_what_was_left(env, tmp_path):
    out = tmp_path / "out"
    proc = env.start("convert", *SHM_INT8, "--out", out)
    _read_until(proc, "tflite int8")
    proc.kill()
    proc.wait()
    # what SIGKILL leaves ...
    assert any(n.startswith(".edgenet-staging-") for n in os.listdir(out))
    again = env.run("convert", "--alpha", "3", "--out", out)  # ... the next run removes, even one that fails
    assert again.returncode == 2, again.stderr
    assert shm_of(proc.pid) == [] and env.left() == []
    assert os.listdir(out) == []                      # so a conversion without --force may use it


@pytest.mark.slow
def test_fit_killed_or_refused_leaves_nothing(env, tmp_path):
    fit = ["convert", *TINY, "--target", "cortex-m", "--fit", "--fit-alphas", "0.25", "--fit-resolutions", "64,32"]
    refused = env.run(*fit[:-1], "64,33", "--out", tmp_path / "refused")
    assert refused.returncode == 2, refused.stderr
    _one_line(refused.stderr, "multiple of 32")
    assert env.left() == [] and not (tmp_path / "refused").exists()

    proc = env.start(*fit, "--out", tmp_path / "killed")
    _read_until(proc, "] fit (")

    def fitting():
        return any(n.startswith(("edgenet-fit-", "edgenet-cell-")) for d in env.tmp.glob("edgenet-run-*")
                   for n in os.listdir(d))

    _wait_for(fitting, timeout=60, what="the fit candidates' folder")
    proc.kill()
    proc.wait()
    assert env.left()
    nxt = env.run("convert", "--alpha", "3", "--out", tmp_path / "next")   # any later command cleans up
    assert nxt.returncode == 2
    assert env.left() == []
    assert [n for n in os.listdir(tmp_path / "killed") if not n.startswith(".edgenet")] == []


# -- standard streams --------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["closed", "broken_pipe"])
def test_closed_standard_output_is_one_line(env, how):
    if how == "closed":
        proc = subprocess.run([sys.executable, "-m", "edgenet", "models", "--json"], stderr=subprocess.PIPE,
                              text=True, env=env.vars, timeout=600, preexec_fn=lambda: os.close(1))
    else:
        read, write = os.pipe()
        os.close(read)                                 # nobody will read: writing fails with EPIPE
        try:
            proc = subprocess.run([sys.executable, "-m", "edgenet", "models", "--json"], stderr=subprocess.PIPE,
                                  stdout=write, text=True, env=env.vars, timeout=600)
        finally:
            os.close(write)
    assert proc.returncode == 1, proc.stderr
    _one_line(proc.stderr, "closed")
