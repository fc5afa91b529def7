"""Validation stage: the float TFLite model against ONNX, the int8 model against the float one."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from typing import Sequence

from edgenet.converters.model_data import to_onnx_layout
from edgenet.converters.model_inputs import ModelInput
from edgenet._deps import require
from edgenet.errors import ModelError
from edgenet.benchmark.accuracy import agreement, sqnr_db, top_k_accuracy  # the device-side definitions
from edgenet.quality import channel_axis
from edgenet.inference import invocations, stack_outputs


@dataclass(frozen=True)
class FloatCheck:
    max_abs_err: float
    rel_err: float          # max abs error / max |ONNX output|
    samples: int


@dataclass(frozen=True)
class Int8Check:
    top1_agreement: float   # fraction of samples where int8 and float pick the same class
    sqnr_db: float          # 10 log10(sum f^2 / sum (f - q)^2) over all outputs
    samples: int


@dataclass(frozen=True)
class OutputCheck:
    """One model output: float TFLite against ONNX, int8 against float."""
    name: str
    float_max_abs_err: float
    float_rel_err: float
    int8_sqnr_db: float | None


@dataclass(frozen=True)
class Accuracy:
    float_top1: float
    int8_top1: float | None
    float_top5: float | None
    int8_top5: float | None
    n_eval: int

    @property
    def top1_drop_points(self) -> float | None:
        return None if self.int8_top1 is None else round(100 * (self.float_top1 - self.int8_top1), 3)


def onnx_session(onnx_model, threads: int | None = None):
    """An onnxruntime CPU session of ``onnx_model``; ``threads``: its intra-op threads (default: the
    runtime's, one per core)."""
    ort = require("onnxruntime", purpose="validation against ONNX")
    opts = ort.SessionOptions()
    opts.log_severity_level = 4    # fatal only: a run it fails is handled (the reference implementation),
    if threads:                    # and its own log line would cut an open progress line
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def onnx_outputs(onnx_model, examples: Sequence[np.ndarray], inputs: Sequence[ModelInput],
                 notes: list[str] | None = None, threads: int | None = None) -> list[np.ndarray]:
    """Every output of the ONNX model on ``examples`` (one array per input, TFLite layout, as
    :class:`edgenet.inference.TFLiteModel` takes them), in the graph's order, concatenated over
    invocations exactly as TFLiteModel does.

    onnxruntime computes them; a model it refuses to run (an attribute combination it does not
    implement, e.g. a dilated Conv with ``auto_pad=SAME_*``) is run by ONNX's reference
    implementation (the spec, slower) instead, and ``notes`` gets a line saying so.

    Raises:
        ModelError: neither onnxruntime nor the reference implementation can run the model.
    """
    onnx_examples = [to_onnx_layout(x, spec) for x, spec in zip(examples, inputs)]
    batches = [spec.batch if spec.rank >= 2 else None for spec in inputs]
    try:
        sess = onnx_session(onnx_model, threads)
        runs = [sess.run(None, {spec.name: x for spec, x in zip(inputs, group)})
                for group in invocations(onnx_examples, batches)]
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "onnxruntime":
            raise
        why = ort_message(exc)
        from onnx.reference import ReferenceEvaluator

        try:
            evaluator = ReferenceEvaluator(onnx_model)
            with np.errstate(all="ignore"), warnings.catch_warnings():   # numpy's overflow warnings: the
                warnings.simplefilter("ignore")                          # values are checked, not printed
                runs = [evaluator.run(None, {spec.name: x for spec, x in zip(inputs, group)})
                        for group in invocations(onnx_examples, batches)]
        except Exception as ref_exc:
            raise ModelError(f"the ONNX model cannot be run to validate the conversion: onnxruntime: {why}; "
                             f"ONNX's reference implementation: {type(ref_exc).__name__}: "
                             f"{(str(ref_exc).strip().splitlines() or [''])[0][:200]}") from exc
        if notes is not None:
            notes.append(f"onnxruntime cannot run the ONNX model ({why}): the conversion was validated against "
                         "ONNX's reference implementation (the spec) instead")
    known = [b for b in batches if b is not None]
    return [stack_outputs([np.asarray(run[k]) for run in runs], known).astype(np.float32)
            for k in range(len(runs[0]))]


def ort_message(exc: BaseException) -> str:
    """onnxruntime's error without its status-code preamble: the part after "Status Message:"."""
    text = " ".join(str(exc).split())
    if "Status Message:" in text:
        text = text.split("Status Message:", 1)[1].strip()
    text = text.replace("[ONNXRuntimeError] : ", "")
    return text[:200].rstrip(".")


def check_float(onnx_out: np.ndarray, float_out: np.ndarray, channels_last_output: bool = False) -> FloatCheck:
    """Compare float TFLite outputs with ONNX outputs of the same samples: the largest absolute
    error, and the relative error channel by channel (max |diff| / max |ONNX| of each channel, the
    worst; channels on ONNX axis 1, or on the last axis of a ``[N, boxes, values]`` output:
    :func:`edgenet.quality.channel_axis`). A NaN or infinity on one side only is an infinite error."""
    got = np.transpose(float_out, (0, 3, 1, 2)) if channels_last_output and float_out.ndim == 4 else float_out
    if got.shape != onnx_out.shape:
        return FloatCheck(float("inf"), float("inf"), len(onnx_out))
    with np.errstate(invalid="ignore"):
        diff = np.abs(onnx_out.astype(np.float64) - got)
    diff[(onnx_out == got) | (np.isnan(onnx_out) & np.isnan(got))] = 0.0   # equal infinities, NaN for NaN
    if diff.size == 0:
        return FloatCheck(0.0, 0.0, len(onnx_out))
    diff = np.nan_to_num(diff, nan=np.inf)
    err = float(np.max(diff))
    ref = np.where(np.isfinite(onnx_out), np.abs(onnx_out), 0.0)
    whole = float(ref.max()) if ref.size and ref.max() > 0 else 1.0
    channel = channel_axis(onnx_out.shape)
    if channel > 0 and onnx_out.shape[channel] > 1:
        # each channel against its own magnitude: 0..1 scores beside 0..2000 pixel boxes must not hide
        # behind the boxes (a floor of 1e-3 of the output's own scale keeps near-zero channels sane)
        axes = tuple(a for a in range(onnx_out.ndim) if a != channel)
        scale = np.maximum(ref.max(axis=axes), 1e-3 * whole)
        rel = float(np.max(diff.max(axis=axes) / scale))
    else:
        rel = err / whole
    return FloatCheck(err, rel, len(onnx_out))


TOPK_FLOAT_AGREEMENT = 0.99   # a TopK's indices, float TFLite vs ONNX: share of set and order that must agree
TOPK_FLOAT_POSITIONS = 0.5    # ... without its values (no near-tie can be told): share of positions


def topk_float_checks(checks: Sequence[FloatCheck], model: bytes, onnx_outs, float_outs,
                      channels_last: Sequence[bool]) -> list[FloatCheck]:
    """``checks`` with each output that is a TopK's indices judged as indices, not as numbers: two
    values one float rounding apart trade places between onnxruntime and LiteRT (a Conv -> TopK over
    2,048 values swapped 2 of 32,768 indices, values 3e-8 apart: "relative error 0.055"). Such an
    output passes (error 0) when its set and order agree at TOPK_FLOAT_AGREEMENT, near-ties excused
    where the TopK's values are an output too (:func:`edgenet.verdicts.topk.topk_quality`). Without
    them, equal values (whose order is arbitrary) cannot be told from rounding swaps: the set must
    agree, and half the positions (a TopK over the wrong axis or in the wrong direction moves nearly
    all). Else its error is the share that disagrees."""
    from edgenet.converters.topk_outputs import topk_sources
    from edgenet.verdicts import Thresholds
    from edgenet.verdicts.generic import onnx_layout
    from edgenet.verdicts.topk import topk_quality

    sources = topk_sources(model, list(channels_last))
    if not sources:
        return list(checks)
    out = list(checks)
    for k, src in sources.items():
        if k >= len(out) or out[k].rel_err == 0.0:
            continue
        v = src.values
        values = (None, None) if v is None else (onnx_outs[v], onnx_layout(float_outs[v], channels_last[v]))
        q = topk_quality("", onnx_outs[k], onnx_layout(float_outs[k], channels_last[k]), Thresholds(), src, *values)
        m = q.metrics
        if m["order_judged"]:
            agreement = min(m["set_agreement"], m["order_agreement"])
        else:   # no values: ties cannot be told from rounding swaps; a wrong axis or direction moves most
            agreement = m["set_agreement"] if m["positional_agreement"] >= TOPK_FLOAT_POSITIONS else 0.0
        error = 0.0 if agreement >= TOPK_FLOAT_AGREEMENT else 1.0 - agreement
        out[k] = FloatCheck(error, error, out[k].samples)
    return out


def e2e_float_checks(checks: Sequence[FloatCheck], onnx_outs, float_outs, tolerance: float) -> list[FloatCheck]:
    """``checks`` with each end-to-end detector output (``[N, K, 6]`` rows of box, score, class id,
    sorted by score: :func:`edgenet.verdicts.e2e.is_e2e`) compared as the rows it lists, not row by
    row: two candidates whose scores differ by a float rounding come out in either order (and a
    trained detector's 300 rows hold many close low scores), so onnxruntime's and LiteRT's row k may
    be different detections. Per example each ONNX row is matched to an unused TFLite row of the same
    class whose values agree within ``tolerance`` of each column's scale (boxes: the largest box
    coordinate; score: 1); an ONNX row left unmatched is allowed only at the TopK's cut (its score
    within ``tolerance`` of the example's lowest), where tied candidates are interchangeable. The
    error is the largest relative difference of a matched pair, or 1.0 for a row not found."""
    from edgenet.verdicts.e2e import is_e2e

    out = list(checks)
    for k, (o, f) in enumerate(zip(onnx_outs, float_outs)):
        if out[k].rel_err == 0.0 or np.shape(o) != np.shape(f) or not is_e2e(o):
            continue
        o64, f64 = np.asarray(o, np.float64), np.asarray(f, np.float64)
        box_scale = max(float(np.abs(o64[..., :4]).max()), 1e-6)
        worst = 0.0
        for a, b in zip(o64, f64):
            # relative difference of every ONNX row against every TFLite row; other classes never match
            diff = np.maximum(np.abs(a[:, None, :4] - b[None, :, :4]).max(-1) / box_scale,
                              np.abs(a[:, None, 4] - b[None, :, 4]))
            diff[np.rint(a[:, None, 5]) != np.rint(b[None, :, 5])] = np.inf
            used = np.zeros(len(b), dtype=bool)
            cut = a[:, 4].min()
            for i in range(len(a)):
                cand = np.where(used, np.inf, diff[i])
                j = int(np.argmin(cand))
                if cand[j] <= tolerance:
                    used[j] = True
                    worst = max(worst, float(cand[j]))
                elif a[i, 4] > cut + tolerance:
                    worst = 1.0
                    break
            if worst >= 1.0:
                break
        if worst <= tolerance:
            out[k] = FloatCheck(worst * box_scale, worst, out[k].samples)
    return out


def check_int8(float_out: np.ndarray, int8_out: np.ndarray) -> Int8Check:
    return Int8Check(agreement(float_out, int8_out), sqnr_db(float_out, int8_out), len(float_out))


def accuracy(float_out: np.ndarray, int8_out: np.ndarray | None, labels: np.ndarray) -> Accuracy:
    classes = float_out.reshape(len(float_out), -1).shape[1]
    five = classes >= 5
    return Accuracy(
        float_top1=top_k_accuracy(float_out, labels, 1),
        int8_top1=None if int8_out is None else top_k_accuracy(int8_out, labels, 1),
        float_top5=top_k_accuracy(float_out, labels, 5) if five else None,
        int8_top5=top_k_accuracy(int8_out, labels, 5) if five and int8_out is not None else None,
        n_eval=len(labels),
    )


# -- the float verdict ------------------------------------------------------------------------------
# what the float model of a TensorFlow source is judged against, run by TensorFlow: reference -> its name
TF_REFERENCES = {"keras": "the Keras model", "saved_model": "the SavedModel"}


@dataclass(frozen=True)
class FloatVerdict:
    """Float TFLite against ONNX, decided: ``passed`` when every output's relative error
    (max |TFLite - ONNX| / max |ONNX|) is within ``tolerance`` (the target profile's
    ``float_tolerance``). ``divergence`` names the first ONNX node whose output differs, when found."""
    passed: bool
    tolerance: float
    worst_output: str
    worst_rel_err: float
    divergence: dict | None = None      # converters.divergence.Divergence.to_dict()
    reference: str = "onnxruntime"      # what the float model was judged against (onnx.reference: the spec;
                                        # keras / saved_model: that model run by TensorFlow)

    @property
    def reference_name(self) -> str:
        """What the float model is compared with, for the user: ONNX, or the Keras model."""
        return TF_REFERENCES.get(self.reference, "ONNX")

    def to_dict(self) -> dict:
        return {"passed": self.passed, "tolerance": self.tolerance, "worst_output": self.worst_output,
                "worst_rel_err": self.worst_rel_err, "first_divergence": self.divergence,
                "reference": self.reference}

    def message(self) -> str:
        """One line for the user when the verdict fails."""
        text = (f"the float TFLite model differs from {self.reference_name}: output {self.worst_output!r} "
                f"relative error {self.worst_rel_err:.3g} > tolerance {self.tolerance:g}")
        if self.divergence:
            d = self.divergence
            if d.get("node"):
                text += (f"; first diverging ONNX node: {d['node']!r} ({d['op']}, output {d['value']!r}, "
                         f"relative error {d['rel_err']:.3g})")
                if d.get("unseen"):
                    text += (f", or one fused into it whose output the model does not keep: "
                             f"{', '.join(map(repr, d['unseen']))}")
            else:
                text += f"; {d.get('reason', '')}"
        return text + "; pass --allow-mismatch to write the files anyway"


def float_verdict(checks: Sequence[FloatCheck], names: Sequence[str], tolerance: float) -> FloatVerdict:
    worst = max(range(len(checks)), key=lambda k: (not np.isfinite(checks[k].rel_err), checks[k].rel_err))
    rel = checks[worst].rel_err
    return FloatVerdict(bool(np.isfinite(rel) and rel <= tolerance), tolerance, names[worst], float(rel))


def check_finite_reference(outputs: Sequence[np.ndarray], names: Sequence[str], what: str = "ONNX model") -> None:
    """ConversionError when the reference model itself gives NaN or infinity on the validation
    data: no comparison can mean anything then (NaN weights, an overflow)."""
    from edgenet.errors import ConversionError

    for name, y in zip(names, outputs):
        if not np.isfinite(y).all():
            bad = int(np.size(y) - np.isfinite(y).sum())
            raise ConversionError(f"the {what} gives NaN or infinite values ({bad} of {np.size(y)}) in output "
                                  f"{name!r} on the validation data: check its weights")


# -- every precision against float32 -----------------------------------------------------------------
def judge_precision(precision, model: bytes, examples, float_outs, outputs, thresholds, threads: int | None = None,
                    kinds=(), joins=(), outs=None):
    """(Verdict, outputs) of the ``precision`` model against the float32 model's ``float_outs`` on
    the same held-out ``examples``; ``outputs`` are the graph's TensorInfo (names, layouts).
    ``kinds``: the user's :class:`edgenet.verdicts.KindSpec` overrides (``--output-kind``); those
    naming an output this graph does not have (an output written as parts) are left out.
    ``joins``: outputs written as parts (:class:`edgenet.verdicts.parts.JoinedOutput`), joined back
    into the tensor the app rebuilds and judged as that one output (its kind, its name); the
    outputs returned stay the model's own. ``outs``: the model's outputs on ``examples`` when they
    were computed already (the model is not run again).

    Raises:
        UsageError: a kind does not fit its output's shape (a sequence that is not [N, T, C] ...).
    """
    from edgenet.errors import UsageError
    from edgenet.inference import predict_side_by_side
    from edgenet.converters.topk_outputs import topk_sources
    from edgenet.verdicts import KindError, judge
    from edgenet.verdicts.parts import join_arrays, join_items

    if outs is None:   # side by side: an int16x8 model's reference kernels use one core each
        outs = predict_side_by_side(model, examples, threads)
    names = join_items([o.name for o in outputs], joins, lambda j, parts: j.name)
    layouts = join_items([o.channels_last for o in outputs], joins)
    integer = join_items([not o.dtype.startswith("float") for o in outputs], joins, lambda j, parts: all(parts))
    # a TopK's indices are judged by set and order (joined outputs renumber them: none there)
    topk = {} if joins else topk_sources(model, [o.channels_last for o in outputs])
    try:
        verdict = judge(precision.value, names, join_arrays(float_outs, joins), join_arrays(outs, joins), layouts,
                        thresholds, integer, [k for k in kinds if k.output in names], topk)
    except KindError as exc:
        raise UsageError(str(exc)) from None
    return verdict, outs


def check_kinds(kinds, names) -> None:
    """UsageError unless every ``--output-kind`` names one of the model's outputs ``names``."""
    from edgenet.errors import UsageError
    from edgenet.verdicts import KindError, check_output_kinds

    try:
        check_output_kinds(list(kinds), list(names))
    except KindError as exc:
        raise UsageError(str(exc)) from None
