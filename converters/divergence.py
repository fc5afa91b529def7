"""Where does a converted model stop agreeing with ONNX? The first diverging ONNX node.

When the float TFLite model misses its tolerance, the user needs the node, not just the output.
:func:`first_divergence` runs one invocation through

* onnxruntime, with every node output of the graph made a graph output, and
* the converted model (``evaluate``), which gives every ONNX value it can see, in ONNX layout: the
  float .tflite itself run in LiteRT with every tensor kept
  (:func:`edgenet.converters.tflite_writer.evaluate.kept_values`: tensors are named after ONNX values),

and walks the nodes in graph (topological) order: the first node whose output differs by more
than the tolerance, relative to that value's own magnitude, is named. Values the converted model
does not hold (fused into a neighbour, folded away) are skipped. When every value seen agrees, the
difference arises past what was seen (values fused away; or, for the .tflite run on reference
kernels, the optimized kernels the verdict ran), and that is said instead.
"""
from __future__ import annotations

import warnings

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edgenet.converters.model_data import to_onnx_layout
from edgenet.converters.model_inputs import ModelInput

_ABS_FLOOR = 1e-6   # differences below this are float noise whatever the value's magnitude


@dataclass(frozen=True)
class Divergence:
    node: str | None        # the first ONNX node whose output differs (None: none of the values seen)
    op: str | None
    value: str | None       # its output value name
    rel_err: float | None   # max |converted - ONNX| / max |ONNX| of that value
    reason: str = ""
    onnxruntime_deviates: bool = False   # the node's converted value matches ONNX's reference
                                         # implementation (the spec) and onnxruntime's does not
    unseen: tuple[str, ...] = ()         # nodes feeding it whose outputs the converted model does not hold
                                         # (fused into its op: a conv before the named ReLU): the fault
                                         # may lie there as well

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ConvertedValues:
    """What an ``evaluate`` callable may return instead of a plain mapping: the ONNX values (ONNX
    layout, by value name), where they were computed, and what it means when all of them agree."""

    values: Mapping[str, np.ndarray]
    where: str
    when_all_agree: str


VALUES_AGREE = ("every ONNX value the converted model holds matches onnxruntime: the difference arises in "
                "what it does not hold (values fused into their neighbours)")


def relative_error(reference: np.ndarray, value: np.ndarray) -> float:
    """max |value - reference| / max |reference| (inf for a shape mismatch or a one-sided NaN);
    differences under a small absolute floor count as none."""
    reference = np.asarray(reference)
    value = np.asarray(value)
    if reference.shape != value.shape:
        return float("inf")
    if reference.size == 0:
        return 0.0
    if reference.dtype.kind == "b" or value.dtype.kind == "b":
        return 0.0 if np.array_equal(reference, value) else float("inf")
    ref = reference.astype(np.float64)
    diff = np.abs(ref - value.astype(np.float64))
    diff = np.where(np.isnan(ref) & np.isnan(diff), 0.0, diff)   # (a 0-d value's diff is a scalar)
    worst = float(np.nan_to_num(diff.max(), nan=np.inf))
    if worst <= _ABS_FLOOR:
        return 0.0
    finite = np.abs(ref[np.isfinite(ref)])
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return worst / scale


