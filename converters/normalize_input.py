"""``--normalize-in-model``: the image input's ``(x - mean) / std`` moved into the model.

A model trained on ImageNet-normalized images wants ``(pixel / 255 - mean_c) / std_c`` with a
different mean and std per channel. Outside the model that normalization is the app's job, and
not every app can do it: MediaPipe Tasks accepts one mean and one std for all channels, and an
int8 model's uint8 input has one scale and one zero point, so no input quantization maps every
channel's pixels to themselves. With the normalization inside the graph (a Sub and a Mul on the
image input, per channel, before everything else) the model takes pixels scaled to [0, 1]:
``mean = 0``, ``std = 1`` for every channel, which any app, MediaPipe's NormalizationOptions and a
uint8 input of scale 1/255 express exactly.

The input keeps its name, shape and layout; the graph computes the same function of the pixels.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from edgenet._deps import require
from edgenet.data.preprocess import Preprocess


def is_identity(pre: Preprocess) -> bool:
    """True when ``pre`` already feeds pixels in [0, 1] (mean 0 and std 1 for every channel)."""
    return all(m == 0 for m in pre.mean) and all(s == 1 for s in pre.std)


def fold_normalization(model: Any, input_name: str, pre: Preprocess) -> tuple[Any, Preprocess]:
    """A copy of ``model`` (ONNX, NCHW image input ``input_name``) that normalizes its input with
    ``pre``'s per-channel mean and std itself, and the preprocessing that feeds it (``pre`` with
    mean 0 and std 1: pixels / 255).

    Raises:
        ValueError: ``input_name`` is not a rank-4 graph input with one channel per mean value.
    """
    onnx = require("onnx")
    new = onnx.ModelProto()
    new.CopyFrom(model)
    graph = new.graph
    image = next((i for i in graph.input if i.name == input_name), None)
    dims = [] if image is None else [d.dim_value for d in image.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != len(pre.mean):
        raise ValueError(f"input {input_name!r} is not an NCHW image of {len(pre.mean)} channel(s)")
    inner = _unused_name(new, f"{input_name}_normalized")
    centered = _unused_name(new, f"{input_name}_centered")
    for node in graph.node:
        node.input[:] = [inner if name == input_name else name for name in node.input]
    channels = len(pre.mean)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, channels, 1, 1)
    inv_std = (1.0 / np.asarray(pre.std, dtype=np.float64)).astype(np.float32).reshape(1, channels, 1, 1)
    mean_name, scale_name = _unused_name(new, f"{input_name}_mean"), _unused_name(new, f"{input_name}_inv_std")
    graph.initializer.extend([onnx.numpy_helper.from_array(mean, mean_name),
                              onnx.numpy_helper.from_array(inv_std, scale_name)])
    nodes = [onnx.helper.make_node("Sub", [input_name, mean_name], [centered], name=centered),
             onnx.helper.make_node("Mul", [centered, scale_name], [inner], name=inner)]
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    onnx.checker.check_model(new)
    return new, replace(pre, mean=(0.0,) * channels, std=(1.0,) * channels)


def _unused_name(model: Any, base: str) -> str:
    taken = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    taken |= {o for n in model.graph.node for o in n.output}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name
