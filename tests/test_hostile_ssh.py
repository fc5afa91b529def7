"""Hostile input for `edgenet bench --ssh`, each case the real command in a fresh process, against
the real OpenSSH server on 127.0.0.1 (tests/_sshd.py).

- options that would make the local ssh run a program or load a library are refused before ssh
  starts (allow-list), whatever their case or form ("Key=Value", "Key Value");
- a destination ssh could read as an option is refused;
- Ctrl-C (SIGINT), SIGTERM and SIGHUP during the remote run stop the benchmark on the "device" and
  remove its temp folder. The device's TMPDIR is a folder of this test (sshd SetEnv), so "nothing
  left behind" is checked exactly: that folder is empty and no process mentions it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _sshd import LocalSshd

pytestmark = pytest.mark.ssh
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    root = tmp_path_factory.mktemp("sshd")
    tmp = tmp_path_factory.mktemp("device_tmp")
    server = LocalSshd(root, env={"TMPDIR": str(tmp)})
    server.device_tmp = tmp
    yield server
    server.stop()


def _env(tmp: Path) -> dict:
    (tmp / "local_tmp").mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp / "local_tmp")}


def _options(server) -> list[str]:
    return [arg for option in server.options() for arg in ("--ssh-option", option)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("edgenet:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("option", [
    "PKCS11Provider=/tmp/evil.so",
    "pkcs11provider /tmp/evil.so",                 # any case, "Key Value" form
    "SecurityKeyProvider=/tmp/evil.so",
    "ProxyCommand=touch {marker}",
    "LocalCommand=touch {marker}",
    "KnownHostsCommand=/bin/sh -c 'touch {marker}'",
    "XAuthLocation=/tmp/evil",
    "Include=/etc/passwd",
    "Match=exec true",
    "IdentityFile=%d/.ssh/${{HOME}}",               # tokens / env expansion in a path
    "Port=0",
    "User=-oProxyCommand=x",
])
def test_options_that_could_run_code_are_refused(device, tiny_convert_out, tmp_path, option):
    marker = tmp_path / "pwned"
    cmd = [sys.executable, "-m", "edgenet", "bench", str(tiny_convert_out), "--ssh", device.destination,
           "--remote-python", sys.executable, *_options(device), "--ssh-option", option.format(marker=marker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "--ssh-option" in line and ("allowed:" in line or "must be" in line), line
    assert not marker.exists()
    assert not any(device.device_tmp.iterdir())


def test_destination_that_looks_like_an_option_is_refused(tiny_convert_out, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgenet", "bench", str(tiny_convert_out),
                           "--ssh=-oProxyCommand=touch x"], capture_output=True, text=True, timeout=60,
                          env=_env(tmp_path))
    assert proc.returncode == 2
    assert "expected user@host[:port]" in _one_error_line(proc.stderr)


def test_allowed_options_in_any_form_still_connect(device, tiny_convert_out, tmp_path):
    opts = ["--ssh-option", f"userknownhostsfile {device.known_hosts}",
            "--ssh-option", f"IDENTITYFILE={device.root / 'client_key'}",
            "--ssh-option", "IdentitiesOnly = yes", "--ssh-option", "ConnectTimeout=20"]
    proc = subprocess.run([sys.executable, "-m", "edgenet", "bench", str(tiny_convert_out), "--ssh",
                           device.destination, "--remote-python", sys.executable, *opts, "--warmup", "1",
                           "--warmup-seconds", "0", "--runs", "3", "--min-seconds", "0", "--threads", "1",
                           "-q"], capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "via ssh" in proc.stdout
    assert not any(device.device_tmp.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_remote_bench_stops_and_cleans_the_device(device, tiny_convert_out, tmp_path, signum):
    cmd = [sys.executable, "-m", "edgenet", "bench", str(tiny_convert_out), "--ssh", device.destination,
           "--remote-python", sys.executable, *_options(device), "--warmup", "1", "--warmup-seconds", "0",
           "--min-seconds", "600", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    seen = []
    try:
        deadline = time.monotonic() + 90
        for line in proc.stderr:                     # wait until the device is measuring
            seen.append(line)
            if "measuring" in line or time.monotonic() > deadline:
                break
        assert any("measuring" in line for line in seen), "".join(seen)
        remote_dirs = list(device.device_tmp.glob("edgenet-bench-*"))
        assert len(remote_dirs) == 1 and _processes_mentioning(str(remote_dirs[0]))   # it really runs there
        proc.send_signal(signum)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code in (130, 128 + signum), (code, rest)
    assert "Traceback" not in rest, rest
    lines = [line for line in rest.splitlines() if line.startswith("edgenet:")]
    assert len(lines) == 1 and lines[0].startswith("edgenet: interrupted"), rest
    deadline = time.monotonic() + 10           # the supervisor exits right after its clean-up
    while time.monotonic() < deadline and (any(device.device_tmp.iterdir())
                                           or _processes_mentioning(str(device.device_tmp))):
        time.sleep(0.1)
    assert not any(device.device_tmp.iterdir())
    assert _processes_mentioning(str(device.device_tmp)) == []
    assert not any((tmp_path / "local_tmp").iterdir())
