"""``[N, K]`` outputs: a classifier's class scores, or values an app reads as they are.

A vector of K values per example is a classifier's output only when its argmax is what the app
reads. A regression head (landmarks, a box, an age) or an embedding has the same shape, and
judging it by top-1 alone passes a damaged head whose largest coordinate happens to stay the
largest. What tells them apart, from the float values on the evaluation data
(:func:`vector_kind`; the user's ``--output-kind NAME=classifier|generic|embedding`` overrides):

* a distribution (softmax probabilities, or log-probabilities) -> CLASSIFIER, whatever else;
* rows of one L2 norm (within 1%, and its spread under 1% of the rows'), K >= 8 -> EMBEDDING (an L2-normalized embedding: judged by the
  cosine similarity of each example's vector with float's, ``min_embedding_cosine``);
* K = 4 laid out as a box on every example (x2 >= x1 and y2 >= y1; or non-negative
  cx, cy, w, h with the box's left and top edges in the image), its largest value not standing out
  of its row as in (c) below -> GENERIC (a box regressor; a 4-class classifier's logits on data of
  one class can be so ordered too, but their winner stands out);
* coordinates: each value keeps its own level and the largest is no decision -- every one of
  (a) the per-value means over the examples explain at least 90% of the values' variance
  (x of an eye, y of the mouth: columns have levels) or each value moves with another (its
  highest correlation with another value, averaged over the values, >= 0.9: a face moving in the
  image moves every landmark with it; a box's corners move together), (b) the largest value of an
  example is not high for its own column (its z-score within the column averages under 1: a
  classifier's winning class scores high because the example is of that class), and (c) it does not
  stand out of its row (the median gap to the second largest is under 3 within-column standard
  deviations; a classifier's logit margin does, even on data of one class) -> GENERIC;
* two values -> CLASSIFIER (a binary classifier's logits on data of one class have levels too:
  PaddleOCR's direction classifier's explain 67-80% on lines of one direction);
* anything else -> CLASSIFIER (logits, sigmoid scores; untrained outputs with nothing to tell: the
  classifier verdict then says no example is decisive).

Fewer than 8 examples, or non-finite values: CLASSIFIER (too little to tell; the former default).
The rule keeps a real classifier's logits a classifier (it needs positive evidence of
coordinates); an unnormalized embedding reads as logits, and its argmax is then undecided on
most examples: "not judged", with the override to name it.
"""
from __future__ import annotations

import numpy as np

from edgenet.verdicts.base import OutputKind, OutputQuality, Thresholds
from edgenet.verdicts.generic import onnx_layout

DISTRIBUTION_TOLERANCE = 0.02   # |sum p - 1| (or |logsumexp|) per row for a distribution
UNIT_NORM_TOLERANCE = 0.01      # rows whose L2 norms stay within 1% of their median: an embedding
MIN_EMBEDDING_DIMS = 8
MAX_SIMILARITY_EXAMPLES = 512    # pairs of at most this many examples (130,816)
MIN_SIMILARITY_CORRELATION = 0.5  # embedding: pairwise cosines of int8 against float's, below -> collapsed
                                  # (healthy per-tensor int8 keeps >= 0.94 while examples differ by >= 5%
                                  # of their norm; a collapse onto a shared direction ~0 at cosine 0.99)
MIN_EXAMPLES = 8                # fewer examples cannot tell coordinates from class scores
LEVEL_SHARE = 0.9               # (a) share of the variance the per-value means explain
MOVE_TOGETHER = 0.9             # (a) each value's highest correlation with another, averaged
WINNER_Z = 1.0                  # (b) the largest value's z-score within its own column, averaged
MARGIN_STDS = 3.0               # (c) median top-1 - top-2 gap in within-column standard deviations


def is_distribution(x: np.ndarray) -> bool:
    """Probabilities over the last axis (>= 0, each row summing to 1) or log-probabilities (<= 0,
    each row's logsumexp 0), within DISTRIBUTION_TOLERANCE."""
    x = np.asarray(x, dtype=np.float64)
    if not x.size:
        return False
    if x.min() >= -1e-6 and np.all(np.abs(x.sum(-1) - 1) <= DISTRIBUTION_TOLERANCE):
        return True
    if x.max() <= 1e-6:
        m = x.max(-1, keepdims=True)
        lse = m[..., 0] + np.log(np.exp(x - m).sum(-1))
        return bool(np.all(np.abs(lse) <= DISTRIBUTION_TOLERANCE))
    return False


