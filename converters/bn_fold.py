"""Fold inference BatchNormalization into the producer's weights; lone BN -> per-channel Mul + Add.

With ``s = gamma / sqrt(var + eps)`` a BN computes ``y = s * (x - mean) + beta``. When ``x`` is the
output of

* ``Conv`` (weight constant, BN its only reader): ``W'[m] = W[m] * s[m]`` per output channel
  (grouped / depthwise conv too), ``b' = (b - mean) * s + beta`` (a bias is created if missing);
* ``Gemm`` on a 2-D output: the columns of ``B`` (rows when ``transB=1``) are scaled, and
  ``C' = (beta_gemm * C - mean) * s + beta`` with the Gemm's ``beta`` set to 1;
* ``MatMul`` (2-D, constant weight), optionally followed by ``Add`` of a constant bias: the weight
  columns are scaled and the bias is folded (an ``Add`` is created if there was none);

the BN node disappears and the producer writes the BN's output name. Any other BN (after a graph
input, an Add, a Concat, a shared tensor ...) becomes ``Mul(x, s) -> Add(., beta - mean * s)``
with constants shaped ``(C, 1, ..., 1)`` to broadcast over the channel axis 1.

Training-mode BN (``training_mode=1``, or any of the running-mean / running-var / saved-statistics
outputs present, which is what training mode means in opsets 9-13 and what onnxruntime runs)
raises ModelError: its output depends on batch statistics, so it has no inference equivalent --
export the model with ``module.eval()``. Opsets 7..21 are handled (``spatial=0`` of opsets 7/8
becomes Mul + Add with the per-activation parameter shape). A BN whose parameters are not
constants is left in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgenet.converters.cleanup import (
    constant_values,
    consumer_count,
    node_inputs,
    unique_name,
    with_inferred_shapes,
)
from edgenet.converters.export import _max_abs_diff, random_inputs, run_onnxruntime
from edgenet._deps import require
from edgenet.errors import ConversionError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import onnx


_Consts = dict  # tensor name -> np.ndarray: every constant of the graph being rewritten


@dataclass(frozen=True)
class BNFoldStats:
    """``folded``: BNs merged into a Conv/Gemm/MatMul; ``to_mul_add``: BNs rewritten as Mul + Add;
    ``max_abs_diff``: largest output difference before vs after on one seeded random input
    (onnxruntime, its own fusions off), None when the graph had no BN or was not checked."""

    folded: int
    to_mul_add: int
    max_abs_diff: float | None


@dataclass(frozen=True)
class _BNParams:
    scale: np.ndarray  # s = gamma / sqrt(var + eps), float64
    shift: np.ndarray  # beta - mean * s, float64
    mean: np.ndarray
    beta: np.ndarray
    spatial: bool


def fold_batchnorm(
    model: "onnx.ModelProto", verify: bool = True
) -> tuple["onnx.ModelProto", BNFoldStats]:
    """Return a copy of ``model`` without inference BatchNormalization nodes, and the stats.

    ``verify`` runs both graphs in onnxruntime to fill ``max_abs_diff``.
    """
    onnx = require("onnx")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    bn_nodes = [
        n for n in graph.node if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")
    ]
    if not bn_nodes:
        return out, BNFoldStats(folded=0, to_mul_add=0, max_abs_diff=None)

    unused_before = _unused_initializers(graph)
    ranks = _tensor_ranks(out)
    consts = constant_values(graph)  # kept up to date by _put_constant
    folded = to_mul_add = 0
    for bn in bn_nodes:
        params = _bn_params(bn, consts)
        if params is None:
            continue  # non-constant statistics: nothing to fold
        if params.spatial and _fold_into_producer(graph, bn, params, ranks, consts):
            folded += 1
        elif _replace_with_mul_add(graph, bn, params, ranks, consts):
            to_mul_add += 1

    orphaned = _unused_initializers(graph) - unused_before  # old weights, biases, BN statistics
    kept = [t for t in graph.initializer if t.name not in orphaned]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if graph.value_info:  # refresh shapes: renamed and new tensors
        del graph.value_info[:]
        out = with_inferred_shapes(out)
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"BN folding produced an invalid ONNX graph: {message}") from exc

    diff = None
    if verify and (folded or to_mul_add):
        diff = _compare(model, out)
    return out, BNFoldStats(folded=folded, to_mul_add=to_mul_add, max_abs_diff=diff)


# --------------------------------------------------------------------------------------------


def _bn_params(bn: "onnx.NodeProto", consts: _Consts) -> _BNParams | None:
    attrs = {a.name: a for a in bn.attribute}
    where = f"BatchNormalization '{bn.name or bn.output[0]}'"
    if "training_mode" in attrs and attrs["training_mode"].i == 1:
        raise ModelError(f"{where} is in training mode (training_mode=1); export the model in eval mode")
    if "is_test" in attrs and attrs["is_test"].i == 0:
        raise ModelError(f"{where} is in training mode (is_test=0); export the model in eval mode")
    extras = [name for name in bn.output[1:] if name]
    if extras:  # opsets 9-13: extra outputs *are* the training-mode signature (onnxruntime agrees)
        raise ModelError(
            f"{where} is in training mode (it outputs running statistics '{extras[0]}'); "
            "export the model in eval mode"
        )
    if len(bn.input) < 5 or not all(name in consts for name in bn.input[1:5]):
        return None
    gamma, beta, mean, var = (consts[name].astype(np.float64) for name in bn.input[1:5])
    eps = attrs["epsilon"].f if "epsilon" in attrs else 1e-5
    spatial = attrs["spatial"].i != 0 if "spatial" in attrs else True
    scale = gamma / np.sqrt(var + eps)
    return _BNParams(scale=scale, shift=beta - mean * scale, mean=mean, beta=beta, spatial=spatial)


def _fold_into_producer(
    graph: "onnx.GraphProto", bn: "onnx.NodeProto", p: _BNParams, ranks: dict[str, int], consts: _Consts
) -> bool:
    x = bn.input[0]
    if consumer_count(graph, x) != 1 or p.scale.ndim != 1:
        return False
    producer = _producer(graph, x)
    if producer is None or producer.domain not in ("", "ai.onnx"):
        return False
    if producer.op_type == "Conv":
        done = _fold_conv(graph, producer, p, consts)
    elif producer.op_type == "Gemm" and ranks.get(x) == 2:
        done = _fold_gemm(graph, producer, p, consts)
    elif producer.op_type in ("MatMul", "Add") and ranks.get(x) == 2:
        done = _fold_matmul(graph, producer, p, consts)
    else:
        done = False
    if done:
        _bypass(graph, bn, producer, x)
    return done


def _fold_conv(graph: "onnx.GraphProto", conv: "onnx.NodeProto", p: _BNParams, consts: _Consts) -> bool:
    w_name = conv.input[1]
    if w_name not in consts:
        return False
    w = consts[w_name]
    if w.ndim < 3 or w.shape[0] != p.scale.size:
        return False
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    if has_bias and conv.input[2] not in consts:
        return False
    b = consts[conv.input[2]].astype(np.float64) if has_bias else np.zeros(w.shape[0])
    bshape = (-1,) + (1,) * (w.ndim - 1)
    new_w = (w.astype(np.float64) * p.scale.reshape(bshape)).astype(w.dtype)
    new_b = ((b - p.mean) * p.scale + p.beta).astype(w.dtype)
    conv.input[1] = _put_constant(graph, consts, f"{w_name}_bnfold", new_w)
    b_name = _put_constant(graph, consts, f"{conv.name or conv.output[0]}_bias_bnfold", new_b)
    if has_bias:
        conv.input[2] = b_name
    else:
        conv.input.append(b_name)
    return True


def _fold_gemm(graph: "onnx.GraphProto", gemm: "onnx.NodeProto", p: _BNParams, consts: _Consts) -> bool:
    from onnx import helper

    attrs = {a.name: a for a in gemm.attribute}
    trans_b = attrs["transB"].i if "transB" in attrs else 0
    beta_gemm = attrs["beta"].f if "beta" in attrs else 1.0
    b_name = gemm.input[1]
    if b_name not in consts:
        return False
    w = consts[b_name]
    n_axis = 0 if trans_b else 1
    if w.ndim != 2 or w.shape[n_axis] != p.scale.size:
        return False
    has_c = len(gemm.input) > 2 and bool(gemm.input[2])
    if has_c and gemm.input[2] not in consts:
        return False
    c = beta_gemm * consts[gemm.input[2]].astype(np.float64) if has_c else np.zeros(p.scale.size)
    try:
        new_c = ((c - p.mean) * p.scale + p.beta).astype(w.dtype)
    except ValueError:  # C does not broadcast against (N,)
        return False
    scale = p.scale[:, None] if trans_b else p.scale[None, :]
    new_w = (w.astype(np.float64) * scale).astype(w.dtype)
    gemm.input[1] = _put_constant(graph, consts, f"{b_name}_bnfold", new_w)
    c_name = _put_constant(graph, consts, f"{gemm.name or gemm.output[0]}_bias_bnfold", new_c)
    if has_c:
        gemm.input[2] = c_name
    else:
        gemm.input.append(c_name)
    kept = [a for a in gemm.attribute if a.name != "beta"]
    del gemm.attribute[:]
    gemm.attribute.extend(kept + [helper.make_attribute("beta", 1.0)])
    return True


def _fold_matmul(
    graph: "onnx.GraphProto", node: "onnx.NodeProto", p: _BNParams, consts: _Consts
) -> bool:
    """``node`` is the MatMul itself, or an Add(MatMul(x, W), bias) with constant bias."""
    from onnx import helper

    if node.op_type == "Add":
        bias_idx = next((k for k in (0, 1) if node.input[k] in consts), None)
        if bias_idx is None:
            return False
        matmul = _producer(graph, node.input[1 - bias_idx])
        if (
            matmul is None
            or matmul.op_type != "MatMul"
            or consumer_count(graph, matmul.output[0]) != 1
        ):
            return False
        bias = consts[node.input[bias_idx]].astype(np.float64)
    else:
        matmul, bias_idx, bias = node, None, np.zeros(p.scale.size)
    w_name = matmul.input[1]
    if w_name not in consts:
        return False
    w = consts[w_name]
    if w.ndim != 2 or w.shape[1] != p.scale.size:
        return False
    try:
        new_bias = ((bias - p.mean) * p.scale + p.beta).astype(w.dtype)
    except ValueError:
        return False
    new_w = (w.astype(np.float64) * p.scale[None, :]).astype(w.dtype)
    matmul.input[1] = _put_constant(graph, consts, f"{w_name}_bnfold", new_w)
    b_name = _put_constant(graph, consts, f"{node.name or node.output[0]}_bias_bnfold", new_bias)
    if bias_idx is not None:
        node.input[bias_idx] = b_name
    else:  # MatMul -> BN becomes MatMul -> Add(bias); the Add takes over the BN's output
        mm_out = unique_name(graph, f"{matmul.output[0]}_matmul")
        old = matmul.output[0]
        matmul.output[0] = mm_out
        add_name = unique_name(graph, f"{matmul.name or old}_bias")
        add = helper.make_node("Add", [mm_out, b_name], [old], name=add_name)
        graph.node.insert(list(graph.node).index(matmul) + 1, add)
    return True


def _replace_with_mul_add(
    graph: "onnx.GraphProto", bn: "onnx.NodeProto", p: _BNParams, ranks: dict[str, int], consts: _Consts
) -> bool:
    from onnx import helper

    x, y = bn.input[0], bn.output[0]
    if p.spatial:
        rank = ranks.get(x)
        if rank is None or rank < 2:
            return False
        shape = (-1,) + (1,) * (rank - 2)
    else:  # opset 7/8 spatial=0: parameters already hold the per-activation (C, D1, ...) shape
        shape = p.scale.shape
    gamma = consts[bn.input[1]]
    dtype = gamma.dtype if gamma.dtype.kind == "f" else np.dtype(np.float32)
    base = bn.name or y
    s_name = _put_constant(graph, consts, f"{base}_scale", p.scale.reshape(shape).astype(dtype))
    t_name = _put_constant(graph, consts, f"{base}_shift", p.shift.reshape(shape).astype(dtype))
    mid = unique_name(graph, f"{base}_scaled")
    mul = helper.make_node("Mul", [x, s_name], [mid], name=unique_name(graph, f"{base}_mul"))
    add = helper.make_node("Add", [mid, t_name], [y], name=unique_name(graph, f"{base}_add"))
    idx = list(graph.node).index(bn)
    del graph.node[idx]
    graph.node.insert(idx, add)
    graph.node.insert(idx, mul)
    return True


# --------------------------------------------------------------------------------------------


def _bypass(graph: "onnx.GraphProto", bn: "onnx.NodeProto", producer: "onnx.NodeProto", x: str) -> None:
    """Delete ``bn``; the node that wrote ``x`` now writes the BN's output (names stay stable)."""
    y = bn.output[0]
    # after MatMul folding without an Add, x is written by the new Add node rather than producer
    writer = _producer(graph, x) or producer
    for k, name in enumerate(writer.output):
        if name == x:
            writer.output[k] = y
    graph.node.remove(bn)


