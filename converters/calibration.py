"""Post-training calibration: activation ranges for int8 / int16x8 quantization, measured by us.

TensorFlow's converter and the LiteRT Quantizer both calibrate by running the float model one
sample at a time (~0.15 s a sample for MobileNetV1 1.0/224 on this machine). We calibrate
ourselves and hand the quantizer our ranges as its calibration result:

1. :func:`edgenet.converters.quantize.quantize_calibrated` hands the float model to
   :meth:`RangeCalibrator.ranges`;
2. :class:`RangeCalibrator` runs it in LiteRT (a probe copy whose outputs are all activation
   tensors), in batches and on all cores, and records a range for each activation tensor:

   - ``minmax``: the range of everything seen, as TFLite does;
   - ``percentile``: clipped to the 0.01 / 99.99 percentiles, averaged over batches;
   - ``mse``: a second pass fills a 2,048-bin histogram over the min/max range of each tensor,
     and the range ``[t lo, t hi]`` (``0 < t <= 1``) that minimizes the expected squared error
     of the int8 round trip is kept -- rounding noise ``scale^2 / 12`` inside the range, the
     clipping error outside it. The model's outputs, every tensor that reaches one without a
     weighted op (conv, fully connected ...) on the way, and sigmoid / softmax outputs keep their
     full range (:func:`full_range_tensors`): there each value is an output value or a probability,
     and the rare large ones MSE trims first are the predicted class, the detections and the far box
     edges (a YOLOv8 head lost 20% of its score range and its DFL peak probability to MSE).
     For 16-bit activations (int16x8) the quantizer's
     grid is symmetric, ``[-m, m]`` in 65,535 steps, and the search is over ``m``;
3. the ranges come back by tensor name, ``{name: (min, max)}``, and
   :func:`edgenet.converters.quantize.quantize` gives them to the LiteRT Quantizer, which turns each
   into a scale and zero point (int8: asymmetric over ``[min(lo, 0), max(hi, 0)]``; int16:
   symmetric over ``[-m, m]``, ``m = max(|lo|, |hi|)``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from edgenet.converters import _flatbuffer
from edgenet.converters.probe import with_outputs
from edgenet.converters.range_floors import MAX_NARROWING, _has_data, flat_below, floored  # noqa: F401 (API too)
from edgenet.inference import invocations
from edgenet.config import CalibMethod
from edgenet.errors import ConversionError

_FLOAT32 = 0  # tflite TensorType.FLOAT32
PERCENTILE = 99.99
HIST_BINS = 2048
MSE_STEPS = 200            # candidate clipping factors t in (0, 1], geometric
MSE_MIN_FACTOR = 0.02
ACTIVATION_BUDGET = 64 << 20   # bytes of probe activations per calibration batch


@dataclass(frozen=True)
class CalibrationStats:
    method: CalibMethod
    samples: int
    batch_size: int
    tensors: int          # activation tensors that received a range
    seconds: float


@dataclass
class _Range:
    lo: float = np.inf
    hi: float = -np.inf
    lo_sum: float = 0.0
    hi_sum: float = 0.0
    batches: int = 0
    hist: np.ndarray | None = None


class RangeCalibrator:
    """Measures activation ranges of a float .tflite model on calibration arrays."""

    def __init__(self, inputs: Sequence[np.ndarray], method: CalibMethod = CalibMethod.MINMAX,
                 batch_size: int = 16, num_threads: int | None = None,
                 input_range: tuple[float, float] | None = None, activation_bits: int = 8):
        if not inputs or len(inputs[0]) == 0:
            raise ConversionError("calibration needs at least one sample")
        if activation_bits not in (8, 16):
            raise ValueError(f"activation_bits must be 8 or 16, not {activation_bits}")
        self.activation_bits = activation_bits   # 16: int16x8's symmetric int16 grid (mse only)
        self.inputs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        self.method = CalibMethod(method)
        self.batch_size = max(1, int(batch_size))
        self.num_threads = num_threads
        self.input_range = input_range   # fixed range of the model inputs (see pixel_input_range)
        self.last_stats: CalibrationStats | None = None

    @property
    def samples(self) -> int:
        return len(self.inputs[0])

    def _interpreter(self, model: bytes, batch: int):
        from edgenet.runtime import make_interpreter

        interp = make_interpreter(model, self.num_threads)
        if batch > 1:
            for detail, x in zip(interp.get_input_details(), self.inputs):
                interp.resize_tensor_input(detail["index"], [batch, *x.shape[1:]], strict=False)
            interp.allocate_tensors()
        return interp

    def _batches(self, batch: int, batches: list[int | None]) -> Iterator[list[np.ndarray]]:
        """Arrays to feed per invoke: ``batch`` examples stacked (a batch-1 model resized to take
        them), or one invocation at a time for models that fix their own batch (or take rank-1 inputs)."""
        if batch == 1 and any(b != 1 for b in batches):
            yield from invocations(self.inputs, batches)
            return
        n = self.samples
        for start in range(0, n - n % batch, batch):
            yield [x[start:start + batch] for x in self.inputs]
        for start in range(n - n % batch, n):  # the remainder one at a time
            yield [x[start:start + 1] for x in self.inputs]

    def ranges(self, model: bytes) -> dict[str, tuple[float, float]]:
        """The range ``(min, max)`` of every float activation tensor of ``model`` (a float32
        .tflite), by tensor name (the names the LiteRT Quantizer looks its calibration result up
        by): the model's inputs (fixed to ``input_range`` when it is given), every op's float
        output, and its outputs (always their full range). Statistics are in :attr:`last_stats`.
        Raises ConversionError for a range that reaches NaN or infinity, naming the tensor."""
        import time

        t0 = time.perf_counter()
        obj = _flatbuffer.read(model)
        graph = obj.subgraphs[0]
        targets = [i for i, t in enumerate(graph.tensors)
                   if t.type == _FLOAT32 and not _has_data(obj.buffers[t.buffer])]
        ranges = {i: _Range() for i in targets}
        probe = with_outputs(model, targets)   # every activation readable, fast kernels kept
        # min/max: a tensor no value of which can be negative needs no min (a pass over its values
        # saved): the quantizer widens every int8 range to hold 0 (minmax only: the other methods'
        # statistics read the values' own low end)
        skip_min = non_negative(obj) if self.method is CalibMethod.MINMAX else set()

        # batches whose activations stay within a cache-friendly budget: all of them are outputs of
        # the probe, so none of their memory is reused (MobileNetV1 1.0/224 holds ~20 MB a sample)
        per_sample = sum(_numel(None if graph.tensors[i].shape is None else graph.tensors[i].shape[1:])
                         for i in targets) * 4     # (a scalar tensor has no shape)
        batch = max(1, min(self.batch_size, self.samples, ACTIVATION_BUDGET // max(per_sample, 1)))
        # runner.tensor(i)() is a view of the runtime's buffer (get_tensor would copy every activation);
        # it is used and dropped before the next invoke, as LiteRT requires
        # numpy's reductions release the GIL: the tensors of a batch are reduced on all cores
        # the tensors go to the threads in a few chunks, not one task each: a 5,500-op unrolled LSTM
        # calibrated one example at a time made 700,000 tasks, whose dispatch cost more than the
        # reductions (each tensor is still reduced by one thread, so the ranges are the same)
        workers = self.num_threads or 1
        chunks = [targets[k::4 * workers] for k in range(min(len(targets), 4 * workers))]

        def update(chunk, runner):
            for i in chunk:
                self._update(ranges[i], runner.tensor(i)(), i in skip_min)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _, runner in self._run(probe, batch):
                list(pool.map(lambda chunk: update(chunk, runner), chunks))
            batch = self._last_batch
        if self.method is CalibMethod.MSE:
            for r in ranges.values():
                r.lo, r.hi = min(r.lo, 0.0), max(r.hi, 0.0)   # the quantizer widens every range to hold 0
            for _, runner in self._run(probe, batch):
                for i in targets:
                    _histogram(ranges[i], runner.tensor(i)())
        outputs = full_range_tensors(obj)
        floors = flat_below(obj)
        fixed = {int(i): self.input_range for i in graph.inputs} if self.input_range is not None else {}

        found: dict[str, tuple[float, float]] = {}
        for i in targets:
            lo, hi = fixed.get(i) or self._range(ranges[i], full=i in outputs)
            if i in floors and i not in fixed:
                lo = floored(lo, hi, floors[i])
            name = _flatbuffer.tensor_name(graph.tensors[i])
            if not (np.isfinite(lo) and np.isfinite(hi)
                    and max(abs(np.float32(lo)), abs(np.float32(hi))) < np.finfo(np.float32).max):
                seen = "holds NaN on the calibration data (in every batch)" if lo > hi else \
                    f"reaches NaN or infinity on the calibration data (range [{lo:.3g}, {hi:.3g}])"
                raise ConversionError(f"calibration: activation {name!r} {seen}; check --mean/--std, the --calib "
                                      "data and the model's weights")
            if lo == 0.0 and hi == 0.0:   # an activation the data never moves off zero: a zero scale,
                hi = ZERO_RANGE            # which XNNPACK refuses (small real ranges are kept as they are)
            found[name] = (float(np.float32(lo)), float(np.float32(hi)))
        self.last_stats = CalibrationStats(self.method, self.samples, batch, len(targets),
                                           time.perf_counter() - t0)
        return found

    def _run(self, probe: bytes, batch: int) -> Iterator[tuple[list[np.ndarray], object]]:
        """Invoke the probe model on every calibration batch; yields (arrays, interpreter)."""
        single = self._interpreter(probe, 1)
        batches = [int(d["shape"][0]) if len(d["shape"]) >= 2 else None for d in single.get_input_details()]
        if any(b != 1 for b in batches):   # the model fixes its batch (or has rank-1 inputs): as it is
            batch = 1
        try:
            interp = self._interpreter(probe, batch) if batch > 1 else single
        except Exception:  # a graph that cannot take a larger batch: calibrate sample by sample
            batch, interp = 1, single
        self._last_batch = batch
        details = interp.get_input_details()
        for arrays in self._batches(batch, batches):
            runner = interp
            if batch > 1 and len(arrays[0]) != batch:
                runner = single
            for detail, x in zip(runner.get_input_details() if runner is not interp else details, arrays):
                runner.set_tensor(detail["index"], x)
            try:
                runner.invoke()
            except RuntimeError as exc:   # a kernel stopped on these values (an integer division by 0 ...)
                from edgenet.errors import DataError
                from edgenet.inference import runtime_message

                raise DataError(f"calibration: LiteRT could not run the float model on the calibration data: "
                                f"{runtime_message(exc)}") from None
            yield arrays, runner

    def _range(self, r: _Range, full: bool) -> tuple[float, float]:
        if self.method is CalibMethod.PERCENTILE:
            return r.lo_sum / r.batches, r.hi_sum / r.batches
        if self.method is CalibMethod.MSE and not full and r.hist is not None:
            if self.activation_bits == 16:
                return mse_range(r.hist, r.lo, r.hi, levels=(1 << 16) - 1, symmetric=True)
            return mse_range(r.hist, r.lo, r.hi)
        return r.lo, r.hi

    def _update(self, r: _Range, value: np.ndarray, non_negative: bool = False) -> None:
        if value.size == 0:
            return
        hi = float(value.max())
        lo = 0.0 if non_negative and hi == hi else float(value.min())   # (a NaN max: both, as for any)
        r.lo, r.hi = min(r.lo, lo), max(r.hi, hi)
        if self.method is CalibMethod.PERCENTILE:
            flat = value.reshape(-1)
            plo, phi = np.percentile(flat, [100 - PERCENTILE, PERCENTILE])
            # never widen past what was seen, and keep exact zeros (ReLU outputs) at zero
            r.lo_sum += 0.0 if lo >= 0 else float(plo)
            r.hi_sum += float(phi)
        r.batches += 1


def _histogram(r: _Range, value: np.ndarray) -> None:
    if r.hi <= r.lo or value.size == 0:
        return
    counts, _ = np.histogram(value.reshape(-1), bins=HIST_BINS, range=(r.lo, r.hi))
    r.hist = counts.astype(np.float64) if r.hist is None else r.hist + counts


# Ops that sum many inputs with weights: a clipping error before one of them is one term among many
# (and MSE weighs it as such); after the last one on the way to an output, each value is an output value
_WEIGHTED_OPS = frozenset({3, 4, 9, 67, 126, 132, 141})   # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
#                                                           TRANSPOSE_CONV, BATCH_MATMUL, CONV_3D(_TRANSPOSE)
_PROBABILITY_OPS = frozenset({14, 25})                     # LOGISTIC, SOFTMAX
# Ops that move values without changing them: a probability stays one through them
_MOVING_OPS = frozenset({2, 5, 22, 26, 34, 36, 39, 43, 45, 49, 60, 65, 69, 70, 83, 88, 102, 130})
#   CONCATENATION, DEPTH_TO_SPACE, RESHAPE, SPACE_TO_DEPTH, PAD, GATHER, TRANSPOSE, SQUEEZE, STRIDED_SLICE,
#   SPLIT, PADV2, SLICE, TILE, EXPAND_DIMS, PACK, UNPACK, SPLIT_V, BROADCAST_TO


_NON_NEGATIVE_OPS = frozenset({14, 19, 21, 25})   # LOGISTIC, RELU, RELU6, SOFTMAX
_NON_NEGATIVE_FUSED = (1, 3)                      # ActivationFunctionType RELU, RELU6


def non_negative(obj) -> set[int]:
    """Output tensors of subgraph 0 of a TFLite ``ModelT`` that hold no negative value by the op that
    writes them: ReLU, ReLU6, sigmoid, softmax, and any op with a fused ReLU / ReLU6 (a conv, an
    add ...). Their int8 range starts at 0 whatever the data's own minimum."""
    graph = obj.subgraphs[0]
    codes = [max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) for c in obj.operatorCodes]
    found: set[int] = set()
    for op in graph.operators or []:
        fused = getattr(op.builtinOptions, "fusedActivationFunction", None)
        if codes[op.opcodeIndex] in _NON_NEGATIVE_OPS or fused in _NON_NEGATIVE_FUSED:
            found.update(int(t) for t in (op.outputs if op.outputs is not None else []) if t >= 0)
    return found



