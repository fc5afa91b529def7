"""The validate stage of `edgenet convert`: verdicts decided (the repair of a failing int8 model is
:mod:`edgenet.converters.mixed_precision_stage`).

* :func:`validate_stage` -- the float32 model against ONNX (the float verdict, with the first
  diverging node when it fails), every other precision against float32 (:mod:`edgenet.quality`),
  accuracy where labels are known;
* :func:`splittable` / :func:`split_head` -- a damaged
  output made by a Concat written as parts (:mod:`edgenet.converters.split_outputs`);
* :func:`enforce` -- a verdict that still fails stops the conversion (exit 1), unless
  --allow-degraded; :func:`ops_left_in_float` -- ops of an integer model computing in float named,
  and refused on integer-only targets.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from edgenet.config import Precision
from edgenet.converters.model_data import DataKind, PipelineData
from edgenet.converters.sources import SourceModel
from edgenet.errors import ConversionError, DataError
from edgenet.report import Validation

FULL_INTEGER_RUNTIMES = ("tflm", "edgetpu", "ethos-u")


@dataclass
class Checked:
    validation: Validation
    accuracy: object
    float_outs: list
    verdicts: dict
    layers: object = None
    # the repair's nearest miss, when it came clearly closer than the model kept: (what it tried, its
    # failing int8 verdict) -- what still fails there is the reason to lead a refusal with
    nearest: tuple[str, object] | None = None


def _top1_agreement(out) -> float | None:
    """The int8 model's top-1 agreement for report.json's summary: over the examples where float is
    decisive (what the verdict judges), else over all of them (none decisive: an untrained classifier)."""
    if out.top1_agreement is not None:
        return out.top1_agreement
    return (out.metrics or {}).get("top1_agreement_all")


def validate_stage(opts, profile, model, built, source: SourceModel, data: PipelineData, tf_side, notes,
                   split=None) -> Checked:
    """Float32 against ONNX (a failing verdict stops here unless --allow-mismatch), then every other
    precision against float32 (verdicts decided later, after any repair). ``split``: the
    :class:`~edgenet.converters.split_outputs.SplitOutput` of a model whose output is written as
    parts: judged joined, as the app rebuilds it."""
    from edgenet.converters import validate
    from edgenet.inference import TFLiteModel

    threads = os.cpu_count()
    graph = built.graph
    f_outs = TFLiteModel(built.models[Precision.FLOAT32], threads).predict_all(data.eval_x)
    onnx_outs = validate.onnx_outputs(model, data.eval_x, source.inputs, notes)
    names = [info.name for info in graph.outputs]
    if data.info["kind"] != DataKind.RANDOM:   # random inputs may leave a function's domain (log of x < 0)
        validate.check_finite_reference(onnx_outs, names)
    fcs = [validate.check_float(o, f, info.channels_last) for o, f, info in zip(onnx_outs, f_outs, graph.outputs)]
    fcs = validate.topk_float_checks(fcs, built.models[Precision.FLOAT32], onnx_outs, f_outs,
                                     [info.channels_last for info in graph.outputs])
    fcs = validate.e2e_float_checks(fcs, onnx_outs, f_outs, profile.float_tolerance)
    if split is not None:   # an output written as parts: its rows compared joined, as the app rebuilds it
        fcs = _joined_e2e_checks(fcs, onnx_outs, f_outs, split.joined(graph.outputs), profile.float_tolerance)
    verdict = validate.float_verdict(fcs, names, profile.float_tolerance)
    if not verdict.passed:
        verdict = with_divergence(verdict, model, data, source, tf_side)
        if (verdict.divergence or {}).get("onnxruntime_deviates"):
            # onnxruntime, not the conversion, departs from the spec: judge against the spec itself
            from edgenet.converters.divergence import matches_reference

            rel = matches_reference(model, f_outs, data.eval_x, source.inputs,
                                    [o.channels_last for o in graph.outputs], profile.float_tolerance)
            if rel is not None and rel <= profile.float_tolerance:
                notes.append(f"onnxruntime deviates from the ONNX spec at node {verdict.divergence['node']!r} "
                             f"({verdict.divergence['op']}); the float model matches ONNX's reference "
                             f"implementation (relative error {rel:.2g})")
                verdict = replace(verdict, passed=True, reference="onnx.reference")
    if not verdict.passed:
        if not opts.allow_mismatch:
            raise ConversionError(verdict.message())
        notes.append("--allow-mismatch: " + verdict.message().rsplit("; pass --allow-mismatch", 1)[0])
    # the user's output names, before any split
    return judge_quantized(opts, profile, built, source, data, f_outs, fcs, verdict, notes,
                           [o.name for o in source.onnx.graph.output], split)


def _joined_e2e_checks(fcs, onnx_outs, f_outs, join, tolerance: float) -> list:
    """The float checks of a split output's parts, each replaced by the check of the joined output
    when that is an end-to-end detector's (:func:`validate.e2e_float_checks`) and passes."""
    from edgenet.converters import validate

    parts = range(join.first, join.first + join.count)
    if all(fcs[k].rel_err <= tolerance for k in parts):
        return list(fcs)
    from edgenet.verdicts.parts import join_arrays

    o, f = (join_arrays(arrays, (join,))[join.first] for arrays in (onnx_outs, f_outs))
    worst = max((fcs[k] for k in parts), key=lambda c: c.rel_err)
    joined = validate.e2e_float_checks([worst], [o], [f], tolerance)[0]
    if joined.rel_err > tolerance:
        return list(fcs)
    return [joined if k in parts else c for k, c in enumerate(fcs)]


