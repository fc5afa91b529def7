"""Seeded random attribute mixes for the non-conv handlers, against onnxruntime in the TF graph.

Each case draws an op's attributes (axes negative or not, given as attribute or input per opset,
out-of-range and negative slice bounds, steps, keepdims, broadcast shapes of every rank...) on odd
sizes, and feeds the op a value that reaches it in one of the layouts the converter holds values in
(a graph input, channels-last after a Conv, any order after a Transpose, rank 2/3/5 after a Reshape;
see ``through_layout``), which is where axis remapping slips silently. A case that fails names its
seed: rerun it with ``-k <family>-<seed>``."""
from __future__ import annotations

import numpy as np
import pytest

from test_onnx_to_tf_helpers import assert_matches_ort, helper, make_model, run_ort, through_layout

from edgenet.errors import ConversionError

SEEDS = range(12)


def _odd_shape(rng, rank: int, high: int = 6) -> tuple[int, ...]:
    return tuple(int(rng.integers(1, high)) | 1 if rng.random() < 0.7 else int(rng.integers(2, high))
                 for _ in range(rank))


def _signed(rng, axis: int, rank: int) -> int:
    return axis - rank if rng.random() < 0.4 else axis


class Case:
    """One op on ``x`` (reached through a random layout), plus whatever constants and inputs it reads."""

    def __init__(self, rng, shape, how: str | None = None):
        self.rng, self.shape = rng, tuple(shape)
        self.nodes, self.inputs, self.inits, self.feeds, self.how = through_layout(rng, "x", shape, how)

    def operand(self, name: str, shape) -> str:
        """A second operand: a constant or a computed value in a random layout."""
        if len(shape) <= 1 or self.rng.random() < 0.4:
            self.inits[name] = self.rng.standard_normal(shape).astype(np.float32)
        else:
            nodes, inputs, inits, feeds, _ = through_layout(self.rng, name, shape)
            self.nodes += nodes
            self.inputs.update(inputs), self.inits.update(inits), self.feeds.update(feeds)
        return name

    def const(self, name: str, values, dtype=np.int64) -> str:
        self.inits[name] = np.array(values, dtype)
        return name

    def check(self, op: str, inputs, opset: int, n_outputs: int = 1, **attrs):
        outputs = [f"y{k}" for k in range(n_outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outputs, name="op", **attrs))
        model = make_model(self.nodes, self.inputs, outputs, self.inits, opset)
        if any(o.size == 0 for o in run_ort(model, self.feeds)):   # a model returning no elements: refused
            with pytest.raises(ConversionError, match="is empty"):
                assert_matches_ort(model, self.feeds)
            return
        assert_matches_ort(model, self.feeds, atol=1e-4, rtol=1e-4)


def _broadcast_to(rng, full):
    """A shape that broadcasts against ``full``: some leading dims dropped, some dims 1."""
    kept = list(full[len(full) - int(rng.integers(0, len(full) + 1)):])
    return tuple(1 if rng.random() < 0.4 else d for d in kept)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"elementwise-{s}")
def test_elementwise_broadcasting_mixed_layouts(seed):
    rng = np.random.default_rng(seed)
    op = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Greater", "Equal"][seed]
    full = _odd_shape(rng, int(rng.integers(2, 6)))
    case = Case(rng, full)
    others = [case.operand(f"b{k}", _broadcast_to(rng, full)) for k in range(2 if op in ("Sum", "Mean", "Where") else 1)]
    if op == "Where":
        case.nodes.append(helper.make_node("Greater", [others[0], case.const("zero", 0.0, np.float32)], ["cond"]))
        case.check(op, ["cond", "x", others[1]], 17)
    else:
        case.check(op, ["x", *others], 17)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"reshape-{s}")