ZERO_RANGE = 1e-3   # the range given to an activation that is exactly zero on every calibration example


def full_range_tensors(obj) -> set[int]:
    """Tensors of subgraph 0 of a TFLite ``ModelT`` whose range MSE must not clip (they keep min/max):

    - the model's outputs, and every tensor that reaches an output without passing through a weighted
      op (conv, depthwise, fully connected, transposed conv, batch matmul): a detector's head after its
      last conv -- logits before the sigmoid, class scores, box distances, boxes decoded to pixels and
      the concatenation of both. Clipping there clips output values one for one: the rare large ones
      are the detections and the far box edges, exactly the values MSE (which weighs every value the
      same) sacrifices first. Before a weighted op, a clipped value is one term of a sum over many;
    - the outputs of sigmoid and softmax, and what only moves them (transpose, reshape ...):
      probabilities, whose rare large values (a confident class, the peak of YOLOv8's box-distance
      distribution that its DFL conv turns into a distance) are the signal, not a tail.
    """
    graph = obj.subgraphs[0]
    codes = [max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) for c in obj.operatorCodes]
    ops = [(codes[op.opcodeIndex], [int(t) for t in (op.inputs if op.inputs is not None else []) if t >= 0],
            [int(t) for t in (op.outputs if op.outputs is not None else []) if t >= 0])
           for op in (graph.operators or [])]           # in execution (topological) order
    probabilities: set[int] = set()
    for code, ins, outs in ops:
        if code in _PROBABILITY_OPS or (code in _MOVING_OPS and any(t in probabilities for t in ins)):
            probabilities.update(outs)
    keep = {int(o) for o in graph.outputs}
    for code, ins, outs in reversed(ops):
        if code not in _WEIGHTED_OPS and any(t in keep for t in outs):
            keep.update(ins)
    return keep | probabilities


