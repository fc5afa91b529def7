"""Outputs written as parts, joined back before they are judged.

A detector head that concatenates boxes in pixels and 0..1 scores along one axis cannot keep both
under one int8 scale; `edgenet convert` then writes it as one output per part, each with its own
scale (:mod:`edgenet.converters.split_outputs`), and the app concatenates them. The question a
verdict asks is the app's -- are the detections the same? -- so the parts are joined into the
tensor the app rebuilds and that tensor is judged by its kind (a detection head, not two
unrelated arrays judged by SQNR). Numpy only: `edgenet bench` joins them the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class JoinedOutput:
    """Model outputs ``first`` .. ``first + count - 1`` concatenated along ``axis`` (an axis of the
    arrays as the model returns them, batch first) are the output ``name``."""

    name: str
    first: int
    count: int
    axis: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "first": self.first, "count": self.count, "axis": self.axis}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "JoinedOutput | None":
        """The join recorded in report.json's ``split_outputs`` (``position``, ``parts``,
        ``array_axis``); None for a record without them (written by an older edgenet)."""
        try:
            first, count, axis = int(record["position"]), len(record["parts"]), int(record["array_axis"])
            name = str(record["output"])
        except (KeyError, TypeError, ValueError):
            return None
        if first < 0 or count < 2 or axis < 0:
            return None
        return cls(name, first, count, axis)


def join_arrays(arrays: Sequence[np.ndarray], joins: Sequence[JoinedOutput]) -> list[np.ndarray]:
    """``arrays`` (one per model output, in the model's order) with each join's parts replaced by
    their concatenation. ValueError when a join does not fit (too few outputs, shapes that differ
    off the join axis)."""
    return join_items(arrays, joins, lambda j, parts: np.concatenate([np.asarray(p) for p in parts], axis=j.axis))


def join_items(items: Sequence[Any], joins: Sequence[JoinedOutput], joined=lambda j, parts: parts[0]) -> list[Any]:
    """Per-output ``items`` (arrays, names, layouts, flags) with each join's parts replaced by one
    item: ``joined(join, parts)`` (default: the first part's). ValueError when a join has fewer
    items than parts from its position."""
    out, k = [], 0
    starts = {j.first: j for j in joins}
    while k < len(items):
        j = starts.get(k)
        if j is None:
            out.append(items[k])
            k += 1
            continue
        parts = list(items[k:k + j.count])
        if len(parts) != j.count:
            raise ValueError(f"output {j.name!r} has {j.count} parts; the model has {len(items) - k} outputs from "
                             f"position {k}")
        out.append(joined(j, parts))
        k += j.count
    return out