def test_reshape_family_mixed_layouts(seed):
    rng = np.random.default_rng(100 + seed)
    shape = _odd_shape(rng, int(rng.integers(2, 6)))
    case, rank = Case(rng, shape), len(shape)
    op = ["Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"][seed % 5]
    opset = [11, 13, 17][seed % 3]
    if op == "Reshape":
        dims, rest = [], int(np.prod(shape))
        for _ in range(int(rng.integers(0, 4))):
            d = int(rng.choice([d for d in range(1, rest + 1) if rest % d == 0]))
            dims.append(d)
            rest //= d
        dims = [int(d) for d in rng.permutation(dims + [rest])]
        if rng.random() < 0.5:
            dims[int(rng.integers(len(dims)))] = -1
        case.check(op, ["x", case.const("shape", dims)], opset)
    elif op == "Flatten":
        case.check(op, ["x"], opset, axis=int(rng.integers(-rank, rank + 1)))
    elif op == "Transpose":
        case.check(op, ["x"], opset, perm=[int(p) for p in rng.permutation(rank)])
    else:
        if op == "Squeeze":
            axes = [_signed(rng, a, rank) for a, d in enumerate(shape) if d == 1 and rng.random() < 0.7]
        else:
            axes = [_signed(rng, int(a), rank + 2) for a in rng.choice(rank + 2, 2, replace=False)]
        if not axes:
            case.check(op, ["x"], opset)
        elif opset < 13:
            case.check(op, ["x"], opset, axes=axes)
        else:
            case.check(op, ["x", case.const("axes", axes)], opset)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"slicing-{s}")
def test_concat_split_slice_gather_mixed_layouts(seed):
    rng = np.random.default_rng(200 + seed)
    shape = _odd_shape(rng, int(rng.integers(2, 6)))
    case, rank = Case(rng, shape), len(shape)
    axis = int(rng.integers(-rank, rank))
    size = shape[axis]
    op = ["Concat", "Split", "Slice", "Gather", "GatherElements", "Slice"][seed % 6]
    if op == "Concat":
        other = list(shape)
        other[axis] = int(rng.integers(1, 4))
        names = ["x", case.operand("b", other)]
        case.check(op, [str(n) for n in rng.permutation(names)], 13, axis=axis)
    elif op == "Split":
        cuts = sorted(int(c) for c in rng.choice(range(1, size), min(size - 1, 2), replace=False)) if size > 1 else []
        sizes = np.diff([0, *cuts, size]).tolist()
        case.check(op, ["x", case.const("split", sizes)], 13, n_outputs=len(sizes), axis=axis)
    elif op == "Slice":  # bounds past both ends, negative bounds and steps, axes given or not
        axes = [int(a) for a in rng.choice(rank, int(rng.integers(1, rank + 1)), replace=False)]
        starts = [int(rng.integers(-shape[a] - 2, shape[a] + 2)) for a in axes]
        steps = [int(rng.choice([1, 2, 3, -1, -2])) for _ in axes]
        ends = [int(rng.integers(-shape[a] - 2, shape[a] + 3)) for a in axes]
        ends = [e if rng.random() < 0.8 else (2 ** 63 - 1 if s > 0 else -2 ** 63) for e, s in zip(ends, steps)]
        names = ["x", case.const("starts", starts), case.const("ends", ends)]
        if rng.random() < 0.7:
            names += [case.const("axes", [_signed(rng, a, rank) for a in axes]), case.const("steps", steps)]
        elif sorted(axes) != list(range(len(axes))):
            names[1:] = [case.const("starts", starts[:1]), case.const("ends", ends[:1])]  # axis 0 only
        case.check(op, names, 13)
    elif op == "Gather":
        indices = rng.integers(-size, size, size=tuple(int(d) for d in rng.integers(1, 4, int(rng.integers(0, 3)))))
        case.check(op, ["x", case.const("indices", indices)], 13, axis=axis)
    else:
        index_shape = [int(rng.integers(1, d + 1)) for d in shape]
        index_shape[axis] = int(rng.integers(1, 5))
        case.check(op, ["x", case.const("indices", rng.integers(-size, size, size=index_shape))], 13, axis=axis)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"pad-{s}")
def test_pad_mixed_layouts(seed):
    rng = np.random.default_rng(300 + seed)
    shape = _odd_shape(rng, int(rng.integers(2, 6)))
    case, rank = Case(rng, shape), len(shape)
    mode = ["constant", "reflect", "edge"][seed % 3]
    opset = [11, 13, 18, 19][seed % 4]
    axes = sorted(int(a) for a in rng.choice(rank, int(rng.integers(1, rank + 1)), replace=False))
    high = {a: shape[a] - 1 if mode == "reflect" else 3 for a in axes}
    before = [int(rng.integers(-(shape[a] - 1), high[a] + 1)) if rng.random() < 0.3 else int(rng.integers(0, high[a] + 1))
              for a in axes]
    after = [int(rng.integers(0, high[a] + 1)) for a in axes]  # crop one side only (the spec's order)
    if mode == "reflect":  # onnxruntime: reflect pads no larger than the dim left after cropping
        after = [min(p, shape[a] - 1 + min(b, 0)) for a, p, b in zip(axes, after, before)]
    names = ["x", case.const("pads", before + after)]
    if mode == "constant":
        names.append(case.const("value", rng.uniform(-2, 2), np.float32))
    if opset >= 18:
        names += [""] * (3 - len(names)) + [case.const("axes", [_signed(rng, a, rank) for a in axes])]
    else:
        full_before, full_after = [0] * rank, [0] * rank
        for a, b, e in zip(axes, before, after):
            full_before[a], full_after[a] = b, e
        names[1] = case.const("pads", full_before + full_after)
    case.check("Pad", names, opset, mode=mode)


