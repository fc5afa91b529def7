"""``edgenet bench --ssh user@host[:port]``: run the benchmark on a device and bring the JSON back.

Steps, each its own ssh call (OpenSSH client, BatchMode: never a password prompt):
preflight (the device's Python imports edgenet) -> upload (one tar stream into a fresh temp dir,
unpacked by the device's Python) -> run ``python -m edgenet bench ... --json -`` there under a
small supervisor (its progress forwarded) -> the temp dir is removed. Every remote command line is
built with ``shlex.quote`` from an argument list and the uploaded files get fixed names, so nothing
the user passes runs as shell code; ``--ssh-option`` is an allow-list (:mod:`edgenet.benchmark.ssh`).

Stopping: Ctrl-C, SIGTERM or SIGHUP here (or the connection dropping) stops the benchmark on the
device and removes its temp dir: the supervisor (:mod:`edgenet.benchmark.device_scripts`) does it
when its stdin closes, and this side also runs an explicit clean-up call before it re-raises.
"""
from __future__ import annotations

import json
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from edgenet.benchmark import device_scripts as scripts
from edgenet.benchmark.interrupts import signals_interrupt
from edgenet.benchmark.models import FLOAT, INT8, resolve_target
from edgenet.benchmark.options import BenchSettings
from edgenet.benchmark.result import BenchResult, RemoteInfo
from edgenet.benchmark.ssh import Destination, SshSession, last_line
from edgenet.errors import DataError, RemoteError, UsageError

__all__ = ["bench_remote", "Destination", "SshSession"]

@dataclass(frozen=True)
class _Upload:
    files: tuple[tuple[Path, str], ...]   # (local file, name in the remote dir)
    data_dir: Path | None
    target_arg: str                       # TARGET relative to the remote dir
    float_arg: str | None
    local_names: dict                     # remote file name -> local path


def _plan_upload(target, float_model, data, precision: str | None = None) -> _Upload:
    resolved = resolve_target(target, float_model, precision)
    files: list[tuple[Path, str]] = []
    names: dict[str, str] = {}
    single = Path(target).is_file()
    for role, path in resolved.models:
        if single and role is None:
            name = "model.tflite"
        else:
            name = "model_float.tflite" if role == FLOAT else "model_int8.tflite" if role == INT8 else "model.tflite"
        files.append((path, f"target/{name}"))
        names[name] = str(path)
    held = resolved.eval_set if data is None else None   # the held-out set travels when no --data is given
    for extra, name in ((resolved.preprocess, "preprocess.json"), (resolved.labels, "labels.txt"),
                        (held, "eval_set.npz")):
        if extra is not None:
            files.append((extra, f"target/{name}"))
            names[name] = str(extra)
    data_dir = None
    if data is not None:
        if not isinstance(data, (str, Path)):
            raise UsageError("with --ssh, data must be a folder of images, 'digits' or 'shapes'")
        if str(data) not in ("digits", "shapes"):
            data_dir = Path(data)
            if not data_dir.is_dir():
                raise DataError(f"{data}: no such folder (use a folder of images, 'digits' or 'shapes')")
    if single:
        main = "target/model_int8.tflite" if float_model is not None else "target/model.tflite"
        return _Upload(tuple(files), data_dir, main, "target/model_float.tflite" if float_model else None, names)
    return _Upload(tuple(files), data_dir, "target", None, names)


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if not (info.isfile() or info.isdir()):
        return None  # no links or devices: only the images themselves
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _remote_bench_argv(python: str, remote_dir: str, plan: _Upload, data, limit: int | None,
                       settings: BenchSettings) -> list[str]:
    argv = [python, "-m", "edgenet", "bench", f"{remote_dir}/{plan.target_arg}", "--json", "-", "--raw-times",
            "--warmup", str(settings.warmup), "--warmup-seconds", repr(settings.warmup_seconds),
            "--runs", str(settings.runs), "--min-seconds", repr(settings.min_seconds),
            "--window", str(settings.window), "--window-seconds", repr(settings.window_seconds),
            "--delegate", settings.delegate.label]
    if settings.threads:  # else the device's own CPU count
        argv += ["--threads", str(settings.threads)]
    if plan.float_arg:
        argv += ["--float", f"{remote_dir}/{plan.float_arg}"]
    if data is not None:
        argv += ["--data", f"{remote_dir}/data" if plan.data_dir is not None else str(data)]
    if limit is not None:
        argv += ["--limit", str(int(limit))]
    return argv


def bench_remote(destination: str, target, *, float_model=None, data=None, limit: int | None = None,
                 settings: BenchSettings, remote_python: str = "python3", ssh_options: Sequence[str] = (),
                 progress: Callable[[str], None] = lambda message: None, precision: str | None = None) -> BenchResult:
    """Run ``edgenet bench`` on the device at ``destination`` and return its result.

    Raises UsageError (bad destination or option), RemoteError (ssh, the device's Python or its
    edgenet failed), and lets KeyboardInterrupt through after stopping and cleaning the device.
    """
    dest = Destination.parse(destination)
    if not remote_python.strip():
        raise UsageError("--remote-python must name the device's Python")
    session = SshSession(dest, ssh_options)
    plan = _plan_upload(target, float_model, data, precision)

    with signals_interrupt():
        progress(f"[{dest.host}] checking {remote_python} and edgenet on the device")
        version = _preflight(session, remote_python)
        progress(f"[{dest.host}] edgenet {version}")
        remote_dir = _upload(session, remote_python, plan, progress)
        argv = _remote_bench_argv(remote_python, remote_dir, plan, data, limit, settings)
        stdout = _run_supervised(session, remote_python, remote_dir, argv,
                                 lambda line: progress(f"[{dest.host}] {line}"))
    try:
        result = BenchResult.from_dict(json.loads(stdout))
    except (json.JSONDecodeError, DataError) as exc:
        raise RemoteError(f"{dest}: the device sent back no bench result ({exc})") from exc
    return result.with_remote(RemoteInfo(str(dest), remote_python), plan.local_names)


