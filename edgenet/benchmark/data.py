"""Evaluation samples for the benchmark: a dataset spec (digits, shapes, a folder) or arrays.

Folders and the built-in sets go through ``edgenet.data.datasets.load_dataset`` with the model's
own preprocessing (``preprocess.json``); arrays are taken as already preprocessed float32 NHWC.
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgenet import limits
from edgenet.data.preprocess import ColorMode, Preprocess
from edgenet.errors import DataError, EdgenetError


@dataclass(frozen=True)
class BenchData:
    x: np.ndarray                              # float32 (N, H, W, C), preprocessed
    labels: np.ndarray | None                  # int64 (N,) class indices of the model's outputs
    class_names: tuple[str, ...] | None
    source: str
    skipped: int = 0                           # images that could not be used
    skipped_detail: str = ""                   # why, in a phrase (e.g. "2 undecodable (a.png ...)")


def default_preprocess(input_shape: tuple[int, ...]) -> Preprocess:
    """Preprocessing from the model's input shape alone: resize, /255, (x - 0.5) / 0.5."""
    if len(input_shape) != 4 or input_shape[-1] not in (1, 3):
        raise DataError(f"cannot derive preprocessing for input shape {input_shape} (want N,H,W,1|3); "
                        "put a preprocess.json beside the model")
    channels = input_shape[-1]
    return Preprocess(height=input_shape[1], width=input_shape[2],
                      color=ColorMode.RGB if channels == 3 else ColorMode.GRAY,
                      mean=(0.5,) * channels, std=(0.5,) * channels)


