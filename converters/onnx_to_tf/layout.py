"""Pure layout arithmetic (no TensorFlow): permutations between ONNX and TF tensor layouts.

A value's *perm* says how its TF tensor relates to the ONNX tensor: ``tf = np.transpose(onnx, perm)``,
i.e. TF dim ``i`` is ONNX dim ``perm[i]``. Rank-4 channels-last is ``(0, 2, 3, 1)``.
"""
from __future__ import annotations

from math import prod
from typing import Sequence

Shape = tuple  # of int | None (None = unknown batch)

NHWC = (0, 2, 3, 1)


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def channels_last(rank: int) -> tuple[int, ...]:
    """The channels-last perm for ranks >= 3 (N, spatial..., C); identity below."""
    if rank < 3:
        return identity(rank)
    return (0, *range(2, rank), 1)


def invert(perm: Sequence[int]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def tf_axis(perm: Sequence[int], onnx_axis: int) -> int:
    """The TF dim that holds ONNX dim ``onnx_axis`` (negative axes allowed)."""
    rank = len(perm)
    if not -rank <= onnx_axis < rank:
        raise ValueError(f"axis {onnx_axis} out of range for rank {rank}")
    return list(perm).index(onnx_axis % rank)


def relative(current: Sequence[int], target: Sequence[int]) -> tuple[int, ...]:
    """The tf.transpose perm that turns a TF tensor in layout ``current`` into layout ``target``."""
    cur = list(current)
    return tuple(cur.index(t) for t in target)


def permute_shape(shape: Sequence, perm: Sequence[int]) -> tuple:
    return tuple(shape[p] for p in perm)


def onnx_shape_of(tf_shape: Sequence, perm: Sequence[int]) -> tuple:
    """ONNX shape of a TF tensor with static shape ``tf_shape`` held in layout ``perm``."""
    out: list = [None] * len(perm)
    for i, p in enumerate(perm):
        out[p] = tf_shape[i]
    return tuple(out)


def moves_only_unit_dims(shape: Sequence, perm: Sequence[int]) -> bool:
    """True when transposing ``shape`` by ``perm`` keeps the order of every dim whose size is not 1,
    so the transpose is a mere reshape (same elements in the same memory order)."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def _group_dims(src: Sequence[int], dst: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Split two static shapes without unit dims into matching groups of consecutive dims with equal
    element counts (the finest grouping such that reshape maps group to group); None if impossible."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj = [i], [j]
        ps, pd = src[i], dst[j]
        i, j = i + 1, j + 1
        while ps != pd:
            if ps < pd:
                if i >= len(src):
                    return None
                ps *= src[i]
                gi.append(i)
                i += 1
            else:
                if j >= len(dst):
                    return None
                pd *= dst[j]
                gj.append(j)
                j += 1
        groups.append((gi, gj))
    if i != len(src) or j != len(dst):
        return None
    return groups


def plan_reshape(
    in_shape: Sequence, in_perm: Sequence[int], out_shape: Sequence, preferred: Sequence[Sequence[int]] = ()
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Plan an ONNX reshape ``in_shape -> out_shape`` on a TF tensor held in layout ``in_perm``.

    Returns ``(input_layout, output_layout)``: transpose the TF tensor into ``input_layout`` (when it
    differs from ``in_perm``), then a plain reshape yields the output in ``output_layout``. Dimensions
    are grouped (a reshape splits/merges runs of consecutive dims); when every group already sits
    contiguous and in order in the TF layout, no transpose is needed (e.g. a channel split of an NHWC
    tensor stays channels-last). ``None`` in a shape is the batch dim, which must map to itself.
    ``preferred`` lists output layouts to use when compatible (e.g. channels-last, identity).
    """
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    # non-unit dims only; the (unknown or not) batch is kept as its own group when it maps to itself
    src = [d for d in range(len(in_shape)) if in_shape[d] != 1]
    dst = [d for d in range(len(out_shape)) if out_shape[d] != 1]
    batch_fixed = bool(src and dst and src[0] == 0 and dst[0] == 0 and in_shape[0] == out_shape[0])
    if batch_fixed:
        rest = _group_dims([in_shape[d] for d in src[1:]], [out_shape[d] for d in dst[1:]])
        groups = None if rest is None else [([0], [0])] + [
            ([src[1 + a] for a in gi], [dst[1 + b] for b in gj]) for gi, gj in rest]
    elif None in in_shape or None in out_shape:
        groups = None
    else:
        raw = _group_dims([in_shape[d] for d in src], [out_shape[d] for d in dst])
        groups = None if raw is None else [([src[a] for a in gi], [dst[b] for b in gj]) for gi, gj in raw]
    if groups is None:  # no structure: go through the ONNX order
        return identity(len(in_shape)), identity(len(out_shape))

    # order the groups as they appear in the current TF layout (non-unit dims only)
    pos = {d: i for i, d in enumerate(p for p in in_perm if in_shape[p] != 1)}
    groups.sort(key=lambda g: min(pos[d] for d in g[0]) if g[0] else 0)
    ordered_in = [d for gi, _ in groups for d in gi]
    ordered_out = [d for _, gj in groups for d in gj]
    current_in = [p for p in in_perm if in_shape[p] != 1]
    input_layout = tuple(in_perm) if current_in == ordered_in else _with_unit_dims(ordered_in, in_shape)
    for cand in preferred:
        if len(cand) == len(out_shape) and [p for p in cand if out_shape[p] != 1] == ordered_out:
            return input_layout, tuple(cand)
    return input_layout, _with_unit_dims(ordered_out, out_shape)


def _with_unit_dims(order: list[int], shape: Sequence) -> tuple[int, ...]:
    """Complete a layout of the non-unit dims with the unit dims, each placed right after the
    nearest lower-numbered dim (so e.g. a unit batch stays first)."""
    result = list(order)
    for unit in (d for d in range(len(shape)) if shape[d] == 1):
        lower = [i for i, d in enumerate(result) if d < unit]
        result.insert(max(lower) + 1 if lower else 0, unit)
    return tuple(result)


def numel(shape: Sequence[int]) -> int:
    return int(prod(shape))
