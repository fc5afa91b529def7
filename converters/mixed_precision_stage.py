"""Mixed precision for a failing int8 model, as `edgenet convert` runs it: the ops that broke it
promoted (int16 activations, float; :mod:`edgenet.converters.repair` searches), within the target's
kernel table and budget, the choice confirmed on examples it was not chosen on, and refused when the
result is not an int8 model (most ops promoted, most ops or most bytes in float).
"""
from __future__ import annotations

import os
from dataclasses import replace

from edgenet.config import Precision
from edgenet.converters.model_data import PipelineData
from edgenet.converters.sources import SourceModel
from edgenet.converters.verdict_stage import FULL_INTEGER_RUNTIMES, Checked

MAX_FLOAT_SHARE = 0.5    # a repair may keep at most this share of the model's ops in float
MAX_PROMOTED_SHARE = 0.5  # ... and promote at most this share of them (int16 or float): past that it is not int8
MAX_FLOAT_BYTES_SHARE = 0.75  # ... and be at most this share of the float model's bytes (float ops holding most weights)
MIN_SIZED_BYTES = 1 << 20     # ... for a float model of at least this size (below it, bytes are not what a repair costs)
LATENCY_SECONDS = 0.5    # the repair's latency comparison (int8, repaired, float32): a short interleaved timing


EVAL_SUBSET = 8    # examples the repair search scores single promotions and judges candidates on first


