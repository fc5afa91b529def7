"""The balanced model's int8 checked against the plain one's, when it fails its verdict.

Activation balancing (:mod:`edgenet.converters.act_balance`, :mod:`edgenet.converters.hswish_balance`)
rescales channels so that they share their tensor's int8 range better; each rescaling is chosen by
the per-channel error it removes, a proxy, not by the task. On most models the proxy holds (PP-OCRv5's
detector: plain int8 map IoU 0.50 -> 0.93), but on the English PP-OCRv4 recognizer the balanced int8
model appended a character to 28 of 32 lines where the plain int8 model changed 5 (each rewrite alone
was harmless: their errors added up in the constant, padded end of the line). So when the balanced
model's int8 verdict fails, the plain model's int8 is made and judged on the same held-out examples
(one more int8 stage), and the one the task prefers goes on to the repair: the plain one when it
passes, or when it is clearly better on the failing output (:func:`repair_stage._clearly_better`'s
rule), else the balanced one.
"""
from __future__ import annotations

import os
from dataclasses import replace

from edgenet.config import Precision


def balanced_twin_failed(built, checked) -> bool:
    """``built`` holds a balanced twin (its int8 model calibrated from a float model other than the one
    written, and no ``--equalize``) whose int8 verdict fails."""
    verdict = checked.verdicts.get(Precision.INT8)
    plain = built.models.get(Precision.FLOAT32)
    return (verdict is not None and not verdict.passed and plain is not None and built.quant_source is not plain
            and built.equalized is None and Precision.INT8 in built.quantized)


def plain_if_better(built, checked, data, source, opts, profile, notes: list[str]) -> bool:
    """Switch ``built`` (and ``checked``'s int8 verdict) to the plain model's int8 when it is what the
    task prefers (see the module); True when switched. Nothing is done unless ``built`` holds a
    balanced twin (``quant_source`` is not the float model, and no ``--equalize``) whose int8 verdict
    fails."""
    from edgenet.converters import validate
    from edgenet.converters.build import check_written, int8_float_ops, io_type_for
    from edgenet.converters.quantize import quantize_calibrated
    from edgenet.converters.repair_stage import _clearly_better

    if not balanced_twin_failed(built, checked):
        return False
    verdict, plain = checked.verdicts[Precision.INT8], built.models[Precision.FLOAT32]
    result = quantize_calibrated(plain, list(data.calib), precision=Precision.INT8,
                                 io_type=io_type_for(Precision.INT8, opts, profile),
                                 per_channel=built.quantized[Precision.INT8].per_channel,
                                 method=opts.calib_method,
                                 op_precision=int8_float_ops(plain, Precision.INT8, opts, profile),
                                 preprocess=source.preprocess)
    check_written(result.model, Precision.INT8)
    judged = validate.judge_precision(Precision.INT8, result.model, data.eval_x, checked.float_outs,
                                      built.graph.outputs, profile.thresholds, os.cpu_count(),
                                      getattr(opts, "output_kinds", ()))[0]
    candidate = replace(checked, verdicts={**checked.verdicts, Precision.INT8: judged})
    if not (judged.passed or _clearly_better(candidate, checked, verdict.worst.name)):
        worst = judged.worst
        first = worst.failures[0] if worst.failures else "fails"
        notes.append(f"activation balancing kept: the int8 model without it fails too (output {worst.name!r}: "
                     f"{first})")
        return False
    built.quant_source = plain
    built.quantized[Precision.INT8] = result
    built.models[Precision.INT8] = result.model
    checked.verdicts[Precision.INT8] = judged
    how = "passes" if judged.passed else f"keeps more of output {verdict.worst.name!r}"
    first = verdict.worst.failures[0] if verdict.worst.failures else "fails"
    notes.append(f"activation balancing undone: its int8 model failed (output {verdict.worst.name!r}: {first}); "
                 f"the int8 model without it {how}, and is the one kept")
    return True
