"""Data stage: the examples that calibrate the int8 model and validate every model.

Where the examples come from (``--calib``):

* images -- a built-in set (``digits``: real handwritten digits; ``shapes``: procedurally generated,
  i.e. synthetic) or a folder of images -- for a model whose only input is an image, preprocessed
  with the model's :class:`~edgenet.data.preprocess.Preprocess`;
* arrays -- ``FILE.npz`` with one array per input name, or ``FILE.npy`` for a one-input model, first
  axis = examples, in the ONNX model's layout (NCHW for images); float arrays already preprocessed
  (values go into the model as they are), uint8 arrays for an image input camera pixels (normalized
  with the model's mean and std, as images are);
* random -- when nothing fits and no int8 model is asked for, seeded standard-normal examples validate
  the float model (said in the report); an int8 model without fitting data is an error that says
  what to pass.

Every array comes out in the TFLite layout (images NHWC), one per model input, examples along axis 0
(see :func:`edgenet.inference.invocations` for how they are grouped into batches). Held-out examples
for validation never calibrate.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgenet.converters.model_inputs import ModelInput
from edgenet.data.datasets import BUILTIN
from edgenet.errors import DataError, UsageError

ARRAY_SUFFIXES = (".npz", ".npy")
SYNTHETIC = ("shapes",)               # built-in sets whose images are generated, not photographs
MAX_SAMPLES = 100_000                 # --calib-samples / --eval-samples upper bound
_MAX_ARRAY_BYTES = 4 << 30


class DataKind:
    IMAGES = "images"
    ARRAYS = "arrays"
    RANDOM = "random"


@dataclass(frozen=True)
class PipelineData:
    """Examples per model input (TFLite layout, examples along axis 0)."""

    calib: tuple[np.ndarray, ...]
    eval_x: tuple[np.ndarray, ...]
    eval_labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    info: dict      # dataset, kind, synthetic, samples, eval_samples, skipped_images


def default_calib(source_info: dict) -> str:
    """The data a model calibrates on when ``--calib`` is not given: the dataset a checkpoint was
    trained on (when it is a built-in set or a folder that still exists), else the built-in shapes."""
    trained_on = source_info.get("trained_on")
    if trained_on in BUILTIN or (trained_on and Path(str(trained_on)).is_dir()):
        return str(trained_on)
    return "shapes"


def check_calib_spec(spec: str | None) -> None:
    """Cheap checks of ``--calib`` before any slow stage: a built-in name, an existing folder with a
    decodable image, or an existing .npz/.npy file."""
    from edgenet.data.datasets import serving

    if spec is None or spec in BUILTIN or serving():   # preloaded arrays (edgenet sweep): no folder needed
        return
    path = Path(spec).expanduser()
    if path.suffix.lower() in ARRAY_SUFFIXES:
        if not path.is_file():
            raise DataError(f"--calib {spec}: no such file" if not path.exists() else f"--calib {spec}: not a regular file")
        check_declared_size(path, f"--calib {spec}")
        return
    if not path.is_dir():
        what = "no such file or folder" if not path.exists() else \
            "a file, but not .npz/.npy" if path.is_file() else "not a regular file or folder"
        raise DataError(f"--calib {spec}: not a built-in dataset ({', '.join(BUILTIN)}), an .npz/.npy file or a "
                        f"folder of images ({what})")
    from edgenet.data.folder import scan_image_folder  # finds an empty or undecodable folder in a moment

    scan_image_folder(path)


def check_counts(calib_samples: int, eval_samples: int) -> None:
    for flag, value, low in (("--calib-samples", calib_samples, 1), ("--eval-samples", eval_samples, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_SAMPLES:
            raise UsageError(f"{flag} must be an integer in {low}..{MAX_SAMPLES:,}, got {value!r}"
                             + (" (a verdict compares models over several examples)" if low == 2 else ""))


def load_data(spec: str, inputs: Sequence[ModelInput], preprocess, *, int8: bool, calib_samples: int,
              eval_samples: int, seed: int, explicit: bool) -> PipelineData:
    """Examples for ``inputs`` from ``spec`` (see the module docstring). ``explicit``: the user named
    ``spec`` (a mismatch is then an error rather than a fall-back to random validation data)."""
    check_counts(calib_samples, eval_samples)
    if Path(spec).suffix.lower() in ARRAY_SUFFIXES:
        return _arrays(Path(spec).expanduser(), inputs, calib_samples, eval_samples, seed, preprocess)
    image = inputs[0] if len(inputs) == 1 and inputs[0].image else None
    if image is not None and preprocess is not None:
        return _images(spec, image, preprocess, calib_samples, eval_samples, seed)
    names = ", ".join(f"{i.name} {'x'.join(map(str, i.shape))}" for i in inputs)
    what = (f"the model's inputs ({names}) are not a single image input with 1, 3 or 4 channels"
            if len(inputs) > 1 or image is None else f"input {names} has no image preprocessing")
    fix = ("pass --calib FILE.npz (one array per input name, first axis = examples, in the ONNX layout)"
           if len(inputs) > 1 else "pass --calib FILE.npy or FILE.npz (first axis = examples, in the ONNX layout)")
    if int8 or explicit:
        raise DataError(f"--calib {spec} cannot feed this model: {what}; {fix}")
    return _random(inputs, eval_samples, seed)


# -- images -----------------------------------------------------------------------------------------
def _images(spec: str, image: ModelInput, preprocess, calib_samples: int, eval_samples: int, seed: int
            ) -> PipelineData:
    from edgenet.data.datasets import load_dataset

    batch = image.batch
    if spec in BUILTIN:
        calib = load_dataset(spec, preprocess, split="calib", limit=calib_samples, seed=seed)
        held = load_dataset(spec, preprocess, split="test", limit=eval_samples, seed=seed)
        calib_x, eval_x, eval_y, class_names, skipped = calib.x, held.x, held.labels, held.class_names, calib.skipped
    else:
        whole = load_dataset(spec, preprocess, split="calib", limit=None, seed=seed)
        n = len(whole.x)
        n_eval = min(eval_samples, n // 4)
        order = np.random.default_rng(seed).permutation(n)
        eval_idx, calib_idx = np.sort(order[:n_eval]), np.sort(order[n_eval:])[:calib_samples]
        calib_x, eval_x = whole.x[calib_idx], whole.x[eval_idx]
        eval_y = None if whole.labels is None else whole.labels[eval_idx]
        class_names, skipped = whole.class_names, whole.skipped
    if len(calib_x) == 0:
        raise DataError(f"calibration data {spec!r} holds no usable image")
    reused = len(eval_x) < max(batch, 2)
    if reused:  # a tiny folder: validate on the calibration images rather than on nothing
        eval_x, eval_y = calib_x[:max(eval_samples, batch, 2)], None
    calib_x, eval_x, eval_y = _whole_batches(calib_x, batch), _whole_batches(eval_x, batch), \
        None if eval_y is None else _whole_batches(eval_y, batch)
    if len(calib_x) == 0:
        raise DataError(f"calibration data {spec!r} holds fewer images than one batch of {batch}")
    info = {"dataset": spec, "kind": DataKind.IMAGES, "synthetic": spec in SYNTHETIC,
            "samples": int(len(calib_x)), "eval_samples": int(len(eval_x)), "skipped_images": int(skipped),
            "eval_is_calibration": bool(reused)}
    return PipelineData((calib_x,), (eval_x,), eval_y, class_names, info)


def _whole_batches(x: np.ndarray, batch: int) -> np.ndarray:
    return x[: len(x) - len(x) % batch] if batch > 1 else x


# -- arrays -----------------------------------------------------------------------------------------
def _arrays(path: Path, inputs: Sequence[ModelInput], calib_samples: int, eval_samples: int, seed: int,
            preprocess=None) -> PipelineData:
    """``.npz``/``.npy`` examples for ``inputs``, split into held-out and calibration examples."""
    per_input, pixels = read_arrays(path, inputs, preprocess)
    invocations = [len(x) // i.batch for x, i in zip(per_input, inputs)]
    n = min(invocations)
    if n == 0:
        raise DataError(f"--calib {path}: no whole example for every input")
    if len(set(invocations)) > 1:
        if len({i.batch for i in inputs}) > 1:    # rows are examples; an invocation takes `batch` of them
            counts = ", ".join(f"{i.name}: {len(x)} rows = {k} invocation(s) of batch {i.batch}"
                               for x, i, k in zip(per_input, inputs, invocations))
            raise DataError(f"--calib {path}: the inputs fill different numbers of invocations ({counts}); each "
                            "input's array needs its batch times as many rows")
        counts = ", ".join(f"{i.name}: {len(x)}" for x, i in zip(per_input, inputs))
        raise DataError(f"--calib {path}: the inputs have different numbers of examples ({counts})")
    # held-out invocations first (never calibrate), the rest calibrates; a tiny set validates on all
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(-(-eval_samples // inputs[0].batch), n // 4) or n
    eval_idx, calib_idx = np.sort(order[:n_eval]), np.sort(order[n_eval:] if n_eval < n else order)
    calib_idx = calib_idx[: max(1, -(-calib_samples // inputs[0].batch))]

    def take(x: np.ndarray, batch: int, idx: np.ndarray) -> np.ndarray:
        rows = (idx[:, None] * batch + np.arange(batch)[None]).reshape(-1)
        return x[rows]

    calib = tuple(take(x, i.batch, calib_idx) for x, i in zip(per_input, inputs))
    held = tuple(take(x, i.batch, eval_idx) for x, i in zip(per_input, inputs))
    info = {"dataset": str(path), "kind": DataKind.ARRAYS, "synthetic": False, "samples": int(len(calib[0])),
            "eval_samples": int(len(held[0])), "skipped_images": 0, "eval_is_calibration": bool(n_eval >= n),
            "pixels": bool(pixels)}
    return PipelineData(calib, held, None, None, info)



def read_arrays(path: Path, inputs: Sequence[ModelInput], preprocess=None) -> tuple[list[np.ndarray], bool]:
    """(one float32 array of examples per input, TFLite layout; whether uint8 pixels were normalized)
    from ``path`` (.npz by input name, or
    .npy for a one-input model). Accepts ``(S, *shape[1:])`` (examples) or ``(S, *shape)`` (whole
    batches) per input. With ``preprocess``, a uint8 array for an image input holds pixels (0..255, as a
    camera gives them) and is normalized as images are: ``(pixel / 255 - mean) / std``; other arrays go
    into the model as they are. DataError for a missing name, a wrong shape, non-numbers or non-finite
    values."""
    try:
        if path.stat().st_size > _MAX_ARRAY_BYTES:
            raise DataError(f"--calib {path}: {path.stat().st_size:,} bytes is more data than calibration needs "
                            f"(at most {_MAX_ARRAY_BYTES >> 30} GB)")
        if path.suffix.lower() == ".npy":
            if len(inputs) != 1:
                raise DataError(f"--calib {path}: the model has {len(inputs)} inputs "
                                f"({', '.join(i.name for i in inputs)}); give an .npz with one array per input name")
            check_declared_size(path, path)
            raw = {inputs[0].name: np.load(path, allow_pickle=False)}
        else:
            check_declared_size(path, path)
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                missing = [i.name for i in inputs if i.name not in names]
                if missing and len(inputs) == 1 and len(names) == 1:
                    raw = {inputs[0].name: npz[names[0]]}   # one array, one input: the name does not matter
                elif missing:
                    raise DataError(f"--calib {path}: no array named {missing[0]!r} (it holds {', '.join(names) or 'none'}; "
                                    f"the model's inputs are {', '.join(i.name for i in inputs)})")
                else:
                    raw = {i.name: npz[i.name] for i in inputs}
    except DataError:
        raise
    except PermissionError as exc:
        raise DataError(f"--calib {path}: permission denied") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as exc:   # not .npy/.npz, truncated, pickled
        raise DataError(f"--calib {path}: not a readable NumPy file ({str(exc).splitlines()[0][:160]})") from exc
    pixels = preprocess is not None and any(i.image and raw[i.name].dtype == np.uint8 for i in inputs)
    arrays = [_as_examples(raw[i.name], i, path) for i in inputs]
    if pixels:      # camera pixels, not model inputs: normalized as images are
        mean, std = (np.asarray(v, np.float32) for v in (preprocess.mean, preprocess.std))
        arrays = [((x / 255.0 - mean) / std).astype(np.float32) if i.image and raw[i.name].dtype == np.uint8 else x
                  for x, i in zip(arrays, inputs)]
    return arrays, bool(pixels)


def check_declared_size(path: Path, shown, limit: int = _MAX_ARRAY_BYTES) -> None:
    """DataError when an .npy, or any array of an .npz, declares more bytes than ``limit`` in its
    header (a few bytes of file can declare terabytes): checked before anything is allocated."""
    def declared(stream) -> int:
        version = np.lib.format.read_magic(stream)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)(stream)
        shape, _, dtype = header
        return int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize

    try:
        if str(path).lower().endswith(".npy"):
            with open(path, "rb") as fh:
                total = declared(fh)
        else:
            total = 0
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    with archive.open(member) as fh:
                        total += declared(fh)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{shown}: not a readable NumPy file ({str(exc).splitlines()[0][:160] or type(exc).__name__})") \
            from exc
    if total > limit:
        raise DataError(f"{shown}: its arrays declare {total:,} bytes, more than {limit:,} (a file that small cannot "
                        "hold them, or far more data than calibration needs)")


def _as_examples(arr: np.ndarray, spec: ModelInput, path: Path) -> np.ndarray:
    if arr.dtype.kind not in "fiub":
        raise DataError(f"--calib {path}: array {spec.name!r} holds {arr.dtype} values, not numbers")
    onnx_example = spec.shape[1:] if spec.rank >= 2 else spec.shape
    if arr.ndim >= 1 and tuple(arr.shape[1:]) == tuple(spec.shape) and spec.rank >= 2:
        arr = arr.reshape(-1, *spec.shape[1:])     # whole batches -> examples
    # images may come channels-last too (Keras / TensorFlow users' arrays, the TFLite layout) where
    # that shape cannot be read the other way
    nhwc = tuple(onnx_example[1:]) + tuple(onnx_example[:1]) if spec.image else None
    channels_last = spec.image and tuple(arr.shape[1:]) == nhwc != tuple(onnx_example)
    if tuple(arr.shape[1:]) != tuple(onnx_example) and not channels_last:
        also = f" or ({', '.join(map(str, nhwc))}) channels-last" if spec.image else ""
        raise DataError(f"--calib {path}: array {spec.name!r} has shape {tuple(arr.shape)}; input {spec.name!r} "
                        f"({'x'.join(map(str, spec.shape))}) wants (examples, {', '.join(map(str, onnx_example))}) "
                        f"in the ONNX layout{also}")
    x = arr.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"--calib {path}: array {spec.name!r} holds NaN or infinite values")
    if spec.image and not channels_last:
        x = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    return x


# -- random -----------------------------------------------------------------------------------------
def _random(inputs: Sequence[ModelInput], eval_samples: int, seed: int) -> PipelineData:
    """Seeded standard-normal examples: enough to compare the float model with ONNX, nothing more."""
    rng = np.random.default_rng(seed)
    invocations = max(1, -(-min(eval_samples, 16) // max(i.batch for i in inputs)))
    held = tuple(rng.standard_normal((invocations * i.batch if i.rank >= 2 else invocations, *i.example_shape))
                 .astype(np.float32) for i in inputs)
    info = {"dataset": "random", "kind": DataKind.RANDOM, "synthetic": True, "samples": 0,
            "eval_samples": int(len(held[0])), "skipped_images": 0}
    return PipelineData(tuple(x[:0] for x in held), held, None, None, info)


def to_onnx_layout(x: np.ndarray, spec: ModelInput) -> np.ndarray:
    """Examples of ``spec`` in the ONNX model's layout (NCHW for images)."""
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))) if spec.image else x