def mixed_precision(built, checked: Checked, data: PipelineData, source: SourceModel, tf_side, opts, profile,
                    notes: list[str] | None = None, split=None):
    """Promote the fewest ops of the failing int8 model (int16 activations or float, in the target
    profile's ``repair`` order, where targets/kernels.toml lets its runtime run them) until the int8
    verdict passes (converters.repair), within ``profile.repair_rounds`` quantize-and-judge rounds
    (counted, not timed: the same repair on any machine). None, with a note saying why, when the target's order and the quantizer in
    use allow no promotion at all. ``split``: the model's output written as parts (judged joined;
    its parts are the outputs the search scores)."""
    from edgenet.converters import validate
    from edgenet.converters.repair import Budget, Judge, OpPrecision, repair
    from edgenet.converters.quant_io import inline_buffers
    from edgenet.converters.repair.cost import interleaved_latency
    from edgenet.converters.repair.graph import ops
    from edgenet.converters.repair.runs import SubsetRuns
    from edgenet.converters.repair.sensitivity import output_score
    from edgenet.inference import TFLiteModel

    listing = ops(built.quant_source)
    positions = {op.name: op.output_position for op in listing}
    quantize = _quantizer(built, tf_side, opts, profile, positions)
    steps = [s.value for s in profile.repair_order if s.value in {p.value for p in OpPrecision}]
    usable = [s for s in steps if OpPrecision(s) in quantize.supports
              and (s != "float" or profile.runtime.value not in FULL_INTEGER_RUNTIMES)]
    if not usable:
        if notes is not None and steps:
            notes.append(f"mixed precision: not tried: {profile.name} allows promotions to {', '.join(steps)} only, "
                         "and the quantizer in use can make none of them per op")
        return None
    threads = os.cpu_count()

    joins = () if split is None else (split.joined(built.graph.outputs),)

    # each candidate model runs once on the subset: its quick verdict, its score and its full verdict
    # (the subset's outputs followed by the rest's) share that run
    runs = SubsetRuns(data.eval_x, [max(1, spec.batch) for spec in source.inputs], EVAL_SUBSET, threads)

    def full(blob):
        return validate.judge_precision(Precision.INT8, blob, data.eval_x, checked.float_outs, built.graph.outputs,
                                        profile.thresholds, threads, getattr(opts, "output_kinds", ()), joins,
                                        outs=runs.full(blob))[0]

    verdict = checked.verdicts[Precision.INT8]
    from edgenet.verdicts.parts import join_items

    # the model outputs behind each judged output (a joined output: all its parts)
    behind = join_items([[k] for k in range(len(built.graph.outputs))], joins,
                        lambda j, parts: [k for p in parts for k in p])
    failing = [k for v, out in enumerate(verdict.outputs) if not out.passed for k in behind[v]]
    subset = [x[: EVAL_SUBSET * max(1, spec.batch)] for x, spec in zip(data.eval_x, source.inputs)]
    f_subset = TFLiteModel(built.models[Precision.FLOAT32], threads).predict_all(subset)

    def quick(blob):
        return validate.judge_precision(Precision.INT8, blob, subset, f_subset, built.graph.outputs,
                                        profile.thresholds, threads, getattr(opts, "output_kinds", ()), joins,
                                        outs=runs.outputs(blob))[0]

    judge = Judge(full, quick)

    def score(blob):
        return output_score(blob, subset, f_subset, failing, threads, outs=runs.outputs(blob))

    # the budget: the profile's repair_rounds, counted (not timed: the same search on any machine)
    budget = Budget(profile.repair_rounds)
    cap = max(1, int(MAX_PROMOTED_SHARE * len(listing)))
    confirm = _confirmation(built, data, source, profile, opts, joins, threads)
    result = repair(built.quant_source, built.models[Precision.INT8], verdict, subset, quantize, judge, score,
                    profile.runtime.value, profile.repair_order, budget, _runtime_check(profile), failing, cap,
                    confirm)
    result = _written(result)
    n_ops = len(listing)
    float_bytes = len(built.models[Precision.FLOAT32])

    def not_int8(found) -> str | None:
        """Why a passing ``found`` is the float model with extra steps (most ops, or the ops holding
        most weights -- an unrolled LSTM's FULLY_CONNECTEDs -- in float), else None."""
        float_ops = sum(1 for p in found.promoted if p.precision is OpPrecision.FLOAT)
        if float_ops > MAX_FLOAT_SHARE * n_ops:
            return (f"the one passing model found computes {float_ops} of {n_ops} ops in float (more than "
                    f"{MAX_FLOAT_SHARE:.0%}): not an int8 model")
        size = len(found.model)
        if float_ops and float_bytes >= MIN_SIZED_BYTES and size > MAX_FLOAT_BYTES_SHARE * float_bytes:
            return (f"the one passing model found is {size / 1e6:.1f} MB, {size / float_bytes:.0%} of the float "
                    f"model's {float_bytes / 1e6:.1f} MB (its float ops hold most weights): not an int8 model")
        return None

    if result.passed and "int16" in usable and not_int8(result):
        # float first found only the float model with extra steps: int16 activations may hold what
        # float did, with int8 weights (a profile that orders float first, as XNNPACK targets do,
        # still gets them)
        from edgenet.targets.profile import RepairStep

        again = repair(built.quant_source, built.models[Precision.INT8], verdict, subset, quantize, judge, score,
                       profile.runtime.value, tuple(s for s in profile.repair_order if s is not RepairStep.FLOAT),
                       budget, _runtime_check(profile), failing, cap, confirm)
        again = _written(again)
        if again.passed:
            result = replace(again, rounds=result.rounds + again.rounds, seconds=result.seconds + again.seconds,
                             budget_rounds=2 * again.budget_rounds)
    refused = not_int8(result) if result.passed else None
    if refused:
        # refused, so that the next step of the target's order (a split head) or an honest failure follows
        from edgenet.converters.repair.result import Stop

        result = replace(result, model=None, stop=Stop.MOSTLY_FLOAT, stop_detail=refused)
    if result.passed:
        models = {"int8": built.models[Precision.INT8], "repaired": result.model,
                  "float32": built.models[Precision.FLOAT32]}
        if "float" in usable and any(p.precision is OpPrecision.INT16 for p in result.promoted):
            # int16 ops run on slower kernels than int8 and float in XNNPACK: the same ops in float, timed too
            alt = inline_buffers(quantize({p.tensor: OpPrecision.FLOAT for p in result.promoted}))
            if judge(alt).passed:
                models["same_ops_float"] = alt
        result = replace(result, latency_ms=interleaved_latency(models, profile.num_threads,
                                                                max_seconds=LATENCY_SECONDS))
    result = _new_promotions(result.as_written(), built.quantized[Precision.INT8].op_precision)
    return result.named(tf_side.onnx_nodes([p.tensor for p in result.promoted]))


def _written(result):
    """``result`` with its model as it is written: the search's models are trials
    (:func:`edgenet.converters.quantize.requantize`'s ``trial``), their buffers not yet inlined."""
    from edgenet.converters.quant_io import inline_buffers

    if result.model is None:
        return result
    model = inline_buffers(result.model)
    return replace(result, model=model, size_after=len(model))


def _new_promotions(result, own):
    """``result`` without the promotions the int8 model had already: ``own`` (op -> OpPrecision pairs,
    the target's int8_float_ops, e.g. rpi's hard-swish in float) is not the repair's doing, and a count
    of promoted ops that includes them overstates what the repair moved out of int8."""
    own = dict(own)
    return replace(result, promoted=tuple(p for p in result.promoted if own.get(p.tensor) is not p.precision))


