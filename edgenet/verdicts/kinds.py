"""Which verdict an output gets: its kind, from its shape and values, or as the user says.

:func:`detect_kind` (ONNX layout, examples first):

* integer outputs (ArgMax maps) -> INDEX;
* ``[N, K]`` / ``[N, 1, .., K]`` / ``[N, K, 1, 1]``, K >= 2 -> CLASSIFIER, unless its values say
  it is an embedding (rows of one L2 norm: EMBEDDING) or coordinates (a box, landmarks: GENERIC):
  :func:`edgenet.verdicts.vectors.vector_kind`;
* ``[N, T, C]`` whose float values are a distribution over the last axis at every step
  (probabilities summing to 1, or log-probabilities whose logsumexp is 0) -> SEQUENCE for
  T <= 512 steps, CLASS_MAP for more (anchors or pixels, not a text line: :mod:`.class_map`);
* ``[N, V, A]`` / ``[N, A, V]`` with one axis at least 16x the other, 5 <= V, values 4.. in
  [0, 1] (scores) and values 0..3 boxes in pixels or normalized -> DETECTION (YOLO);
  ``[N, Q, 4 + C]`` with normalized boxes and scores (or logits) that mostly detect nothing ->
  DETECTION (DETR): :func:`edgenet.verdicts.detection.detection_layout`;
* ``[N, K, 6]`` rows sorted by a score in [0, 1] in column 4, integer class ids in column 5 ->
  DETECTION (an end-to-end detector's detections: :mod:`edgenet.verdicts.e2e`);
* boxes ``[N, Q, 4]`` beside scores or logits ``[N, Q, C]`` over the same Q (not a distribution:
  that is an SSD head's CLASS_MAP) -> DETECTION, the two judged as one head
  (:func:`detection_pairs`);
* ``[N, C, H, W]`` with C <= 4, H, W >= 8 and values in [0, 1] -> DENSE_MAP (a probability map,
  a mask; wider tensors are features, maps of other ranges need ``NAME=map``: GENERIC);
* ``[N, C, H, W]`` with C > 4 whose values are a distribution over C at every pixel (a segmentation
  model's softmax) -> CLASS_MAP (logits stay GENERIC: ``NAME=class_map`` says otherwise);
* anything else -> GENERIC.

:class:`KindSpec` is a user's override, ``NAME=KIND[:OPTION]`` (``sequence:blank=N``,
``detection:v5`` / ``detection:v8`` / ``detection:detr`` / ``detection:e2e``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from edgenet.verdicts.base import OutputKind, OutputQuality, Thresholds, Verdict
from edgenet.verdicts.class_map import MAX_SEQUENCE_STEPS, class_map_quality
from edgenet.verdicts.detection import (LAYOUTS, detection_layout, detection_quality, normalized_boxes,
                                        paired_detection_quality, sparse_scores)
from edgenet.verdicts.e2e import E2E_VALUES, is_e2e
from edgenet.verdicts.generic import index_quality, is_classifier_shaped, onnx_layout, output_quality
from edgenet.verdicts.tasks import MIN_BLANK_SHARE, classifier_quality, map_quality, sequence_quality
from edgenet.verdicts.topk import TopKSource, topk_quality
from edgenet.verdicts.vectors import embedding_quality, is_distribution, vector_kind

MAX_MAP_CHANNELS = 4


class KindError(ValueError):
    """A malformed or unknown ``NAME=KIND`` (the library turns it into a UsageError)."""


@dataclass(frozen=True)
class KindSpec:
    """``--output-kind NAME=KIND[:OPTION]``: output NAME is judged as KIND. ``blank``: a sequence's
    CTC blank class; ``layout``: a detection head's "v8" / "v5" / "detr" / "e2e"."""

    output: str
    kind: OutputKind
    blank: int | None = None
    layout: str | None = None

    def __str__(self) -> str:
        option = f":blank={self.blank}" if self.blank is not None else (f":{self.layout}" if self.layout else "")
        return f"{self.output}={self.kind.value}{option}"

    @classmethod
    def parse(cls, text: str) -> "KindSpec":
        """``NAME=KIND[:OPTION]``; KindError naming what is wrong and the choices."""
        choices = "|".join(k.value for k in OutputKind)
        aliases = {"dense_map": "map", "dense-map": "map", "classification": "classifier"}
        words = "|".join(re.escape(w) for w in [k.value for k in OutputKind] + list(aliases))
        found = re.fullmatch(rf"(.+)=({words})(?::(.*))?", str(text), flags=re.IGNORECASE | re.DOTALL)
        if found is None:
            name, sep, rest = str(text).partition("=")
            if not sep or not name or not rest:
                raise KindError(f"--output-kind {text!r}: expected NAME=KIND with KIND one of {choices}")
            raise KindError(f"--output-kind {text!r}: unknown kind {rest.split(':')[0]!r} (one of {choices})")
        name, kind_text, option = found.group(1), found.group(2).lower(), found.group(3) or ""
        kind = OutputKind(aliases.get(kind_text, kind_text))
        blank = layout = None
        if option:
            if kind is OutputKind.SEQUENCE and option.startswith("blank=") and option[6:].isdigit():
                blank = int(option[6:])
            elif kind is OutputKind.DETECTION and option in LAYOUTS:
                layout = option
            else:
                raise KindError(f"--output-kind {text!r}: unknown option {option!r} (sequence:blank=N, "
                                f"detection:{'|'.join(LAYOUTS)})")
        return cls(name, kind, blank, layout)