def judge_quantized(opts, profile, built, source: SourceModel, data: PipelineData, f_outs, fcs, verdict, notes,
                    output_names, split=None) -> Checked:
    """Every precision but float32 against the float32 outputs ``f_outs`` (verdicts decided later,
    after any repair), accuracy where labels are known, all gathered with the float checks ``fcs``
    and the float ``verdict`` in a :class:`Checked`. ``output_names``: what ``--output-kind`` may name;
    ``split``: an output written as parts (judged joined)."""
    from edgenet.converters import validate

    threads = os.cpu_count()
    graph = built.graph
    verdicts, outs = {}, {}
    kinds = getattr(opts, "output_kinds", ())
    validate.check_kinds(kinds, list(output_names))
    names = [info.name for info in graph.outputs]
    joins = () if split is None else (split.joined(graph.outputs),)
    qdq_outs = None
    if getattr(source, "qdq", None) is not None and Precision.INT8 in built.models:
        # the int8 model answers to the QDQ model itself (what its producer trained or quantized against)
        from edgenet.converters.qdq_quantize import QDQ_REFERENCE, within_one_step

        qdq_outs = [np.transpose(o, (0, 2, 3, 1)) if info.channels_last and o.ndim == 4 else o
                    for o, info in zip(validate.onnx_outputs(source.qdq.model, data.eval_x, source.inputs, notes),
                                       graph.outputs)]
    for p, blob in built.models.items():
        if p is not Precision.FLOAT32:
            reference = qdq_outs if qdq_outs is not None and p is Precision.INT8 else f_outs
            verdicts[p], outs[p] = validate.judge_precision(p, blob, data.eval_x, reference, graph.outputs,
                                                            profile.thresholds, threads, kinds, joins)
            if reference is qdq_outs:
                verdicts[p] = replace(verdicts[p], reference=QDQ_REFERENCE)
                built.qdq["outputs_within_one_step"] = within_one_step(
                    qdq_outs, outs[p], [source.qdq.ranges.get(o.name) for o in graph.outputs], names)
                notes.extend(_one_step_notes(built.qdq["outputs_within_one_step"]))
            if not source.info.get("trained", True):   # seeded random weights: measured, never judged
                verdicts[p] = _untrained(verdicts[p], notes)
    q_outs = outs.get(Precision.INT8)
    acc = None
    default_data = opts.calib is None and data.info.get("synthetic")   # built-in images the user did not ask for
    if data.eval_labels is not None and source.class_names is not None and not (
            default_data and tuple(data.class_names or ()) != tuple(source.class_names)):
        if data.class_names is not None and tuple(data.class_names) != tuple(source.class_names):
            raise DataError(f"evaluation data classes {list(data.class_names)[:10]} do not match the "
                            f"model's classes {list(source.class_names)[:10]}")
        acc = validate.accuracy(f_outs[0], None if q_outs is None else q_outs[0], data.eval_labels)
    ics = None if q_outs is None else [validate.check_int8(f, q) for f, q in zip(qdq_outs or f_outs, q_outs)]
    outputs = tuple(validate.OutputCheck(info.name, fc.max_abs_err, fc.rel_err, ic.sqnr_db if ic else None)
                    for info, fc, ic in zip(graph.outputs, fcs, ics or [None] * len(fcs)))
    int8 = verdicts.get(Precision.INT8)
    checked = Validation(max(fc.max_abs_err for fc in fcs), max(fc.rel_err for fc in fcs),
                         _top1_agreement(int8.outputs[0]) if int8 else None,
                         min(ic.sqnr_db for ic in ics) if ics else None, fcs[0].samples, outputs,
                         verdict.to_dict(), ())
    return Checked(checked, acc, f_outs, verdicts)


