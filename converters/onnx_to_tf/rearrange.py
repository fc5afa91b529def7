"""Ops that copy elements to new places: Expand, Tile, DepthToSpace, SpaceToDepth, GatherElements,
ScatterND.

DepthToSpace/SpaceToDepth run as TFLite's DEPTH_TO_SPACE / SPACE_TO_DEPTH on NHWC data, whose
channel order is ONNX's DCR mode; CRD mode adds a constant channel permutation (a GATHER with int32
indices). GatherElements with constant indices becomes one GATHER_ND with constant int32
coordinates, computed for the layout the data is held in (no transpose).
"""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs
from edgenet.converters.onnx_to_tf.values import Value


def _expanded_onnx(ctx: NodeContext, x: Value, rank: int):
    """x as a TF tensor of rank ``rank`` (leading unit dims added) and its layout."""
    if x.rank == rank:
        return ctx.tensor(x), x.perm
    t = ctx.tf.reshape(ctx.onnx_order(x), [1] * (rank - x.rank) + [-1 if d is None else d for d in x.onnx_shape])
    return t, layout.identity(rank)


@handler("Expand")
def expand(ctx: NodeContext):
    x = ctx.required(0)
    shape = [int(d) for d in ctx.const_input(1, "shape").reshape(-1)]
    rank = max(len(shape), x.rank)
    in_shape = (1,) * (rank - x.rank) + tuple(x.onnx_shape)
    shape = [1] * (rank - len(shape)) + shape
    out = []
    for a, b in zip(in_shape, shape):
        if a is None:
            out.append(None)
        elif a != 1 and b != 1 and a != b:
            raise ctx.unsupported(f"shape {tuple(shape)} does not broadcast with input {tuple(x.onnx_shape)}")
        else:
            out.append(max(a, b))
    t, perm = _expanded_onnx(ctx, x, rank)
    if tuple(out) == in_shape:
        return [ctx.out(t, perm)]
    if None in out:
        raise ctx.unsupported("expanding a value with a dynamic batch")
    return [ctx.out(ctx.tf.broadcast_to(t, layout.permute_shape(out, perm)), perm)]


@handler("Tile")
def tile(ctx: NodeContext):
    x = ctx.required(0)
    repeats = [int(r) for r in ctx.const_input(1, "repeats").reshape(-1)]
    if len(repeats) != x.rank:
        raise ctx.unsupported(f"{len(repeats)} repeats for a rank-{x.rank} input")
    if all(r == 1 for r in repeats):
        return [x]
    multiples = np.array(layout.permute_shape(repeats, x.perm), np.int32)
    return [ctx.out(ctx.tf.tile(ctx.tensor(x), multiples), x.perm)]


def _check_block(node, opset: int) -> str | None:
    attrs = node_attrs(node)
    if attrs.get("mode", "DCR") not in ("DCR", "CRD"):
        return f"mode={attrs['mode']!r}"
    if int(attrs.get("blocksize", 0)) < 1:
        return "no blocksize"
    return None


def _crd_to_dcr(channels: int, block: int) -> np.ndarray:
    """For DCR channel k = (i*b + j)*C + c, the CRD channel c*b*b + i*b + j holding the same element."""
    c_out = channels // (block * block)
    k = np.arange(channels)
    ij, c = k // c_out, k % c_out
    return (c * block * block + ij).astype(np.int32)


