"""Empirical bias correction (Nagel et al. 2019, section 4.2) for int8 weight quantization.

Quantizing a layer's weights ``W`` to ``W_q`` shifts the expected value of each output channel by
``E[(W_q - W) x]``; over many layers the shifts add up to a biased output. Knowing how the target
quantizes the weights (TFLite int8: symmetric, zero point 0, values in [-127, 127], one scale per
tensor or per output channel -- see :func:`quantize_weights`) and the mean input of every layer on
the calibration data, the shift can be subtracted from the layer's bias.

``DIRECT`` uses the float model's input means: ``bias -= mean(conv(E[x], W_q - W))`` (the mean
image over samples, so zero padding at the borders is counted exactly). ``SEQUENTIAL`` walks the
layers in graph order and measures, in the model whose earlier layers already carry quantized
weights and corrected biases, ``bias -= E[y_q] - E[y]`` at each layer's output: it also removes the
shift a layer inherits from the layers before it. Both run the graph in onnxruntime.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from edgenet._deps import require
from edgenet.errors import ConversionError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

OUTPUT_BUDGET = 128 << 20   # bytes of requested tensors per onnxruntime batch
QMAX = 127  # TFLite int8 weights: symmetric, narrow range [-127, 127], zero point 0
MAX_SAMPLES = 64          # samples for the bias-correction means (32 -> 200: +0.25 dB SQNR on digits)
# ... at most this many input values (64 samples of 3x224x224), at least MIN_SAMPLES: a per-channel mean over
# a large image averages many positions already, and each sample costs two model passes
MAX_VALUES = MAX_SAMPLES * 3 * 224 * 224
MIN_SAMPLES = 16


class BiasCorrection(str, Enum):
    NONE = "none"
    DIRECT = "direct"            # float input means, each layer on its own
    SEQUENTIAL = "sequential"    # measured layer by layer with quantized weights upstream


@dataclass(frozen=True)
class BiasCorrectionStats:
    method: BiasCorrection
    per_channel: bool            # the weight scheme simulated
    layers: int                  # biases corrected (Conv and Gemm with constant weights)
    samples: int
    max_abs_shift: float         # the largest correction subtracted from any bias
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["method"] = self.method.value
        d["seconds"] = round(self.seconds, 3)
        return d


def quantize_weights(w: np.ndarray, per_channel: bool, axis: int = 0) -> np.ndarray:
    """``w`` after a TFLite-style int8 round trip: scale ``max|w| / 127`` (per tensor, or per
    slice along ``axis``), round half away from zero, clamp to [-127, 127], scale back. The
    arithmetic is float32, as in TFLite's quantizer, so ties round the same way."""
    w32 = np.asarray(w, dtype=np.float32)
    moved = np.moveaxis(w32, axis, 0) if per_channel else w32
    if per_channel:
        amax = np.max(np.abs(moved.reshape(len(moved), -1)), axis=1).reshape((-1,) + (1,) * (moved.ndim - 1))
    else:
        amax = np.max(np.abs(w32)) if w32.size else np.float32(0)
    scale = np.where(amax > 0, amax / np.float32(QMAX), np.float32(1)).astype(np.float32)
    ratio = (moved / scale).astype(np.float32)
    q = np.clip(np.sign(ratio) * np.floor(np.abs(ratio) + np.float32(0.5)), -QMAX, QMAX)
    out = q.astype(np.float64) * scale.astype(np.float64)
    return np.moveaxis(out, 0, axis) if per_channel else out


# -- the layers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightLayer:
    """A Conv or Gemm whose weight (and bias, if any) are graph constants."""

    index: int                   # position in graph.node
    kind: str                    # "conv" | "gemm"
    weight: str
    bias: str | None
    out_axis: int                # the output-channel axis of the weight as stored
    bias_factor: float = 1.0     # Gemm: beta (output gets beta * C)


