"""Verdicts that ask a task's question: a classifier's top-1, a sequence's decoded string, a
map's thresholded region.

* classifier ``[N, K]`` / ``[N, 1, .., K]``: top-1 agreement with float (``min_top1_agreement``) on
  the examples float decides (top-1 probability at least ``min_decisive_margin`` above top-2; the
  others counted as undecided, none decisive: not judged), top-5 agreement (float's top-1 among the
  quantized top 5) shown; a class float picks that the
  quantized model mostly loses fails even when the overall agreement holds (a dead class column).
  A confident softmax takes few distinct int8 values: that is not degeneracy, so none is checked.
* sequence ``[N, T, C]`` (a class distribution per step, e.g. CTC text recognition): per-step
  argmax agreement (``min_step_agreement``) and whole-sequence agreement after CTC's greedy
  decoding -- repeats collapsed, the blank dropped (``min_sequence_agreement``; Graves et al.
  2006, best-path decoding).
* dense map ``[N, C, H, W]`` (a DB text detector's probability map, a mask): IoU of the map
  binarized at one threshold on both sides (``min_map_iou``) plus a floor on its centered SQNR
  (``min_map_sqnr_db``). A map in [0, 1] is binarized at ``map_threshold`` (0.3: PaddleOCR's DB
  ``thresh``); any other map at Otsu's threshold of the float values (the cut that best splits
  them in two classes: maximal between-class variance; Otsu 1979), applied to both sides. A float
  map empty at that threshold gives no region to compare: not judged (unless the quantized map
  marks a region there: a failure).
"""
from __future__ import annotations

import numpy as np

from edgenet.verdicts.base import (OutputKind, OutputQuality, Thresholds, _list, _pct, centered_sqnr_db,
                                   error_metrics, plain_sqnr_db)
from edgenet.verdicts.generic import MIN_INDEX_KEPT, lost_labels, onnx_layout

NO_SIGNAL = "no signal in the evaluation data"
MIN_RAW_STEP_AGREEMENT = 0.9   # sequence: steps kept even counting those only moved (healthy: 94-96% on
# the English PP-OCRv4 recognizer, whose strings were 99.2% float's; a shift of every character: 70%)
#: a CTC head's blank wins at least this share of its steps (a text line's characters take a few of
#: the steps; ddddocr's CRNN: 5 characters in 24 steps, blank on 70% of them)
MIN_BLANK_SHARE = 0.3
SPURIOUS_REGION = 1e-3   # a quantized map marking more than this share where float marks nothing fails


def _base(name, f, q, kind: OutputKind, axis_name: str, failures, metrics, top1=None, not_judged=None):
    whole_plain = plain_sqnr_db(f, q)
    whole = centered_sqnr_db(f, q) if len(f) > 1 else whole_plain
    return OutputQuality(name, tuple(int(d) for d in f.shape[1:]), whole_plain, whole, 1, None, None, (), top1,
                         tuple(failures), (), 1, None, kind=kind.value, not_judged=not_judged, metrics=metrics,
                         axis_name=axis_name, **error_metrics(f, q))


