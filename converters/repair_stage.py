"""The repair stage of `edgenet convert`: a failing int8 verdict, repaired in the target's order.

The target profile's ``repair`` order holds promotions (int16 where its runtime has the kernel,
float where it runs float: never on integer-only targets or with --strict-int8;
:func:`edgenet.converters.mixed_precision_stage.mixed_precision`) and the split head (a damaged output made
by a Concat written as parts, each with its own int8 scale;
:mod:`edgenet.converters.split_outputs`), each tried while the verdict still fails. Parts are
judged joined, as the app rebuilds the output; promotions that come after a split are tried on
the parts, and when nothing passes the model keeps the user's interface (its output whole).
"""
from __future__ import annotations

from dataclasses import replace

from edgenet.config import Precision
from edgenet.converters.mixed_precision_stage import mixed_precision
from edgenet.converters.verdict_stage import split_head, splittable, validate_stage


def strict_profile(profile, opts):
    """The profile as the repair sees it: with --strict-int8 (or an integer-only runtime) no float step."""
    from edgenet.targets.profile import RepairStep

    if not opts.strict_int8:
        return profile
    return replace(profile, repair=tuple(s for s in profile.repair_order if s is not RepairStep.FLOAT))


def repair_int8(model, built, checked, stages, make, opts, profile, source, data, tf_side, notes: list[str]):
    """(model, built, checked, repair, split) after the target's repair order has been tried on a
    failing int8 verdict: ``make(onnx_model, balance=...)`` builds a model's precisions (the pipeline's), ``stages``
    times and announces each step; ``repair`` is the mixed-precision result (or None), ``split`` the
    :class:`~edgenet.converters.split_outputs.SplitOutput` of the model returned (or None)."""
    from edgenet.converters.balance_check import balanced_twin_failed, plain_if_better
    from edgenet.converters.build import stage_count

    split = repair = None
    undone = False     # balancing undone: a split model is built without it too
    if balanced_twin_failed(built, checked):   # balancing's proxy against the task: the plain int8 judged too
        stages.add(1, "the balanced model's int8 verdict failed: the int8 model without balancing is judged too")
        undone = stages.run("int8 without balancing", plain_if_better, built, checked, data, source, opts, profile,
                            notes)
    # the target's repair order: promotions (int16 where its runtime has the kernel, float where it
    # runs float: never on integer-only targets or with --strict-int8) and the split head, each
    # tried while the verdict still fails
    order = [step.value for step in profile.repair_order]
    strict_order = [step.value for step in strict_profile(profile, opts).repair_order]
    mismatch = None if "float" in strict_order else _mismatched_head(model, built, checked)
    if mismatch is not None and "split" in order and order[0] != "split":
        # the head's trouble is evident from float's own values: parts whose ranges differ this much
        # cannot share one int8 scale, and on an integer-only target no promotion holds them either
        # (int16 over YOLOv8's 0..640 boxes leaves its 0..1 scores steps of 0.02): the split comes
        # first, and promotions, if still needed, run on the parts. Where float may run, a float
        # head keeps the user's one output, so the profile's order stands.
        order = ["split"] + [x for x in order if x != "split"]
        notes.append(mismatch)
    promote = [i for i, x in enumerate(order) if x in ("int16", "float")]
    steps = sorted(([(promote[0], "promote")] if promote else [])
                   + ([(order.index("split"), "split")] if "split" in order else []))
    whole = None      # the model with its output whole, while promotions are tried on its parts
    for k, (_, step) in enumerate(steps):
        if checked.verdicts[Precision.INT8].passed:
            break
        if step == "promote":
            stages.add(1 + int(opts.layer_report), f"the int8 verdict failed "
                       f"({checked.verdicts[Precision.INT8].worst.name}): mixed precision added")
            repair = stages.run("mixed precision", mixed_precision, built, checked, data, source, tf_side,
                                opts, strict_profile(profile, opts), notes, split,
                                detail=checked.verdicts[Precision.INT8].worst.name)
            if repair is not None:
                if repair.passed:
                    built.models[Precision.INT8] = repair.model
                    checked.verdicts[Precision.INT8] = repair.verdict
                notes.append(repair.summary())
            continue
        # a split helps where one int8 scale over the head is the trouble (the quantizer gives a
        # Concat's inputs the Concat's scale, back through Slice and Reshape to the tensor they
        # were cut from: the YOLOv5 head, whose 0..1 sigmoid then gets the pixel scale; floating
        # the assembly ops does not undo that, separate outputs do)
        head = splittable(model, checked.verdicts[Precision.INT8])
        if head is None:
            continue
        stages.add(stage_count(opts) + 1, f"output {head!r} still fails: its parts written as separate "
                   "outputs and checked again")
        split_model, split = split_head(model, head)
        split_built = make(split_model, balance=not undone)
        split_notes: list[str] = []
        split_checked = stages.run("validate (split outputs)", validate_stage, opts, profile, split_model,
                                   split_built, source, data, tf_side, split_notes, split)
        passed = split_checked.verdicts[Precision.INT8].passed
        if passed or any(s == "promote" for _, s in steps[k + 1:]):
            # passing, or promotions still to come: they are tried on the parts (each with its own
            # scale, the head's trouble is gone; what is left is upstream of it)
            if not passed:
                whole = (model, built, checked, split_checked)
            model, built, checked = split_model, split_built, split_checked
            kept_notes = split_notes
        elif opts.allow_degraded and _clearly_better(split_checked, checked, split.output):
            # --allow-degraded writes a failing model anyway: the parts, where they keep much more of
            # the task (nudenet on coral: detections F1 0.80 split against 0.15 whole)
            notes.append(f"splitting output {split.output!r} into parts did not pass the verdict either (judged "
                         f"joined: {split_checked.verdicts[Precision.INT8].failures_text()}), but keeps more of it than the whole output: "
                         "--allow-degraded writes the parts")
            model, built, checked = split_model, split_built, split_checked
            kept_notes = split_notes
        else:   # parts that do not pass either: the model keeps the user's interface
            notes.append(f"splitting output {split.output!r} into parts did not pass the verdict either (judged "
                         f"joined: {split_checked.verdicts[Precision.INT8].failures_text()}); the output is kept whole")
            _nearest(checked, split_checked, split.output, f"with output {split.output!r} written as parts, judged joined")
            split = None
    if split is not None and not checked.verdicts[Precision.INT8].passed and whole is not None:
        model, built, checked, split_checked = whole
        notes.append(f"splitting output {split.output!r} into parts did not pass the verdict (judged joined: "
                     f"{split_checked.verdicts[Precision.INT8].failures_text()}), nor did mixed precision on its parts; the output is kept whole")
        _nearest(checked, split_checked, split.output,
                 f"with output {split.output!r} written as parts, judged joined, mixed precision tried on them")
        split = None
    elif split is not None:
        notes.extend(kept_notes)
        notes.append(split.describe())
    return model, built, checked, repair, split