def _one_step_notes(shares: dict) -> list[str]:
    if not shares:
        return []
    text = ", ".join(f"{name!r} {100 * share:.2f}%" for name, share in shares.items())
    return [f"int8 against the QDQ model (onnxruntime): values within one output quantization step: {text}"]


UNTRAINED = "untrained weights (seeded random): the figures say nothing about a trained model"


def _untrained(verdict, notes: list[str]):
    """``verdict`` with every output not judged (its figures kept), the failures it found said in a
    note: one status, "not judged", in report.json, the console, sweeps and bench alike."""
    if not verdict.passed:
        notes.append(f"{verdict.precision} verdict not judged ({UNTRAINED}); what it measured: {verdict.message()}")
    return replace(verdict, outputs=tuple(replace(o, failures=(), not_judged=UNTRAINED) for o in verdict.outputs))


def layer_errors(built, data: PipelineData, source: SourceModel, tf_side):
    """Per-layer SQNR of the int8 model against the float model it was quantized from (with
    --equalize the twin: equalization rescales channels inside the network)."""
    return tf_side.layer_sqnr(built.quant_source, built.models[Precision.INT8],
                              [x[: 8 * max(1, spec.batch)] for x, spec in zip(data.eval_x, source.inputs)])


def splittable(model, verdict):
    """The first failing output that a Concat produces (the mismatched-range head), or None."""
    from edgenet.converters.split_outputs import concat_parts

    for out in verdict.outputs:
        if not out.passed and concat_parts(model, out.name) is not None:
            return out.name
    return None


def split_head(model, output: str):
    from edgenet.converters.split_outputs import split_concat_output

    return split_concat_output(model, output)


CLIPPED_INPUT_ADVICE = "pass the --mean/--std the arrays were normalized with"
#: the same clipping under --normalize-in-model: the model normalizes, its input takes pixels / 255
CLIPPED_INPUT_ADVICE_IN_MODEL = ("with --normalize-in-model the model normalizes its input itself: give float "
                                 "arrays as pixels / 255 (0..1) or uint8 pixels, not normalized arrays")