def weight_layers(graph: "onnx.GraphProto", consts: dict) -> list[WeightLayer]:
    from onnx import helper

    layers = []
    for i, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in consts:
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if bias is not None and bias not in consts:
                continue
            layers.append(WeightLayer(i, "conv", node.input[1], bias, 0))
        elif node.op_type == "Gemm" and node.input[1] in consts and not attrs.get("transA", 0):
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if bias is not None and (bias not in consts or consts[bias].ndim > 1 and consts[bias].shape[0] != 1):
                continue
            layers.append(WeightLayer(i, "gemm", node.input[1], bias, 0 if attrs.get("transB", 0) else 1,
                                      float(attrs.get("beta", 1.0))))
    return layers


# -- onnxruntime helpers ---------------------------------------------------------------------
def _with_outputs(model: "onnx.ModelProto", names: Sequence[str], batched: bool) -> "onnx.ModelProto":
    """A copy of ``model`` whose outputs are exactly ``names``, without the nodes they do not need;
    ``batched``: the first input dimension made symbolic so that several samples run at once."""
    onnx = require("onnx")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    known = {o.name: o for o in graph.output}
    wanted = [known.get(n) or onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names]
    kept = [onnx.ValueInfoProto() for _ in wanted]
    for k, w in zip(kept, wanted):
        k.CopyFrom(w)
    del graph.output[:]
    graph.output.extend(kept)
    needed, nodes = set(names), []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
    keep = [onnx.NodeProto() for _ in nodes]
    for k, n in zip(keep, reversed(nodes)):
        k.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(keep)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    if batched:
        del graph.value_info[:]
        for vi in list(graph.input) + list(graph.output):
            if vi.type.tensor_type.HasField("shape") and vi.type.tensor_type.shape.dim:
                dim = vi.type.tensor_type.shape.dim[0]
                dim.ClearField("dim_value")
                dim.dim_param = "batch"
    return out


