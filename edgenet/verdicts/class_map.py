"""The verdict on a class distribution at each of many positions: an SSD head's scores per anchor
(``[N, anchors, classes]`` after a softmax), a segmentation output flattened to ``[N, H*W, classes]``.

What the app reads there is the top class of each position where the model is decisive, not a
sequence: decoding thousands of anchors as a CTC string (the SEQUENCE kind, for at most
``MAX_SEQUENCE_STEPS`` steps) would call any healthy model damaged. Judged: top-class agreement
on the positions where float's top probability is at least ``DECISIVE`` (``min_step_agreement``),
and per class, so that a dominant background cannot hide a lost foreground class
(:func:`edgenet.verdicts.generic.lost_labels`). With no decisive position the output is not judged.
"""
from __future__ import annotations

import numpy as np

from edgenet.verdicts.base import OutputKind, OutputQuality, Thresholds
from edgenet.verdicts.generic import MIN_INDEX_KEPT, lost_labels
from edgenet.verdicts.tasks import NO_SIGNAL, _base, _pct

MAX_SEQUENCE_STEPS = 512   # more steps than any text line has: positions (anchors, pixels), not a sequence
DECISIVE = 0.5             # a position whose top class has at least this probability
MIN_CLASS_POSITIONS = 5    # a class float is decisive for at this many positions is judged on its own


def probabilities(x: np.ndarray) -> np.ndarray:
    """``x`` as probabilities over its last axis: a distribution as it is, anything else (logits,
    log-probabilities) through a softmax (log-probabilities: the same as exponentiating them)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and float(x.min()) >= -1e-6 and np.allclose(x.sum(-1), 1.0, atol=0.02):
        return x
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def class_map_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray,
                      thresholds: Thresholds) -> OutputQuality:
    """``[N, P, C]`` class distributions (ONNX layout): top-class agreement where float is decisive."""
    f, q = np.asarray(float_out, dtype=np.float32), np.asarray(quant_out, dtype=np.float32)
    failures = [] if np.isfinite(q).all() else ["NaN or infinite values"]
    pf = probabilities(f)
    decisive = pf.max(-1) >= DECISIVE
    af, aq = np.argmax(f, -1)[decisive], np.argmax(q, -1)[decisive]
    metrics: dict = {"decisive_positions": int(decisive.sum()), "positions": int(decisive.size)}
    not_judged = None
    if not af.size:
        not_judged = f"{NO_SIGNAL}: float's top class reaches {DECISIVE:g} at no position"
    else:
        agree = float(np.mean(af == aq))
        metrics["position_agreement"] = agree
        if agree < thresholds.min_step_agreement:
            failures.append(f"top class agrees at {_pct(agree)} of the {af.size} positions float is decisive at "
                            f"< {100 * thresholds.min_step_agreement:g}%")
        lost = lost_labels(af, aq, MIN_CLASS_POSITIONS)
        if lost:
            shown = ", ".join(f"{int(v)} ({100 * k:.0f}% kept)" for k, v in lost[:6])
            failures.append(f"class{'es' if len(lost) > 1 else ''} {shown} mostly lost where float is decisive "
                            f"(< {100 * MIN_INDEX_KEPT:g}% kept)")
    return _base(name, f, q, OutputKind.CLASS_MAP, "position", failures, metrics, not_judged=not_judged)
