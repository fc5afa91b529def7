"""The Ray executor of `edgenet sweep`: one Ray task per cell, on a local Ray instance or a cluster.

See :mod:`edgenet.sweep.executors` for what both executors share (the worker function, the order
of results); this module holds what only Ray needs (a loopback-only local instance, the probe of
a cluster's address, the session folder's clean-up).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgenet.errors import UsageError
from edgenet.sweep.cells import Cell
from edgenet.sweep.worker import cell_files, memory_key, one_line

from edgenet.sweep.executors import Outcome, _failed
RAY_PREFIX = "edgenet-ray-"


_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # read when ray is imported, here and in its workers


def _loopback_only(on: bool = True, saved: list | None = None) -> list:
    """A local Ray instance listens on 127.0.0.1 only, not on this machine's network address
    (where Ray puts a head node by default, so that other nodes can join it). ``on=False`` with
    what ``on=True`` returned puts things back."""
    import sys

    if on:
        saved = [os.environ.get(_LOOPBACK_ENV), None]
        os.environ[_LOOPBACK_ENV] = "0"
        if "ray" in sys.modules:
            from ray._private import ray_constants

            saved[1] = ray_constants.ENABLE_RAY_CLUSTER
            ray_constants.ENABLE_RAY_CLUSTER = False
        return saved
    env, constant = saved or (None, None)
    if env is None:
        os.environ.pop(_LOOPBACK_ENV, None)
    else:
        os.environ[_LOOPBACK_ENV] = env
    if constant is not None:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = constant
    return []


def _remove_stale_ray_folders() -> None:
    """Session folders of local Ray instances whose sweep was killed (SIGKILL: no clean-up ran);
    their Ray processes died with it (Ray ties them to the driver)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{RAY_PREFIX}*-*"):
        pid = folder.name[len(RAY_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _ray_prepare(cpus: int) -> int:
    """A warm-up task: the worker imports torch while the driver loads the data."""
    from edgenet.sweep.worker import prepare

    prepare(cpus)
    return os.getpid()


def _ray_cell(cell: Cell, memory: dict | None, files: dict | None, threads: int):
    """The Ray task: ``memory`` and ``files`` arrive resolved from the object store (the arrays
    read-only, zero-copy); the node may be another machine (see run_cell_anywhere). The record
    names the Ray node that ran it (``ray_node``, Ray's hex node id) beside ``host`` and ``pid``."""
    import ray

    from edgenet.sweep.worker import run_cell_anywhere

    record, files = run_cell_anywhere(cell, memory, files, threads=threads)
    record["ray_node"] = ray.get_runtime_context().get_node_id()
    return record, files


class _QuietStderr:
    """File descriptor 2 points at /dev/null while Ray joins a cluster: its C++ core writes its
    log lines there directly (retries, warnings), past Python's logging; a failure comes back as
    an exception, said in one line."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False


RAY_PORT = 6379           # the port `ray start --head` listens on unless told otherwise
PROBE_SECONDS = 3.0


def check_reachable(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise UsageError (one line) unless something accepts a TCP connection at the Ray cluster
    ``address`` (``HOST:PORT``, ``HOST`` for port 6379, or ``ray://HOST:PORT``) within ``timeout``
    seconds; ``auto`` is Ray's own lookup and not probed. Without it ray.init retries an address
    nobody answers at for minutes, printing its raw log lines."""
    import socket

    if address == "auto":
        return
    text = address.split("://", 1)[1] if "://" in address else address
    host, _, port = text.rpartition(":") if ":" in text.lstrip("[").split("]")[-1] else (text, "", "")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port) if port else RAY_PORT
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"--ray-address {address}: not HOST:PORT (e.g. 192.168.1.10:6379)") from None
    try:
        socket.create_connection((host, number), timeout=timeout).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UsageError(f"--ray-address {address}: nothing answers at {host}:{number} within {timeout:g} s ({why}); "
                         "start the cluster there (ray start --head) or check the address") from None


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_cell: int = 1):
        from edgenet._deps import require

        require("ray", extra="scale", purpose="--executor ray")
        if address:
            check_reachable(address)
        self.address = address
        self.cpus_per_cell = max(1, cpus_per_cell)
        self.workers = workers or max(1, (os.cpu_count() or 1) // self.cpus_per_cell)
        self.cluster_cpus: float | None = None
        self._started, self._temp, self._saved, self._warm = False, None, None, []

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        cpus = "" if self.cluster_cpus is None else f", {self.cluster_cpus:g} CPUs"
        return f"Ray tasks of {self.cpus_per_cell} CPU on {where}{cpus}"

    def start(self, cells: int) -> None:
        """Start (or join) Ray now and warm up to ``cells`` workers (torch imported), while the
        sweep loads its data."""
        import logging
        import sys

        if self._started:
            return
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            raise UsageError("Ray is already initialized in this process; edgenet sweep starts and stops its own")
        self._saved = None if self.address else _loopback_only()
        import ray

        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                   "configure_logging": True}
        handlers = _python_signal_handlers()
        try:
            if self.address:
                check_reachable(self.address)   # again: it may have gone while the sweep opened its folder
                with _QuietStderr():
                    ray.init(address=self.address, **options)
            else:
                _remove_stale_ray_folders()
                self._temp = tempfile.mkdtemp(prefix=f"{RAY_PREFIX}{os.getpid()}-")
                ray.init(num_cpus=self.workers * self.cpus_per_cell, _temp_dir=self._temp,
                         _node_ip_address="127.0.0.1", **options)
        except Exception as exc:
            self.close()
            where = self.address or "a local instance"
            hint = ""
            if self.address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # Ray (2.5x) turns token authentication on for a cluster `ray start` begins where
                # ~/.ray/auth_token exists; a driver then connects only with RAY_AUTH_MODE=token
                hint = (" (a cluster with token authentication needs RAY_AUTH_MODE=token here and its token in "
                        "~/.ray/auth_token or RAY_AUTH_TOKEN)")
            raise UsageError(f"cannot start Ray ({where}): {one_line(exc)}{hint}") from None
        finally:
            _restore_signal_handlers(handlers)
        self._started = True
        self.cluster_cpus = ray.cluster_resources().get("CPU")
        warm = ray.remote(num_cpus=self.cpus_per_cell)(_ray_prepare)
        slots = int((self.cluster_cpus or 1) // self.cpus_per_cell)
        self._warm = [warm.remote(self.cpus_per_cell) for _ in range(max(1, min(cells, slots)))]

    def close(self) -> None:
        """Shut Ray down (a local instance stops; a cluster keeps running) and tidy up."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        if self._temp:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
        if self._saved is not None:
            _loopback_only(False, self._saved)
            self._saved = None

    def run(self, cells: list[Cell], memories: dict) -> Iterator[Outcome]:
        import ray

        self.start(len(cells))
        try:
            # a dead worker or node: Ray runs the task again elsewhere (see the module's docstring)
            task = ray.remote(num_cpus=self.cpus_per_cell, max_retries=2)(_ray_cell)
            refs = {key: ray.put(memory) for key, memory in memories.items() if memory is not None}
            blobs = {}   # the model file and profile bytes, once per distinct combination
            for cell in cells:
                paths = cell_files(cell)
                if paths and paths not in blobs:
                    blobs[paths] = ray.put({p: Path(p).read_bytes() for p in paths})
            pending = {task.remote(cell, refs.get(memory_key(cell)), blobs.get(cell_files(cell)), self.cpus_per_cell):
                       cell for cell in cells}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        record, files = ray.get(ref)
                    except Exception as exc:  # the task's worker died, or the node
                        record, files = _failed(cell, f"Ray task failed: {one_line(exc)}"), {}
                    yield cell, record, files
        finally:
            self.close()


_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


def _python_signal_handlers() -> dict:
    """This process's Python handlers of SIGTERM, SIGINT and SIGHUP (the CLI's: the command stops
    like Ctrl-C, cleans up and says `edgenet: interrupted (SIGTERM)`), where this is the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (getattr(signal, n) for n in _SIGNALS if hasattr(signal, n))
            if signal.getsignal(sig) is not None}


def _restore_signal_handlers(handlers: dict) -> None:
    """Put the handlers back after ``ray.init``: its driver installs a native handler that prints a
    stack dump (``*** SIGTERM received at time=...``) and exits 1, skipping every clean-up (the
    workers' cell folders were left in the temp folder)."""
    import signal

    for sig, handler in handlers.items():
        signal.signal(sig, handler)
