"""What every real model of the benchmark has: its rendered data and its entry."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MATCH_IOU = 0.5   # a detection matches float's at this box IoU (detectors' F1)


@dataclass(frozen=True)
class Data:
    """Rendered examples: ``x`` float32 (N, C, H, W) preprocessed; ``truth`` one entry per example
    (class index, text, or line boxes) or None."""
    x: np.ndarray
    truth: list


@dataclass(frozen=True)
class RealModel:
    """One real model: ``path`` relative to the cache dir; ``make(rng, n)`` renders n examples;
    ``judge(float, int8, data, model_path)`` returns the task metrics of the int8 outputs against float
    (outputs as lists of per-example arrays in ONNX layout) and whether each task target is met."""
    name: str
    title: str
    path: Path
    input_shape: tuple[int, int, int, int]
    convert_args: tuple[str, ...]
    make: Callable[[np.random.Generator, int], Data]
    judge: Callable[[list, list, Data, Path], dict]
