"""The ONNX graph passes, in the order the pipeline runs them between export and onnx_to_tf."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgenet.converters.bn_fold import fold_batchnorm
from edgenet.converters.cleanup import cleanup

if TYPE_CHECKING:  # pragma: no cover
    import onnx


@dataclass(frozen=True)
class GraphPass:
    """A named function ModelProto -> (new ModelProto, typed stats)."""

    name: str
    run: Callable[["onnx.ModelProto"], tuple["onnx.ModelProto", Any]]


@dataclass(frozen=True)
class PassResult:
    name: str
    stats: Any  # CleanupStats, BNFoldStats ...
    seconds: float


# cleanup first: BN folding needs its statistics as initializers, not Constant subgraphs
ONNX_PASSES: tuple[GraphPass, ...] = (
    GraphPass("cleanup", cleanup),
    GraphPass("bn_fold", fold_batchnorm),
)


def run_passes(
    model: "onnx.ModelProto", passes: Sequence[GraphPass] = ONNX_PASSES
) -> tuple["onnx.ModelProto", tuple[PassResult, ...]]:
    """Run ``passes`` in order; returns the final model and each pass's stats and wall time."""
    results = []
    for graph_pass in passes:
        start = time.perf_counter()
        model, stats = graph_pass.run(model)
        results.append(PassResult(graph_pass.name, stats, time.perf_counter() - start))
    return model, tuple(results)
