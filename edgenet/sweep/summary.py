"""What a sweep says about its cells: one progress line per record and the closing count, both
read from the records' ``status`` and ``verdict`` so that neither says "ok" about a cell whose
quantized model failed its verdict.

A record's verdict (:func:`edgenet.sweep.cells.precision_numbers`) is ``pass``/``fail`` for a
quantized precision and None for float32 (the reference). A failing verdict makes the cell
``degraded`` (damaged by quantization) only on trained weights: on untrained weights (zoo models
without a checkpoint) the numbers cannot judge the model (``trained`` False, or an older record
with status ok), so it reads "not judged (untrained weights)", never "ok".
"""
from __future__ import annotations

from collections import Counter

JUDGEMENTS = ("pass", "damaged", "not judged", "reference", "does not fit", "failed")


def judgement(record: dict) -> str:
    """One of :data:`JUDGEMENTS` for a results.jsonl record."""
    status, verdict = record.get("status"), record.get("verdict")
    if status == "failed":
        return "failed"
    if status == "does_not_fit":
        return "does not fit"
    if status == "degraded":
        return "damaged"
    if verdict == "fail":           # status ok with a failing verdict: not enforced (untrained weights)
        return "not judged"
    if record.get("trained") is False and record.get("precision") != "float32":
        return "not judged"         # a pass on untrained weights judges nothing either
    if verdict == "pass":
        return "pass"
    return "reference" if record.get("precision") == "float32" else "not judged"


def progress_line(record: dict) -> str:
    """What one finished cell's progress line says after its label."""
    what, seconds = judgement(record), record.get("seconds") or 0
    if what == "failed":
        return f"FAILED: {record.get('error')}"
    if what == "does not fit":
        return f"does not fit: {record.get('error')}"
    if what == "damaged":
        return f"DAMAGED by quantization (verdict fail): {record.get('error')}"
    if what == "not judged":   # no "verdict pass" / "verdict fail" here: on untrained weights neither is given
        why = "untrained weights" if untrained(record) else "no verdict"
        return f"converted {seconds:.1f} s: not judged ({why})"
    if what == "reference":
        return f"converted {seconds:.1f} s (float32: the reference, no verdict)"
    return f"ok {seconds:.1f} s, verdict pass"


def summary_line(records: list[dict] | tuple[dict, ...]) -> str:
    """``8 cell(s): 4 pass their verdict, 4 converted but not judged (untrained weights) ...``:
    every record counted once, by :func:`judgement`."""
    n = Counter(judgement(r) for r in records)
    parts = [f"{n['pass']} pass their verdict"]
    if n["not judged"]:
        parts.append(f"{n['not judged']} converted but not judged (untrained weights)")
    if n["reference"]:
        parts.append(f"{n['reference']} float32 (the reference, no verdict)")
    parts += [f"{n['damaged']} damaged by quantization (verdict fail)", f"{n['does not fit']} do not fit their target",
              f"{n['failed']} failed"]
    return f"{len(records)} cell(s): " + ", ".join(parts)


def verdict_text(record: dict) -> str:
    """The verdict column of pareto.md: ``pass``, ``**fail**`` (damaged), ``not judged (untrained)``,
    ``reference`` (float32) or ``?`` (a record without one)."""
    return {"pass": "pass", "damaged": "**fail**", "reference": "reference", "failed": "?",
            "does not fit": "?"}.get(judgement(record),
                                     "not judged (untrained)" if untrained(record) else "?")


def untrained(record: dict) -> bool:
    """Whether the record's model has untrained weights (recorded, or implied by a failing verdict
    that was not enforced)."""
    return record.get("trained") is False or (record.get("status") == "ok" and record.get("verdict") == "fail")