def class_probabilities(x: np.ndarray) -> np.ndarray:
    """``x`` [N, K] as per-class probabilities: a distribution as it is (log-probabilities
    exponentiated), independent scores in [0, 1] (sigmoids) as they are, logits through a softmax."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and x.min() >= -1e-6 and x.max() <= 1 + 1e-6:
        return x
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def decision_margin(x: np.ndarray) -> np.ndarray:
    """[N] top-1 minus top-2 probability of each example (:func:`class_probabilities`)."""
    p = class_probabilities(x)
    if p.shape[-1] < 2:
        return np.ones(len(p))
    top = np.sort(p, axis=-1)[:, -2:]
    return top[:, 1] - top[:, 0]


def _unit_rows(x: np.ndarray) -> bool:
    """Every row of one L2 norm (within UNIT_NORM_TOLERANCE of the median), while the rows
    themselves vary: the norms' spread is under that share of the rows' spread about their mean
    (a large offset, 100 + noise, has near-constant norms too, but they move with the noise)."""
    norms = np.linalg.norm(x, axis=1)
    med = float(np.median(norms))
    spread = float(np.sqrt(np.mean(np.sum((x - x.mean(0)) ** 2, axis=1))))
    return med > 0 and spread > 0 and bool(np.all(np.abs(norms / med - 1) <= UNIT_NORM_TOLERANCE)) \
        and float(np.std(norms)) <= UNIT_NORM_TOLERANCE * spread


def _box_rows(x: np.ndarray) -> bool:
    """[N, 4] boxes on every example: x1 y1 x2 y2 ordered, or cx cy w h non-negative with the box's
    left and top edges in the image."""
    tol = 1e-3 * max(float(np.abs(x).max()), 1e-9)
    xyxy = np.all(x[:, 2] >= x[:, 0] - tol) and np.all(x[:, 3] >= x[:, 1] - tol)
    cxcywh = (np.all(x >= -tol) and np.all(x[:, 2:] > 0) and np.all(x[:, 0] >= x[:, 2] / 2 - tol)
              and np.all(x[:, 1] >= x[:, 3] / 2 - tol))
    return bool(xyxy or cxcywh)


def coordinate_evidence(x: np.ndarray) -> dict[str, float]:
    """The figures :func:`vector_kind` reads for (a)-(c): level_share, move_together, winner_z,
    margin_stds."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(0), x.std(0)
    within = float(np.mean(std ** 2))
    between = float(np.var(mean))
    level = between / (between + within) if between + within > 0 else 0.0
    varying = std > 1e-12 * max(float(np.abs(x).max()), 1e-30)
    together = 0.0
    if varying.sum() >= 2:
        c = np.corrcoef(x[:, varying], rowvar=False)
        np.fill_diagonal(c, -1.0)
        together = float(np.mean(c.max(1)))
    win = np.argmax(x, 1)
    z = (x[np.arange(len(x)), win] - mean[win]) / np.where(std[win] > 0, std[win], np.inf)
    top = np.sort(x, axis=1)[:, -2:]
    gap = float(np.median(top[:, 1] - top[:, 0]))
    margin = gap / np.sqrt(within) if within > 0 else np.inf
    return {"level_share": level, "move_together": together, "winner_z": float(np.mean(z)),
            "margin_stds": float(margin)}


def vector_kind(float_out: np.ndarray) -> OutputKind:
    """CLASSIFIER, EMBEDDING or GENERIC for an ``[N, K]`` output (``[N, 1, .., K]`` and ``[N, K, 1, 1]``
    flattened) from its float values; see the module's rule."""
    f = np.asarray(float_out)
    x = f.reshape(len(f), -1).astype(np.float64) if f.ndim >= 2 and len(f) else f
    if x.ndim != 2 or x.shape[1] < 2 or len(x) < 2 or not np.isfinite(x).all():
        return OutputKind.CLASSIFIER
    if is_distribution(x):
        return OutputKind.CLASSIFIER
    if x.shape[1] >= MIN_EMBEDDING_DIMS and _unit_rows(x):
        return OutputKind.EMBEDDING
    if len(x) < MIN_EXAMPLES:
        return OutputKind.CLASSIFIER
    if x.shape[1] < 3:
        return OutputKind.CLASSIFIER     # two values: a binary classifier's logits (on data of one class
                                         # they have levels too: PaddleOCR's direction classifier, 0.8)
    e = coordinate_evidence(x)
    if x.shape[1] == 4 and _box_rows(x) and e["margin_stds"] < MARGIN_STDS:
        return OutputKind.GENERIC        # a box -- unless one value stands out of every row, as a
                                         # 4-class classifier's winner does on data of one class
    if (e["level_share"] >= LEVEL_SHARE or e["move_together"] >= MOVE_TOGETHER) and e["winner_z"] < WINNER_Z \
            and e["margin_stds"] < MARGIN_STDS:
        return OutputKind.GENERIC
    return OutputKind.CLASSIFIER


