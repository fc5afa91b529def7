"""The output folder: staged inside --out, locked, published all or nothing, --force keeps the
user's files, refused places, one-line write errors; scratch folders that killed runs leave."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgenet.errors import OutputBusyError, OutputError, OutputExistsError, UsageError
from edgenet.io import atomic_write_bytes
from edgenet.outdir import LOCK, MANIFEST, STAGING_PREFIX, OutputFolder, recorded_files
from edgenet.pathcheck import check_location, os_error_message
from edgenet.scratch import ScratchDir, sweep

from _folders import immutable, remount_read_only, snapshot, tmpfs

ROOT = Path(__file__).resolve().parent.parent


def _stage(folder: OutputFolder, files: dict[str, bytes], report: bool = True) -> None:
    for name, data in files.items():
        atomic_write_bytes(folder.staging / name, data)
    if report:
        names = sorted({*files, "report.json"})
        atomic_write_bytes(folder.staging / "report.json", json.dumps({"files": names}).encode())


def _convert(out: Path, files: dict[str, bytes], force: bool = False, report: bool = True) -> list[Path]:
    with OutputFolder(out, force) as folder:
        _stage(folder, files, report)
        return folder.publish()


FIRST = {"model.onnx": b"onnx-1", "model_float.tflite": b"float-1", "model_int8.tflite": b"int8-1",
         "labels.txt": b"a\nb\n", "model_data.h": b"// 1"}
SECOND = {"model.onnx": b"onnx-2", "model_float.tflite": b"float-2"}


def test_staging_is_inside_out_and_nothing_else_stays(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with OutputFolder(out) as folder:
        assert out in folder.staging.parents and folder.staging.parent.name.startswith(STAGING_PREFIX)
        assert folder.staging.stat().st_dev == out.stat().st_dev
        assert (out / LOCK).exists()
        _stage(folder, FIRST)
        published = folder.publish()
    assert sorted(p.name for p in published) == sorted([*FIRST, "report.json"])
    assert sorted(os.listdir(out)) == sorted([*FIRST, "report.json", MANIFEST])     # no lock or staging
    assert (out / "model_int8.tflite").read_bytes() == b"int8-1"
    assert recorded_files(out) == {*FIRST, "report.json", MANIFEST}


def test_a_hidden_manifest_records_every_file_with_its_hash(tmp_path):
    out = tmp_path / "out"
    _convert(out, {"model.onnx": b"x"}, report=False)
    assert sorted(os.listdir(out)) == [MANIFEST, "model.onnx"]
    record = json.loads((out / MANIFEST).read_text())
    assert record["files"] == {"model.onnx": hashlib.sha256(b"x").hexdigest()}
    _convert(out, SECOND, force=True)
    assert sorted(os.listdir(out)) == sorted([*SECOND, "report.json", MANIFEST])


def test_a_non_empty_folder_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    before = snapshot(out)
    with pytest.raises(OutputExistsError, match="--force"):
        OutputFolder(out).__enter__()
    assert snapshot(out) == before


def test_force_replaces_edgenet_files_and_keeps_the_users(tmp_path):
    out = tmp_path / "out"
    _convert(out, FIRST)
    (out / "notes.txt").write_text("my notes")
    (out / "data").mkdir()
    (out / "data" / "x.bin").write_bytes(b"1")
    _convert(out, SECOND, force=True)
    assert sorted(os.listdir(out)) == sorted([*SECOND, "report.json", MANIFEST, "notes.txt", "data"])
    assert (out / "notes.txt").read_text() == "my notes" and (out / "data" / "x.bin").read_bytes() == b"1"
    assert (out / "model.onnx").read_bytes() == b"onnx-2"


@pytest.mark.parametrize("obstacle", ["user_file", "folder", "immutable"])
def test_force_refuses_what_it_may_not_replace_before_any_work(tmp_path, obstacle):
    out = tmp_path / "out"
    _convert(out, SECOND)
    if obstacle == "user_file":
        (out / "labels.txt").write_text("the user's own labels")
        needle = "labels.txt is not a file of the earlier conversion"
    elif obstacle == "folder":
        (out / "model_int8.tflite").mkdir()
        needle = "model_int8.tflite is a folder in the way"
    before = snapshot(out)
    if obstacle == "immutable":
        with immutable(out / "model.onnx"):
            before = snapshot(out)
            with pytest.raises(OutputError, match="model.onnx is immutable") as info:
                OutputFolder(out, force=True).__enter__()
            assert snapshot(out) == before
        return
    with pytest.raises(OutputError, match=needle) as info:
        OutputFolder(out, force=True).__enter__()
    assert "\n" not in str(info.value)
    assert snapshot(out) == before


def test_one_conversion_at_a_time(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out) as first:
        with pytest.raises(OutputBusyError, match=f"another edgenet conversion \\(process {os.getpid()}\\)"):
            OutputFolder(out, force=True).__enter__()
        _stage(first, SECOND)
        first.publish()
    _convert(out, FIRST, force=True)                 # free again once the first is done


def test_a_lock_held_by_another_process_refuses_at_once(tmp_path):
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys, time
        from edgenet.outdir import OutputFolder
        with OutputFolder({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(OutputBusyError, match=f"process {holder.pid}"):
            OutputFolder(out, force=True).__enter__()
        assert time.perf_counter() - t0 < 2
    finally:
        holder.kill()
        holder.wait()
    _convert(out, FIRST, force=True)                 # the dead holder's lock is gone with it
    assert sorted(os.listdir(out)) == sorted([*FIRST, "report.json", MANIFEST])


def _prepare_forced(out: Path) -> dict:
    _convert(out, FIRST)
    (out / "notes.txt").write_text("mine")
    return snapshot(out)


# renames of a forced publish of SECOND over FIRST: 1 journal, 4 replaced, 3 stale, 4 new (with the manifest)
RENAMES = 12


@pytest.mark.parametrize("failing", range(1, RENAMES + 1))
def test_a_failing_step_puts_every_earlier_file_back(tmp_path, monkeypatch, failing):
    out = tmp_path / "out"
    before = _prepare_forced(out)
    real, calls = os.rename, []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == failing:
            raise OSError(errno.EIO, "Input/output error", str(src))
        real(src, dst)

    with pytest.raises(OutputError) as info:
        with OutputFolder(out, force=True) as folder:
            _stage(folder, SECOND)
            monkeypatch.setattr(os, "rename", rename)
            folder.publish()
    monkeypatch.setattr(os, "rename", real)
    assert len(calls) >= failing                    # the failing step, then the rollback's own moves
    assert "input/output error" in str(info.value) and "as it was before" in str(info.value)
    assert "\n" not in str(info.value)
    assert snapshot(out) == before


def test_the_rename_count_above_is_every_step(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _prepare_forced(out)
    real, calls = os.rename, []
    monkeypatch.setattr(os, "rename", lambda a, b: (calls.append(b), real(a, b)))
    _convert(out, SECOND, force=True)
    assert len(calls) == RENAMES


@pytest.mark.parametrize("kill_at", [2, 3, 5, 8, 10, RENAMES + 1])
def test_sigkill_mid_publish_is_undone_by_the_next_conversion(tmp_path, kill_at):
    out = tmp_path / "out"
    before = _prepare_forced(out)
    code = textwrap.dedent(f"""
        import os, signal, json
        from edgenet.io import atomic_write_bytes
        from edgenet.outdir import OutputFolder
        real, count = os.rename, [0]
        def rename(a, b):
            count[0] += 1
            if count[0] == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            real(a, b)
        with OutputFolder({str(out)!r}, force=True) as folder:
            for name, data in {SECOND!r}.items():
                atomic_write_bytes(folder.staging / name, data)
            atomic_write_bytes(folder.staging / "report.json", json.dumps({{"files": {sorted([*SECOND, "report.json"])!r}}}).encode())
            os.rename = rename
            folder.publish()
            os.kill(os.getpid(), signal.SIGKILL)      # published, but killed before its cleanup
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    assert any(n.startswith(STAGING_PREFIX) for n in os.listdir(out))
    with pytest.raises(UsageError):                  # the next conversion into out: it fails, but cleans up first
        with OutputFolder(out, force=True):
            raise UsageError("bad input")
    if kill_at <= RENAMES:
        assert snapshot(out) == before               # the publish never committed: rolled back
    else:
        assert sorted(os.listdir(out)) == sorted([*SECOND, "report.json", MANIFEST, "notes.txt"])


