"""Accuracy of the float and int8 models on the same samples, and how far int8 strays from float.

With labels: top-1 and top-5 of each model, plus their top-1 agreement. Without labels: the
agreement and the SQNR of the int8 outputs against the float outputs (both dequantized to float).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class ModelAccuracy:
    top1: float | None    # fraction in [0, 1]; None without labels
    top5: float | None    # None without labels or with fewer than 5 classes

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5}


@dataclass(frozen=True)
class AccuracyReport:
    data: str                          # "digits", "shapes", a folder, or "array"
    samples: int
    labelled: bool
    models: Mapping[str, ModelAccuracy]   # role -> accuracy
    agreement: float | None            # fraction of samples where int8 and float agree on top-1
    sqnr_db: float | None              # int8 outputs vs float outputs; inf when identical
    max_abs_diff: float | None         # largest |int8 - float| output difference
    seconds: float
    quality: dict | None = None        # the worst output's edgenet.quality.OutputQuality, with its verdict
    outputs: tuple[dict, ...] = ()     # every output's OutputQuality (models with several outputs)
    untrained: bool = False            # convert's report.json says the weights are untrained: not judged

    def to_dict(self) -> dict:
        return {
            "data": self.data, "samples": self.samples, "labelled": self.labelled,
            "models": {role: acc.to_dict() for role, acc in self.models.items()},
            "agreement": self.agreement,
            "sqnr_db": None if self.sqnr_db is None or not math.isfinite(self.sqnr_db) else self.sqnr_db,
            "outputs_identical": self.sqnr_db == math.inf,
            "max_abs_diff": self.max_abs_diff, "seconds": self.seconds, "quality": self.quality,
            "outputs": list(self.outputs), "untrained": self.untrained,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "AccuracyReport":
        sqnr = d.get("sqnr_db")
        if sqnr is None and d.get("outputs_identical"):
            sqnr = math.inf
        return cls(data=d["data"], samples=int(d["samples"]), labelled=bool(d["labelled"]),
                   models={r: ModelAccuracy(a.get("top1"), a.get("top5")) for r, a in d["models"].items()},
                   agreement=d.get("agreement"), sqnr_db=sqnr, max_abs_diff=d.get("max_abs_diff"),
                   seconds=float(d.get("seconds", 0.0)), quality=d.get("quality"),
                   outputs=tuple(d.get("outputs") or ()), untrained=bool(d.get("untrained", False)))


def _scores(outputs: np.ndarray) -> np.ndarray:
    """(N, ...) outputs -> (N, classes) scores (trailing dimensions flattened)."""
    return outputs.reshape(outputs.shape[0], -1)


def top_k_accuracy(outputs: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Fraction of samples whose label is among the k highest scores (None when k > classes)."""
    scores = _scores(outputs)
    if k > scores.shape[1] or len(labels) == 0:
        return None
    if k == 1:
        return float(np.mean(np.argmax(scores, axis=1) == labels))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples where the two models' top-1 classes are the same."""
    return float(np.mean(np.argmax(_scores(a), axis=1) == np.argmax(_scores(b), axis=1)))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2) in dB; inf for identical outputs."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - test.astype(np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def convert_record(folder) -> dict | None:
    """``folder``/report.json as `edgenet convert` wrote it, read once with the safe JSON reader
    (:mod:`edgenet.safe_json`); None when there is none or it cannot be read (the benchmark then
    judges outputs by their own kinds)."""
    from pathlib import Path

    from edgenet.errors import EdgenetError
    from edgenet.safe_json import load_file

    try:
        record = load_file(Path(folder) / "report.json")
    except (FileNotFoundError, EdgenetError):
        return None
    return record if isinstance(record, dict) else None


def _as_record(record_or_folder) -> dict | None:
    """A convert record as given, or read from a folder."""
    if record_or_folder is None or isinstance(record_or_folder, dict):
        return record_or_folder
    return convert_record(record_or_folder)


def _int8_verdict(record: dict | None) -> dict | None:
    """The int8 verdict in a convert record (else its first quantized one), or None."""
    try:
        verdicts = record["validation"]["quantized"]
        return next((q for q in verdicts if q.get("precision") == "int8"), verdicts[0])
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def recorded_verdict_settings(record) -> tuple[list | None, object | None, bool]:
    """(kind of each output -- the user's KindSpec where --output-kind named it --, Thresholds,
    untrained) in a convert record (:func:`convert_record`; a folder is read for it), from its int8
    verdict (else its first quantized one; ``untrained``: the model's weights are untrained, so no
    verdict judges it), so the benchmark judges outputs as convert did; (None, None, False) without one."""
    from dataclasses import fields

    from edgenet.verdicts import KindError, KindSpec, Thresholds

    record = _as_record(record)
    v = _int8_verdict(record)
    try:
        untrained = (record.get("model") or {}).get("trained", True) is False
        # the user's --output-kind with its options (a CTC blank, a head's layout) where given, else the kind
        given = {}
        for text in v.get("output_kinds_given") or ():
            try:
                spec = KindSpec.parse(str(text))
            except KindError:
                continue
            given[spec.output] = spec
        kinds = [given.get(o.get("name")) or o.get("kind") for o in v["outputs"]]
        known = {f.name for f in fields(Thresholds)}
        th = Thresholds(**{k: val for k, val in (v.get("thresholds") or {}).items() if k in known})
        return kinds, th, untrained
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None, False


def recorded_output_names(record) -> list[str] | None:
    """The output names a convert record's int8 verdict judged (parts joined), so the benchmark's
    verdict lines name what convert's did; None without them. ``record``: :func:`convert_record`'s
    dict (a folder is read for it)."""
    v = _int8_verdict(_as_record(record))
    try:
        return [str(o["name"]) for o in v["outputs"]]
    except (KeyError, TypeError):
        return None