def classifier_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                       thresholds: Thresholds) -> OutputQuality:
    """Scores, logits or probabilities of K classes per example: judged by top-1 agreement on the
    examples float decides -- its top-1 probability (logits through a softmax; sigmoid scores as
    they are) at least ``min_decisive_margin`` above its top-2. An example float barely decides
    (an untrained or near-uniform output, two classes a hair apart) may change its top-1 under any
    rounding: that is no damage, so it is counted (``undecided_examples``) and not judged; with no
    decisive example the output is not judged (damage that shows even so -- NaN, a class collapsed
    to one value -- still fails)."""
    from edgenet.verdicts.vectors import decision_margin

    f = onnx_layout(float_out, channels_last).astype(np.float32)
    q = onnx_layout(quant_out, channels_last).astype(np.float32)
    n = len(f)
    f2, q2 = f.reshape(n, -1), q.reshape(n, -1)
    failures = [] if np.isfinite(q2).all() else ["NaN or infinite values"]
    tf, tq = np.argmax(f2, 1), np.argmax(q2, 1)
    decisive = decision_margin(f2) >= thresholds.min_decisive_margin if n else np.zeros(0, dtype=bool)
    d = int(decisive.sum())
    top1 = float(np.mean(tf[decisive] == tq[decisive])) if d else None
    metrics: dict = {"top1_agreement": top1, "top1_agreement_all": float(np.mean(tf == tq)) if n else 1.0,
                     "decisive_examples": d, "undecided_examples": n - d}
    if f2.shape[1] >= 5:
        top5q = np.argsort(-q2[decisive], axis=1, kind="stable")[:, :5]
        metrics["top5_agreement"] = float(np.mean(np.any(top5q == tf[decisive][:, None], axis=1))) if d else None
    not_judged = None
    undecided = f"; {n - d} of {n} examples undecided (margin < {thresholds.min_decisive_margin:g}) not judged" \
        if n - d else ""
    if not d:
        not_judged = (f"{NO_SIGNAL}: float's top-1 leads its top-2 by less than {thresholds.min_decisive_margin:g} "
                      f"(probability) on every one of the {n} examples: undecided, an untrained or near-uniform "
                      f"output (values an app reads as they are: --output-kind {name}=generic)")
    elif top1 < thresholds.min_top1_agreement:
        changed = int(np.sum(tf[decisive] != tq[decisive]))
        failures.append(f"top-1 agreement {_pct(top1)} < {100 * thresholds.min_top1_agreement:g}% ({changed} of the "
                        f"{d} examples float decides pick another class{undecided})")
    lost = lost_labels(tf[decisive], tq[decisive], max(3, 0.05 * d)) if d else []
    if lost:
        shown = ", ".join(f"{int(v)} ({100 * k:.0f}% kept)" for k, v in lost[:6])
        failures.append(f"class{'es' if len(lost) > 1 else ''} {shown} mostly lost where float picks "
                        f"{'them' if len(lost) > 1 else 'it'} (< {100 * MIN_INDEX_KEPT:g}% kept)")
    if n >= 2 and len(np.unique(tf)) == 1:
        # float picks one class for every example: top-1 agreement cannot tell whether the other
        # classes survive; a class whose scores int8 collapses to a value or two where float's vary
        # is lost whatever the data shows of top-1
        collapsed = [c for c in range(f2.shape[1]) if c != tf[0] and len(np.unique(q2[:, c])) <= 1
                     and len(np.unique(f2[:, c])) >= min(n, 4)]
        if collapsed:
            failures.append(f"class{'es' if len(collapsed) > 1 else ''} {_list(collapsed)} take one value in "
                            f"every example where float's scores vary (float picks class {int(tf[0])} for all "
                            f"{n} examples, so top-1 agreement cannot show it)")
    if failures:
        not_judged = None
    return _base(name, f, q, OutputKind.CLASSIFIER, "class", failures, metrics, top1=top1, not_judged=not_judged)


def ctc_decode(steps: np.ndarray, blank: int) -> list[tuple[int, ...]]:
    """Greedy (best-path) CTC decoding of argmax indices ``steps`` [N, T]: repeats collapsed, then
    the blank dropped; one tuple of class indices per example."""
    out = []
    for row in np.asarray(steps):
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        out.append(tuple(int(c) for c in row[keep] if c != blank))
    return out


def _decisive_mask(f: np.ndarray, margin: float) -> np.ndarray:
    """[N * T] booleans: the steps of ``f`` [N, T, C] float decides: top-1 probability (a softmax
    over C unless the values are one already) at least ``margin`` above top-2."""
    from edgenet.verdicts.vectors import decision_margin

    rows = np.asarray(f, dtype=np.float64).reshape(-1, f.shape[-1]) if f.ndim >= 2 and f.size else np.zeros((0, 2))
    return decision_margin(rows) >= margin if len(rows) else np.zeros(0, bool)


