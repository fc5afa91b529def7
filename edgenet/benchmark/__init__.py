"""On-device benchmark: int8 vs float latency and accuracy with numpy and a TFLite runtime only.

    >>> from edgenet.benchmark import bench
    >>> result = bench("out/", data="shapes", runs=100)        # doctest: +SKIP
    >>> result.speedup.p50, result.to_dict()["models"][1]["latency"]["p99_ms"]  # doctest: +SKIP

The JSON schema of ``BenchResult.to_dict()`` is documented in ``edgenet/benchmark/SCHEMA.md``.
"""
from edgenet.benchmark.accuracy import AccuracyReport, ModelAccuracy
from edgenet.benchmark.options import BenchSettings, Delegate, DelegateKind
from edgenet.benchmark.result import SCHEMA, SCHEMA_VERSION, BenchResult, ModelReport, RemoteInfo
from edgenet.benchmark.run import bench
from edgenet.benchmark.stats import LatencyStats, Speedup

__all__ = ["bench", "BenchResult", "BenchSettings", "Delegate", "DelegateKind", "ModelReport",
           "LatencyStats", "Speedup", "AccuracyReport", "ModelAccuracy", "RemoteInfo", "SCHEMA",
           "SCHEMA_VERSION"]