REDUCTIONS = ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSumExp", "ArgMax", "ArgMin", "Softmax", "LogSoftmax"]


@pytest.mark.parametrize("seed", range(16), ids=lambda s: f"reduce-{s}")
def test_reductions_and_softmax_mixed_layouts(seed):
    rng = np.random.default_rng(400 + seed)
    shape = _odd_shape(rng, int(rng.integers(2, 6)), high=5)
    case, rank = Case(rng, shape), len(shape)
    op = REDUCTIONS[seed % len(REDUCTIONS)]
    opset = [11, 12, 13, 17, 18][seed % 5]
    if op.startswith("Reduce"):
        axes = [_signed(rng, int(a), rank) for a in rng.choice(rank, int(rng.integers(1, rank + 1)), replace=False)]
        attrs = dict(keepdims=int(rng.integers(0, 2)))
        if rng.random() < 0.2:
            case.check(op, ["x"], opset, **attrs)
        elif opset < (13 if op == "ReduceSum" else 18):
            case.check(op, ["x"], opset, axes=axes, **attrs)
        else:
            case.check(op, ["x", case.const("axes", axes)], opset, **attrs)
    elif op.startswith("Arg"):
        attrs = dict(axis=int(rng.integers(-rank, rank)), keepdims=int(rng.integers(0, 2)))
        if opset >= 12:
            attrs["select_last_index"] = int(rng.integers(0, 2))
        case.check(op, ["x"], opset, **attrs)
    else:  # before opset 13 the axis flattens the dims from it on
        case.check(op, ["x"], opset, axis=int(rng.integers(-rank, rank)))


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"rearrange-{s}")
def test_norms_and_rearranging_ops_mixed_layouts(seed):
    rng = np.random.default_rng(500 + seed)
    op = ["LayerNormalization", "InstanceNormalization", "BatchNormalization", "DepthToSpace", "SpaceToDepth",
          "Expand", "Tile", "LpNormalization"][seed % 8]
    if op in ("DepthToSpace", "SpaceToDepth"):
        b = int(rng.integers(2, 4))
        shape = (1, b * b * 3, 3, 5) if op == "DepthToSpace" else (2, 3, 3 * b, 5 * b)
        case = Case(rng, shape)
        attrs = dict(mode=str(rng.choice(["DCR", "CRD"]))) if op == "DepthToSpace" else {}
        return case.check(op, ["x"], 13, blocksize=b, **attrs)
    shape = _odd_shape(rng, int(rng.integers(3, 6)))
    case, rank, channels = Case(rng, shape), len(shape), shape[1]
    if op == "LayerNormalization":
        axis = int(rng.integers(-rank, rank))
        gamma = case.const("g", rng.standard_normal(_broadcast_to(rng, shape[axis % rank:])), np.float32)
        case.check(op, ["x", gamma, case.const("b", rng.standard_normal(shape[axis % rank:]), np.float32)], 17, axis=axis)
    elif op in ("InstanceNormalization", "BatchNormalization"):
        stats = [case.const(n, rng.standard_normal(channels), np.float32) for n in ("g", "b", "m")]
        if op == "BatchNormalization":
            stats.append(case.const("v", rng.random(channels) + 0.5, np.float32))
        case.check(op, ["x", *stats[:2 if op == "InstanceNormalization" else 4]], 15, epsilon=1e-3)
    elif op == "Expand":
        target = [int(rng.integers(2, 4)) if d == 1 and rng.random() < 0.6 else d for d in shape]
        case.check(op, ["x", case.const("shape", target[int(rng.integers(0, 2)):])], 13)
    elif op == "Tile":
        case.check(op, ["x", case.const("repeats", rng.integers(1, 3, rank))], 13)
    else:
        case.check(op, ["x"], 13, axis=int(rng.integers(-rank, rank)), p=int(rng.integers(1, 3)))