def enforce(checked: Checked, source: SourceModel, opts, notes: list[str], profile, repair=None) -> None:
    """Every quantized model's verdict, decided: a failure stops the conversion (exit 1) naming the
    output, channels and numbers, unless --allow-degraded (untrained weights never get here: their
    verdicts are not judged, :func:`_untrained`). ``repair``: the mixed-precision search's result,
    whose reason for stopping may be what the user needs to read next."""
    from edgenet.converters.repair.result import Stop

    failing = [v for v in checked.verdicts.values() if not v.passed]
    if source.info.get("trained", True):   # untrained weights: their figures are not judged, nor noted
        notes.extend(n for v in checked.verdicts.values() for n in v.notes if n not in notes)
    checked.validation = replace(checked.validation, quantized=tuple(v.to_dict() for v in checked.verdicts.values()))
    io = (opts.io_type or profile.output_type).value
    for v in failing:
        hint = ""
        # parts of one output collapsing under one scale (a head's scores beside its boxes): the
        # output's type is what keeps one scale over them
        collapsed = any(o.degenerate_channels and len(o.degenerate_channels) < o.channels
                        for o in v.outputs if not o.passed)
        integer_only = profile.runtime.value in FULL_INTEGER_RUNTIMES
        if v.precision == "int8" and io in ("int8", "uint8") and collapsed and not integer_only:
            hint = (f"; the model's {io} outputs have one scale each (--io-type float32 keeps them float"
                    + (", and mixed precision can then keep the parts apart)" if not opts.strict_int8 else ")"))
        if v.precision == "int8" and repair is not None and repair.stop in (Stop.MOSTLY_PROMOTED, Stop.MOSTLY_FLOAT):
            # the repair's own reason: too many ops promoted, most ops in float, or float ops holding
            # most of the weights (a model nearly float's size)
            why = repair.stop_detail or "no repair promoting at most half of its ops passes"
            hint += (f"; mixed precision found no int8 model ({why}): --precision float32,int16x8 judges 16-bit "
                     "activations everywhere, or deploy model_float.tflite")
        if v.precision == "int8" and opts.strict_int8 and not integer_only:
            if any(step.value == "int16" for step in profile.repair_order):   # int16 was tried: float was not
                hint += ("; --strict-int8 kept float out of mixed precision: without it the search may keep the "
                         "damaging ops in float")
            else:
                hint += ("; --strict-int8 kept mixed precision off: without it the search may keep the damaging ops "
                         "in float")
        # calibration arrays outside the input's fixed range (converters/data_notes.py): the cause to read first
        # and what was tried and failed on the way (the notes are not printed when the conversion stops)
        nearest = checked.nearest if v.precision == "int8" else None
        hint += "".join(f"; {n}" for n in notes if n.endswith((CLIPPED_INPUT_ADVICE, CLIPPED_INPUT_ADVICE_IN_MODEL))
                        or (nearest is None and n.startswith("splitting output ")
                            and n.endswith("the output is kept whole")))
        if not opts.allow_degraded:
            raise ConversionError(_lead(v, nearest) + hint + "; pass --allow-degraded to write the files anyway")
        else:
            notes.append("--allow-degraded: " + v.message())


def _lead(verdict, nearest) -> str:
    """A refusal's first words: the failing verdict's message, or -- when the repair came clearly closer
    (``nearest``: what it tried, its verdict) -- what still fails there, then the model's own figures
    (YOLO26n's int8 output: detections F1 0.00, its parts split: boxes IoU 0.86 -- the boxes are the
    reason, the F1 was the first step's)."""
    if nearest is None:
        return verdict.message()
    how, closer = nearest
    return f"{closer.message()} ({how}; as one {verdict.precision} output: {verdict.failures_text()})"


def ops_left_in_float(built, profile, opts, notes: list[str], tf_side=None) -> dict:
    """Ops of a full-integer model that still compute in another precision: named (by their ONNX
    node where it is known) in the notes; a TargetError for targets that run integer models only."""
    from edgenet.converters.op_precision import describe, ops_not_in
    from edgenet.errors import TargetError

    found = {}
    for p in (Precision.INT8, Precision.INT16X8):
        if p not in built.models:
            continue
        left = ops_not_in(built.models[p], p)
        if not left:
            continue
        nodes = tf_side.onnx_nodes([e.output for e in left]) if tf_side is not None else {}
        found[p.value] = [{"index": e.index, "op": e.op, "tensor": e.output, "onnx_node": nodes.get(e.output),
                           "precision": e.precision.value} for e in left]
        named = [e._replace(output=nodes.get(e.output) or e.output) for e in left]
        text = f"{len(left)} op(s) of the {p.value} model compute in another precision: {describe(named)}"
        floating = [e for e in left if e.precision is not Precision.INT16X8 and e.precision is not Precision.INT8]
        if floating and profile.runtime.value in FULL_INTEGER_RUNTIMES:
            raise TargetError(f"{profile.name}: {text}; the target runs integer models only")
        if floating and opts.strict_int8:
            raise TargetError(f"{profile.name}: {text}; --strict-int8 asks for every op in integers (without it, "
                              f"{profile.name} runs these in float)")
        notes.append(text)
    return found


def with_divergence(verdict, model, data: PipelineData, source: SourceModel, tf_side):
    """The failing float verdict, completed with the first ONNX node whose output diverges."""
    from dataclasses import replace

    from edgenet.converters.divergence import first_divergence

    try:
        found = first_divergence(model, data.eval_x, source.inputs, verdict.tolerance, tf_side.evaluate_values)
    except Exception as exc:  # the locator is a diagnosis: its failure must not hide the verdict
        return replace(verdict, divergence={"reason": f"the diverging node could not be located "
                                                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"})
    return replace(verdict, divergence=found.to_dict())
