"""Probe copies of a .tflite model: the same graph with chosen intermediate tensors as extra outputs.

A runtime keeps a model's outputs readable after ``invoke()`` without giving up its fast kernels
(XNNPACK, several threads), whereas ``experimental_preserve_all_tensors`` falls back to the slow
reference kernels. Calibration and the per-layer error report read activations through probes.
Tensor indices are unchanged, so an index found in the original model reads the same tensor.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from edgenet.converters import _flatbuffer


def with_outputs(model: bytes, tensors: Iterable[int]) -> bytes:
    """``model`` whose main subgraph also outputs ``tensors`` (after its own outputs, no repeats)."""
    obj = _flatbuffer.read(model)
    graph = obj.subgraphs[0]
    graph.outputs = np.array(list(dict.fromkeys([*(int(i) for i in graph.outputs), *(int(i) for i in tensors)])),
                             dtype=np.int32)
    return _flatbuffer.write(obj)