@handler("DepthToSpace", check=_check_block)
def depth_to_space(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    block = int(ctx.attr("blocksize"))
    t = ctx.nhwc(x)
    channels = t.shape[-1]
    if channels % (block * block):
        raise ctx.unsupported(f"{channels} channels do not split into {block}x{block} blocks")
    if ctx.attr("mode", "DCR") == "CRD":
        t = tf.gather(t, _crd_to_dcr(channels, block), axis=3)
    return [ctx.out_nhwc(tf.nn.depth_to_space(t, block))]


@handler("SpaceToDepth", check=_check_block)
def space_to_depth(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    block = int(ctx.attr("blocksize"))
    t = ctx.nhwc(x)
    _, height, width, channels = t.shape.as_list()
    if height % block or width % block:
        raise ctx.unsupported(f"{height}x{width} does not split into {block}x{block} blocks")
    y = tf.nn.space_to_depth(t, block)
    if ctx.attr("mode", "DCR") == "CRD":  # CRD channel c*b*b + i*b + j is DCR channel (i*b + j)*C + c
        y = tf.gather(y, np.argsort(_crd_to_dcr(channels * block * block, block)).astype(np.int32), axis=3)
    return [ctx.out_nhwc(y)]


@handler("GatherElements")
def gather_elements(ctx: NodeContext):
    tf = ctx.tf
    x = ctx.required(0)
    axis = int(ctx.attr("axis", 0)) % x.rank
    shape = x.onnx_shape
    if None in shape:
        raise ctx.unsupported("a dynamic batch")
    if not ctx.required(1).is_const:
        return _gather_elements_computed(ctx, x, ctx.required(1), axis)
    indices = ctx.const_input(1, "indices")
    if indices.ndim != x.rank:
        raise ctx.unsupported(f"rank-{indices.ndim} indices for a rank-{x.rank} input")
    indices = np.where(indices < 0, indices + shape[axis], indices)
    grids = list(np.meshgrid(*[np.arange(n) for n in indices.shape], indexing="ij"))
    grids[axis] = indices
    coords = np.stack(grids, axis=-1)  # ONNX output position -> ONNX input position
    perm = x.perm
    coords = np.transpose(coords, (*perm, x.rank))[..., list(perm)]  # both in the TF layout
    return [ctx.out(tf.gather_nd(ctx.tensor(x), coords.astype(np.int32)), perm)]


def _gather_elements_computed(ctx: NodeContext, x: Value, index: Value, axis: int):
    """GatherElements with indices computed at run time (a YOLOv10 head's TopK anchors): in ONNX
    order, GATHER_ND at coordinates whose ``axis`` column is the index (int32, negative ones
    counted from the end) and whose other columns are the output position (constant grids)."""
    tf = ctx.tf
    dims = index.onnx_shape
    if None in dims or len(dims) != x.rank:
        raise ctx.unsupported(f"computed indices of shape {list(dims)} for a rank-{x.rank} input")
    idx = tf.cast(ctx.onnx_order(index), tf.int32)
    idx = tf.where(tf.less(idx, 0), idx + int(x.onnx_shape[axis]), idx)
    grids = np.meshgrid(*[np.arange(n, dtype=np.int32) for n in dims], indexing="ij")
    columns = [tf.expand_dims(idx, -1) if d == axis else tf.constant(grids[d][..., None]) for d in range(x.rank)]
    coords = tf.concat(columns, axis=-1)
    return [ctx.out(tf.gather_nd(ctx.onnx_order(x), coords), layout.identity(x.rank))]


def _check_scatter_nd(node, opset: int) -> str | None:
    reduction = node_attrs(node).get("reduction", "none")
    return None if reduction in ("none", "add", "mul", "max", "min") else f"reduction={reduction!r}"


@handler("ScatterND", check=_check_scatter_nd)
def scatter_nd(ctx: NodeContext):
    """ONNX's ScatterND with constant indices, in ONNX order: each update written (or combined by
    ``reduction``) into a copy of the data. Indices that occur more than once are applied one
    occurrence at a time, in order (as the spec's reference loop does): per round, TFLite's
    SCATTER_ND (int32 indices) places the updates and a SELECT_V2 with a constant mask keeps the
    data elsewhere. ``none`` with repeated indices is refused (the spec leaves its result undefined)."""
    tf = ctx.tf
    data, updates = ctx.required(0), ctx.required(2)
    indices = ctx.const_input(1, "indices")
    reduction = ctx.attr("reduction", "none")
    shape = data.onnx_shape
    if None in shape:
        raise ctx.unsupported("a dynamic batch")
    q = indices.shape[-1]
    flat = indices.reshape(-1, q).astype(np.int64)
    flat = np.where(flat < 0, flat + np.array(shape[:q]), flat)
    keys = [tuple(row) for row in flat]
    rounds: list[list[int]] = []  # rounds[k]: rows holding the k-th occurrence of their index
    seen: dict[tuple, int] = {}
    for row, key in enumerate(keys):
        k = seen.get(key, 0)
        seen[key] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(row)
    if len(rounds) > 1 and reduction == "none":
        raise ctx.unsupported("repeated indices with reduction='none' (undefined by the spec)")
    y = ctx.onnx_order(data)
    u = ctx.onnx_order(updates)
    slice_shape = list(shape[q:])
    u = tf.reshape(u, [len(keys)] + slice_shape)
    combine = {"none": lambda a, b: b, "add": tf.add, "mul": tf.multiply, "max": tf.maximum,
               "min": tf.minimum}[reduction]
    for rows in rounds:
        idx = flat[rows].astype(np.int32)
        part = u if len(rows) == len(keys) else tf.gather(u, np.array(rows, np.int32))
        placed = tf.scatter_nd(idx, part, list(shape))
        mask = np.zeros(shape[:q], bool)
        mask[tuple(idx.T)] = True
        mask = mask.reshape(mask.shape + (1,) * len(slice_shape))
        y = tf.where(mask, combine(y, placed), y)
    return [ctx.out(y)]
