"""``edgenet bench --ssh user@host[:port]``: run the benchmark on a device and bring the JSON back.

Steps, each its own ssh call (OpenSSH client, BatchMode: never a password prompt):
preflight (the device's Python imports edgenet) -> upload (one tar stream into a fresh temp dir,
unpacked by the device's Python) -> run ``python -m edgenet bench ... --json -`` there (its progress
forwarded) -> remove the temp dir. Every remote command line is built with ``shlex.quote`` from an
argument list and the uploaded files get fixed names, so nothing the user passes runs as shell code.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from edgenet.benchmark.models import FLOAT, INT8, resolve_target
from edgenet.benchmark.options import BenchSettings
from edgenet.benchmark.result import BenchResult, RemoteInfo
from edgenet.errors import DataError, RemoteError, UsageError

_DESTINATION = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)"
    r"(?::(?P<port>[0-9]{1,5}))?$")
_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=[^\r\n]*$")
# ssh options that make the local ssh run a command: not taken from the command line (use ~/.ssh/config)
_LOCAL_COMMAND_OPTIONS = {"proxycommand", "localcommand", "permitlocalcommand", "knownhostscommand",
                          "remotecommand", "match"}

_PREFLIGHT = (
    "import sys\n"
    "try:\n"
    "    import edgenet\n"
    "except Exception as exc:\n"
    "    print('EDGENET-MISSING', type(exc).__name__, str(exc).splitlines()[0] if str(exc) else '')\n"
    "    sys.exit(3)\n"
    "print('EDGENET-OK', edgenet.__version__, sys.version.split()[0])\n"
)
_UPLOAD = (
    "import sys, tarfile, tempfile\n"
    "d = tempfile.mkdtemp(prefix='edgenet-bench-')\n"
    "print(d, flush=True)\n"
    "with tarfile.open(fileobj=sys.stdin.buffer, mode='r|') as t:\n"
    "    t.extractall(d, **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))\n"
    "print('EDGENET-UPLOADED', flush=True)\n"
)
_CLEANUP = "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)"


@dataclass(frozen=True)
class Destination:
    user: str | None
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """``user@host[:port]``, ``host``, ``user@[::1]:2222``; nothing that ssh could read as an option."""
        m = _DESTINATION.match(text.strip())
        if not m:
            raise UsageError(f"--ssh {text!r}: expected user@host[:port] (e.g. pi@raspberrypi.local:22)")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"--ssh {text!r}: port {port} is out of range")
        return cls(m["user"], m["host"], port)

    @property
    def ssh_host(self) -> str:
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def __str__(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"{who}{self.host}" + (f":{self.port}" if self.port else "")


class SshSession:
    """ssh argument lists for one destination, and the turning of ssh failures into RemoteErrors."""

    def __init__(self, destination: Destination, options: Sequence[str] = (), connect_timeout: int = 15):
        self.destination = destination
        if shutil.which("ssh") is None:
            raise RemoteError("no ssh client found on this machine: install OpenSSH (apt install openssh-client)")
        extra: list[str] = []
        for option in options:
            key = option.split("=", 1)[0].strip().lower()
            if not _OPTION.match(option.strip()):
                raise UsageError(f"--ssh-option {option!r}: expected KEY=VALUE, as in ssh -o")
            if key in _LOCAL_COMMAND_OPTIONS:
                raise UsageError(f"--ssh-option {option.split('=', 1)[0]} runs a local command and is not "
                                 "accepted here: put it in ~/.ssh/config")
            extra += ["-o", option.strip()]
        self.base = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}", *extra]
        if destination.port:
            self.base += ["-p", str(destination.port)]
        if destination.user:
            self.base += ["-l", destination.user]

    def command(self, remote_argv: Sequence[str]) -> list[str]:
        """The local argv that runs ``remote_argv`` on the device (quoted for its shell)."""
        return [*self.base, "--", self.destination.ssh_host, shlex.join(list(remote_argv))]

    def run(self, remote_argv: Sequence[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.command(remote_argv), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"{self.destination}: no answer within {timeout:g} s") from exc

    def connection_error(self, stderr: str) -> RemoteError:
        """A one-line RemoteError for ssh's own failure (exit status 255)."""
        d, text = self.destination, stderr or ""
        port = d.port or 22
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return RemoteError(f"the host key of {d.host}:{port} has CHANGED since it was last seen: if the device "
                               "was reinstalled, remove the old key with ssh-keygen -R; otherwise do not connect")
        if "Host key verification failed" in text or "No ED25519 host key is known" in text \
                or "host key is known" in text:
            login = f"{d.user}@{d.ssh_host}" if d.user else d.ssh_host
            return RemoteError(f"host key verification failed for {d.host}:{port}: the device's key is not in "
                               f"known_hosts; connect once with ssh {'-p %d ' % d.port if d.port else ''}"
                               f"{login} to check and accept it (or pass --ssh-option StrictHostKeyChecking=accept-new)")
        if "Permission denied" in text or "Too many authentication failures" in text:
            why = _last_line(text, "Permission denied")
            why = why[why.index("Permission denied"):] if "Permission denied" in why else "permission denied"
            return RemoteError(f"authentication failed for {d}: {why}; set up key login (ssh-copy-id) or "
                               "pass --ssh-option IdentityFile=PATH")
        for needle, what in (("Connection refused", "connection refused (is sshd running there?)"),
                             ("Could not resolve hostname", "cannot resolve the host name"),
                             ("timed out", "connection timed out"),
                             ("No route to host", "no route to host"),
                             ("Network is unreachable", "network is unreachable")):
            if needle in text:
                return RemoteError(f"ssh to {d.host}:{port}: {what}")
        return RemoteError(f"ssh to {d} failed: {_last_line(text) or 'exit status 255'}")