def test_a_killed_conversion_does_not_block_the_next(tmp_path):
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import os, signal
        from edgenet.io import atomic_write_bytes
        from edgenet.outdir import OutputFolder
        with OutputFolder({str(out)!r}) as folder:
            atomic_write_bytes(folder.staging / "model.onnx", b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    assert sorted(n[:len(STAGING_PREFIX)] for n in os.listdir(out)) == [STAGING_PREFIX, LOCK]
    _convert(out, SECOND)                            # no --force needed: nothing of anyone's is there
    assert sorted(os.listdir(out)) == sorted([*SECOND, "report.json", MANIFEST])


def test_a_failed_conversion_removes_the_folders_it_made(tmp_path):
    with pytest.raises(UsageError):
        with OutputFolder(tmp_path / "x" / "y" / "out"):
            raise UsageError("bad input")
    assert os.listdir(tmp_path) == []


def test_an_out_on_another_filesystem_is_staged_there(tmp_path):
    with tmpfs(tmp_path / "mnt") as mnt:           # --out is itself a mount point
        assert mnt.stat().st_dev != tmp_path.stat().st_dev
        for out in (mnt / "sub", mnt):
            with OutputFolder(out, force=True) as folder:
                assert folder.staging.stat().st_dev == mnt.stat().st_dev
                _stage(folder, SECOND)
                folder.publish()
            assert sorted(os.listdir(out)) == sorted([*SECOND, "report.json", MANIFEST, *(["sub"] if out == mnt else [])])


def test_read_only_out_fails_at_the_start_in_one_line(tmp_path):
    with tmpfs(tmp_path / "ro") as mnt:
        (mnt / "old").mkdir()
        remount_read_only(mnt)
        for out in (mnt, mnt / "old", mnt / "new" / "deeper"):
            before = snapshot(mnt)
            with pytest.raises(OutputError, match=f"--out {out}: read-only filesystem; choose a folder on a writable"):
                OutputFolder(out, force=True).__enter__()
            assert snapshot(mnt) == before


def test_a_full_disk_fails_in_one_line(tmp_path):
    with tmpfs(tmp_path / "tiny", size="32k") as mnt:  # too small for the write probe: found at the start
        with pytest.raises(OutputError, match="no space left on the device; free some space"):
            OutputFolder(mnt / "out").__enter__()
        assert os.listdir(mnt) == []
    with tmpfs(tmp_path / "small", size="512k") as mnt:  # room for the probe, not for the model
        with pytest.raises(OutputError, match="model.onnx: no space left on the device") as info:
            with OutputFolder(mnt / "out") as folder:
                atomic_write_bytes(folder.staging / "model.onnx", bytes(2 << 20))
        assert "\n" not in str(info.value)
        assert os.listdir(mnt) == []


@pytest.mark.parametrize("where, needle", [
    ("/", "is the filesystem root"),
    (str(Path.home()), "is a home folder"),
    ("/proc/edgenet-out", "on proc, a kernel pseudo-filesystem"),
    ("/sys/out", "on sysfs, a kernel pseudo-filesystem"),
    ("/etc/edgenet", "inside the system folder /etc"),
    ("/usr/share/out", "inside the system folder /usr"),
    ("/tmp", "a system folder"),
    ("~/out", "'~' was not expanded"),
    ("", "--out is empty"),
])
def test_dangerous_or_impossible_places_are_refused(where, needle):
    with pytest.raises(UsageError, match=needle) as info:
        check_location(where)
    assert "\n" not in str(info.value)


def test_paths_that_cannot_be_folders_are_refused(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing" / "dir")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    cases = {tmp_path / "file" / "out": "file is a file, not a folder",
             tmp_path / "file": "exists and is not a folder",
             tmp_path / "dangling": "is a symbolic link to",
             tmp_path / "dangling" / "sub": "is a symbolic link to",
             tmp_path / "loop" / "out": "loop of symbolic links",
             repo: "the root of a git working tree",
             tmp_path / ("a" * 300) / "out": "is too long"}
    for out, needle in cases.items():
        with pytest.raises(UsageError, match=needle):
            check_location(out)
    monkeypatch.chdir(repo / "src")
    with pytest.raises(UsageError, match="the root of the git working tree you are in"):
        check_location("..")
    check_location(repo / "src" / "out")             # a folder inside the tree is fine
    check_location(tmp_path / "new" / "out")


def test_os_errors_become_one_line_with_the_path():
    exc = OSError(errno.EACCES, "Permission denied", "/data/out/.edgenet.lock")
    assert os_error_message(exc, "/data/out", where="/data/out") == (
        "--out /data/out: permission denied; choose a folder you can write to, or change its permissions")
    assert os_error_message(OSError(errno.ENOSPC, "No space"), "o") == (
        "--out o: no space left on the device; free some space or choose another --out")


# -- scratch folders ------------------------------------------------------------------------
def _holder(parent: Path, prefix: str):
    code = ("import sys, time\nfrom edgenet.scratch import ScratchDir\n"
            f"d = ScratchDir({prefix!r}, {str(parent)!r})\nprint(d.path, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc, Path(proc.stdout.readline().strip())


def test_sweep_removes_what_dead_processes_left_and_nothing_else(tmp_path):
    live, live_dir = _holder(tmp_path, "edgenet-tf-")
    dead, dead_dir = _holder(tmp_path, "edgenet-tf-")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    (dead_dir / "1.npy").write_bytes(b"x" * 1000)
    foreign = [tmp_path / "edgenet-tf-abc123", tmp_path / "other-1-x"]   # older versions', other programs'
    for f in foreign:
        f.mkdir()
    young = tmp_path / "edgenet-tf-999999-young"                            # being made right now
    young.mkdir()
    try:
        assert live_dir.is_dir() and dead_dir.is_dir()
        assert sweep("edgenet-tf-", tmp_path) == [dead_dir]
        assert live_dir.is_dir() and not dead_dir.exists() and young.is_dir()
        assert all(f.is_dir() for f in foreign)
        old = time.time() - 3600
        os.utime(young, (old, old))                                          # an hour old, pid not running
        assert sweep("edgenet-tf-", tmp_path) == [young]
    finally:
        live.kill()
        live.wait()
    assert sweep("edgenet-tf-", tmp_path) == [live_dir]


def test_a_scratch_dir_is_locked_while_in_use_and_removed_after(tmp_path):
    with ScratchDir("edgenet-fit-", tmp_path) as path:
        assert path.name.startswith(f"edgenet-fit-{os.getpid()}-")
        (path / "candidate.tflite").write_bytes(b"1")
        assert sweep("edgenet-fit-", tmp_path) == []                         # in use (by this very process)
    assert os.listdir(tmp_path) == []


def test_a_ray_cells_files_folder_left_by_a_killed_node_is_removed_by_the_next_command(tmp_path):
    """run_cell_anywhere's folder is a ScratchDir: a process killed mid-cell leaves it unlocked, and the
    next sweep of leftovers (every command runs one) removes it."""
    import subprocess
    import sys

    from edgenet.scratch import sweep

    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); from edgenet.scratch import ScratchDir\n"
            "s = ScratchDir('edgenet-files-', sys.argv[1]); print(s.path, flush=True); os._exit(9)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(Path(__file__).resolve().parents[1])],
                          capture_output=True, text=True, timeout=60)
    left = Path(done.stdout.strip())
    assert left.is_dir()
    assert sweep("edgenet-files-", tmp_path) == [left] and not left.exists()