def _producer(graph: "onnx.GraphProto", name: str) -> "onnx.NodeProto | None":
    for node in graph.node:
        if name in node.output:
            return node
    return None


def _put_constant(graph: "onnx.GraphProto", consts: _Consts, base: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    name = unique_name(graph, base)
    value = np.ascontiguousarray(value)
    graph.initializer.append(numpy_helper.from_array(value, name))
    consts[name] = value
    return name


def _unused_initializers(graph: "onnx.GraphProto") -> set[str]:
    used = {o.name for o in graph.output} | {vi.name for vi in graph.input}
    for node in graph.node:
        used |= node_inputs(node)
    return {t.name for t in graph.initializer} - used


def _tensor_ranks(model: "onnx.ModelProto") -> dict[str, int]:
    onnx = require("onnx")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    ranks = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    for t in g.initializer:
        ranks[t.name] = len(t.dims)
    return ranks


def _compare(before: "onnx.ModelProto", after: "onnx.ModelProto") -> float | None:
    feeds = random_inputs(before, seed=0)
    try:
        expected = run_onnxruntime(before, feeds)
    except ConversionError:
        return None  # onnxruntime cannot run the original: nothing to compare against
    actual = run_onnxruntime(after, feeds)
    return max((_max_abs_diff(a, e) for a, e in zip(actual, expected)), default=0.0)
