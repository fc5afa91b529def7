"""A real OpenSSH server on 127.0.0.1 for the `edgenet bench --ssh` tests.

The server gets its own host key, client key, authorized_keys and sshd_config in a temp folder;
the client gets them through ``--ssh-option`` (known_hosts, identity). The "device" runs this
same Python with this source tree on its PYTHONPATH (sshd's SetEnv), plus any ``env`` given (e.g.
its own TMPDIR, so a test can see exactly what the device left behind). Needs Debian's
openssh-server (``apt-get install -y openssh-server``); the fixture skips with the reason otherwise.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)),
                                    None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSshd:
    def __init__(self, root: Path, env: dict[str, str] | None = None):
        if SSHD is None:
            pytest.skip("OpenSSH server not installed (apt-get install -y openssh-server)")
        if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
            pytest.skip("OpenSSH client not installed (apt-get install -y openssh-client)")
        if not os.path.isdir("/run/sshd"):        # sshd's privilege-separation dir (made by its init script)
            try:
                os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            except OSError as exc:
                pytest.skip(f"sshd needs /run/sshd and it cannot be created here ({exc})")
        self.root = root
        for name in ("host_key", "client_key", "stranger_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
        shutil.copy(root / "client_key.pub", root / "authorized_keys")
        self.port = free_port()
        self.user = os.environ.get("USER") or __import__("getpass").getuser()
        (root / "sshd_config").write_text("\n".join([
            f"HostKey {root / 'host_key'}", "ListenAddress 127.0.0.1", f"Port {self.port}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PermitRootLogin prohibit-password", f"PidFile {root / 'sshd.pid'}", "LogLevel ERROR",
            "SetEnv " + " ".join(f"{k}={v}" for k, v in {"PYTHONPATH": str(REPO), **(env or {})}.items()),
            ""]))
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {(root / 'host_key.pub').read_text()}")
        self._log = open(root / "sshd.log", "wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.skip(f"sshd did not start: {(root / 'sshd.log').read_text().strip()[:300]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            pytest.skip("sshd did not listen within 10 s")

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def options(self, key: str = "client_key", known_hosts: Path | None = None) -> list[str]:
        return [f"UserKnownHostsFile={known_hosts or self.known_hosts}", f"IdentityFile={self.root / key}",
                "IdentitiesOnly=yes", "StrictHostKeyChecking=yes"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