def mse_range(hist: np.ndarray, lo: float, hi: float, levels: int = 256,
              symmetric: bool = False) -> tuple[float, float]:
    """The range ``[t lo, t hi]`` that minimizes the expected squared int8 round-trip error of
    values distributed as ``hist`` (equal bins over ``[lo, hi]``, which holds 0).

    ``symmetric``: the quantizer's grid is ``[-t m, t m]`` with ``m = max(|lo|, |hi|)`` (int16
    activations, ``levels = 65535``); the range returned is ``[lo, hi]`` clipped to it."""
    if hi <= lo or hist.sum() == 0:
        return lo, hi
    edges = np.linspace(lo, hi, len(hist) + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    t = np.geomspace(MSE_MIN_FACTOR, 1.0, MSE_STEPS)[:, None]
    if symmetric:
        m = max(-lo, hi)
        clo, chi = -t * m, t * m
    else:
        clo, chi = t * lo, t * hi
    step = (chi - clo) / (levels - 1)
    outside = np.maximum(centers - chi, 0.0) + np.maximum(clo - centers, 0.0)
    inside = (outside == 0)
    err = (hist * np.where(inside, step ** 2 / 12.0, outside ** 2)).sum(axis=1)
    best = int(np.argmin(err))
    if symmetric:
        return max(lo, float(clo[best, 0])), min(hi, float(chi[best, 0]))
    return float(clo[best, 0]), float(chi[best, 0])


# -- input range fixed by the preprocessing ----------------------------------------------------
def pixel_input_range(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """The model input's range for quantization, fixed by its normalization ``x = (p / 255 - mean) / std``
    (pixels ``p`` in 0..255) instead of calibrated: every pixel value is representable, none clips.

    When mean and std are the same for every channel, the range is ``[-z s, (255 - z) s]`` with
    ``s = 1 / (255 std)`` and ``z = round(255 mean)`` (halves up): the quantizer then gives the input
    exactly scale ``s`` and zero point ``z`` (uint8; ``z - 128`` for int8), so a uint8 input *is* the
    pixel value and an app feeds camera pixels unchanged. ``255 mean`` that is not an integer (127.5
    for mean 0.5) shifts the model's view of every pixel by under half a step (``0.5 s``).
    When they differ per channel, one per-tensor scale cannot map every channel's pixels to
    themselves; the range is the union of the channels' ranges and the app normalizes per channel
    and quantizes (``q = round(x / s + z)``).
    """
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if np.any(std <= 0):
        raise ConversionError(f"normalization std must be positive, got {std.tolist()}")
    if np.ptp(mean) == 0 and np.ptp(std) == 0:
        scale, zero = 1.0 / (255.0 * std[0]), float(np.floor(255.0 * mean[0] + 0.5))
        if 0 <= zero <= 255:
            return -zero * scale, (255.0 - zero) * scale
    return float(np.min(-mean / std)), float(np.max((1.0 - mean) / std))


def _numel(shape) -> int:
    return int(np.prod([max(int(d), 1) for d in shape])) if shape is not None else 1