def _preflight(session: SshSession, python: str) -> str:
    done = session.run([python, "-c", scripts.PREFLIGHT], timeout=120)
    out = done.stdout.strip().splitlines()
    if done.returncode == 255:
        raise session.connection_error(done.stderr)
    d = session.destination
    if done.returncode == 127:
        raise RemoteError(f"no {python!s} on {d.host}: install Python 3 there or point --remote-python at it")
    if done.returncode == 126:
        raise RemoteError(f"{python} on {d.host} cannot be executed (permission denied?)")
    if done.returncode == 3 and out and out[-1].startswith("EDGENET-MISSING"):
        why = out[-1].split(" ", 1)[1] if " " in out[-1] else ""
        raise RemoteError(f"edgenet cannot be imported by {python} on {d.host} ({why}): on the device run "
                          f"{python} -m pip install edgenet-<version>-py3-none-any.whl (the wheel `pip wheel --no-deps -w dist .` "
                          "builds in edgenet's source folder)")
    ok = [line for line in out if line.startswith("EDGENET-OK")]
    if done.returncode != 0 or not ok:
        detail = last_line(done.stderr) or last_line(done.stdout) or f"exit status {done.returncode}"
        raise RemoteError(f"{python} on {d.host} failed to start: {detail}")
    parts = ok[-1].split()
    return f"{parts[1]} (Python {parts[2]})" if len(parts) >= 3 else "?"


def _cleanup(session: SshSession, python: str, remote_dir: str, pid: str = "") -> None:
    """Stop our benchmark process group on the device (if any) and remove its temp dir; best effort."""
    try:
        session.run([python, "-c", scripts.STOP, remote_dir, pid], timeout=30)
    except RemoteError:
        pass   # the supervisor still cleans up when its connection is gone


def _upload(session: SshSession, python: str, plan: _Upload, progress) -> str:
    d = session.destination
    size = sum(p.stat().st_size for p, _ in plan.files)
    progress(f"[{d.host}] uploading {len(plan.files)} file(s), {size / 1e6:.1f} MB"
             + (f" and the images in {plan.data_dir}" if plan.data_dir else ""))
    proc = subprocess.Popen(session.command([python, "-c", scripts.UPLOAD]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _send_tar(proc, plan)
        stdout, stderr = proc.communicate(timeout=None)
    except BaseException:  # a local file vanished, Ctrl-C, SIGTERM: leave nothing behind on the device
        proc.kill()
        leftover = proc.communicate()[0].decode(errors="replace").strip().splitlines()
        if leftover and "edgenet-bench-" in leftover[0]:
            _cleanup(session, python, leftover[0])
        raise
    out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    if proc.returncode == 255:
        raise session.connection_error(err)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines or lines[-1] != "EDGENET-UPLOADED":
        if lines and "edgenet-bench-" in lines[0]:
            _cleanup(session, python, lines[0])
        raise RemoteError(f"upload to {d} failed: {last_line(err) or f'exit status {proc.returncode}'}")
    return lines[0]


def _send_tar(proc: subprocess.Popen, plan: _Upload) -> None:
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
            for path, name in plan.files:
                tar.add(str(path), arcname=name, recursive=False, filter=_tar_filter)
            if plan.data_dir is not None:
                tar.add(str(plan.data_dir), arcname="data", filter=_tar_filter)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the far end stopped reading: its stderr says why


def _run_supervised(session: SshSession, python: str, remote_dir: str, argv: Sequence[str],
                    on_line: Callable[[str], None]) -> str:
    """Run ``argv`` on the device under the supervisor, forwarding its stderr line by line; its
    stdout, or a RemoteError. On any interruption the device is stopped and cleaned before re-raising."""
    proc = subprocess.Popen(session.command([python, "-c", scripts.SUPERVISE, remote_dir, *argv]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    seen: list[str] = []
    state = {"pid": "", "cleaned": False}

    def pump():
        for line in proc.stderr:
            line = line.rstrip("\n")
            if line.startswith("EDGENET-PID "):
                state["pid"] = line.split()[1]
                continue
            if line == "EDGENET-CLEANED":
                state["cleaned"] = True
                continue
            seen.append(line)
            if line.strip() and not line.startswith("edgenet: error:"):
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        stdout = proc.stdout.read()        # the device's JSON; EOF once the supervisor has exited
        proc.wait()
        reader.join(timeout=10)
    except BaseException:                  # Ctrl-C, SIGTERM/SIGHUP (as Terminated), anything else
        _stop_connection(proc)
        _cleanup(session, python, remote_dir, state["pid"])
        raise
    finally:
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
    if not state["cleaned"]:               # the supervisor did not get to its own clean-up
        _cleanup(session, python, remote_dir, state["pid"])
    if proc.returncode == 255:
        raise session.connection_error("\n".join(seen))
    if proc.returncode != 0:
        errors = [line for line in seen if line.startswith("edgenet: ")]
        detail = errors[-1].split(": ", 1)[1] if errors else (last_line("\n".join(seen))
                                                              or f"exit status {proc.returncode}")
        if detail.startswith("error: "):
            detail = detail[len("error: "):]
        raise RemoteError(f"on {session.destination.host}: {detail}")
    return stdout


def _stop_connection(proc: subprocess.Popen) -> None:
    """End the local ssh: the connection closes, the device's supervisor sees EOF and stops the run."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