CONFIRM_SAMPLES = 64    # calibration examples a repaired model is judged on again, at most


def _confirmation(built, data: PipelineData, source: SourceModel, profile, opts, joins, threads):
    """``confirm(model) -> None | why not``: the int8 verdict again on calibration examples (up to
    :data:`CONFIRM_SAMPLES`), or None when there are none to use. The search tries many models and keeps
    one that passes on the evaluation examples: with a few dozen of them the choice fits them (a
    recognizer passed at 90% of strings on 32 examples and kept 84% on 128 others). The calibration
    examples set the ranges but take no part in the choice: a model that fails on them was chosen by luck."""
    from edgenet.converters import validate
    from edgenet.inference import TFLiteModel

    if data.info.get("synthetic") or data.info.get("eval_is_calibration") or not data.calib or not len(data.calib[0]):
        return None     # no examples apart from the ones the search chose on
    sample = [x[: CONFIRM_SAMPLES * max(1, spec.batch)] for x, spec in zip(data.calib, source.inputs)]
    reference = []

    def confirm(model: bytes) -> str | None:
        if not reference:
            reference.extend(TFLiteModel(built.models[Precision.FLOAT32], threads).predict_all(sample))
        verdict = validate.judge_precision(Precision.INT8, model, sample, reference, built.graph.outputs,
                                           profile.thresholds, threads, getattr(opts, "output_kinds", ()), joins)[0]
        if verdict.passed:
            return None
        return (f"the model found passes on the {len(data.eval_x[0])} evaluation examples it was chosen on, not on "
                f"{len(sample[0])} calibration examples ({verdict.failures_text()}): the choice fit those examples")

    return confirm


def _quantizer(built, tf_side, opts, profile, positions: dict):
    """The int8 model again from the same ranges with some ops promoted (the LiteRT Quantizer's
    per-op recipes, :func:`edgenet.converters.quantize.requantize`); an output whose producer is
    made float is made float32 too (one int8 scale is what could not hold it)."""
    from edgenet.config import OpPrecision
    from edgenet.converters.build import io_type_for
    from edgenet.converters.quantize import requantize
    from edgenet.converters.repair import Quantizer

    per_channel = profile.per_channel if opts.per_tensor is None else not opts.per_tensor
    io_type = io_type_for(Precision.INT8, opts, profile)
    result = built.quantized[Precision.INT8]

    base = dict(result.op_precision)   # the target's own float ops (int8_float_ops) stay as they are

    def fn(assignment):
        outs = tuple(sorted({positions[t] for t, p in assignment.items()
                             if p is OpPrecision.FLOAT and positions.get(t) is not None}))
        # a trial model: run and judged only (its buffers inlined once it is chosen: _written)
        return requantize(result, {**base, **assignment}, outs, io_type=io_type, per_channel=per_channel,
                          trial=True)

    return Quantizer(fn, frozenset({OpPrecision.INT16, OpPrecision.FLOAT}))


def _runtime_check(profile):
    """``runs(model) -> None | why not`` in the target's own runtime: TFLite Micro for tflm targets,
    vela's placement for Ethos-U (every op on the NPU unless the profile allows CPU ops); LiteRT
    targets are run by the verdict itself."""
    import tempfile
    from pathlib import Path

    runtime = profile.runtime.value
    if runtime not in ("tflm", "ethos-u"):
        return None

    def runs(model: bytes) -> str | None:
        from edgenet.converters.quant_io import inline_buffers

        model = inline_buffers(model)    # a trial model, as it would be written
        with tempfile.TemporaryDirectory(prefix="edgenet_repair_") as tmp:
            path = Path(tmp) / "model_int8.tflite"
            path.write_bytes(model)
            if runtime == "tflm":
                from edgenet.targets.tflm import run_tflm

                r = run_tflm(path, samples=2)
                return None if r.ok else f"TFLite Micro: {r.error}"
            from edgenet.targets.vela import run_vela

            out = run_vela(path, profile.accelerator, system_config=profile.vela_system_config,
                           memory_mode=profile.vela_memory_mode)
            fallbacks = out.report.cpu_fallbacks
            if fallbacks and not profile.allow_cpu_ops:
                return "vela leaves " + ", ".join(f"{f.op} ({f.reason})" for f in fallbacks[:3]) + " to the CPU"
            return None

    return runs
