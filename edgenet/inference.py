"""Running a .tflite model on float inputs, whatever its input/output types.

:class:`TFLiteModel` quantizes float inputs with the model's own input scale and zero point and
dequantizes integer outputs, so a float32 model and its int8 twin are called the same way; models
with several inputs, a batch above 1 or rank-1 inputs are run one invocation per batch of examples
(:func:`invocations`). Used by validation on the workstation and by the benchmark on the device
(numpy + LiteRT only).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edgenet.data.preprocess import dequantize_output, quantize_input
from edgenet.errors import DataError
from edgenet.runtime import make_interpreter

_INTEGER = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


def invocations(arrays: Sequence[np.ndarray], batches: Sequence[int | None]) -> Iterator[list[np.ndarray]]:
    """Group examples into model invocations.

    ``arrays[i]`` holds the examples of input ``i`` along axis 0; ``batches[i]`` is that input's
    batch (examples per invocation, dim 0 of its tensor), or None for an input without a batch axis
    (rank 1: each example is the whole tensor). Yields, per invocation, one array per input:
    ``arrays[i][k*b:(k+1)*b]`` (or ``arrays[i][k]`` without a batch axis). Examples past the last
    whole invocation are not used (:func:`invocation_count` says how many invocations there are).
    """
    for k in range(invocation_count(arrays, batches)):
        yield [x[k] if b is None else x[k * b:(k + 1) * b] for x, b in zip(arrays, batches)]


def invocation_count(arrays: Sequence[np.ndarray], batches: Sequence[int | None]) -> int:
    """Whole invocations the examples make (the smallest over the inputs)."""
    return min(len(x) // (b or 1) for x, b in zip(arrays, batches)) if arrays else 0


def stack_outputs(per_invocation: Sequence[np.ndarray], batches: Sequence[int | None] = ()) -> np.ndarray:
    """One output's values over invocations: concatenated along axis 0 (a scalar output: stacked).

    ``batches``: the model inputs' batch sizes. When they are all 1 and an output of rank 3 is
    ``[T, 1, C]`` with T > 1, its batch axis is axis 1 -- the time-first layout of a CTC recognizer
    exported from PyTorch (``[T, N, C]``, what ``nn.CTCLoss`` takes; ddddocr's CRNN), which its app reads
    as ``out[:, 0, :]`` -- and the examples are stacked along that axis, moved first: ``[S, T, ...]``,
    so that each example stays one sequence rather than becoming T rows. Rank 3 only: a rank-4 output
    comes back NHWC from TFLite and NCHW from ONNX (``[K, 1, H, W]`` is ``[K, H, W, 1]``), so a rule on
    its axis 1 would stack the two sides differently."""
    if not per_invocation:
        return np.zeros((0,), dtype=np.float32)
    if np.ndim(per_invocation[0]) == 0:
        return np.stack(per_invocation)
    first = np.shape(per_invocation[0])
    if (batches and all(b == 1 for b in batches) and len(first) == 3 and first[0] > 1 and first[1] == 1):
        return np.concatenate([np.swapaxes(np.asarray(a), 0, 1) for a in per_invocation])
    return np.concatenate(per_invocation)


class TFLiteModel:
    """A .tflite model called on float examples: quantizes them with each input's own scale and
    zero point, runs one invocation per batch of examples and dequantizes integer outputs. The one
    runner behind validation and the benchmark's accuracy pass.

    Inputs are taken in the model's order (the signature's, which edgenet writes in the ONNX graph's
    order). Each input's examples are an array ``(S, *example_shape)``: the input's shape without its
    batch dim (``(S, H, W, C)`` for an NHWC image input of batch 1 or more), or the whole shape for a
    rank-1 input. Outputs come back concatenated over invocations along axis 0 (for batch-1 models:
    ``(S, *output_shape[1:])``).
    """

    def __init__(self, model: str | Path | bytes, num_threads: int | None = None, use_xnnpack: bool = True):
        self._bind(make_interpreter(model, num_threads, use_xnnpack=use_xnnpack))

    @classmethod
    def from_interpreter(cls, interpreter) -> "TFLiteModel":
        """Wrap an interpreter that is already allocated (opened with a delegate, timed ...)."""
        model = cls.__new__(cls)
        model._bind(interpreter)
        return model

    def _bind(self, interpreter) -> None:
        self.interpreter = interpreter
        self.inputs = inputs_in_model_order(interpreter)
        self.input = self.inputs[0]
        self.outputs = outputs_in_model_order(interpreter)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's shape."""
        return tuple(int(d) for d in self.input["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input["dtype"])

    @property
    def batches(self) -> list[int | None]:
        """Examples per invocation of each input (None: no batch axis)."""
        return [int(d["shape"][0]) if len(d["shape"]) >= 2 else None for d in self.inputs]

    @property
    def example_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in (d["shape"][1:] if len(d["shape"]) >= 2 else d["shape"])) for d in self.inputs]

    def quantize(self, x: np.ndarray, input_index: int = 0) -> np.ndarray:
        """Float values for input ``input_index`` in the type the model takes (quantized with that
        input's scale and zero point when it is an integer input)."""
        detail = self.inputs[input_index]
        dtype = np.dtype(detail["dtype"])
        if dtype in _INTEGER:
            scale, zp = detail["quantization"]
            return quantize_input(x, scale, zp, dtype)
        return x.astype(dtype, copy=False)

    def _examples(self, x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        xs = [x] if isinstance(x, np.ndarray) else list(x)
        if len(xs) != len(self.inputs):
            raise DataError(f"the model has {len(self.inputs)} input(s); {len(xs)} array(s) of examples were given")
        return xs

    def check_input(self, x: np.ndarray | Sequence[np.ndarray]) -> None:
        for k, (arr, want, batch) in enumerate(zip(self._examples(x), self.example_shapes, self.batches)):
            if tuple(arr.shape[1:]) != want:
                which = f" for input {k}" if len(self.inputs) > 1 else ""
                raise DataError(f"input samples{which} have shape {tuple(arr.shape[1:])} but the model expects {want}"
                                + (" (channel count differs)" if arr.shape[1:-1] == want[:-1] else ""))
            if len(arr) < (batch or 1):
                raise DataError(f"{len(arr)} example(s) do not fill one batch of {batch} of the model's input {k}")

    def predict(self, x: np.ndarray | Sequence[np.ndarray], output: int = 0) -> np.ndarray:
        """Float examples -> float32 output ``output``, one invoke per batch of examples."""
        return self.predict_all(x, (output,))[0]

    def predict_all(self, x: np.ndarray | Sequence[np.ndarray], outputs: Sequence[int] | None = None
                    ) -> list[np.ndarray]:
        """Float examples (one array per input, or one array for a one-input model) -> one float32
        array per output (all, in the model's order, by default), over every whole invocation."""
        xs = self._examples(x)
        self.check_input(xs)
        details = [self.outputs[k] for k in (range(len(self.outputs)) if outputs is None else outputs)]
        qs = [self.quantize(arr, k) for k, arr in enumerate(xs)]
        indices = [d["index"] for d in self.inputs]
        results: list[list[np.ndarray]] = [[] for _ in details]
        done = 0
        for group in invocations(qs, self.batches):
            for index, value in zip(indices, group):
                self.interpreter.set_tensor(index, value)
            try:
                self.interpreter.invoke()
            except RuntimeError as exc:   # a kernel stopped on these values (an integer division by 0 ...)
                raise DataError(f"LiteRT could not run the model on example {done}: {runtime_message(exc)}") from None
            done += len(group[0]) if group and np.ndim(group[0]) else 1
            for det, res in zip(details, results):
                res.append(self.interpreter.get_tensor(det["index"]))
        batches = [b for b in self.batches if b is not None]
        return [_dequantized(det, stack_outputs(res, batches)) for det, res in zip(details, results)]


def runtime_message(exc: BaseException) -> str:
    """LiteRT's error text on one line: its lines run together ("Division by 0Node number 4 (FLOOR_DIV)
    failed to invoke.") and are separated here by "; "."""
    text = re.sub(r"(?<=\S)(?=Node number \d)", "; ", str(exc).strip())
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def predict_side_by_side(model: str | Path | bytes, x: np.ndarray | Sequence[np.ndarray],
                         workers: int | None = None) -> list[np.ndarray]:
    """:meth:`TFLiteModel.predict_all` of every output, with the invocations shared out in order among
    ``workers`` (default: one per core) single-threaded interpreters run side by side (LiteRT's invoke
    releases the GIL). The arrays are the same as one interpreter's: each invocation is computed on its
    own, and XNNPACK's kernels give the same values on any number of threads. What it is for: int16
    (int16x8) ops run on LiteRT's reference kernels, single-threaded whatever the interpreter is given;
    side by side they use every core (a 320x320 detector with int16 activations everywhere, 8
    examples, 2 cores: 2.5 s -> 1.2 s)."""
    import os

    first = TFLiteModel(model, 1)
    xs = first._examples(x)
    first.check_input(xs)
    batches = first.batches
    count = invocation_count(xs, batches)
    workers = max(1, min(workers or os.cpu_count() or 1, count))
    if workers == 1:
        return first.predict_all(xs)
    from concurrent.futures import ThreadPoolExecutor

    cuts = [count * k // workers for k in range(workers + 1)]
    parts = [[arr[a:z] if b is None else arr[a * b:z * b] for arr, b in zip(xs, batches)]
             for a, z in zip(cuts, cuts[1:])]
    runners = [first] + [TFLiteModel(model, 1) for _ in parts[1:]]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outs = list(pool.map(lambda job: job[0].predict_all(job[1]), zip(runners, parts)))
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def _dequantized(detail: dict, y: np.ndarray) -> np.ndarray:
    if np.dtype(detail["dtype"]) in _INTEGER:
        scale, zp = detail["quantization"]
        return dequantize_output(y, scale, zp)
    return y.astype(np.float32, copy=False)


def inputs_in_model_order(interpreter) -> list[dict]:
    """The interpreter's input details in the model's order: the subgraph's, which is the order of
    the converted function's arguments, i.e. the ONNX graph's. (A signature's input map is keyed by
    name and would come back sorted by name.)"""
    return list(interpreter.get_input_details())


def outputs_in_model_order(interpreter) -> list[dict]:
    """The interpreter's output details in the model's own order: ``output_0``, ``output_1`` ... of
    its signature (edgenet's converter writes one; TFLite may list subgraph outputs in another
    order), or the subgraph's order when there is no such signature."""
    details = interpreter.get_output_details()
    try:
        signatures = interpreter._get_full_signature_list()   # {key: {"inputs": {name: index}, "outputs": ...}}
    except Exception:  # private API: absent in some runtimes
        return details
    if not signatures or len(signatures) != 1:
        return details
    named = next(iter(signatures.values())).get("outputs", {})
    keys = [k for k in named if re.fullmatch(r"output_\d+", k)]
    by_index = {int(d["index"]): d for d in details}
    if len(keys) != len(details) or any(int(named[k]) not in by_index for k in keys):
        return details
    return [by_index[int(named[k])] for k in sorted(keys, key=lambda k: int(k.rsplit("_", 1)[1]))]


def op_counts(model: str | Path | bytes) -> dict[str, int]:
    """Builtin op type -> count in a .tflite model (read with no delegate applied)."""
    interp = make_interpreter(model, use_xnnpack=False)
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))