def onnx_values(model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node output of ``model`` (ONNX layout) computed by onnxruntime on ``feeds``."""
    from edgenet._deps import require

    onnx = require("onnx")
    from edgenet.converters.validate import onnx_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(probe)
    types = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    existing = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in existing and name in types:
                probe.graph.output.append(types[name])
                existing.add(name)
    sess = onnx_session(probe)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, dict(feeds))))


def first_divergence(model, examples: Sequence[np.ndarray], inputs: Sequence[ModelInput], tolerance: float,
                     evaluate: Callable[[object, dict], Mapping[str, np.ndarray] | ConvertedValues]) -> Divergence:
    """The first ONNX node (graph order) whose output, computed by the converted model
    (``evaluate(model, feeds)``, feeds in ONNX layout: a mapping of ONNX values, or a
    :class:`ConvertedValues`), differs from onnxruntime's by more than ``tolerance`` on
    the first invocation of ``examples`` (TFLite layout, as the pipeline holds them)."""
    feeds = {}
    for spec, x in zip(inputs, examples):
        onnx_x = to_onnx_layout(x, spec)
        feeds[spec.name] = onnx_x[0] if spec.rank < 2 else onnx_x[: spec.batch]
    reference = onnx_values(model, feeds)
    converted = evaluate(model, feeds)
    agrees = VALUES_AGREE
    if isinstance(converted, ConvertedValues):
        converted, agrees = converted.values, converted.when_all_agree
    for node in model.graph.node:
        for name in node.output:
            if not name or name not in reference or name not in converted:
                continue
            rel = relative_error(reference[name], converted[name])
            if not rel <= tolerance:
                spec = _spec_value(model, node, reference, feeds, name)
                deviates = spec is not None and relative_error(spec, converted[name]) <= tolerance
                reason = ("onnxruntime deviates from the ONNX spec here: the converted value matches ONNX's "
                          "reference implementation" if deviates else "")
                return Divergence(node.name or name, node.op_type, name, rel, reason, deviates,
                                  _unseen_producers(model, node, reference, converted))
    return Divergence(None, None, None, None, agrees)


def _unseen_producers(model, node, reference: Mapping[str, np.ndarray], converted: Mapping[str, np.ndarray]
                      ) -> tuple[str, ...]:
    """The nodes upstream of ``node`` (graph order) reached through node outputs onnxruntime computed
    but the converted model does not hold: values fused into the op that makes ``node``'s output."""
    made_by = {o: (k, n) for k, n in enumerate(model.graph.node) for o in n.output if o}
    found: dict[int, str] = {}
    todo = [i for i in node.input if i]
    while todo:
        name = todo.pop()
        hit = made_by.get(name)
        if hit is None or name in converted or name not in reference or hit[0] in found:
            continue
        k, producer = hit
        found[k] = producer.name or name
        todo.extend(i for i in producer.input if i)
    return tuple(found[k] for k in sorted(found))


def _spec_value(model, node, values: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray], name: str):
    """Output ``name`` of ``node`` computed by ONNX's reference implementation (the spec) on the
    inputs onnxruntime gave it; None when the reference cannot evaluate it."""
    from edgenet._deps import require

    onnx = require("onnx")
    from onnx.reference import ReferenceEvaluator

    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    known = {**inits, **dict(feeds), **dict(values)}
    try:
        args = {i: known[i] for i in node.input if i}
        helper = onnx.helper
        ins = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.shape(a))
               for i, a in args.items()]
        outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        single = helper.make_model(helper.make_graph([node], "spec", ins, outs),
                                   opset_imports=[helper.make_opsetid("", opset)])
        with np.errstate(all="ignore"), warnings.catch_warnings():   # no numpy warnings on the console
            warnings.simplefilter("ignore")
            results = ReferenceEvaluator(single).run(None, args)
    except Exception:  # the reference cannot run this node: no arbitration
        return None
    return np.asarray(results[[o for o in node.output if o].index(name)])


def matches_reference(model, float_outputs: Sequence[np.ndarray], examples: Sequence[np.ndarray],
                      inputs: Sequence[ModelInput], channels_last: Sequence[bool], tolerance: float) -> float | None:
    """The worst relative error of the float model's outputs on the first invocation of ``examples``
    against ONNX's reference implementation (the spec) of the whole model; None when it cannot run."""
    from onnx.reference import ReferenceEvaluator

    feeds = {}
    for spec, x in zip(inputs, examples):
        onnx_x = to_onnx_layout(x, spec)
        feeds[spec.name] = onnx_x[0] if spec.rank < 2 else onnx_x[: spec.batch]
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = ReferenceEvaluator(model).run(None, feeds)
    except Exception:
        return None
    worst = 0.0
    for got, ref, cl, spec_in in zip(float_outputs, want, channels_last, [inputs[0]] * len(want)):
        ref = np.asarray(ref)
        first = got[: ref.shape[0]] if ref.ndim else got[:1].reshape(())
        if cl and first.ndim == 4:
            first = np.transpose(first, (0, 3, 1, 2))
        worst = max(worst, relative_error(ref, first.reshape(ref.shape) if first.size == ref.size else first))
    return worst
