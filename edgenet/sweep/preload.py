"""The data of a sweep's cells, loaded once by the driver: which cells share it (:func:`memory_key`),
the preprocessing a cell's model takes (:func:`cell_inputs`), loading it within a memory budget
(:func:`preload`), and handing it to pool workers as memory-mapped .npy files
(:func:`save_memory`/:func:`map_memory`). numpy and edgenet's data loaders only.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgenet.errors import EdgenetError
from edgenet.sweep.cells import Cell


def preload_budget() -> int:
    """Bytes of preprocessed arrays the driver preloads at most: a quarter of this machine's
    memory, and no more than 2 GiB (a grid of many resolutions would otherwise hold them all)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 << 30
    return int(min(2 << 30, physical // 4))


def preload(cells: list[Cell], budget: int | None = None,
            notes: list[str] | None = None) -> dict[tuple, dict | None]:
    """The calibration and evaluation datasets every cell will ask for, loaded and preprocessed
    once here: ``{preprocess key: {load_dataset request: Dataset}}`` (see :func:`memory_key`).
    Needs the cell's preprocessing, which a zoo model gives at once; a checkpoint or .onnx file
    is opened for it (no export). None for a cell whose model cannot be opened (it will fail in
    its worker, recorded like any failing cell) or a .pt2 program (its worker loads the data).
    Raises DataError when the calibration data itself is unusable (every cell would fail).

    ``budget``: bytes of float32 arrays preloaded at most (default :func:`preload_budget`); the
    cells of a preprocessing past it get None (each worker loads its own data), said in ``notes``."""
    from edgenet.converters.model_data import load_data
    from edgenet.data.datasets import served_from

    budget = preload_budget() if budget is None else budget
    out: dict[tuple, dict] = {}
    held, left_out = 0, 0
    for cell in cells:
        key = memory_key(cell)
        if key in out:
            continue
        try:
            inputs, pre = cell_inputs(cell)
        except EdgenetError:   # a broken model file: its cells fail in the worker, with this error
            inputs, pre = None, None
        if pre is None:
            out[key] = None
            continue
        size = (cell.calib_samples + cell.eval_samples) * pre.height * pre.width * pre.channels * 4
        if held + size > budget:
            out[key] = None
            left_out += 1
            continue
        held += size
        with served_from({}) as memory:
            load_data(cell.calib, inputs, pre, int8=True, calib_samples=cell.calib_samples,
                      eval_samples=cell.eval_samples, seed=cell.seed, explicit=True)
        out[key] = memory
    if left_out and notes is not None:
        notes.append(f"{left_out} preprocessing(s) not preloaded (over {budget / 2**20:.0f} MiB of arrays): "
                     "their cells load their own data")
    return out


def save_memory(memory: dict, folder: Path) -> str:
    """Write a preloaded memory (see :func:`preload`) to ``folder``: its arrays as .npy files and
    an index; :func:`map_memory` reads it back with the arrays memory-mapped (not copied)."""
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    index = []
    for i, (key, ds) in enumerate(memory.items()):
        np.save(folder / f"{i}_x.npy", ds.x, allow_pickle=False)
        if ds.labels is not None:
            np.save(folder / f"{i}_y.npy", ds.labels, allow_pickle=False)
        index.append((key, ds.labels is not None, ds.class_names, ds.name, ds.skipped))
    (folder / "index.pickle").write_bytes(pickle.dumps(index))
    return str(folder)


def map_memory(folder: str | os.PathLike) -> dict:
    """The memory :func:`save_memory` wrote, its arrays mapped read-only."""
    import pickle

    import numpy as np

    from edgenet.data.datasets import Dataset

    folder = Path(folder)
    memory = {}
    for i, (key, labelled, class_names, name, skipped) in enumerate(pickle.loads((folder / "index.pickle").read_bytes())):
        labels = np.load(folder / f"{i}_y.npy", mmap_mode="r") if labelled else None
        memory[key] = Dataset(x=np.load(folder / f"{i}_x.npy", mmap_mode="r"), labels=labels,
                              class_names=class_names, name=name, skipped=skipped)
    return memory


def memory_key(cell: Cell) -> tuple:
    """Cells with the same key read the same preloaded arrays."""
    return (cell.model if cell.kind != "zoo" else "zoo", cell.resolution, cell.calib, cell.calib_samples,
            cell.eval_samples, cell.seed)


def cell_inputs(cell: Cell):
    """(model inputs, :class:`~edgenet.data.preprocess.Preprocess`) convert will use for the cell's
    model; (None, None) for a .pt2 program (its worker loads the data itself) or a model whose
    input images cannot feed."""
    from edgenet.converters.model_inputs import ModelInput
    from edgenet.data.preprocess import Preprocess

    def image(pre):
        return (ModelInput("input", (1, pre.channels, pre.height, pre.width), True),), pre

    if cell.kind == "zoo":
        return image(Preprocess.default(cell.resolution, 3))
    if cell.kind == "checkpoint":
        from edgenet.checkpoint import load_checkpoint

        return image(load_checkpoint(cell.model).preprocess)
    from edgenet.converters.sources import load_source
    from edgenet.config import ConvertOptions, ModelSpec

    if cell.kind == "onnx":
        source = load_source(ConvertOptions(model=ModelSpec(source=cell.model)))
        return (source.inputs, source.preprocess) if source.preprocess is not None else (None, None)
    return None, None