def recorded_joins(record) -> tuple:
    """The outputs a convert record says were written as parts (``split_outputs``), as
    :class:`edgenet.verdicts.parts.JoinedOutput`: the benchmark joins them back and judges the
    tensor the app rebuilds, as convert did; () without one. ``record``: :func:`convert_record`'s
    dict (a folder is read for it)."""
    from edgenet.verdicts.parts import JoinedOutput

    record = _as_record(record)
    split = (record or {}).get("split_outputs")
    joined = JoinedOutput.from_record(split) if isinstance(split, dict) else None
    return () if joined is None else (joined,)


def compare(outputs: Mapping[str, np.ndarray | Sequence[np.ndarray]], labels: np.ndarray | None, data: str,
            seconds: float = 0.0, indices: Sequence[bool] | None = None, kinds: Sequence | None = None,
            thresholds=None, untrained: bool = False, joins: Sequence = (),
            names: Sequence[str] | None = None) -> AccuracyReport:
    """The accuracy report from each model's (dequantized, float) outputs on the same samples.

    ``outputs``: role ("float", "int8") -> one array, or a list of arrays (every output of the
    model, both roles in the same order; named ``output_0``, ``output_1`` ...). Top-1/top-5,
    agreement, the plain SQNR and the largest difference are of the first output (none of them for
    an output of indices, whose labels have no magnitude); every output gets the verdict
    ``edgenet convert`` gives (:func:`edgenet.quality.output_quality`, default thresholds), and
    ``quality`` is the worst: the first failing output, else the one with the lowest SQNR.
    ``indices``: which outputs hold indices (ArgMax maps), judged by index agreement; ``kinds``:
    each output's :class:`edgenet.verdicts.OutputKind` value (or the user's
    :class:`edgenet.verdicts.KindSpec`, options included) as convert recorded it (None, or a
    list of another length: decided from shape and values, as convert does); ``thresholds``:
    convert's (default: :class:`edgenet.verdicts.Thresholds`); ``untrained``: the weights are
    untrained (convert's report says so): the figures are kept, the verdict reads "not judged".
    ``joins``: outputs written as parts (:func:`recorded_joins`), joined back before anything is
    measured; ``indices`` and ``kinds`` count the joined outputs. A join that does not fit the
    models' outputs is ignored (the parts are judged apart). ``names``: the outputs' names as convert
    judged them (:func:`recorded_output_names`; another count: ``output_0``, ``output_1`` ...).
    """
    from edgenet.quality import OutputKind, Thresholds, is_classifier_shaped, worst_output
    from edgenet.verdicts import KindSpec, judge_outputs, unvaried
    from edgenet.verdicts.parts import join_arrays, join_items

    per_role = {role: list(out) if isinstance(out, (list, tuple)) else [out] for role, out in outputs.items()}
    if joins:
        try:
            joined = {role: join_arrays(outs, joins) for role, outs in per_role.items()}
        except ValueError:
            joined = None
        if joined is not None:
            per_role = joined
            if indices is not None and len(indices) != len(next(iter(per_role.values()))):
                indices = join_items(list(indices), joins, lambda j, parts: all(parts))
    first = {role: outs[0] for role, outs in per_role.items()}
    samples = len(next(iter(first.values())))
    if labels is not None and not is_classifier_shaped(next(iter(first.values())).shape):
        labels = None      # class labels against a detection or feature output: no top-1 to take
    models = {
        role: ModelAccuracy(
            top1=top_k_accuracy(out, labels, 1) if labels is not None else None,
            top5=top_k_accuracy(out, labels, 5) if labels is not None else None)
        for role, out in first.items()
    }
    agree = sqnr = max_diff = quality = None
    judged: list[dict] = []
    if "float" in per_role and "int8" in per_role:
        indices = list(indices or [])
        f, q = first["float"], first["int8"]
        if not (indices and indices[0]):     # labels of an ArgMax map have no magnitude to compare
            agree = agreement(f, q) if is_classifier_shaped(f.shape) else None   # top-1 of a detection map: noise
            sqnr = sqnr_db(f, q)
            max_diff = float(np.max(np.abs(f.astype(np.float64) - q))) if f.size else 0.0
        kinds = list(kinds) if kinds is not None and len(kinds) == len(per_role["float"]) else []
        count = len(per_role["float"])
        given = [kinds[k] if kinds and isinstance(kinds[k], KindSpec) else
                 OutputKind(kinds[k]) if kinds and kinds[k] in {x.value for x in OutputKind} else None
                 for k in range(count)]
        flags = [k < len(indices) and bool(indices[k]) for k in range(count)]
        # integer outputs are indices; a TopK's (convert's record says topk) keep their own verdict
        given = [OutputKind.INDEX if ix and kind is not OutputKind.TOPK else kind for ix, kind in zip(flags, given)]
        shown = list(names) if names is not None and len(names) == count else [f"output_{k}" for k in range(count)]
        # convert's record where it fits, else the output's own kind (files replaced since); two-output
        # detection heads judged as one head, as convert does
        judged = [o.to_dict() for o in unvaried(judge_outputs(shown, per_role["float"], per_role["int8"],
                                                              [fk.ndim == 4 for fk in per_role["float"]],
                                                              thresholds or Thresholds(), flags, given, refit=True),
                                                per_role["float"])]
        quality = worst_output(judged)
    return AccuracyReport(data=data, samples=samples, labelled=labels is not None, models=models,
                          agreement=agree, sqnr_db=sqnr, max_abs_diff=max_diff, seconds=seconds,
                          quality=quality, outputs=tuple(judged) if len(judged) > 1 else (), untrained=untrained)
