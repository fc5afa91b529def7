"""How much each op's quantization costs, two ways.

* :func:`own_errors` -- a first-order proxy, cheap (one float run): each op's *own* error, i.e. its
  float output quantized with the int8 model's scale and zero point for that tensor, against the
  float output itself, given float inputs. Per-layer SQNR of the int8 model (converters.layer_error)
  accumulates everything upstream: a layer at 12 dB may only pass on what a PAD or the first conv
  lost. The own error is what the op adds. It is reported per channel (last axis, NHWC) as well:
  one int8 scale over a tensor whose channels differ 1000x in range keeps the large channel and
  zeroes the others, which a whole-tensor SQNR (dominated by the large channel) does not show.
* :func:`output_score` -- the real thing: the failing outputs' SQNR (input-dependent part, the
  figure the verdict reads) of a requantized model against float on a small evaluation subset.
  The repair search (converters.repair.promote) measures it with one op group promoted at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

EXACT_DB = 300.0   # a channel with no error at all, for ranking
# int8 tensors of the int8 model's activations; int16 (a16w8 promoted ops) ranges are fine already
_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


@dataclass(frozen=True)
class OwnError:
    """One op's own quantization error, given float inputs, in dB (higher is better)."""

    tensor: str
    sqnr_db: float              # whole tensor
    low_channel_db: float       # the lower quartile of its channels' SQNR (last axis)

    @property
    def proxy_db(self) -> float:
        """The figure ops are ranked by: the worse of the two."""
        return min(self.sqnr_db, self.low_channel_db)

    def describe(self) -> str:
        if self.low_channel_db < self.sqnr_db - 3:
            return (f"own int8 error {self.sqnr_db:.1f} dB, a quarter of its channels at "
                    f"{self.low_channel_db:.1f} dB or less")
        return f"own int8 error {self.sqnr_db:.1f} dB"


def _db(signal, noise):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise == 0, np.inf, 10 * np.log10(signal / np.maximum(noise, 1e-300)))


def own_errors(float_model: bytes, int8_model: bytes, samples, names: Sequence[str]) -> dict[str, OwnError]:
    """:class:`OwnError` of each op named in ``names`` (its output tensor, named as in both models)
    whose output is an integer tensor with one scale in ``int8_model``; ``samples`` are float
    examples as :class:`edgenet.inference.TFLiteModel` takes them (a few are enough: 8-16). Runs
    the float model once, in LiteRT with every intermediate tensor kept."""
    from edgenet.inference import TFLiteModel, invocations
    from edgenet.runtime import make_interpreter
    from edgenet.targets.tflite_graph import read_tflite

    from edgenet.converters import _flatbuffer
    from edgenet.converters.calibration import flat_below

    q_tensors = {t.name: t for t in read_tflite(int8_model).tensors}
    # a tensor only hard-swish reads: values below its floor all give the same output, and the range
    # stops there (converters.calibration.flat_below): clipping them is no error
    obj = _flatbuffer.read(float_model)
    floors = {_flatbuffer.tensor_name(obj.subgraphs[0].tensors[i]): v for i, v in flat_below(obj).items()}
    interp = make_interpreter(float_model, preserve_all_tensors=True, use_xnnpack=False)
    f_index = {t["name"]: t["index"] for t in interp.get_tensor_details()}
    wanted = []
    for name in dict.fromkeys(names):
        q = q_tensors.get(name)
        if q is None or name not in f_index or q.dtype not in _RANGES or len(q.scales) != 1 or q.scales[0] <= 0:
            continue
        wanted.append((name, f_index[name], float(q.scales[0]), int(q.zero_points[0]), _RANGES[q.dtype]))
    runner = TFLiteModel.from_interpreter(interp)
    arrays = [samples] if isinstance(samples, np.ndarray) else list(samples)
    acc: dict[str, list] = {}
    for group in invocations([runner.quantize(x, k) for k, x in enumerate(arrays)], runner.batches):
        for detail, value in zip(runner.inputs, group):
            interp.set_tensor(detail["index"], value)
        interp.invoke()
        for name, index, scale, zp, (lo, hi) in wanted:
            f = np.array(interp.get_tensor(index), dtype=np.float64)
            if not np.issubdtype(f.dtype, np.floating) or f.ndim == 0:
                continue
            if name in floors:
                f = np.maximum(f, floors[name])
            fq = (np.clip(np.round(f / scale) + zp, lo, hi) - zp) * scale
            flat = f.reshape(-1, f.shape[-1])
            err = (f - fq).reshape(-1, f.shape[-1])
            s, n = np.sum(flat * flat, axis=0), np.sum(err * err, axis=0)
            if name in acc:
                acc[name][0] += s
                acc[name][1] += n
            else:
                acc[name] = [s, n]
    out = {}
    for name, (s, n) in acc.items():
        if not np.any(s > 0):
            continue
        whole = float(_db(np.sum(s), np.sum(n)))
        # exact channels (no error: inf dB) count as very good, not as NaN in the percentile's interpolation
        live = np.minimum(_db(s[s > 0], n[s > 0]), EXACT_DB)
        low = float(np.percentile(live, 25)) if live.size else whole
        out[name] = OwnError(name, whole, low)
    return out


def output_score(model: bytes, x, float_outs: Sequence[np.ndarray], positions: Sequence[int],
                 threads: int | None = None, outs: Sequence[np.ndarray] | None = None) -> float:
    """The lowest SQNR (dB, input-dependent part; whole output or its worst varying channel, as the
    verdict reads them) of the outputs at ``positions`` of ``model`` on examples ``x`` against
    ``float_outs`` (the float model's outputs on the same examples); an
    output of indices (ArgMax) scores its share of equal values x 60 dB. -inf when an output is
    lost altogether. ``outs``: all of the model's outputs on ``x`` when they were computed already
    (the model is not run again)."""
    from edgenet.inference import TFLiteModel
    from edgenet.quality import centered_sqnr_db, channel_axis

    if outs is None:
        outs = TFLiteModel(model, threads).predict_all(x, list(positions))
    else:
        outs = [outs[k] for k in positions]
    worst = math.inf
    for f, q in zip((float_outs[k] for k in positions), outs):
        if not np.issubdtype(np.asarray(f).dtype, np.floating):
            score = 60.0 * float(np.mean(np.asarray(f) == np.asarray(q)))
        else:
            score = float(centered_sqnr_db(f, q))
            f = np.asarray(f)
            axis = f.ndim - 1 if f.ndim == 4 else channel_axis(f.shape)    # TFLite layout: NHWC
            if axis >= 0 and f.shape[axis] > 1:
                per = np.asarray(centered_sqnr_db(f, q, axis=axis))
                varying = per[per > -np.inf]        # constant channels: judged otherwise by the verdict
                if varying.size:
                    score = min(score, float(varying.min()))
        worst = min(worst, score)
    return worst
