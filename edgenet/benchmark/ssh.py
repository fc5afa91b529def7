"""The ssh side of ``edgenet bench --ssh``: the destination, the ``-o`` options we let through, and
the argument lists handed to the local OpenSSH client.

The local ``ssh`` runs with the user's rights, and several ssh_config options make it run a
program or load a library (ProxyCommand, LocalCommand, KnownHostsCommand, PKCS11Provider,
SecurityKeyProvider, XAuthLocation, Match exec, Include of another file ...). So ``--ssh-option``
is an ALLOW-list (:data:`ALLOWED_OPTIONS`): options that only choose ports, users, key files,
timeouts and algorithms, each with a value check. Values never carry ``%`` tokens, ``${VAR}``
expansions, quotes or control characters, so nothing is expanded or split behind our back. What
the user's own ``~/.ssh/config`` says still applies (it is theirs); the command line adds nothing
that runs code. Reference: ssh_config(5), OpenSSH 9.x.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from edgenet.errors import RemoteError, UsageError

_DESTINATION = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)"
    r"(?::(?P<port>[0-9]{1,5}))?$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")           # user / host-alias names
_ALGORITHMS = re.compile(r"^[+^-]?[A-Za-z0-9@._-]+(?:,[A-Za-z0-9@._-]+)*$")   # ssh's algorithm lists
_PATH_BAD = re.compile(r"[%$\"'`\\\x00-\x1f\x7f]")                  # tokens, env expansion, quotes, control


def _yes_no(*extra: str) -> Callable[[str], str | None]:
    choices = ("yes", "no", *extra)

    def check(value: str) -> str | None:
        return None if value.lower() in choices else f"one of {', '.join(choices)}"
    return check


def _integer(low: int, high: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value.isdigit() and low <= int(value) <= high else f"an integer in [{low}, {high}]"
    return check


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value.lower() in (c.lower() for c in choices) else f"one of {', '.join(choices)}"
    return check


def _path(value: str) -> str | None:
    if _PATH_BAD.search(value) or value.startswith("-"):
        return "a plain file path (no %-tokens, ${VAR}, quotes or control characters)"
    return None


def _name(value: str) -> str | None:
    return None if _NAME.match(value) else "a name of letters, digits, '.', '_' or '-'"


def _algorithms(value: str) -> str | None:
    return None if _ALGORITHMS.match(value) else "a comma-separated list of algorithm names"


# option -> (value check, why it cannot run code). Names are matched case-insensitively, as ssh does.
ALLOWED_OPTIONS: Mapping[str, tuple[Callable[[str], str | None], str]] = {
    "IdentityFile": (_path, "a private key file ssh reads"),
    "CertificateFile": (_path, "a certificate file ssh reads"),
    "UserKnownHostsFile": (_path, "the known_hosts file(s) ssh reads (and appends to with accept-new)"),
    "GlobalKnownHostsFile": (_path, "the system-wide known_hosts file ssh reads"),
    "IdentitiesOnly": (_yes_no(), "use only the given identity files"),
    "Port": (_integer(1, 65535), "the TCP port"),
    "User": (_name, "the login name"),
    "HostKeyAlias": (_name, "the name looked up in known_hosts"),
    "ConnectTimeout": (_integer(1, 3600), "seconds to wait for the TCP connection"),
    "ConnectionAttempts": (_integer(1, 10), "how many times to try connecting"),
    "ServerAliveInterval": (_integer(0, 3600), "seconds between keep-alive messages"),
    "ServerAliveCountMax": (_integer(1, 100), "unanswered keep-alives before giving up"),
    "TCPKeepAlive": (_yes_no(), "TCP keep-alives"),
    "StrictHostKeyChecking": (_one_of("yes", "no", "accept-new", "off"),
                              "how unknown host keys are treated ('ask' would wait for a prompt)"),
    "CheckHostIP": (_yes_no(), "also check the host's IP in known_hosts"),
    "UpdateHostKeys": (_yes_no(), "accept extra host keys the server announces"),
    "HashKnownHosts": (_yes_no(), "hash names written to known_hosts"),
    "BatchMode": (_one_of("yes"), "never prompt (always on: a prompt would hang the benchmark)"),
    "LogLevel": (_one_of("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3"),
                 "how much ssh reports on stderr"),
    "Compression": (_yes_no(), "compress the connection (helps slow links when uploading data)"),
    "AddressFamily": (_one_of("any", "inet", "inet6"), "IPv4 or IPv6"),
    "PreferredAuthentications": (_algorithms, "the order of authentication methods"),
    "PubkeyAuthentication": (_yes_no("unbound", "host-bound"), "public-key login"),
    "HostKeyAlgorithms": (_algorithms, "accepted host key types"),
    "PubkeyAcceptedAlgorithms": (_algorithms, "accepted client key types"),
    "PubkeyAcceptedKeyTypes": (_algorithms, "old name of PubkeyAcceptedAlgorithms"),
    "KexAlgorithms": (_algorithms, "key-exchange algorithms"),
    "Ciphers": (_algorithms, "ciphers"),
    "MACs": (_algorithms, "message authentication codes"),
}
# Not allowed, among others: ProxyCommand, LocalCommand, PermitLocalCommand, KnownHostsCommand,
# RemoteCommand, Match (exec), Include, PKCS11Provider and SecurityKeyProvider (load a library),
# XAuthLocation (runs xauth), ProxyJump (a second ssh with its own options), ControlMaster/Path/
# Persist (a master connection that outlives the run), Local/Remote/DynamicForward and Tunnel
# (open ports), ForwardAgent/ForwardX11 (hand the device our credentials), SendEnv/SetEnv (change
# the device's environment), RequestTTY, EscapeChar, SessionType, StdinNull, IdentityAgent.
_CANONICAL = {name.lower(): name for name in ALLOWED_OPTIONS}
_OPTION_FORM = re.compile(r"^\s*(?P<key>[A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(?P<value>\S(?:.*\S)?)\s*$")


def parse_ssh_option(text: str) -> str:
    """One ``--ssh-option`` ("Key=Value" or "Key Value", key in any case) -> "Key=Value" for ``ssh -o``.

    Raises UsageError (one line, naming the option and the allowed ones) for anything else.
    """
    m = _OPTION_FORM.match(text)
    if not m or "\n" in text or "\r" in text:
        raise UsageError(f"--ssh-option {text!r}: expected KEY=VALUE, as in ssh -o (e.g. IdentityFile=~/.ssh/pi)")
    key = _CANONICAL.get(m["key"].lower())
    if key is None:
        raise UsageError(f"--ssh-option {m['key']} is not accepted (it could run a program, load a library or "
                         f"change more than the connection; put it in ~/.ssh/config if you need it); "
                         f"allowed: {', '.join(ALLOWED_OPTIONS)}")
    value = m["value"]
    check, _ = ALLOWED_OPTIONS[key]
    problem = check(value)
    if problem:
        raise UsageError(f"--ssh-option {key}={value!r}: the value must be {problem}")
    return f"{key}={value}"


@dataclass(frozen=True)
class Destination:
    user: str | None
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """``user@host[:port]``, ``host``, ``user@[::1]:2222``; nothing that ssh could read as an option
        (the first character is a letter, digit, '_' or '[')."""
        m = _DESTINATION.match(text.strip())
        if not m:
            raise UsageError(f"--ssh {text!r}: expected user@host[:port] (e.g. pi@raspberrypi.local:22)")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"--ssh {text!r}: port {port} is out of range [1, 65535]")
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
        extra: list[str] = []
        for option in options:
            extra += ["-o", parse_ssh_option(option)]
        if shutil.which("ssh") is None:
            raise RemoteError("no ssh client found on this machine: install OpenSSH (apt install openssh-client)")
        # ssh keeps the first value it sees for an option: the user's come first (their ConnectTimeout
        # wins over ours); none of theirs can undo BatchMode or start a shared master connection
        self.base = ["ssh", "-T", *extra, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                     "-o", "ControlMaster=no", "-o", "ControlPath=none"]
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
                                  text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"{self.destination}: no answer within {timeout:g} s") from exc

    def connection_error(self, stderr: str) -> RemoteError:
        """A one-line RemoteError for ssh's own failure (exit status 255)."""
        d, text = self.destination, stderr or ""
        port = d.port or 22
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return RemoteError(f"the host key of {d.host}:{port} has CHANGED since it was last seen: if the device "
                               "was reinstalled, remove the old key with ssh-keygen -R; otherwise do not connect")
        if "Host key verification failed" in text or "host key is known" in text:
            login = f"{d.user}@{d.ssh_host}" if d.user else d.ssh_host
            return RemoteError(f"host key verification failed for {d.host}:{port}: the device's key is not in "
                               f"known_hosts; connect once with ssh {'-p %d ' % d.port if d.port else ''}"
                               f"{login} to check and accept it (or pass --ssh-option StrictHostKeyChecking=accept-new)")
        if "Permission denied" in text or "Too many authentication failures" in text:
            why = last_line(text, "Permission denied")
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
        return RemoteError(f"ssh to {d} failed: {last_line(text) or 'exit status 255'}")


def last_line(text: str, containing: str = "") -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and containing in line]
    return lines[-1].rstrip(".") if lines else ""