def sequence_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                     thresholds: Thresholds, blank: int | None = None) -> OutputQuality:
    """[N, T, C] class distributions per step: per-step argmax agreement and whole-sequence
    agreement after CTC decoding (``blank``: the blank class, default ``thresholds.ctc_blank``), both
    where float decides (top-1 at least ``min_decisive_margin`` above top-2: a step it barely decides may
    flip under any rounding; a sequence changed only at such steps is kept). Not judged
    when float decides no step (top-1 probability less than ``min_decisive_margin`` above top-2 on every
    step: an untrained or near-uniform output, whose argmax any rounding may change)."""
    f = np.asarray(float_out, dtype=np.float32)
    q = np.asarray(quant_out, dtype=np.float32)
    if blank is None:
        blank = thresholds.ctc_blank
        top = np.argmax(f, axis=-1)
        last = f.shape[-1] - 1
        if blank == 0 and np.mean(top == last) > max(np.mean(top == 0), MIN_BLANK_SHARE):
            blank = last            # the blank at the end of the alphabet (a PyTorch CTC head may put it there)
    failures = [] if np.isfinite(q).all() else ["NaN or infinite values"]
    af, aq = np.argmax(f, -1).reshape(len(f), -1), np.argmax(q, -1).reshape(len(q), -1)
    same = af == aq
    # judged where float decides, as a classifier's examples are: a step whose top-1 leads its top-2 by
    # less than min_decisive_margin may flip under any rounding (a DETR query between "no object" and a
    # class, a CTC step between a character and the blank); a flip there is no damage
    decisive = _decisive_mask(f, thresholds.min_decisive_margin).reshape(af.shape)
    step_all = float(np.mean(same)) if same.size else 1.0
    raw_step = float(np.mean(same[decisive])) if decisive.any() else step_all
    df, dq = ctc_decode(af, blank), ctc_decode(aq, blank)
    # a decoded sequence changed only where float's steps are undecided is no change
    kept = [a == b or not np.any(~same[k] & decisive[k]) for k, (a, b) in enumerate(zip(df, dq))]
    sequence = float(np.mean(kept)) if df else 1.0
    # steps that differ in an example decoding to float's sequence moved a character's boundary between
    # steps (CTC's alignment): the text the app reads is the same, so they count as agreeing (the
    # English PP-OCRv4 recognizer: 95.6% of steps, 99.2% of its strings, refused on steps alone)
    unchanged = np.asarray([a == b for a, b in zip(df, dq)], dtype=bool).reshape(-1, 1)
    aligned = same | unchanged
    shifted = int((aligned & ~same & decisive).sum())
    step = float(np.mean(aligned[decisive])) if decisive.any() else step_all
    with np.errstate(invalid="ignore"):
        per_step = np.where(decisive.any(axis=0), (aligned & decisive).sum(axis=0) / np.maximum(decisive.sum(axis=0), 1),
                            1.0) if aligned.size else np.ones(1)
    worst = int(np.argmin(per_step))
    metrics = {"step_agreement": step, "step_agreement_raw": raw_step, "steps_shifted_in_kept_sequences": shifted,
               "step_agreement_all": step_all, "sequence_agreement": sequence,
               "worst_step": worst,
               "worst_step_agreement": float(per_step[worst]), "blank": blank,
               "sequences_changed_at_undecided_steps": int(sum(k and a != b for k, a, b in zip(kept, df, dq)))}
    not_judged = None
    decided = int(decisive.sum())
    metrics["decisive_steps"] = decided
    if not any(df) and not any(dq):
        not_judged = f"{NO_SIGNAL}: float and {name!r} decode every example to an empty sequence"
    elif not decided and not failures:
        # as a classifier's undecided examples: a step float barely decides may change its argmax under
        # any rounding, and with none decided there is nothing int8 could keep or lose
        not_judged = (f"{NO_SIGNAL}: float's top-1 leads its top-2 by less than {thresholds.min_decisive_margin:g} "
                      f"(probability) on every step of the {len(f)} examples: undecided, an untrained or "
                      "near-uniform output")
    else:
        if step < thresholds.min_step_agreement:
            bad = np.flatnonzero(per_step < thresholds.min_step_agreement)
            failures.append(f"per-step agreement {_pct(step)} < {100 * thresholds.min_step_agreement:g}% "
                            f"(steps {_list([int(t) for t in bad])} of {af.shape[1]}; worst: step {worst} "
                            f"at {_pct(per_step[worst])})")
        if raw_step < MIN_RAW_STEP_AGREEMENT:
            # alignment shifts everywhere are not healthy noise: a boundary moved onto the one blank between
            # two equal characters merges them ("ll" -> "l"), which 32 examples may not show
            failures.append(f"per-step agreement {_pct(raw_step)} < {100 * MIN_RAW_STEP_AGREEMENT:g}% counting "
                            "steps whose character only moved (a shift this common merges doubled characters)")
        if sequence < thresholds.min_sequence_agreement:
            changed = sum(not k for k in kept)
            failures.append(f"decoded sequences agree on {_pct(sequence)} of examples < "
                            f"{100 * thresholds.min_sequence_agreement:g}% ({changed} of {len(df)} change; "
                            f"worst: step {worst}, {_pct(per_step[worst])} of its argmax kept)")
    return _base(name, f, q, OutputKind.SEQUENCE, "step", failures, metrics, not_judged=not_judged)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the histogram cut maximizing the between-class variance."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if hi <= lo:
        return hi
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centers)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = -1
    top = np.flatnonzero(between >= between.max() * (1 - 1e-9))   # a plateau between two modes: its middle
    return float(edges[(int(top[0]) + int(top[-1])) // 2 + 1])


def map_threshold(f: np.ndarray, thresholds: Thresholds) -> tuple[float, str]:
    """(threshold, how it was chosen) for binarizing a float map."""
    if f.size and float(f.min()) >= 0.0 and float(f.max()) <= 1.0:
        return thresholds.map_threshold, "map in [0, 1]"
    return otsu_threshold(f), "Otsu's threshold of the float map"


def map_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                thresholds: Thresholds) -> OutputQuality:
    """[N, C, H, W] maps: IoU of the binarized maps (pooled over examples; per channel, the worst
    shown) and a floor on the centered SQNR."""
    f = onnx_layout(float_out, channels_last).astype(np.float32)
    q = onnx_layout(quant_out, channels_last).astype(np.float32)
    failures = [] if np.isfinite(q).all() else ["NaN or infinite values"]
    t, how = map_threshold(f, thresholds)
    fb, qb = f > t, q > t
    metrics: dict = {"map_threshold": t, "threshold_from": how, "float_foreground": float(fb.mean()),
                     "quantized_foreground": float(qb.mean())}
    not_judged = None
    whole = centered_sqnr_db(f, q) if len(f) > 1 else plain_sqnr_db(f, q)
    if not fb.any():
        if qb.mean() > SPURIOUS_REGION:
            failures.append(f"marks {_pct(qb.mean())} of the map above {t:.3g} where float marks nothing")
        else:
            not_judged = f"{NO_SIGNAL}: the float map is below its threshold {t:.3g} everywhere"
    else:
        reduce = (0,) + tuple(range(2, f.ndim))
        inter = np.sum(fb & qb, axis=reduce) if f.ndim >= 3 else np.sum(fb & qb)
        union = np.sum(fb | qb, axis=reduce) if f.ndim >= 3 else np.sum(fb | qb)
        iou = float(np.sum(inter) / np.sum(union))
        metrics["map_iou"] = iou
        if np.ndim(inter) and len(inter) > 1:
            per = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
            metrics["worst_channel_iou"] = (int(np.argmin(per)), float(per.min()))
        if iou < thresholds.min_map_iou:
            failures.append(f"IoU of the map binarized at {t:.3g} is {iou:.3f} < {thresholds.min_map_iou:g}")
        if not whole >= thresholds.min_map_sqnr_db:
            failures.append(f"SQNR {whole:.1f} dB < {thresholds.min_map_sqnr_db:g} dB")
    return _base(name, f, q, OutputKind.DENSE_MAP, "channel", failures, metrics, not_judged=not_judged)
