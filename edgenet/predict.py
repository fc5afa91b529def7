"""`edgenet predict`: a converted model run on a few images, the fastest check after a conversion.

A `convert` output folder (its int8 model by default, else the only model there) or a ``.tflite`` file
beside its ``preprocess.json``; each image is decoded, resized and normalized exactly as the folder's
``preprocess.json`` says (the same :class:`edgenet.data.preprocess.Preprocess` validation and bench
use), run through LiteRT, and its outputs dequantized. A classifier's output (``(1, K)`` scores) is
shown as its top-k classes, named from ``labels.txt`` when there is one; any other output as its
shape and value range (``--json`` gives the values). Base install only: numpy, Pillow, LiteRT.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgenet import limits
from edgenet.errors import DataError, ModelError, UsageError

MAX_IMAGES = 1000


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str | None
    score: float


@dataclass(frozen=True)
class OutputValues:
    name: str
    shape: tuple[int, ...]
    top: tuple[ClassScore, ...] | None      # classifier-shaped outputs: the top-k classes, best first
    scores_are: str | None                  # :func:`scores_kind`: probabilities, independent probabilities,
                                            # log-probabilities or logits
    minimum: float
    maximum: float
    values: np.ndarray                      # the dequantized output (for --json)

    def to_dict(self, with_values: bool) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "min": self.minimum, "max": self.maximum}
        if self.top is not None:
            d["top"] = [{"index": c.index, "label": c.label, "score": c.score} for c in self.top]
            d["scores_are"] = self.scores_are
        if with_values:
            d["values"] = self.values.tolist()
        return d


@dataclass(frozen=True)
class ImagePrediction:
    image: str
    outputs: tuple[OutputValues, ...]


@dataclass(frozen=True)
class Predictions:
    model: str
    precision: str                          # the model's input type: int8, uint8, float32 ...
    labels: str | None
    images: tuple[ImagePrediction, ...]


_MOVE_ONLY = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE")
_LAST_OP_KIND = {"SOFTMAX": "probabilities", "LOG_SOFTMAX": "log-probabilities", "LOGISTIC": "independent probabilities",
                 "FULLY_CONNECTED": "logits", "CONV_2D": "logits"}


def scores_kinds_of_graph(model_path) -> list[str | None]:
    """Per model output, what its scores are from the op that computes them (through QUANTIZE,
    DEQUANTIZE and reshapes): a SOFTMAX's probabilities, a LOGISTIC's independent probabilities, a
    FULLY_CONNECTED's or CONV_2D's logits; None where the graph does not say (then
    :func:`scores_kind` reads the values). The graph says the same for a model's int8 and float
    files, where values can mislead (small int8 logits all in [0, 1] look like sigmoids)."""
    from edgenet.targets.tflite_graph import read_tflite

    try:
        graph = read_tflite(model_path)
    except Exception:
        return []
    producer = {t: op for op in graph.operators for t in op.outputs}
    kinds = []
    for t in graph.outputs:
        op = producer.get(t)
        while op is not None and op.name in _MOVE_ONLY and op.inputs:
            op = producer.get(op.inputs[0])
        kinds.append(None if op is None else _LAST_OP_KIND.get(op.name))
    return kinds


def scores_kind(row: np.ndarray) -> str:
    """What a classifier's scores are, from their values: "probabilities" (in [0, 1], summing to 1:
    a softmax), "independent probabilities" (in [0, 1], not summing to 1: sigmoids),
    "log-probabilities" (<= 0, exp summing to 1: a log-softmax) or "logits" (anything else)."""
    row = np.asarray(row, dtype=np.float64)
    if row.min() >= -1e-3 and row.max() <= 1 + 1e-3:
        return "probabilities" if abs(row.sum() - 1) <= 0.02 else "independent probabilities"
    if row.max() <= 1e-3 and abs(np.exp(row).sum() - 1) <= 0.02:
        return "log-probabilities"
    return "logits"


def resolve(target: str | Path) -> tuple[Path, Path | None, Path | None]:
    """(model, preprocess.json, labels.txt) for a convert folder or a .tflite file. ModelError/DataError
    naming what is missing."""
    from edgenet.limits import regular_file

    path = Path(target)
    if not os.path.lexists(path):
        raise ModelError(f"{path}: no such file or folder")
    if path.is_dir():
        found = [path / n for n in ("model_int8.tflite", "model_int16x8.tflite", "model_float.tflite")
                 if os.path.lexists(path / n)]
        if not found:
            raise ModelError(f"{path}: no model_int8.tflite or model_float.tflite in this folder")
        model, folder = found[0], path
    else:
        if path.suffix.lower() != ".tflite":
            raise UsageError(f"{path}: not a .tflite model (convert it first: edgenet convert {path} --out DIR)")
        model, folder = path, path.parent
    model = regular_file(model, "model file", ModelError, limits.MAX_MODEL_BYTES)
    extras = []
    for name in ("preprocess.json", "labels.txt"):
        p = folder / name
        extras.append(regular_file(p, name, DataError, limits.MAX_TEXT_BYTES) if os.path.lexists(p) else None)
    return model, extras[0], extras[1]


def predict(target: str | Path, images: Sequence[str | Path], top_k: int = 5,
            num_threads: int | None = None) -> Predictions:
    """Run the model of ``target`` (a convert folder or a .tflite file) on each image.

    Raises UsageError (no images, too many, top_k < 1), ModelError (no model / not a .tflite),
    DataError (no preprocess.json, an image that cannot be decoded, a model that does not take one
    image)."""
    from PIL import Image

    from edgenet.benchmark.models import read_labels
    from edgenet.data.preprocess import Preprocess
    from edgenet.inference import TFLiteModel
    from edgenet.quality import is_classifier_shaped

    if not images:
        raise UsageError("give at least one IMAGE")
    if len(images) > MAX_IMAGES:
        raise UsageError(f"{len(images)} images: at most {MAX_IMAGES} at once")
    if top_k < 1:
        raise UsageError(f"--top {top_k}: at least 1")
    if num_threads is not None and num_threads < 1:
        raise UsageError(f"--threads {num_threads}: at least 1")
    model_path, pre_path, labels_path = resolve(target)
    model = TFLiteModel(model_path, num_threads)
    if len(model.inputs) != 1 or len(model.input_shape) != 4:
        raise DataError(f"{model_path}: predict runs models with one image input; this one takes "
                        f"{[tuple(int(v) for v in d['shape']) for d in model.inputs]}")
    if pre_path is None:
        raise DataError(f"{model_path.parent}: no preprocess.json beside the model: predict needs the model's image "
                        "size and normalization (edgenet convert writes it for image models)")
    pre = Preprocess.load(pre_path)
    labels = read_labels(labels_path)
    results = []
    graph_kinds = scores_kinds_of_graph(model_path)
    for image in images:
        path = Path(image)
        if not path.is_file():
            raise DataError(f"{path}: no such image file" if not path.exists() else f"{path}: not a file")
        try:
            with Image.open(path) as img:
                x = pre(img)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: not an image Pillow can decode ({str(exc).splitlines()[0][:120]})") from None
        outs = model.predict_all(x[None])
        rows = []
        for k, (detail, y) in enumerate(zip(model.outputs, outs)):
            y = np.asarray(y, dtype=np.float32)
            top = scores_are = None
            if is_classifier_shaped(y.shape):
                row = y.reshape(-1)
                order = np.argsort(-row, kind="stable")[:top_k]
                top = tuple(ClassScore(int(i), labels[i] if labels and len(labels) == row.size else None,
                                       float(row[i])) for i in order)
                scores_are = (graph_kinds[k] if k < len(graph_kinds) else None) or scores_kind(row)
            rows.append(OutputValues(detail["name"], tuple(int(d) for d in y.shape[1:]), top, scores_are,
                                     float(y.min()) if y.size else 0.0, float(y.max()) if y.size else 0.0, y[0]))
        results.append(ImagePrediction(str(path), tuple(rows)))
    return Predictions(str(model_path), str(model.input_dtype), None if labels_path is None else str(labels_path),
                       tuple(results))
