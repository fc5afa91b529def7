"""Where cells run: a process pool on this machine, or Ray tasks on a local instance or a cluster.

Both take the cells still to do and the preloaded datasets, and yield ``(cell, record, files)``
as each cell finishes, in finishing order; the driver commits each one at once. Same cells, same
worker function (:func:`edgenet.sweep.worker.run_cell`), same bytes either way.

* :class:`LocalExecutor`: ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` spawned
  processes, started before the data is loaded, each importing torch once and mapping the
  preloaded arrays (written once as .npy files) read-only. A worker watches its parent and exits
  if it is gone (a killed
  sweep leaves no process behind). A worker that dies takes the pool with it: the pool is
  rebuilt and each unfinished cell tried once more.
* :class:`~edgenet.sweep.ray_executor.RayExecutor`: one Ray task per cell declaring ``num_cpus=cpus_per_cell``; each preloaded
  dataset is ``ray.put`` once into the object store and passed to the cells that use it by
  reference (numpy arrays are read zero-copy from shared memory on each node), and so are the
  bytes of model files and .toml profiles (a node without the driver's disk converts from a
  temporary copy; see :func:`~edgenet.sweep.worker.run_cell_anywhere`); results come back
  with ``ray.wait`` as cells finish, the cell's files inside the returned value. Without an
  address it starts a local Ray instance (``ray.init(num_cpus=workers * cpus_per_cell)``, no
  dashboard, listening on 127.0.0.1 only, its session folder in a temporary folder that is
  removed after ``ray.shutdown``). With an address, the head is probed first
  (:func:`check_reachable`) and Ray's own log lines are kept off the terminal while it joins.
  Each record names the Ray node that ran the cell (``ray_node``). A task whose worker process or
  node dies is run again by Ray on a node still alive (up to 2 retries, also when its result was
  lost with the node); a cell that still fails is recorded as failed, and ``--retry-failed`` runs
  it again.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

from edgenet.sweep.cells import Cell
from edgenet.sweep.worker import memory_key, one_line, run_cell
from edgenet.sweep.results import WORK_PREFIX

Outcome = tuple[Cell, dict, dict]


def _failed(cell: Cell, error: str) -> dict:
    return {"id": cell.id, "label": cell.label, "status": "failed", "error": error}


# -- local process pool --------------------------------------------------------------------------
_pool_threads: int = 1
_pool_workdir: str | None = None
_pool_mapped: dict = {}          # folder of array files -> the memory they hold (mapped once per worker)


def _watch_parent(parent: int) -> None:
    """The sweep is gone (killed): drop the cell being converted and leave at once."""
    from edgenet.sweep import worker

    while True:
        if os.getppid() != parent:
            # the sweep's data folder (its .npy arrays) goes too: the killed sweep cannot remove it
            data = {str(Path(f).parent) for f in list(_pool_mapped) if Path(f).parent.name.startswith(".edgenet-data-")}
            _leave(worker, _pool_workdir, tuple(data))
        time.sleep(0.5)


def _leave(worker, workdir: str | None, also: tuple[str, ...] = ()) -> None:
    """Start no further cell, remove the one being converted, end this process now; what its main
    thread still writes until then is removed after it ends (:func:`_remove_after_exit`), with the
    folders ``also``."""
    worker.orphaned = True
    work = worker.current_work
    if workdir is not None:
        folder, prefix = workdir, WORK_PREFIX
    else:   # a scratch folder in the temp folder (taken from the cell: during a cell the temp folder is its own)
        folder, prefix = (str(Path(work).parent) if work is not None else tempfile.gettempdir()), "edgenet-cell-"
    _remove_current_work(worker)
    _remove_after_exit(folder, prefix, also)
    os._exit(1)


_CLEANER = '''
import glob, os, shutil, sys, time
pid, end = int(sys.argv[1]), time.monotonic() + 120
def alive():
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True
while alive() and time.monotonic() < end:
    time.sleep(0.05)
for pattern in sys.argv[2:]:
    for path in glob.glob(pattern):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
'''


def _remove_after_exit(folder: str, prefix: str, also: tuple[str, ...] = ()) -> None:
    """Hand this process's cell folders to a small detached process that removes them once this one
    has ended. The main thread may write into its cell folder up to the moment ``os._exit`` ends it
    (a file made after :func:`_remove_current_work`'s last look kept the folder: CI's flaky
    killed-sweep test); once the process is gone nothing writes. The folders are those named after
    this process, ``<folder>/<prefix><pid>-*`` (``.edgenet-work-`` in the sweep's DIR/cells/, or the
    ``edgenet-cell-`` scratch folders in the temp folder), and the folders ``also``."""
    import glob
    import subprocess

    pid = os.getpid()
    try:
        subprocess.Popen([sys.executable, "-S", "-c", _CLEANER, str(pid),
                          os.path.join(glob.escape(str(folder)), f"{prefix}{pid}-*"), *map(glob.escape, also)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:   # no process to spare: the next run of the sweep removes them
        pass


def _remove_current_work(worker, quiet: float = 0.1, limit: float = 3.0) -> None:
    """Remove the folder of the cell being converted while this process's main thread may still write
    into it (a file made after one removal's listing keeps its folder) or, its cell failing for the
    missing folder, may have gone on to the queue's next cell (a new folder). Removes until no cell
    folder has been there for ``quiet`` seconds, at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        work = worker.current_work
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        time.sleep(quiet)
        work = worker.current_work
        if work is None or not os.path.exists(work):
            return


def _pool_init(parent: int, threads: int, workdir: str | None) -> None:
    global _pool_threads, _pool_workdir
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    # native libraries' start-up lines (LiteRT's delegate INFO, printed from C++) would interleave
    # with the sweep's progress; a cell's errors come back in its record
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _pool_threads, _pool_workdir = threads, workdir
    # a worker's work is done when it exits (the pool has its results): skip the interpreter's teardown
    # of torch, onnxruntime and LiteRT (0.4 s, which the sweep waited for after its last cell)
    atexit.register(_exit_now)
    from edgenet.sweep.worker import prepare

    prepare(threads)   # sizes the thread pools for `threads` CPUs before torch starts them


def _exit_now() -> None:
    """The last exit handler to run (registered first): flush, then end the process without the
    interpreter's module teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(0)


def _pool_ready() -> int:
    return os.getpid()


def _pool_cell(cell: Cell, memory_folder: str | None = None, keep_files: bool = True):
    from edgenet.sweep.worker import map_memory

    memory = None
    if memory_folder is not None:
        if memory_folder not in _pool_mapped:
            _pool_mapped[memory_folder] = map_memory(memory_folder)
        memory = _pool_mapped[memory_folder]
    return run_cell(cell, memory, threads=_pool_threads, keep_files=keep_files, workdir=_pool_workdir)


def start_pool(workers: int, threads: int, workdir: str | None = None) -> ProcessPoolExecutor:
    """``workers`` spawned processes, starting now, each importing torch once, its
    thread pools sized for ``threads`` CPUs; cells' temporary folders in ``workdir`` (default: the
    system's temp folder)."""
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_pool_init,
                               initargs=(os.getpid(), threads, None if workdir is None else str(workdir)))
    for _ in range(workers):   # spawn them all now (a pool starts its processes as work arrives)
        pool.submit(_pool_ready)
    return pool


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int | None = None, cpus_per_cell: int = 1):
        self.cpus_per_cell = max(1, cpus_per_cell)
        self.workers = workers or max(1, (os.cpu_count() or 1) // self.cpus_per_cell)
        self.workdir: str | None = None   # the sweep sets DIR/cells: a crash's leftovers are tidied on re-run
        self._pool: ProcessPoolExecutor | None = None

    def describe(self) -> str:
        return f"{self.workers} local worker process(es)"

    def start(self, cells: int) -> None:
        """Start the workers now: they import torch while the sweep loads its data."""
        if self._pool is None:
            self._pool = start_pool(min(self.workers, cells), self.cpus_per_cell, self.workdir)

    def close(self) -> None:
        """Stop workers started by :meth:`start` that no :meth:`run` took over (an error before)."""
        if self._pool is not None:
            stop_pool(self._pool)
            self._pool = None

    def run(self, cells: list[Cell], memories: dict) -> Iterator[Outcome]:
        """The preloaded arrays go to the workers as .npy files in a hidden folder of the sweep's
        DIR/cells/ (or the temp folder), memory-mapped read-only by each worker once."""
        from edgenet.sweep.worker import save_memory

        todo, attempts = list(cells), {c.id: 0 for c in cells}
        data = Path(tempfile.mkdtemp(prefix=".edgenet-data-", dir=self.workdir))
        try:
            folders = {key: save_memory(memory, data / str(i))
                       for i, (key, memory) in enumerate(memories.items()) if memory is not None}
            while todo:
                self.start(len(todo))
                pool, self._pool = self._pool, None
                retry: list[Cell] = []
                finished = False
                try:
                    futures = {pool.submit(_pool_cell, cell, folders.get(memory_key(cell))): cell for cell in todo}
                    todo = []
                    while futures:
                        done, _ = wait(futures, return_when=FIRST_COMPLETED)
                        for future in done:
                            cell = futures.pop(future)
                            try:
                                record, files = future.result()
                            except BrokenProcessPool:
                                attempts[cell.id] += 1
                                if attempts[cell.id] < 2:
                                    retry.append(cell)
                                    continue
                                record, files = _failed(cell, "the worker process died while converting it"), {}
                            except Exception as exc:
                                record, files = _failed(cell, one_line(exc)), {}
                            yield cell, record, files
                    finished = True
                finally:
                    stop_pool(pool, finished)
                todo = retry
        finally:
            self.close()
            shutil.rmtree(data, ignore_errors=True)
            _remove_killed_workers_folders(self.workdir)


def _remove_killed_workers_folders(workdir: str | None) -> None:
    """The cell folders (``.edgenet-work-*``) of workers :func:`stop_pool` killed mid-cell (an
    interrupted sweep: Ctrl-C, SIGTERM): they cannot remove them themselves. ``workdir`` is the
    sweep's DIR/cells/, locked by this sweep, and the pool's processes are gone by now."""

    if workdir is None:
        return
    for left in Path(workdir).glob(WORK_PREFIX + "*"):
        if left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)


def stop_pool(pool: ProcessPoolExecutor, finished: bool = False) -> None:
    """Cancel what has not started and stop the workers now (an interrupted sweep does not wait);
    ``finished``: every cell is done, the idle workers are let go the orderly way (killed ones
    leave the pool's queue semaphores to the resource tracker, which reports them as leaked)."""
    if finished:
        pool.shutdown(wait=True, cancel_futures=True)
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.kill()
    for proc in processes:
        proc.join(timeout=10)


def __getattr__(name: str):
    """``RayExecutor`` lives in :mod:`edgenet.sweep.ray_executor` (imported on first use)."""
    if name == "RayExecutor":
        from edgenet.sweep.ray_executor import RayExecutor

        return RayExecutor
    raise AttributeError(name)
