"""The verdict on a TopK's indices: which k elements, and their order where float decides it.

A TopK's indices (YOLOv10 / DETR heads' selection, a sort) are not labels to compare position by
position: two values within the quantized model's error of each other trade places under any
rounding (a healthy int8 model measured 84% positional agreement on a full sort, 82% on k = 5,
every swap between float values within 1.5 int8 steps), and the element at the k-th place may trade
with the (k+1)-th. Per row along the TopK's axis (ONNX layout), with float's values ``v`` (its
values output, sorted as the TopK gives them) and a near-tie tolerance ``tol``:

* set agreement: the share of float's k elements that the quantized model also selects; an element
  it leaves out counts as kept when one it selects instead has a quantized value within ``tol`` of
  float's value of the element left out (a near-tie traded across the k-th place; each element
  selected instead excuses one);
* order agreement: of the positions whose element both select, the share holding float's element,
  or an element whose float value is within ``tol`` of the one float puts there (a near-tie swap).

Both at least ``thresholds.min_index_agreement`` (90%, as any output of indices). ``tol`` is the
larger of NEAR_TIE_STEPS quantization steps of the quantized values output (each of two values is
rounded once more by the op that produces it, on top of the rounding of its inputs: a step each)
and NEAR_TIE_SIGMAS times the RMS error of the quantized values of the elements both select (two
values whose errors have RMS ``s`` each cross a gap of 3 s with probability ~2%, well inside the 10%
the agreement allows). The measured healthy model's swaps (<= 1.5 steps) all fall inside; a model
that picks the wrong elements, or sorts values that float keeps apart, still fails.

Without the values (the TopK's values are not a model output) no near-tie can be told: the set is
judged strictly, the order is measured but not judged (and a TopK selecting every element, whose
set says nothing, is not judged at all).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenet.verdicts.base import OutputKind, OutputQuality, Thresholds

NEAR_TIE_STEPS = 2.0     # quantization steps of the values output within which two values are a near-tie
NEAR_TIE_SIGMAS = 3.0    # ... or this many RMS errors of the quantized values, whichever is larger


@dataclass(frozen=True)
class TopKSource:
    """A model output of indices made by a TopK: over ``axis`` (of the output in ONNX layout), its
    values being model output ``values`` (None: not an output), selecting ``k`` of ``n`` elements
    (None: not known)."""

    axis: int = -1
    values: int | None = None
    k: int | None = None
    n: int | None = None


def resolution(values: np.ndarray) -> float:
    """The smallest gap between two distinct values of ``values`` (a dequantized output's
    quantization step, when two of its values are one step apart); 0.0 with fewer than two distinct
    values. Gaps under 1e-6 of the largest magnitude are float rounding, not steps."""
    v = np.unique(np.asarray(values, dtype=np.float64).reshape(-1))
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return 0.0
    gaps = np.diff(v)
    gaps = gaps[gaps > 1e-6 * float(np.max(np.abs(v)))]
    return float(gaps.min()) if len(gaps) else 0.0


def _rows(a: np.ndarray, axis: int) -> np.ndarray:
    a = np.asarray(a)
    return np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis]) if a.ndim else a.reshape(1, 1)


def near_tie_tolerance(fi: np.ndarray, qi: np.ndarray, fv: np.ndarray, qv: np.ndarray) -> tuple[float, float, float]:
    """(tolerance, step, RMS error) for rows of float / quantized indices ``fi`` / ``qi`` and their
    values ``fv`` / ``qv`` (``[rows, k]``): the RMS error is of the quantized value of each element
    both select against float's value of it."""
    step = resolution(qv)
    err = []
    for F, Q, a, b in zip(fi, qi, fv, qv):
        where = {int(e): p for p, e in enumerate(Q)}
        err.extend(float(b[where[int(e)]]) - float(a[p]) for p, e in enumerate(F) if int(e) in where)
    rms = float(np.sqrt(np.mean(np.square(err)))) if err else 0.0
    return max(NEAR_TIE_STEPS * step, NEAR_TIE_SIGMAS * rms), step, rms


