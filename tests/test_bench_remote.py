"""`edgenet bench --ssh` against a real OpenSSH server started here on 127.0.0.1.

The server gets its own host key, client key, authorized_keys and sshd_config in a temp folder;
the client gets them through ``--ssh-option`` (known_hosts, identity). The "device" runs this
same Python with this source tree on its PYTHONPATH (sshd's SetEnv). Needs Debian's
openssh-server (``apt-get install -y openssh-server``); skipped with the reason otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _sshd import LocalSshd, free_port
from edgenet.benchmark import bench
from edgenet.benchmark.remote import Destination, SshSession
from edgenet.cli import main
from edgenet.errors import RemoteError, UsageError

pytestmark = pytest.mark.ssh

FAST = dict(warmup=1, warmup_seconds=0.0, runs=5, min_seconds=0.02, threads=1)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = LocalSshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def _remote_temp_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("edgenet-bench-*")}


def test_remote_bench_round_trip_with_data(sshd, tiny_convert_out, tmp_path):
    from PIL import Image

    data = tmp_path / "my images"                     # a space in the name, on purpose
    for cls, n in (("class_1", 2), ("class_4", 2)):
        (data / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(data / cls / f"{i}.png")
    before = _remote_temp_dirs()
    lines: list[str] = []
    r = bench(tiny_convert_out, data=data, ssh=sshd.destination, remote_python=sys.executable,
              ssh_options=sshd.options(), progress=lines.append, **FAST)
    assert r.remote.destination == sshd.destination and r.remote.python == sys.executable
    assert [m.role for m in r.models] == ["float", "int8"] and r.speedup is not None
    assert r.models[0].path == str(tiny_convert_out / "model_float.tflite")   # local paths, not the device's
    assert r.labels == str(tiny_convert_out / "labels.txt")
    assert r.accuracy.samples == 4 and r.accuracy.labelled
    assert r.model("int8").latency.runs >= 5 and r.settings.threads == 1
    assert any("edgenet" in line for line in lines) and any("measuring" in line for line in lines)
    assert _remote_temp_dirs() == before                # the device's temp folder was removed


def test_remote_cli_single_file_with_float_writes_local_json(sshd, tiny_convert_out, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", str(tiny_convert_out / "model_int8.tflite"), "--float",
                 str(tiny_convert_out / "model_float.tflite"), "--ssh", sshd.destination,
                 "--remote-python", sys.executable, *sum((["--ssh-option", o] for o in sshd.options()), []),
                 "--warmup", "1", "--warmup-seconds", "0", "--runs", "5", "--min-seconds", "0", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    d = json.loads(out.read_text())
    assert d["remote"]["destination"] == sshd.destination
    assert [m["role"] for m in d["models"]] == ["float", "int8"]
    assert "via ssh" in captured.out


def test_wrong_key_is_an_authentication_error(sshd, tiny_convert_out):
    with pytest.raises(RemoteError, match=r"authentication failed for .*Permission denied \(publickey\)"):
        bench(tiny_convert_out, ssh=sshd.destination, ssh_options=sshd.options(key="stranger_key"), **FAST)


def test_unknown_host_key_is_refused(sshd, tiny_convert_out, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteError, match="host key verification failed for 127.0.0.1"):
        bench(tiny_convert_out, ssh=sshd.destination, ssh_options=sshd.options(known_hosts=empty), **FAST)
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {(sshd.root / 'client_key.pub').read_text()}")
    with pytest.raises(RemoteError, match="host key of 127.0.0.1.* has CHANGED"):
        bench(tiny_convert_out, ssh=sshd.destination, ssh_options=sshd.options(known_hosts=wrong), **FAST)


def test_no_python_and_no_edgenet_on_the_device(sshd, tiny_convert_out, tmp_path):
    with pytest.raises(RemoteError, match="no /opt/nowhere/python3 on 127.0.0.1"):
        bench(tiny_convert_out, ssh=sshd.destination, remote_python="/opt/nowhere/python3",
              ssh_options=sshd.options(), **FAST)
    bare = tmp_path / "bare-python"                  # a Python that sees no site-packages, no PYTHONPATH
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    bare.chmod(0o755)
    with pytest.raises(RemoteError, match=r"edgenet cannot be imported by .*bare-python on 127.0.0.1 "
                                          r"\(ModuleNotFoundError.*pip install edgenet"):
        bench(tiny_convert_out, ssh=sshd.destination, remote_python=str(bare), ssh_options=sshd.options(), **FAST)


def test_nothing_the_user_passes_runs_as_shell_code(sshd, tiny_convert_out, tmp_path):
    marker = tmp_path / "pwned"
    sneaky = f"python3; touch {marker}"
    with pytest.raises(RemoteError, match="no python3; touch"):
        bench(tiny_convert_out, ssh=sshd.destination, remote_python=sneaky, ssh_options=sshd.options(), **FAST)
    with pytest.raises(RemoteError, match="on 127.0.0.1: cannot load delegate library"):
        bench(tiny_convert_out, ssh=sshd.destination, remote_python=sys.executable,
              delegate=f"/x.so; touch {marker}; $(touch {marker})", ssh_options=sshd.options(), **FAST)
    odd = tmp_path / "it's $(touch pwned) `x`"
    odd.mkdir()
    for name in ("model_int8.tflite", "preprocess.json"):
        shutil.copy(tiny_convert_out / name, odd / name)
    r = bench(odd, ssh=sshd.destination, remote_python=sys.executable, ssh_options=sshd.options(), **FAST)
    assert r.models[0].path == str(odd / "model_int8.tflite")
    assert not marker.exists() and not (Path.home() / "pwned").exists()


def test_destination_and_option_validation(tiny_convert_out):
    assert Destination.parse("pi@raspberrypi.local:2222") == Destination("pi", "raspberrypi.local", 2222)
    assert Destination.parse("[::1]:22").ssh_host == "::1"
    for bad in ("-oProxyCommand=sh", "pi@host:99999", "pi@ho st", "pi@host;ls", ""):
        with pytest.raises(UsageError):
            Destination.parse(bad)
    with pytest.raises(UsageError, match="ProxyCommand is not accepted"):
        SshSession(Destination.parse("pi@host"), ["ProxyCommand=sh -c 'touch x'"])
    with pytest.raises(UsageError, match="KEY=VALUE"):
        SshSession(Destination.parse("pi@host"), ["-F/etc/passwd"])
    with pytest.raises(UsageError, match="data must be a folder"):
        bench(tiny_convert_out, ssh="pi@127.0.0.1:1", data=np.zeros((1, 32, 32, 3), np.float32))


def test_connection_refused(tiny_convert_out):
    port = free_port()
    with pytest.raises(RemoteError, match=f"ssh to 127.0.0.1:{port}: connection refused"):
        bench(tiny_convert_out, ssh=f"nobody@127.0.0.1:{port}", **FAST)