#: parts of one output whose largest magnitudes differ by more than this share one int8 scale badly:
#: the smaller part keeps fewer than 4 of the 8 bits (16 = 2**4)
MISMATCH_RATIO = 16.0


def _mismatched_head(model, built, checked) -> str | None:
    """A note when the failing int8 output that a Concat produces holds parts whose float ranges
    (max |value| over the evaluation data) differ more than :data:`MISMATCH_RATIO` times, else None."""
    import numpy as np

    from edgenet.converters.split_outputs import array_axis, split_concat_output

    head = splittable(model, checked.verdicts[Precision.INT8])
    if head is None:
        return None
    outputs = built.graph.outputs
    position = next((k for k, o in enumerate(outputs) if o.name == head), None)
    if position is None or position >= len(checked.float_outs):
        return None
    try:
        _, split = split_concat_output(model, head)
    except ValueError:
        return None
    values = np.asarray(checked.float_outs[position])
    axis = array_axis(split.axis, outputs[position])
    if len(split.sizes) < 2 or values.ndim <= axis or sum(split.sizes) != values.shape[axis]:
        return None
    bounds = np.cumsum((0,) + split.sizes)
    peaks = [float(np.max(np.abs(np.take(values, range(a, b), axis=axis)))) for a, b in zip(bounds, bounds[1:])]
    small, large = min(peaks), max(peaks)
    if small <= 0 or large / small <= MISMATCH_RATIO:
        return None
    spans = ", ".join(f"|x| <= {p:.3g}" for p in peaks)
    return (f"output {head!r} concatenates parts whose ranges differ {large / small:.0f}x ({spans}): one int8 scale "
            "cannot hold them, so its parts are written as separate outputs first")


def _nearest(checked, split_checked, output: str, how: str) -> None:
    """Keep the split's failing verdict on ``checked`` (:attr:`Checked.nearest`) when it is clearly closer
    to passing than the whole output's (:func:`_clearly_better`): a refusal leads with what still fails there."""
    if _clearly_better(split_checked, checked, output):
        checked.nearest = (how, split_checked.verdicts[Precision.INT8])


BETTER_BY = 0.1    # a task figure (a fraction: F1, agreement, IoU) this much higher is clearly better


def _clearly_better(candidate, current, output: str) -> bool:
    """True when ``candidate``'s int8 verdict on ``output`` has the same task figure as ``current``'s
    (detections F1, agreement, map IoU) and it is at least :data:`BETTER_BY` higher, and every other
    output that ``current`` passes ``candidate`` passes too."""
    from edgenet.verdicts import headline

    def figure(checked):
        out = next((o for o in checked.verdicts[Precision.INT8].outputs if o.name == output), None)
        return None if out is None else headline(out.to_dict())

    new, old = figure(candidate), figure(current)
    if new is None or old is None or new[0] != old[0] or new[1] < old[1] + BETTER_BY:
        return False
    # better on the split output, not at the cost of another: an output the whole model passes still passes
    passing = {o.name for o in current.verdicts[Precision.INT8].outputs if o.passed}
    return all(o.passed for o in candidate.verdicts[Precision.INT8].outputs if o.name != output and o.name in passing)