def load_bench_data(data: Any, preprocess: Preprocess | None, limit: int | None = None) -> BenchData:
    """``data``: "digits" | "shapes" | a folder | a Dataset-like object (x, labels, class_names)
    | an array of samples | an (x, labels) pair."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1 (got {limit})")
    if isinstance(data, BenchData):
        bench = data
    elif isinstance(data, (str, Path)):
        if preprocess is None:
            raise DataError("loading images needs the model's preprocessing")
        bench = _from_spec(str(data), preprocess, limit)
    elif isinstance(data, np.ndarray):
        bench = BenchData(data, None, None, "array")
    elif isinstance(data, tuple) and len(data) == 2:
        bench = BenchData(np.asarray(data[0]), None if data[1] is None else np.asarray(data[1]), None, "array")
    elif hasattr(data, "x"):
        bench = BenchData(np.asarray(data.x), getattr(data, "labels", None), getattr(data, "class_names", None),
                          str(getattr(data, "name", None) or getattr(data, "source", "dataset")))
    else:
        raise DataError(f"cannot use {type(data).__name__} as benchmark data: give a dataset name, a folder "
                        "or an array of samples")
    return _checked(bench, limit)


def _from_spec(spec: str, preprocess: Preprocess, limit: int | None) -> BenchData:
    from edgenet.data.datasets import load_dataset

    dataset = load_dataset(spec, preprocess, split="test", limit=limit)
    return BenchData(np.asarray(dataset.x), dataset.labels, dataset.class_names, spec,
                     int(getattr(dataset, "skipped", 0)), str(getattr(dataset, "skipped_detail", "")))


def _checked(bench: BenchData, limit: int | None) -> BenchData:
    x, labels = bench.x, bench.labels
    if limit is not None:
        x = x[:limit]
        labels = None if labels is None else labels[:limit]
    if x.ndim < 2:
        raise DataError(f"samples must be an array (N, ...) of at least 2 dims; got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise DataError(f"{bench.source}: no samples")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"samples must be preprocessed float arrays; got {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"labels must be {len(x)} integers, one per sample; got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64, copy=False)
    names = tuple(bench.class_names) if bench.class_names is not None else None
    return BenchData(x, labels, names, bench.source, bench.skipped, bench.skipped_detail)


def align_labels(bench: BenchData, model_labels: tuple[str, ...] | None, num_classes: int) -> BenchData:
    """Map the data's class indices onto the model's (by name, when both have names); check ranges."""
    labels = bench.labels
    if labels is None:
        return bench
    if model_labels and bench.class_names and tuple(bench.class_names) != tuple(model_labels[:len(bench.class_names)]):
        position = {name: i for i, name in enumerate(model_labels)}
        missing = [n for n in bench.class_names if n not in position]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise DataError(f"data classes {shown} are not among the model's labels (labels.txt): "
                            "name the class folders like the model's labels")
        mapping = np.array([position[n] for n in bench.class_names], dtype=np.int64)
        labels = mapping[labels]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"data has label {int(labels.max())} but the model has {num_classes} classes")
    return BenchData(bench.x, labels, bench.class_names, bench.source, bench.skipped, bench.skipped_detail)


def check_finite_samples(x: np.ndarray, source: str) -> None:
    """DataError if any sample holds NaN or an infinity (e.g. a std of 0 in the preprocessing)."""
    bad = int(np.count_nonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1)))
    if bad:
        raise DataError(f"{source}: {bad} of {len(x)} samples hold NaN or infinite values after preprocessing "
                        "(check mean/std in preprocess.json, or the arrays given)")


def check_data_budget(spec, sample_shape: tuple[int, ...], limit: int | None) -> None:
    """DataError if the samples of ``spec`` (digits | shapes | a folder), as float32 of ``sample_shape``,
    would need more than :data:`edgenet.limits.MAX_DATA_BYTES`; counts files, decodes nothing."""
    from edgenet.data.digits import SPLIT_SIZES as DIGITS
    from edgenet.data.shapes import SPLIT_SIZES as SHAPES

    spec = str(spec)
    if spec == "digits":
        count = DIGITS["test"]
    elif spec == "shapes":
        count = SHAPES["test"]
    else:
        from edgenet.data.folder import list_image_files

        folder = Path(spec).expanduser()
        if not folder.is_dir():
            return            # load_dataset says what is wrong with it
        count = len(list_image_files(folder)[0])
    count = min(count, limit) if limit is not None else count
    per_sample = int(np.prod(sample_shape)) * 4
    if count * per_sample > limits.MAX_DATA_BYTES:
        fits = max(1, limits.MAX_DATA_BYTES // per_sample)
        raise DataError(f"{spec}: {count:,} samples of {'x'.join(map(str, sample_shape))} floats need "
                        f"{count * per_sample / 2**30:.1f} GiB, more than the {limits.MAX_DATA_BYTES / 2**30:g} GiB "
                        f"the benchmark holds in memory: pass --limit {fits:,} or less")


def held_out_inputs(folder: Path, details) -> list[np.ndarray] | None:
    """The first invocation's worth of ``folder``'s eval_set.npz as the model's input tensors
    (quantized for an integer input), or None (no held-out set, or one that does not fit): what the
    target's LiteRT check runs when zeros stop a model (an integer divisor taken from the input)."""
    from edgenet.benchmark.run import held_out_set
    from edgenet.data.preprocess import quantize_input

    path = folder / "eval_set.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {k[len("input:"):]: npz[k] for k in npz.files if k.startswith("input:")}
        if len(details) == 1 and not stored:       # pixels of an image input
            stored = {details[0]["name"]: held_out_set(path, None, []).x}
    except (EdgenetError, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None     # a damaged file: no fallback (the check reports the runtime's own error)
    tensors = []
    for d in details:
        x, shape = stored.get(d["name"]), tuple(int(v) for v in d["shape"])
        if x is None or x.size < int(np.prod(shape)):
            return None
        x = np.ascontiguousarray(x.reshape(-1)[: int(np.prod(shape))].reshape(shape), dtype=np.float32)
        if np.dtype(d["dtype"]).kind in "iu":
            scale, zero_point = d["quantization"]
            if not scale:
                return None
            x = quantize_input(x, scale, zero_point, d["dtype"])
        tensors.append(x.astype(d["dtype"]))
    return tensors