def similarity_agreement(f: np.ndarray, q: np.ndarray) -> float | None:
    """The correlation, over every pair of examples, of their cosine similarity in ``q`` [N, K] with
    that in ``f`` [N, K]: what a retrieval or a verification compares. None with fewer than
    MIN_EXAMPLES examples, or when float's similarities do not vary (nothing to keep)."""
    if len(f) < MIN_EXAMPLES or not (np.isfinite(f).all() and np.isfinite(q).all()):
        return None
    nf, nq = np.linalg.norm(f, axis=1), np.linalg.norm(q, axis=1)
    if np.any(nf == 0) or np.any(nq == 0):
        return None
    fu, qu = f / nf[:, None], q / nq[:, None]
    if len(fu) > MAX_SIMILARITY_EXAMPLES:      # pairs grow as N^2: evenly spaced examples
        keep = np.linspace(0, len(fu) - 1, MAX_SIMILARITY_EXAMPLES).astype(int)
        fu, qu = fu[keep], qu[keep]
    pairs = np.triu_indices(len(fu), 1)
    a, b = (fu @ fu.T)[pairs], (qu @ qu.T)[pairs]
    if np.std(a) <= 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1]) if np.std(b) > 1e-12 else 0.0


def _pairs(n: int) -> int:
    n = min(n, MAX_SIMILARITY_EXAMPLES)
    return n * (n - 1) // 2


def embedding_quality(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                      thresholds: Thresholds) -> OutputQuality:
    """An embedding ``[N, K]``: the cosine similarity of each example's vector with float's, their
    mean at least ``min_embedding_cosine`` (the worst example shown), and the examples' cosines to each
    other following float's (:func:`similarity_agreement` at least MIN_SIMILARITY_CORRELATION: an
    embedding whose vectors share one large direction keeps cosine 0.99 with float's while int8 loses
    what tells the examples apart). SQNR is not asked: what the
    app compares is directions (a retrieval's or a verification's cosine), and an error that keeps
    them costs SQNR (cosine 0.99 is about 17 dB)."""
    from edgenet.verdicts.tasks import _base

    f = onnx_layout(float_out, channels_last).astype(np.float64)
    q = onnx_layout(quant_out, channels_last).astype(np.float64)
    f2, q2 = f.reshape(len(f), -1), q.reshape(len(q), -1)
    failures = [] if np.isfinite(q2).all() else ["NaN or infinite values"]
    nf, nq = np.linalg.norm(f2, axis=1), np.linalg.norm(q2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((nf > 0) & (nq > 0), np.sum(f2 * q2, 1) / (nf * nq), np.where((nf == 0) & (nq == 0), 1.0, 0.0))
    cos = np.nan_to_num(cos, nan=0.0)
    worst = int(np.argmin(cos)) if len(cos) else 0
    mean = float(np.mean(cos)) if len(cos) else 1.0
    metrics = {"cosine_mean": mean, "cosine_worst": float(cos[worst]) if len(cos) else 1.0,
               "worst_example": worst}
    if mean < thresholds.min_embedding_cosine:
        failures.append(f"cosine similarity with float's embedding {mean:.3f} on average < "
                        f"{thresholds.min_embedding_cosine:g} (worst: example {worst} at {cos[worst]:.3f}; "
                        f"{int(np.sum(cos < thresholds.min_embedding_cosine))} of {len(cos)} examples below)")
    together = similarity_agreement(f2, q2)
    if together is not None:
        metrics["similarity_correlation"] = together
        if together < MIN_SIMILARITY_CORRELATION:
            failures.append(f"the examples' similarities to each other no longer follow float's (correlation "
                            f"{together:.2f} < {MIN_SIMILARITY_CORRELATION:g} over {_pairs(len(f2))} "
                            "pairs): the embedding collapsed onto what the examples share")
    return _base(name, f.astype(np.float32), q.astype(np.float32), OutputKind.EMBEDDING, "value", failures,
                 metrics)
