"""`edgenet sweep`: the cross product of models x widths x resolutions x targets x precisions, each
cell a full ``edgenet.convert`` (validated, target checks run), on a local process pool or as Ray
tasks; results.jsonl (resumable) and a Pareto table per target.

    >>> from edgenet.sweep import SweepSpec, sweep
    >>> spec = SweepSpec(models=("mobilenet_v1",), alphas=(0.25, 0.5), resolutions=(64, 96),
    ...                  targets=("rpi", "cortex-m"), num_classes=2)
    >>> result = sweep(spec, "S", executor="ray")            # doctest: +SKIP
    >>> result.failed, [r["sqnr_db"] for r in result.records]  # doctest: +SKIP

Modules: :mod:`~edgenet.sweep.cells` (grid, cell ids, the precision mapping),
:mod:`~edgenet.sweep.worker` (one cell), :mod:`~edgenet.sweep.executors` (pool, Ray),
:mod:`~edgenet.sweep.results` (the crash-safe folder), :mod:`~edgenet.sweep.pareto` (the report).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from edgenet.sweep.cells import Cell, SweepSpec, convert_precisions, estimated_work, expand, precision_numbers
from edgenet.sweep.pareto import render
from edgenet.sweep.results import SweepStore, read_results
from edgenet.sweep.summary import progress_line, summary_line

__all__ = ["sweep", "SweepSpec", "SweepResult", "Cell", "Executor", "expand", "render", "read_results",
           "convert_precisions", "precision_numbers", "make_executor", "summary_line", "progress_line"]


LARGE_GRID = 256
"""More cells than this: the sweep says how many before it starts."""


class Executor(str, Enum):
    LOCAL = "local"
    RAY = "ray"


@dataclass(frozen=True)
class SweepResult:
    out: Path
    records: tuple[dict, ...]       # one per cell of the grid, in grid order (skipped ones included)
    ran: int                        # cells run by this call
    skipped: int                    # cells already in results.jsonl
    failed: int                     # cells of the grid whose record says failed
    seconds: float
    executor: str
    pareto_md: Path
    pareto_png: Path | None
    notes: tuple[str, ...] = ()


def make_executor(executor: Executor | str, workers: int | None = None, cpus_per_cell: int = 1,
                  ray_address: str | None = None):
    from edgenet.errors import UsageError
    from edgenet.sweep.executors import LocalExecutor
    from edgenet.sweep.ray_executor import RayExecutor

    kind = Executor(executor)
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if cpus_per_cell < 1:
        raise UsageError("--cpus-per-cell must be at least 1")
    if kind is Executor.LOCAL:
        if ray_address:
            raise UsageError("--ray-address needs --executor ray")
        return LocalExecutor(workers, cpus_per_cell)
    return RayExecutor(ray_address, workers, cpus_per_cell)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def sweep(spec: SweepSpec, out: str | Path, *, executor: Executor | str = Executor.LOCAL, workers: int | None = None,
          cpus_per_cell: int = 1, ray_address: str | None = None, retry_failed: bool = False, png: bool = True,
          progress: Callable[[str], None] | None = None, on_record: Callable[[dict], None] | None = None) -> SweepResult:
    """Run every cell of ``spec`` not already finished in ``out``; return the records of all of them.

    ``out``: the sweep folder (results.jsonl, cells/<id>/, pareto.md, pareto.png). ``executor``:
    ``local`` (``workers`` processes, default one per ``cpus_per_cell`` cores) or ``ray``
    (``ray_address`` of a running cluster, or a local instance of ``workers * cpus_per_cell``
    CPUs). A finished cell (ok, does_not_fit or failed) is not run again; ``retry_failed`` runs
    the failed ones again. ``progress`` receives one line per event; ``on_record`` each record
    as it is committed. Raises UsageError (bad grid, folder not a sweep, locked, Ray cannot
    start), MissingDependencyError (ray not installed); a failing cell never raises.
    """
    say = progress or (lambda line: None)
    t0 = time.perf_counter()
    cells, notes = expand(spec)
    run_with = make_executor(executor, workers, cpus_per_cell, ray_address)
    for note in notes:
        say(f"note: {note}")
    if len(cells) > LARGE_GRID:
        say(f"note: a grid of {len(cells)} cells, each a full conversion (seconds to minutes): finished cells "
            "are kept, so Ctrl-C stops it and the same command resumes it")
    with SweepStore(out) as store:
        for note in store.notes:
            say(f"note: {note}")
        if hasattr(run_with, "workdir"):
            run_with.workdir = str(store.cells)
        done = store.finished()
        finished = {c.id for c in cells if c.id in done and (done[c.id].get("status") != "failed" or not retry_failed)}
        # the longest cells first (the result's grid keeps the grid's order)
        todo = sorted((c for c in cells if c.id not in finished), key=estimated_work, reverse=True)
        say(f"{len(cells)} cell(s): {len(finished)} already done, {len(todo)} to run"
            + (f" on {run_with.describe()}" if todo else ""))
        ran = failed_now = 0
        if todo:
            from edgenet.sweep.worker import preload

            try:
                if png:
                    _import_matplotlib_meanwhile()
                t_data = time.perf_counter()
                preload_notes: list[str] = []
                loading = _Background(preload, todo, None, preload_notes)   # while the workers start
                run_with.start(len(todo))
                memories = loading.result()
                for note in preload_notes:
                    say(f"note: {note}")
                say(f"calibration and evaluation data loaded once ({sum(m is not None for m in memories.values())} "
                    f"preprocessing(s), {_nbytes(memories) / 1e6:.1f} MB) while the workers started: "
                    f"{time.perf_counter() - t_data:.1f} s")
                t_run = time.perf_counter()
                outcomes = run_with.run(todo, memories)
                for cell, record, files in outcomes:
                    record = store.commit(record, files)
                    ran += 1
                    failed_now += record.get("status") == "failed"
                    elapsed = time.perf_counter() - t_run
                    left = elapsed / ran * (len(todo) - ran)
                    what = progress_line(record)
                    say(f"[{ran}/{len(todo)}] {cell.label}: {what}  (failed {failed_now}, elapsed "
                        f"{_clock(elapsed)}, ~{_clock(left)} left)")
                    if on_record:
                        on_record(record)
            finally:
                if "outcomes" in locals():
                    outcomes.close()   # an error or Ctrl-C here: the pool or Ray is stopped now
                run_with.close()
        md, picture, _ = render(out, png=png)
        records = store.finished()
    grid = tuple(records[c.id] for c in cells if c.id in records)
    return SweepResult(Path(out), grid, ran, len(finished), sum(r.get("status") == "failed" for r in grid),
                       round(time.perf_counter() - t0, 3), Executor(executor).value, md, picture, tuple(notes))


class _Background:
    """``fn(*args)`` on a daemon thread. :meth:`result` waits in short steps, so Ctrl-C (or
    SIGTERM) stops the sweep at once instead of after the loading (a ThreadPoolExecutor's worker
    would be waited for, on leaving its block and again at exit)."""

    def __init__(self, fn, *args):
        import threading

        self._done = threading.Event()
        self._value = self._error = None

        def run():
            try:
                self._value = fn(*args)
            except BaseException as exc:   # handed to result()
                self._error = exc
            finally:
                self._done.set()

        threading.Thread(target=run, daemon=True, name="edgenet-preload").start()

    def result(self):
        while not self._done.wait(0.1):
            pass
        if self._error is not None:
            raise self._error
        return self._value


def _import_matplotlib_meanwhile() -> None:
    """pareto.png needs matplotlib (about 1 s to import): imported while the cells run."""
    import importlib.util
    import threading

    def _load():
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except Exception:   # not installed: pareto.png is skipped later, with a note
            pass

    if importlib.util.find_spec("matplotlib") is not None:
        threading.Thread(target=_load, daemon=True).start()


def _nbytes(memories: dict) -> int:
    total = 0
    for memory in memories.values():
        for dataset in (memory or {}).values():
            total += dataset.x.nbytes
    return total
