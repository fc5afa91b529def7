"""edgenet sweep on a real two-node Ray cluster started on this machine the way a user's second
machine joins one (`ray start --head`, then `ray start --address HEAD:PORT` with its own resources
and temp folder): cells run on both nodes, the second node is killed while it converts a cell and
no cell is lost, and the cells match the local process pool's byte for byte. Also: docs/sweep.md's Ray
example runs its cells into a folder of its own.

Every Ray process the test starts is in one of two process groups (one per node, `ray start
--block` in a new session); teardown kills exactly those groups, never other Ray instances."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edgenet.sweep import SweepSpec, sweep
from edgenet.sweep.results import RESULTS

ROOT = Path(__file__).resolve().parent.parent
GRID = dict(models=("mobilenet_v1",), alphas=(0.25, 0.5), resolutions=(32,), targets=("rpi", "cortex-m"),
            num_classes=2, calib_samples=16, eval_samples=8)
CLI_GRID = ["mobilenet_v1", "--alpha", "0.25,0.5", "--resolution", "32", "--target", "rpi,cortex-m",
            "--num-classes", "2", "--calib-samples", "16", "--eval-samples", "8"]
SAME = ("id", "status", "sha256", "size_bytes", "sqnr_db", "top1_agreement", "arena_bytes", "flash_bytes", "fits",
        "mult_adds")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                out[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return out


def _node_processes(pgid: int) -> set[int]:
    """The processes of the node `ray start --block` started in process group ``pgid``: that group
    (GCS, raylet, agents) and everything below it (Ray's workers leave the group)."""
    table = _processes()
    mine = {pid for pid, (_, group) in table.items() if group == pgid}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in mine and pid not in mine}
        mine |= more
        grew = bool(more)
    return mine


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _converting(pgid: int) -> set[int]:
    """Ray workers of that node running a sweep cell now (Ray titles them after the task)."""
    return {pid for pid in _node_processes(pgid) if (_cmdline(pid) or [b""])[0].startswith(b"ray::_ray_cell")}


def _env() -> dict:
    # RAY_AUTH_MODE: Ray turns token authentication on for a cluster it starts when ~/.ray/auth_token
    # exists, and then its own `ray status` cannot connect; this loopback test cluster runs without
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


class Cluster:
    def __init__(self):
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.temps: list[str] = []

    def start_node(self, name: str, *args: str) -> None:
        # a short temp folder of its own: Ray's unix socket paths must stay under 108 bytes
        temp = tempfile.mkdtemp(prefix="enr-", dir="/tmp")
        self.temps.append(temp)
        agent, grpc, env_agent, metrics = _free_ports(4)
        log = open(Path(temp) / "start.log", "w")
        self.nodes[name] = subprocess.Popen(
            ["ray", "start", *args, "--num-cpus", "1", "--resources", json.dumps({name: 1}), "--temp-dir", temp,
             "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc),
             "--runtime-env-agent-port", str(env_agent), "--metrics-export-port", str(metrics),
             "--disable-usage-stats", "--block"],
            env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def alive_nodes(self) -> int:
        out = subprocess.run(["ray", "status", "--address", self.address], env=_env(), capture_output=True,
                             text=True, timeout=60)
        active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out.stdout else ""
        return sum(" node_" in line for line in active.splitlines())

    def wait_nodes(self, n: int, seconds: float = 150) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            for name, proc in self.nodes.items():
                assert proc.poll() is None, f"ray start ({name}) exited: {self._log(name)}"
            if self.alive_nodes() >= n:
                return
            time.sleep(2)
        raise AssertionError(f"the cluster did not reach {n} nodes: {[self._log(k) for k in self.nodes]}")

    def _log(self, name: str) -> str:
        i = list(self.nodes).index(name)
        return (Path(self.temps[i]) / "start.log").read_text()[-2000:]

    def node_id(self, name: str) -> str:
        """Ray's id of that node, from its raylet's command line."""
        for pid in _node_processes(self.nodes[name].pid):
            for arg in _cmdline(pid):
                if arg.startswith(b"--node_id="):
                    return arg.split(b"=", 1)[1].decode()
        raise AssertionError(f"no raylet for {name}")

    def kill(self, name: str) -> None:
        """SIGKILL every process of that node (its raylet, workers, agents): the machine is gone.
        Only the processes this test started: its group and their descendants."""
        proc = self.nodes[name]
        deadline = time.time() + 30
        while time.time() < deadline:
            left = _node_processes(proc.pid)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.nodes)[::-1]:
            self.kill(name)
        for temp in self.temps:
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_cluster():
    pytest.importorskip("ray")
    if shutil.which("ray") is None:
        pytest.skip("the ray command is not on PATH")
    cluster = Cluster()
    try:
        cluster.start_node("head", "--head", "--port", str(cluster.port), "--include-dashboard", "false",
                           "--ray-client-server-port", str(_free_ports(1)[0]))
        cluster.wait_nodes(1)
        cluster.start_node("worker2", "--address", cluster.address)
        cluster.wait_nodes(2)
        yield cluster
    finally:
        cluster.stop()


def _lines(results: Path) -> list[dict]:
    return [json.loads(x) for x in results.read_text().splitlines()] if results.is_file() else []