def input_names(model: "onnx.ModelProto") -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _session(model: "onnx.ModelProto"):
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 4   # fatal only: a probe that fails (a hard-coded batch) is handled, not printed
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # ~5x faster (NCHWc); means only
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _batched(model: "onnx.ModelProto", calib: Sequence[np.ndarray], names: Sequence[str], batch: int,
             budget_bytes: int) -> Iterator[tuple[int, list[np.ndarray], int]]:
    """Run ``model`` with outputs ``names`` over the samples; yields (first sample, outputs, batch
    size). Batches are as large as ``batch`` while their requested tensors stay within
    ``budget_bytes``; a graph with a hard-coded batch size runs one sample at a time."""
    n = len(calib[0])
    feed_names = input_names(model)
    probe = min(2, n)
    try:
        sess = _session(_with_outputs(model, names, batched=True))
        first = sess.run(names, {k: x[:probe] for k, x in zip(feed_names, calib)})
        per_sample = sum(np.asarray(v).nbytes for v in first) / probe
        step = int(max(1, min(batch, budget_bytes // max(per_sample, 1))))
    except Exception:  # a graph with a hard-coded batch size: one sample at a time
        sess, step, probe = _session(_with_outputs(model, names, batched=False)), 1, 0
        first = None
    if first is not None:
        yield 0, first, step
    for start in range(probe, n, step):
        yield start, sess.run(names, {k: x[start:start + step] for k, x in zip(feed_names, calib)}), step


def _channel_means(value: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (N, C): each sample's mean per channel (axis 1)."""
    value = np.asarray(value)
    return value.reshape(value.shape[0], value.shape[1], -1).mean(axis=2, dtype=np.float64)


def tensor_means(model: "onnx.ModelProto", calib: Sequence[np.ndarray], names: Sequence[str],
                 keep_spatial: bool = False, batch: int = 32,
                 budget_bytes: int = OUTPUT_BUDGET) -> dict[str, np.ndarray]:
    """Mean of each named tensor over the calibration samples: per channel (axis 1), or per
    channel and position (the mean image, shape ``(C, ...)``) with ``keep_spatial``. Batches are
    as large as ``batch`` while the requested tensors of a batch stay within ``budget_bytes``."""
    names = list(names)
    sums: dict[str, np.ndarray] = {}
    for _, outs, _ in _batched(model, calib, names, batch, budget_bytes):
        for name, value in zip(names, outs):
            value = np.asarray(value, dtype=np.float64)
            part = value.sum(axis=0) if keep_spatial else _channel_means(value).sum(axis=0)
            sums[name] = sums.get(name, 0.0) + part
    n = len(calib[0])
    return {k: v / n for k, v in sums.items()}


def sample_means(model: "onnx.ModelProto", calib: Sequence[np.ndarray], names: Sequence[str], batch: int = 32,
                 budget_bytes: int = OUTPUT_BUDGET) -> tuple[dict[str, np.ndarray], int]:
    """Each sample's per-channel mean of each named tensor, ``name -> (N, C)`` float64, in one pass;
    and the batch size that ran (1: the graph fixes its batch)."""
    names = list(names)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    step = 1
    for _, outs, step in _batched(model, calib, names, batch, budget_bytes):
        for name, value in zip(names, outs):
            parts[name].append(_channel_means(value))
    return {k: np.concatenate(v) for k, v in parts.items()}, step


def _node_model(node: "onnx.NodeProto", x_shape: tuple[int, ...], w: np.ndarray) -> "onnx.ModelProto":
    """A one-node model computing ``node`` (a Conv) on input ``x`` with weight ``w`` and no bias."""
    onnx = require("onnx")
    h = onnx.helper
    conv = h.make_node("Conv", ["x", "w"], ["y"])
    conv.attribute.extend(node.attribute)
    graph = h.make_graph([conv], "delta", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                         [onnx.numpy_helper.from_array(w.astype(np.float32), "w")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def _output_shift(node, layer: WeightLayer, mean_input: np.ndarray, dw: np.ndarray) -> np.ndarray:
    """Per-output-channel mean of ``layer`` applied with weight ``dw`` to the mean input."""
    if layer.kind == "gemm":
        x = mean_input.reshape(-1)
        return x @ (dw.T if layer.out_axis == 0 else dw)
    x = mean_input[None].astype(np.float32)
    y = _session(_node_model(node, x.shape, dw)).run(None, {"x": x})[0][0]
    return y.reshape(len(y), -1).mean(axis=1)


# -- the pass --------------------------------------------------------------------------------
def correct_biases(model: "onnx.ModelProto", calib: Sequence[np.ndarray], *, per_channel: bool = False,
                   method: BiasCorrection = BiasCorrection.SEQUENTIAL,
                   max_samples: int = MAX_SAMPLES) -> tuple["onnx.ModelProto", BiasCorrectionStats]:
    """A copy of ``model`` whose Conv / Gemm biases compensate the mean shift of int8 weights."""
    from edgenet.converters.cleanup import constant_values, unique_name

    onnx = require("onnx")
    t0 = time.perf_counter()
    method = BiasCorrection(method)
    per_sample = max(1, sum(int(np.prod(np.shape(x)[1:])) for x in calib))
    max_samples = min(max_samples, max(MIN_SAMPLES, MAX_VALUES // per_sample))
    calib = [np.ascontiguousarray(x[:max_samples], dtype=np.float32) for x in calib]
    if not calib or len(calib[0]) == 0:
        raise ConversionError("bias correction needs at least one calibration sample")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = constant_values(graph, include_constant_nodes=False)
    layers = weight_layers(graph, consts)
    if method is BiasCorrection.NONE or not layers:
        return out, BiasCorrectionStats(method, per_channel, 0, len(calib[0]), 0.0, time.perf_counter() - t0)

    def set_const(node_input_owner, slot: int, base: str, value: np.ndarray) -> str:
        name = unique_name(graph, base)
        graph.initializer.append(onnx.numpy_helper.from_array(value.astype(np.float32), name))
        while len(node_input_owner.input) <= slot:
            node_input_owner.input.append("")
        node_input_owner.input[slot] = name
        return name

    shifts, samples = [], len(calib[0])
    if method is BiasCorrection.DIRECT:
        means = tensor_means(out, calib, [graph.node[lay.index].input[0] for lay in layers], keep_spatial=True)
        plan = []
        for lay in layers:
            node = graph.node[lay.index]
            w = consts[lay.weight].astype(np.float64)
            dw = quantize_weights(w, per_channel, lay.out_axis) - w
            plan.append((lay, _output_shift(node, lay, means[node.input[0]], dw)))
        for lay, shift in plan:
            shifts.append(_apply(graph, lay, consts, shift, set_const))
    else:
        shifts, samples = _sequential(out, calib, layers, consts, per_channel, set_const)
    _drop_unused_initializers(graph)
    return out, BiasCorrectionStats(method, per_channel, len(layers), samples,
                                    float(max(shifts)), time.perf_counter() - t0)


def _sequential(out: "onnx.ModelProto", calib: Sequence[np.ndarray], layers: list[WeightLayer], consts: dict,
                per_channel: bool, set_const) -> tuple[list[float], int]:
    """SEQUENTIAL in one pass of the float model and one of the int8-weight model, cut after each
    layer (:mod:`edgenet.converters.segments`): at layer k, the int8-weight model's output mean,
    with the layers before it already corrected, minus the float model's, on the same samples.
    A changed bias moves the layer's output by the same constant per channel, so the cached output
    is corrected in place and the segments after it read the corrected tensor. Returns the
    corrections' largest magnitudes and the samples the deepest layer was measured on."""
    from edgenet.converters.segments import run_segments

    graph = out.graph
    targets = [graph.node[lay.index].output[0] for lay in layers]
    float_means, step = sample_means(out, calib, targets)
    if step > 1 and not _runs_batched(out, calib):
        step = 1    # the layers' outputs run batched, a later node fixes the batch (a head's reshape)
    for lay in layers:   # int8-round-tripped weights everywhere: a layer only sees the ones before it
        w = consts[lay.weight].astype(np.float64)
        set_const(graph.node[lay.index], 1, lay.weight + "_wq", quantize_weights(w, per_channel, lay.out_axis))
    keys = input_names(out)
    n = len(calib[0])
    feeds = [{k: x[i:i + step] for k, x in zip(keys, calib)} for i in range(0, n, step)]
    by_index = {lay.index: lay for lay in layers}
    shifts, samples = [], n
    for seg, values in run_segments(out, feeds, [lay.index for lay in layers], _session):
        lay = by_index[seg.stop]
        quant = np.concatenate([_channel_means(v) for v in values])
        samples = min(samples, len(quant))
        shift = (quant - float_means[seg.target][:len(quant)]).mean(axis=0)
        shifts.append(_apply(graph, lay, consts, shift, set_const))
        for v in values:   # what the corrected bias does to the output the next segments read
            v -= shift.reshape((1, -1) + (1,) * (v.ndim - 2)).astype(v.dtype)
    for lay in layers:  # the float weights back (the target quantizes them itself)
        graph.node[lay.index].input[1] = lay.weight
    return shifts, samples


def _runs_batched(model: "onnx.ModelProto", calib: Sequence[np.ndarray]) -> bool:
    """True when the whole of ``model`` runs on two samples at once (the segments run all of it)."""
    names = [o.name for o in model.graph.output]
    try:
        sess = _session(_with_outputs(model, names, batched=True))
        sess.run(names, {k: x[:2] for k, x in zip(input_names(model), calib)})
    except Exception:  # a node with a hard-coded batch size
        return False
    return True


def _apply(graph, lay: WeightLayer, consts: dict, shift: np.ndarray, set_const) -> float:
    """Subtract ``shift`` (per output channel) from the layer's bias; its largest magnitude."""
    node = graph.node[lay.index]
    channels = len(shift)
    old = consts[lay.bias].astype(np.float64).reshape(-1) if lay.bias else np.zeros(channels)
    if old.size == 1 and channels > 1:
        old = np.full(channels, float(old[0]))
    new = old - shift / lay.bias_factor
    if lay.kind == "gemm" and lay.bias is not None:
        new = new.reshape((1, channels) if consts[lay.bias].ndim == 2 else (channels,))
    name = set_const(node, 2, (lay.bias or node.output[0]) + "_bc", new)
    consts[name] = new
    return float(np.max(np.abs(shift)))


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