def output_kinds(value) -> tuple[KindSpec, ...]:
    """KindSpecs from the API's forms: {name: kind}, ["NAME=KIND", ...], KindSpecs (KindError
    for anything else or an unknown kind)."""
    if isinstance(value, (str, KindSpec)):
        value = [value]
    if isinstance(value, Mapping):
        value = [f"{k}={v.value if isinstance(v, OutputKind) else v}" for k, v in value.items()]
    try:
        items = list(value)
    except TypeError:
        raise KindError(f"output_kinds must map output names to kinds, not {type(value).__name__}") from None
    specs = tuple(v if isinstance(v, KindSpec) else KindSpec.parse(v) for v in items)
    names = [s.output for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise KindError(f"--output-kind names output {twice[0]!r} twice")
    return specs


def check_output_kinds(specs: Sequence[KindSpec], names: Sequence[str]) -> None:
    """KindError unless every spec names an output of the model, once."""
    seen = set()
    for s in specs:
        if s.output not in names:
            raise KindError(f"--output-kind {s}: the model has no output {s.output!r} "
                            f"(its outputs: {', '.join(names)})")
        if s.output in seen:
            raise KindError(f"--output-kind names output {s.output!r} twice")
        seen.add(s.output)


MIN_CTC_CLASSES = 10      # an alphabet: fewer classes are not a character set


def _is_ctc_logits(f: np.ndarray) -> bool:
    """``[N, T, C]`` raw scores of a CTC recognizer (before its softmax, as a PyTorch CRNN exports
    them): 2 <= T <= MAX_SEQUENCE_STEPS steps, at least MIN_CTC_CLASSES classes, and one class at an
    end of the alphabet (the blank: 0, as PaddleOCR and ddddocr put it, or C - 1) is the argmax of at
    least MIN_BLANK_SHARE of all steps. Encoder features of the same shape spread their argmax."""
    n, t, c = f.shape
    if not (2 <= t <= MAX_SEQUENCE_STEPS and c >= MIN_CTC_CLASSES and n):
        return False
    top = np.argmax(f, axis=2).reshape(-1)
    return max(float(np.mean(top == 0)), float(np.mean(top == c - 1))) >= MIN_BLANK_SHARE


def detect_kind(float_out: np.ndarray, index: bool = False) -> OutputKind:
    """The kind of an output from its float values (ONNX layout, examples first)."""
    f = np.asarray(float_out)
    if index:
        return OutputKind.INDEX
    if f.ndim >= 2 and (is_classifier_shaped(f.shape) or [d for d in f.shape[1:] if d != 1] == [f.shape[1]] != [1]):
        return vector_kind(f)             # [N, K], [N, 1, .., K], or a conv head's [N, K, 1, 1]
    if f.ndim == 3 and f.size and np.isfinite(f).all():
        if f.shape[1] >= 2 and f.shape[2] >= 2 and is_distribution(f):
            return OutputKind.SEQUENCE if f.shape[1] <= MAX_SEQUENCE_STEPS else OutputKind.CLASS_MAP
        if detection_layout(f) is not None:
            return OutputKind.DETECTION
        if _is_ctc_logits(f):
            return OutputKind.SEQUENCE
    if f.ndim == 4 and f.shape[1] <= MAX_MAP_CHANNELS and min(f.shape[2:]) >= 8 and f.size \
            and float(np.min(f)) >= 0.0 and float(np.max(f)) <= 1.0:
        return OutputKind.DENSE_MAP
    if f.ndim == 4 and f.shape[1] > MAX_MAP_CHANNELS and min(f.shape[2:]) >= 8 and f.size and np.isfinite(f).all() \
            and is_distribution(np.moveaxis(f, 1, -1)):
        return OutputKind.CLASS_MAP       # per-pixel class probabilities: a segmentation map
    return OutputKind.GENERIC


def output_verdict(name: str, float_out: np.ndarray, quant_out: np.ndarray, channels_last: bool,
                   thresholds: Thresholds, kind: OutputKind | KindSpec | None = None,
                   index: bool = False) -> OutputQuality:
    """One output judged by the metric of its kind (``kind`` None: :func:`detect_kind`)."""
    spec = kind if isinstance(kind, KindSpec) else None
    kind = spec.kind if spec else kind
    if kind is None:
        kind = detect_kind(onnx_layout(float_out, channels_last), index)
    given = spec is not None     # a kind the user named must fit the output: refused, not misjudged
    if kind is OutputKind.TOPK:     # named by the user, or a benchmark's record: no values beside it
        if given and not index and np.issubdtype(np.asarray(float_out).dtype, np.floating) \
                and not np.array_equal(float_out, np.round(float_out)):
            raise KindError(f"output {name!r} holds non-integer values: it cannot be judged as a TopK's indices")
        return topk_quality(name, onnx_layout(float_out, channels_last), onnx_layout(quant_out, channels_last),
                            thresholds)
    if kind is OutputKind.INDEX:
        if given and not index and np.issubdtype(np.asarray(float_out).dtype, np.floating) \
                and not np.array_equal(float_out, np.round(float_out)):
            raise KindError(f"output {name!r} holds non-integer values: it cannot be judged as indices")
        return index_quality(name, float_out, quant_out, channels_last, thresholds)
    if kind in (OutputKind.CLASSIFIER, OutputKind.EMBEDDING):
        if given and (index or not is_classifier_shaped(np.asarray(float_out).shape)):
            what = "a classifier (needs one score per class: [N, K])" if kind is OutputKind.CLASSIFIER else \
                "an embedding (needs one vector per example: [N, K])"
            raise KindError(f"output {name!r} of shape {list(np.asarray(float_out).shape[1:])} cannot be judged as "
                            f"{what}")
        judge_vector = classifier_quality if kind is OutputKind.CLASSIFIER else embedding_quality
        return judge_vector(name, float_out, quant_out, channels_last, thresholds)
    f, q = onnx_layout(float_out, channels_last), onnx_layout(quant_out, channels_last)
    if kind is OutputKind.SEQUENCE:
        if f.ndim != 3:
            raise KindError(f"output {name!r} of shape {list(f.shape[1:])} cannot be judged as a sequence "
                            "(needs [N, T, C])")
        if spec is not None and spec.blank is not None and not 0 <= spec.blank < f.shape[2]:
            raise KindError(f"--output-kind {name}=sequence:blank={spec.blank}: the blank must be a class of the "
                            f"output, 0 to {f.shape[2] - 1}")
        return sequence_quality(name, f, q, False, thresholds, spec.blank if spec else None)
    if kind is OutputKind.CLASS_MAP:
        if f.ndim == 4:        # [N, C, H, W] class scores per pixel: positions H*W, classes C
            f, q = (np.moveaxis(a, 1, -1).reshape(len(a), -1, a.shape[1]) for a in (f, q))
        if f.ndim != 3 or f.shape[2] < 2:
            raise KindError(f"output {name!r} of shape {list(f.shape[1:])} cannot be judged as a class map "
                            "(needs [N, positions, classes] or [N, classes, H, W])")
        return class_map_quality(name, f, q, thresholds)
    if kind is OutputKind.DETECTION:
        e2e = f.ndim == 3 and f.shape[2] == E2E_VALUES and (spec.layout == "e2e" if spec and spec.layout else
                                                           is_e2e(f))
        if f.ndim != 3 or (min(f.shape[1:]) < 5 and not e2e) or (spec and spec.layout == "e2e" and not e2e):
            raise KindError(f"output {name!r} of shape {list(f.shape[1:])} cannot be judged as a detection head "
                            "(needs [N, 4 + classes, anchors], [N, anchors, 5 + classes] or [N, queries, 4 + classes], "
                            "an end-to-end detector's [N, detections, 6] (detection:e2e), "
                            "or boxes [N, queries, 4] beside scores [N, queries, classes])")
        return detection_quality(name, f, q, False, thresholds, spec.layout if spec else None)
    if kind is OutputKind.DENSE_MAP:
        if given and (index or f.ndim != 4):
            raise KindError(f"output {name!r} of shape {list(f.shape[1:])} cannot be judged as a map "
                            "(needs [N, C, H, W] values)")
        return map_quality(name, float_out, quant_out, channels_last, thresholds)
    return output_quality(name, float_out, quant_out, channels_last, thresholds)


def _with_siblings(k: int, float_outs: Sequence[np.ndarray], channels_last: bool, index: bool) -> OutputKind | None:
    """Output ``k``'s kind where the model's other outputs decide it, else None (:func:`detect_kind`):
    class distributions ``[N, A, C]`` beside boxes ``[N, A, 4]`` over the same A positions are an
    SSD-style head's scores per anchor (CLASS_MAP), however few the anchors, never a text line."""
    f = np.asarray(float_outs[k])
    if index or f.ndim != 3 or channels_last:
        return None
    boxes = any(j != k and np.ndim(o) == 3 and np.shape(o)[1] == f.shape[1] and np.shape(o)[2] == 4
                for j, o in enumerate(float_outs))
    if boxes and detect_kind(f) is OutputKind.SEQUENCE:
        return OutputKind.CLASS_MAP
    return None


def _plausible_boxes(b: np.ndarray) -> bool:
    """``[N, Q, 4]`` values that read as boxes (x1 y1 x2 y2 or cx cy w h): normalized ones, or
    non-negative pixel boxes with non-negative sizes (an SSD head's box offsets are signed: no)."""
    from edgenet.verdicts.detection import box_rows

    r = box_rows(b)
    if normalized_boxes(r):
        return True
    return bool(r.min() >= -0.01 * np.abs(r).max() and r.max() > 1 and r[..., 2:].min() >= 0
                and r[..., :2].std(axis=1).mean() > 0)


def detection_pairs(names: Sequence[str], float_outs: Sequence[np.ndarray], channels_last: Sequence[bool],
                    indices: Sequence[bool], kinds: Sequence[OutputKind | KindSpec | None]) -> dict[int, int]:
    """Two-output detection heads: {scores output: boxes output} for each ``[N, Q, C]`` scores or
    logits output beside a ``[N, Q, 4]`` boxes output over the same Q (DETR's pred_logits and
    pred_boxes). Found from the values (boxes that read as boxes, scores that mostly detect nothing
    and are no distribution -- an SSD head's softmax beside its box offsets is a CLASS_MAP), or
    where the user named either output a detection; an output the user gave another kind is not
    paired."""
    def given(k):
        spec = kinds[k]
        return spec.kind if isinstance(spec, KindSpec) else spec

    pairs: dict[int, int] = {}
    taken: set[int] = set()
    for k, f in enumerate(float_outs):
        f = np.asarray(f)
        if k in taken or indices[k] or channels_last[k] or f.ndim != 3 or given(k) not in (None, OutputKind.DETECTION):
            continue
        for j, b in enumerate(float_outs):
            b = np.asarray(b)
            if j == k or j in taken or indices[j] or channels_last[j] or b.ndim != 3 or b.shape[:2] != f.shape[:2] \
                    or b.shape[2] != 4 or given(j) not in (None, OutputKind.DETECTION) or not f.size:
                continue
            named = OutputKind.DETECTION in (given(k), given(j))
            if named or (np.isfinite(f).all() and np.isfinite(b).all() and _plausible_boxes(b)
                         and not (f.shape[2] == 4 and _plausible_boxes(f))
                         and not is_distribution(f) and sparse_scores(f)):
                pairs[k] = j
                taken.update((k, j))
                break
    return pairs


def judge_outputs(names: Sequence[str], float_outs: Sequence[np.ndarray], quant_outs: Sequence[np.ndarray],
                  channels_last: Sequence[bool], thresholds: Thresholds, indices: Sequence[bool],
                  kinds: Sequence[OutputKind | KindSpec | None], refit: bool = False,
                  topk: Mapping[int, TopKSource] | None = None) -> tuple[OutputQuality, ...]:
    """Every output judged by its kind (``kinds[k]`` None: decided from its values), two-output
    detection heads as one head (:func:`detection_pairs`). ``refit``: a kind that does not fit its
    output is replaced by the output's own kind (the benchmark, judging by convert's record) instead
    of raising KindError. ``topk``: outputs made by a TopK's indices (output position -> where its
    values are), judged by :func:`edgenet.verdicts.topk.topk_quality` unless ``kinds`` says otherwise."""
    topk = dict(topk or {})
    pairs = detection_pairs(names, float_outs, channels_last, indices, kinds)
    boxes_of = {j: k for k, j in pairs.items()}
    out = []
    for k, (n, f, q, cl, ix, kind) in enumerate(zip(names, float_outs, quant_outs, channels_last, indices, kinds)):
        if k in pairs or k in boxes_of:
            s, b = (k, pairs[k]) if k in pairs else (boxes_of[k], k)
            if isinstance(kind, KindSpec) and kind.layout not in (None, "detr") and not refit:
                raise KindError(f"--output-kind {kind}: output {n!r} is one of a two-output head (boxes {names[b]!r} "
                                f"beside scores {names[s]!r}), judged as DETR-style queries; :{kind.layout} is the "
                                "layout of a one-output head (give detection or detection:detr)")
            out.append(paired_detection_quality(n, "scores" if k == s else "boxes", names[b if k == s else s],
                                                float_outs[b], quant_outs[b], float_outs[s], quant_outs[s],
                                                thresholds))
            continue
        if k in topk and (kind is None or kind is OutputKind.TOPK or
                          (isinstance(kind, KindSpec) and kind.kind is OutputKind.TOPK)):
            src, v = topk[k], topk[k].values
            out.append(topk_quality(n, onnx_layout(f, cl), onnx_layout(q, cl), thresholds, src,
                                    None if v is None else onnx_layout(float_outs[v], channels_last[v]),
                                    None if v is None else onnx_layout(quant_outs[v], channels_last[v])))
            continue
        try:
            out.append(output_verdict(n, f, q, cl, thresholds, kind, ix))
        except KindError:
            if not refit:
                raise
            out.append(output_verdict(n, f, q, cl, thresholds, None, ix))
    return tuple(out)


def _varies(f: np.ndarray) -> bool:
    """True when the examples (axis 0) give different values of ``f``."""
    f = np.asarray(f)
    return len(f) >= 2 and bool(np.any(f != f[:1]))


def unvaried(outputs: Sequence[OutputQuality], float_outs: Sequence[np.ndarray]) -> tuple[OutputQuality, ...]:
    """``outputs`` as judged, each not judged (unless it fails even so) when no float output varies
    over the examples: all-zero arrays, one black image forty times, a single example -- every
    example gives the float model the same answer, so nothing says whether the quantized one keeps
    what changes with the input. :func:`judge` and the benchmark both apply it."""
    outputs = tuple(outputs)
    if not float_outs or any(_varies(f) for f in float_outs):
        return outputs
    n = len(float_outs[0])
    why = (f"no signal in the evaluation data: it does not vary (all {n} examples give the float model the "
           "same outputs; pass examples that differ)") if n > 1 else \
        "no signal in the evaluation data: a single example (nothing varies; pass examples that differ)"
    # damage that shows even so (a region int8 finds where float finds none) still fails; an output's
    # own "no signal" gives way to this, its cause
    return tuple(o if o.failures else replace(o, not_judged=why) for o in outputs)


def judge(precision: str, names: Sequence[str], float_outs: Sequence[np.ndarray], quant_outs: Sequence[np.ndarray],
          channels_last: Sequence[bool], thresholds: Thresholds = Thresholds(),
          indices: Sequence[bool] | None = None,
          kinds: Mapping[str, OutputKind | KindSpec] | Sequence[KindSpec] | None = None,
          topk: Mapping[int, TopKSource] | None = None) -> Verdict:
    """The verdict on a quantized model's outputs against the float model's on the same examples.
    ``indices``: which outputs hold indices (integer outputs); ``kinds``: output name -> kind (or
    KindSpecs) overriding :func:`detect_kind`; ``topk``: outputs made by a TopK's indices (position ->
    :class:`~edgenet.verdicts.topk.TopKSource`, from the graph), judged as such, and the TopK's
    values output beside them by its values (SQNR: a sorted vector's top-1 says nothing). Two outputs of one detection head (boxes beside
    scores: :func:`detection_pairs`) are judged together, each output keeping its own row.

    Raises:
        KindError: a kind names no output, or does not fit its output's shape.
    """
    indices = indices or [False] * len(names)
    if kinds is not None and not isinstance(kinds, Mapping):
        kinds = {s.output: s for s in kinds}
    specs = [v if isinstance(v, KindSpec) else KindSpec(k, v) for k, v in dict(kinds or {}).items()]
    check_output_kinds(specs, list(names))
    by_name = {s.output: s for s in specs}
    topk = dict(topk or {})
    values_of = {s.values for s in topk.values() if s.values is not None}
    kinds_of = [by_name.get(n) or (OutputKind.TOPK if k in topk else OutputKind.GENERIC if k in values_of else None)
                or _with_siblings(k, float_outs, cl, ix)
                for k, (n, cl, ix) in enumerate(zip(names, channels_last, indices))]
    outputs = judge_outputs(names, float_outs, quant_outs, channels_last, thresholds, indices, kinds_of,
                            topk=topk)
    outputs = unvaried(outputs, float_outs)
    notes = tuple(n for k, o in enumerate(outputs) if names[k] not in by_name
                  for n in [_one_class_note(o, float_outs[k], quant_outs[k], channels_last[k], thresholds)] if n)
    return Verdict(precision, thresholds, outputs, int(len(float_outs[0])) if float_outs else 0,
                   kinds_given=tuple(str(s) for s in specs), notes=notes)


def _one_class_note(o: OutputQuality, f: np.ndarray, q: np.ndarray, channels_last: bool,
                    thresholds: Thresholds) -> str | None:
    """A note when an output read as a classifier passes while float picks one class on every example,
    or is not judged as float decides no example (landmarks in [0, 1] through a softmax), and, judged by its values (``--output-kind NAME=generic``), it fails: a regression head whose one
    large value always wins reads as a classifier on data of one class, and top-1 agreement then says
    nothing of its other values (the verdict itself stays the classifier's: a real classifier's
    losing logits are not what its app reads)."""
    if o.kind != OutputKind.CLASSIFIER.value or not o.passed:
        return None
    x = np.asarray(f).reshape(len(f), -1)
    if len(x) < 2 or x.shape[1] < 3 or not np.isfinite(x).all() or is_distribution(x):
        return None     # two values: a binary classifier's logits (vectors.vector_kind reads them so too)
    top = np.argmax(x, axis=1)
    undecided = o.not_judged is not None and o.metrics.get("decisive_examples") == 0
    if not undecided and (o.not_judged is not None or np.any(top != top[0])):
        return None
    g = output_quality(o.name, f, q, channels_last, thresholds)
    if g.passed:
        return None
    why = (f"float decides none of the {len(x)} examples (not judged)" if undecided else
           f"float picks class {int(top[0])} on every one of the {len(x)} examples, so top-1 agreement says little")
    return (f"output {o.name!r} was read as a classifier, but {why}; judged by its values it fails "
            f"({'; '.join(g.failures)}): if it is a regression head, pass --output-kind {o.name}=generic")