def _last_line(text: str, containing: str = "") -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and containing in line]
    return lines[-1].rstrip(".") if lines else ""


@dataclass(frozen=True)
class _Upload:
    files: tuple[tuple[Path, str], ...]   # (local file, name in the remote dir)
    data_dir: Path | None
    target_arg: str                       # TARGET relative to the remote dir
    float_arg: str | None
    local_names: dict                     # remote file name -> local path


def _plan_upload(target, float_model, data) -> _Upload:
    resolved = resolve_target(target, float_model)
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
    for extra, name in ((resolved.preprocess, "preprocess.json"), (resolved.labels, "labels.txt")):
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
    argv = [python, "-m", "edgenet", "bench", f"{remote_dir}/{plan.target_arg}", "--json", "-",
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
                 progress: Callable[[str], None] = lambda message: None) -> BenchResult:
    """Run ``edgenet bench`` on the device at ``destination`` and return its result."""
    dest = Destination.parse(destination)
    if not remote_python.strip():
        raise UsageError("--remote-python must name the device's Python")
    plan = _plan_upload(target, float_model, data)
    session = SshSession(dest, ssh_options)

    progress(f"[{dest.host}] checking {remote_python} and edgenet on the device")
    version = _preflight(session, remote_python)
    progress(f"[{dest.host}] edgenet {version}")
    remote_dir = _upload(session, remote_python, plan, progress)
    try:  # from here on the device's temp dir is removed whatever happens
        argv = _remote_bench_argv(remote_python, remote_dir, plan, data, limit, settings)
        stdout = _run_streaming(session, argv, lambda line: progress(f"[{dest.host}] {line}"))
    finally:
        session.run([remote_python, "-c", _CLEANUP, remote_dir], timeout=60)
    try:
        result = BenchResult.from_dict(json.loads(stdout))
    except (json.JSONDecodeError, DataError) as exc:
        raise RemoteError(f"{dest}: the device sent back no bench result ({exc})") from exc
    return result.with_remote(RemoteInfo(str(dest), remote_python), plan.local_names)


def _preflight(session: SshSession, python: str) -> str:
    done = session.run([python, "-c", _PREFLIGHT], timeout=120)
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
                          f"{python} -m pip install edgenet")
    ok = [line for line in out if line.startswith("EDGENET-OK")]
    if done.returncode != 0 or not ok:
        detail = _last_line(done.stderr) or _last_line(done.stdout) or f"exit status {done.returncode}"
        raise RemoteError(f"{python} on {d.host} failed to start: {detail}")
    parts = ok[-1].split()
    return f"{parts[1]} (Python {parts[2]})" if len(parts) >= 3 else "?"


def _upload(session: SshSession, python: str, plan: _Upload, progress) -> str:
    d = session.destination
    size = sum(p.stat().st_size for p, _ in plan.files)
    progress(f"[{d.host}] uploading {len(plan.files)} file(s), {size / 1e6:.1f} MB"
             + (f" and the images in {plan.data_dir}" if plan.data_dir else ""))
    proc = subprocess.Popen(session.command([python, "-c", _UPLOAD]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _send_tar(proc, plan)
    except BaseException:  # e.g. a local file vanished, or Ctrl-C: leave nothing behind on the device
        proc.kill()
        leftover = proc.communicate()[0].decode(errors="replace").strip().splitlines()
        if leftover and "edgenet-bench-" in leftover[0]:
            session.run([python, "-c", _CLEANUP, leftover[0]], timeout=60)
        raise
    stdout, stderr = proc.communicate(timeout=None)
    out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    if proc.returncode == 255:
        raise session.connection_error(err)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines or lines[-1] != "EDGENET-UPLOADED":
        if lines and "edgenet-bench-" in lines[0]:
            session.run([python, "-c", _CLEANUP, lines[0]], timeout=60)
        raise RemoteError(f"upload to {d} failed: {_last_line(err) or f'exit status {proc.returncode}'}")
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


def _run_streaming(session: SshSession, argv: Sequence[str], on_line: Callable[[str], None]) -> str:
    """Run on the device, forwarding its stderr line by line; its stdout, or a RemoteError."""
    proc = subprocess.Popen(session.command(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    seen: list[str] = []

    def pump():
        for line in proc.stderr:
            line = line.rstrip("\n")
            seen.append(line)
            if line.strip() and not line.startswith("edgenet: error:"):
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait()
    reader.join(timeout=10)
    if proc.returncode == 255:
        raise session.connection_error("\n".join(seen))
    if proc.returncode != 0:
        errors = [line for line in seen if line.startswith("edgenet: ")]
        detail = errors[-1].split(": ", 1)[1] if errors else (_last_line("\n".join(seen))
                                                              or f"exit status {proc.returncode}")
        if detail.startswith("error: "):
            detail = detail[len("error: "):]
        raise RemoteError(f"on {session.destination.host}: {detail}")
    return stdout