def _sweep_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgenet", "sweep", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.mcu
def test_sweep_on_a_two_node_cluster_survives_a_dead_node_and_matches_the_pool(ray_cluster, tmp_path):
    head, worker2 = ray_cluster.node_id("head"), ray_cluster.node_id("worker2")
    ray = ["--executor", "ray", "--ray-address", ray_cluster.address]

    # (a) four cells at once on two nodes of one CPU each: both nodes convert
    stdout, stderr = _sweep_cli([*CLI_GRID, "--out", str(tmp_path / "A"), *ray]).communicate(timeout=420)
    assert "Traceback" not in stderr
    done = {r["id"]: r for r in _lines(tmp_path / "A" / RESULTS)}
    assert len(done) == 4 and all(r["status"] == "ok" for r in done.values()), stderr
    assert {r["ray_node"] for r in done.values()} == {head, worker2}

    # (c) the same cells on the local process pool: the same ids, verdicts, sizes and model bytes
    by_pool = sweep(SweepSpec(**GRID), tmp_path / "local", executor="local", workers=2)
    assert by_pool.ran == 4 and by_pool.failed == 0
    assert {r["id"]: {k: r.get(k) for k in SAME} for r in by_pool.records} == \
        {i: {k: r.get(k) for k in SAME} for i, r in done.items()}
    for i, r in done.items():
        assert (tmp_path / "A" / "cells" / i / r["file"]).read_bytes() == \
            (tmp_path / "local" / "cells" / i / r["file"]).read_bytes()

    # (b) four other cells; the second node is killed (raylet, workers: every process) while it converts one
    out = tmp_path / "B"
    args = [*CLI_GRID, "--out", str(out), *ray]
    args[args.index("--resolution") + 1] = "64"
    proc = _sweep_cli(args)
    try:
        deadline = time.time() + 420
        while time.time() < deadline and proc.poll() is None and not _converting(ray_cluster.nodes["worker2"].pid):
            time.sleep(0.1)
        assert proc.poll() is None, ("the sweep ended before the second node converted a cell", proc.communicate())
        before = _lines(out / RESULTS)
        ray_cluster.kill("worker2")
        stdout, stderr = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stderr
    records = _lines(out / RESULTS)
    assert len(before) < 4 and records[:len(before)] == before
    if proc.returncode != 0:   # a cell Ray could not finish elsewhere: recorded failed, redone by --retry-failed
        assert proc.returncode == 1, stderr
        assert all("Ray" in r["error"] for r in records if r["status"] == "failed"), records
        again = subprocess.run([sys.executable, "-m", "edgenet", "sweep", *args, "--retry-failed"], env=_env(),
                               capture_output=True, text=True, timeout=420)
        assert again.returncode == 0, again.stderr
        records = _lines(out / RESULTS)
    last = {r["id"]: r for r in records}   # the last line of each cell
    assert len(last) == 4 and all(r["status"] == "ok" for r in last.values()), records
    # the cell the dead node was converting was finished by the head, and so was every later one
    assert all(r["ray_node"] == head for r in records[len(before):])
    assert sum(r["ray_node"] == worker2 for r in records) == sum(r["ray_node"] == worker2 for r in before)
    # one folder per cell, nothing half-written left
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(last)


def _sweep_commands(text: str) -> list[list[str]]:
    """The `edgenet sweep` commands of a text (continuation lines joined, comments dropped)."""
    import shlex

    joined = text.replace("\\\n", " ")
    return [shlex.split(line.split("#", 1)[0])[2:] for line in joined.splitlines()
            if line.strip().startswith("edgenet sweep")]


def _same_cells_same_out(commands: list[list[str]]) -> list[str]:
    """Commands that repeat an earlier command's cells into its --out, with another executor: a
    sweep folder skips its finished cells, so such a command runs nothing."""
    seen, bad = {}, []
    for args in commands:
        opts, rest, i = {}, [], 0
        while i < len(args):
            if args[i] in ("--out", "--executor", "--ray-address", "--workers"):
                opts[args[i]] = args[i + 1]
                i += 2
            else:
                rest.append(args[i])
                i += 1
        if "--out" not in opts:
            continue
        key = (tuple(rest), opts["--out"])
        if key in seen and seen[key] != opts.get("--executor", "local"):
            bad.append(" ".join(args))
        seen.setdefault(key, opts.get("--executor", "local"))
    return bad


def test_readme_and_help_run_the_ray_example_into_a_folder_of_its_own():
    page = (ROOT / "docs" / "sweep.md").read_text(encoding="utf-8")
    section = page[page.index("# Sweeps"):page.index("## Measured on this machine")]
    commands = _sweep_commands(section)
    assert any("ray" in c for c in commands) and len(commands) >= 4
    assert _same_cells_same_out(commands) == []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme_commands = _sweep_commands(readme[readme.index("### `edgenet sweep`"):readme.index("### `edgenet train`")])
    assert readme_commands and _same_cells_same_out(readme_commands + commands) == []
    from edgenet.cli.sweep import command

    assert _same_cells_same_out(_sweep_commands(command.__doc__)) == []
    # the check itself: the example as it was (the same cells into the same folder) is caught
    assert _same_cells_same_out([["m", "--out", "S"], ["m", "--out", "S", "--executor", "ray"]])
