"""The repair's model runs, each made once: a candidate model's outputs on the evaluation subset kept
for the quick verdict, the search's score and the full verdict that follow on the same model.

The repair judges a candidate quickly on the first examples of the evaluation set, scores it on the
same examples, and judges it on the whole set when the quick verdict passes. Without this the same
model ran on the same examples two or three times (int16 promotions run on LiteRT's reference
kernels: a second each on a 320x320 detector). Outputs are the same arrays a fresh run gives: the
interpreter runs one invocation per batch of examples, each independent of the others, so the whole
set's outputs are the subset's followed by the rest's (:func:`edgenet.inference.invocations`).
For the same reason the invocations are shared out among single-threaded interpreters run side by
side (:func:`edgenet.inference.predict_side_by_side`: int16 ops run on single-threaded kernels).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

KEEP = 4   # models whose outputs are kept (the search goes back to the last one or two it made)


class SubsetRuns:
    """``outputs(model)``: a .tflite model's float32 outputs (the model's order, one array per output)
    on the first ``count`` invocations of ``examples`` (one array per input, as
    :meth:`edgenet.inference.TFLiteModel.predict_all` takes them; ``batches[i]``: input ``i``'s
    examples per invocation); ``full(model)``: on all of ``examples`` (the subset's outputs followed by
    the rest's). The last :data:`KEEP` models' subset outputs are kept, by the model's bytes."""

    def __init__(self, examples: Sequence[np.ndarray], batches: Sequence[int], count: int, threads: int | None):
        self.subset = [x[: count * b] for x, b in zip(examples, batches)]
        rest = [x[count * b:] for x, b in zip(examples, batches)]
        # the rest in whole invocations only (a fresh run drops a partial last one too)
        self.rest = rest if all(len(x) >= b for x, b in zip(rest, batches)) else None
        self.threads = threads
        self._kept: OrderedDict[bytes, list[np.ndarray]] = OrderedDict()
        self.runs = self.reused = 0

    def outputs(self, model: bytes) -> list[np.ndarray]:
        if model in self._kept:
            self._kept.move_to_end(model)
            self.reused += 1
            return self._kept[model]
        outs = self._run(model, self.subset)
        self._kept[model] = outs
        while len(self._kept) > KEEP:
            self._kept.popitem(last=False)
        return outs

    def full(self, model: bytes) -> list[np.ndarray]:
        head = self.outputs(model)
        if self.rest is None:
            return head
        tail = self._run(model, self.rest)
        return [np.concatenate([h, t]) for h, t in zip(head, tail)]

    def _run(self, model: bytes, examples: Sequence[np.ndarray]) -> list[np.ndarray]:
        from edgenet.inference import predict_side_by_side

        self.runs += 1
        return predict_side_by_side(model, examples, self.threads)