# -- the held-out set that travels with the model -------------------------------------------------
EVAL_SET = "eval_set.npz"
EVAL_SET_MAX_BYTES = 16 << 20     # uncompressed: 53 examples of 320x320 pixels, 13 of float32 arrays


def write_eval_set(path: Path, inputs: Sequence[ModelInput], eval_x: Sequence[np.ndarray],
                   labels: np.ndarray | None, info: dict, preprocess=None) -> bool:
    """Write the held-out examples (preprocessed, TFLite layout, one array per input name), their
    labels when they are the model's classes, and where they came from, to ``path`` (.npz, at most
    EVAL_SET_MAX_BYTES uncompressed: whole invocations are dropped from the end to fit). Images, and
    arrays that are whole pixels normalized by the model's preprocessing, are stored as the uint8
    pixels they were normalized from (``pixels:NAME``, in the model's channel order, with ``mean``
    and ``std``: 4x smaller); ``edgenet bench`` normalizes them again and compares the models on them when no
    --data is given, with numpy and LiteRT only. Returns False (nothing written) for random
    examples, which would measure nothing."""
    from edgenet.io import atomic_write_bytes
    import io

    if info.get("kind") == DataKind.RANDOM or not eval_x or len(eval_x[0]) == 0:
        return False
    as_pixels = preprocess is not None and len(inputs) == 1 and (
        info.get("kind") == DataKind.IMAGES or (inputs[0].image and _pixel_exact(eval_x[0], preprocess)))
    itemsize = 1 if as_pixels else 4
    per_invocation = sum(x[: max(1, i.batch)].size * itemsize for x, i in zip(eval_x, inputs))
    keep = max(1, min(len(x) // max(1, i.batch) for x, i in zip(eval_x, inputs)))
    keep = max(1, min(keep, EVAL_SET_MAX_BYTES // max(per_invocation, 1)))
    arrays = {}
    for x, i in zip(eval_x, inputs):
        x = x[: keep * max(1, i.batch)]
        if as_pixels:
            arrays[f"pixels:{i.name}"] = pixels_of(x, preprocess)
            arrays["mean"] = np.asarray(preprocess.mean, np.float32)
            arrays["std"] = np.asarray(preprocess.std, np.float32)
        else:
            arrays[f"input:{i.name}"] = np.ascontiguousarray(x, dtype=np.float32)
    if labels is not None:
        arrays["labels"] = np.asarray(labels[: keep * max(1, inputs[0].batch)], dtype=np.int64)
    arrays["source"] = np.array(str(info.get("dataset", "")))
    arrays["synthetic"] = np.array(bool(info.get("synthetic", False)))
    buffer = io.BytesIO()
    # stored, not deflated: 64 MobileNetV1 examples are 9.6 MB of pixels that zlib takes 0.29 s to
    # bring to 6.6 MB (synthetic shapes; camera pixels compress less), a tenth of a conversion's time
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return True


def _pixel_exact(x: np.ndarray, preprocess) -> bool:
    """True when arrays given with --calib are whole pixels normalized by ``preprocess`` (images a user
    divided by 255 themselves): stored as those pixels they come back exactly, at a quarter of the size."""
    std = float(np.min(np.abs(np.asarray(preprocess.std, np.float32)))) or 1.0
    back = (pixels_of(x, preprocess).astype(np.float32) / 255.0 - np.asarray(preprocess.mean, np.float32)) \
        / np.asarray(preprocess.std, np.float32)
    return x.dtype.kind == "f" and bool(np.max(np.abs(back - x), initial=0.0) <= 1e-5 / std)


def pixels_of(x: np.ndarray, preprocess) -> np.ndarray:
    """The uint8 pixels (after resize and crop, in the model's channel order) that ``preprocess``
    normalized into ``x``: exact, since x = (pixel / 255 - mean) / std of whole pixel values."""
    mean = np.asarray(preprocess.mean, np.float32)
    std = np.asarray(preprocess.std, np.float32)
    return np.clip(np.rint((x * std + mean) * 255.0), 0, 255).astype(np.uint8)