def topk_quality(name: str, float_idx: np.ndarray, quant_idx: np.ndarray, thresholds: Thresholds,
                 source: TopKSource = TopKSource(), float_values: np.ndarray | None = None,
                 quant_values: np.ndarray | None = None) -> OutputQuality:
    """A TopK's indices output (ONNX layout, examples first) against float's: set and order
    agreement, near-ties excused (module docstring). ``float_values`` / ``quant_values``: the TopK's
    values output of each model (same shape), None when it is not a model output."""
    f, q = np.asarray(float_idx), np.asarray(quant_idx)
    shape = tuple(int(d) for d in f.shape[1:])
    if f.shape != q.shape:
        return OutputQuality(name, shape, None, None, 1, None, None, (), None,
                             (f"shape {list(q.shape[1:])} where float's is {list(f.shape[1:])}",), (), 1,
                             kind=OutputKind.TOPK.value)
    axis = source.axis % f.ndim if f.ndim else 0
    fi, qi = _rows(f, axis).astype(np.int64), _rows(q, axis).astype(np.int64)
    rows, k = fi.shape
    have_values = float_values is not None and quant_values is not None \
        and np.shape(float_values) == f.shape and np.shape(quant_values) == f.shape
    if have_values:
        fv, qv = _rows(float_values, axis).astype(np.float64), _rows(quant_values, axis).astype(np.float64)
        tol, step, rms = near_tie_tolerance(fi, qi, fv, qv)
    else:
        fv = qv = None
        tol = step = rms = None
    kept = excused = counted = ordered = near = 0
    for r in range(rows):
        F, Q = fi[r], qi[r]
        in_q = set(Q.tolist())
        where_f = {int(e): p for p, e in enumerate(F)}
        # what the quantized model selected instead, by its value of it
        extra = [float(qv[r, p]) for p, e in enumerate(Q) if int(e) not in where_f] if have_values else []
        for p, e in enumerate(F):
            if int(e) in in_q:
                kept += 1
            elif have_values:          # excused when traded for a near-tie of it (each extra element once)
                close = [j for j, value in enumerate(extra) if abs(value - fv[r, p]) <= tol]
                if close:
                    excused += 1
                    extra.pop(close[0])
        for p, e in enumerate(Q):
            pf = where_f.get(int(e))
            if pf is None:
                continue
            counted += 1
            if pf == p:
                ordered += 1
            elif have_values and abs(fv[r, p] - fv[r, pf]) <= tol:
                ordered += 1
                near += 1
    total = rows * k
    set_agreement = (kept + excused) / total if total else 1.0
    order_agreement = ordered / counted if counted else 1.0
    positional = float(np.mean(fi == qi)) if fi.size else 1.0
    need = thresholds.min_index_agreement
    failures = []
    if set_agreement < need:
        failures.append(f"{100 * (1 - set_agreement):.1f}% of the elements float's TopK selects are not selected "
                        f"(set agreement {100 * set_agreement:.1f}% < {100 * need:g}%"
                        + (f"; elements traded for a near-tie within {tol:.3g} excused)" if have_values else ")"))
    if have_values and order_agreement < need:
        failures.append(f"{100 * (1 - order_agreement):.1f}% of the selected elements are out of float's order where "
                        f"float's values differ by more than {tol:.3g} (order agreement {100 * order_agreement:.1f}% "
                        f"< {100 * need:g}%)")
    not_judged = None
    if not have_values and source.k is not None and source.k == source.n and not failures:
        not_judged = ("a TopK selecting every element whose values are not a model output: the set is all of them "
                      "and near-ties in its order cannot be told")
    metrics = {"set_agreement": set_agreement, "order_agreement": order_agreement if have_values else None,
               "order_judged": bool(have_values), "positional_agreement": positional,
               "topk_agreement": min(set_agreement, order_agreement) if have_values else set_agreement,
               "near_tie_tolerance": tol, "values_step": step, "values_rms_error": rms,
               "near_tie_swaps": near if have_values else None, "excused_boundary": excused if have_values else None,
               "k": k, "rows": rows}
    return OutputQuality(name, shape, None, None, 1, None, None, (), None, tuple(failures), (), 1,
                         kind=OutputKind.TOPK.value, not_judged=not_judged, metrics=metrics)
