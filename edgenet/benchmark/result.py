"""The benchmark's result: typed, frozen, and serialised to the JSON schema in SCHEMA.md."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgenet.benchmark.accuracy import AccuracyReport
from edgenet.benchmark.environment import Environment
from edgenet.benchmark.models import TensorInfo
from edgenet.benchmark.options import BenchSettings, Delegate
from edgenet.benchmark.stats import LatencyStats, Speedup
from edgenet.benchmark.timing import Window
from edgenet.errors import DataError
from edgenet.io import json_safe

SCHEMA = "edgenet.bench"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelReport:
    role: str                       # "float" (the reference) | "int8" (the quantized model under test)
    precision: str                  # from its tensors: float32 | float16 | dynamic | int8 | int16x8
    path: str
    sha256: str
    size_bytes: int
    input: TensorInfo
    output: TensorInfo
    delegated: bool                 # a delegate took over (part of) the graph
    load_ms: float                  # Interpreter(model_path=...)
    init_ms: float                  # allocate_tensors(), which applies the delegate
    first_inference_ms: float
    rss_after_load_bytes: int | None
    warmup_ms: tuple[float, ...]
    latency: LatencyStats
    times_ms: tuple[float, ...]     # every measured run, in the order run

    def to_dict(self, raw_times: bool = True) -> dict:
        """The model's JSON; ``raw_times`` False keeps the summary of its runs (``times_summary``: the
        run count and 21 quantiles, 0, 5, ... 100%) instead of every run (``times_ms``)."""
        return {
            "role": self.role, "precision": self.precision, "path": self.path, "sha256": self.sha256, "size_bytes": self.size_bytes,
            "input": self.input.to_dict(), "output": self.output.to_dict(), "delegated": self.delegated,
            "load_ms": self.load_ms, "init_ms": self.init_ms, "first_inference_ms": self.first_inference_ms,
            "rss_after_load_bytes": self.rss_after_load_bytes,
            "warmup": {"runs": len(self.warmup_ms), "seconds": round(sum(self.warmup_ms) / 1000.0, 6),
                       "times_ms": list(self.warmup_ms)},
            "latency": self.latency.to_dict(),
            **({"times_ms": list(self.times_ms)} if raw_times else {"times_summary": times_summary(self.times_ms)}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelReport":
        return cls(
            role=d["role"], precision=d.get("precision") or ("int8" if d["role"] == "int8" else "float32"),
            path=d["path"], sha256=d["sha256"], size_bytes=int(d["size_bytes"]),
            input=TensorInfo.from_dict(d["input"]), output=TensorInfo.from_dict(d["output"]),
            delegated=bool(d["delegated"]), load_ms=d["load_ms"], init_ms=d["init_ms"],
            first_inference_ms=d["first_inference_ms"], rss_after_load_bytes=d.get("rss_after_load_bytes"),
            warmup_ms=tuple(d["warmup"]["times_ms"]), latency=_known(LatencyStats, d["latency"]),
            times_ms=tuple(d.get("times_ms", ())),   # a summary-only JSON (written without --raw-times)
        )


@dataclass(frozen=True)
class RemoteInfo:
    destination: str               # user@host:port as given
    python: str                    # the device's Python that ran the benchmark

    def to_dict(self) -> dict:
        return {"destination": self.destination, "python": self.python}


@dataclass(frozen=True)
class BenchResult:
    edgenet_version: str
    created_utc: str
    environment: Environment
    settings: BenchSettings
    models: tuple[ModelReport, ...]
    windows: tuple[Window, ...]
    speedup: Speedup | None
    accuracy: AccuracyReport | None
    notes: tuple[str, ...] = ()
    remote: RemoteInfo | None = None
    preprocess: str | None = None   # where the preprocessing came from (a path, or "default")
    labels: str | None = None       # labels.txt used, if any
    noise: tuple[str, ...] = ()     # why the latency numbers are noisy (empty: nothing seen)
    schema_version: int = field(default=SCHEMA_VERSION)

    def model(self, role: str) -> ModelReport | None:
        return next((m for m in self.models if m.role == role), None)

    def to_dict(self, raw_times: bool = True) -> dict[str, Any]:
        """The result as SCHEMA.md describes it; ``raw_times`` False: each model's runs summarized
        (:meth:`ModelReport.to_dict`), a file of a few kB instead of every run."""
        return json_safe({
            "schema": SCHEMA,
            "schema_version": self.schema_version,
            "edgenet_version": self.edgenet_version,
            "created_utc": self.created_utc,
            "environment": self.environment.to_dict(),
            "settings": self.settings.to_dict(),
            "preprocess": self.preprocess,
            "labels": self.labels,
            "models": [m.to_dict(raw_times) for m in self.models],
            "windows": [w.to_dict() for w in self.windows],
            "speedup": self.speedup.to_dict() if self.speedup else None,
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "remote": self.remote.to_dict() if self.remote else None,
            "notes": list(self.notes),
            "noisy": bool(self.noise),
            "noise": list(self.noise),
        }, digits=6)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchResult":
        """Rebuild a result from its JSON (e.g. the one a remote device sent back)."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise DataError("not an edgenet bench result (missing \"schema\": \"edgenet.bench\")")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"bench result schema version {d.get('schema_version')} is not supported "
                            f"(this edgenet reads version {SCHEMA_VERSION})")
        try:
            s = d["settings"]
            settings = BenchSettings(
                threads=int(s["threads"]), delegate=Delegate.parse(s["delegate"]), warmup=int(s["warmup_runs"]),
                warmup_seconds=float(s["warmup_seconds"]), runs=int(s["min_runs"]),
                min_seconds=float(s["min_seconds"]), window=int(s["window_runs"]),
                window_seconds=float(s["window_seconds"]))
            remote = d.get("remote")
            return cls(
                edgenet_version=d["edgenet_version"], created_utc=d["created_utc"],
                environment=Environment.from_dict(d["environment"]), settings=settings,
                models=tuple(ModelReport.from_dict(m) for m in d["models"]),
                windows=tuple(_known(Window, w) for w in d["windows"]),
                speedup=_known(Speedup, d["speedup"]) if d.get("speedup") else None,
                accuracy=AccuracyReport.from_dict(d["accuracy"]) if d.get("accuracy") else None,
                notes=tuple(d.get("notes", ())), noise=tuple(d.get("noise", ())),
                remote=_known(RemoteInfo, remote) if remote else None,
                preprocess=d.get("preprocess"), labels=d.get("labels"),
                schema_version=int(d["schema_version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed bench result JSON ({type(exc).__name__}: {exc})") from exc

    def with_remote(self, remote: RemoteInfo, local_names: dict[str, str]) -> "BenchResult":
        """This result with the device's temporary paths replaced by the local files they came from
        (``local_names``: file name on the device -> local path)."""
        def local(path: str | None) -> str | None:
            return None if path is None else local_names.get(path.replace("\\", "/").rsplit("/", 1)[-1], path)

        models = tuple(replace(m, path=local(m.path)) for m in self.models)
        return replace(self, models=models, remote=remote, preprocess=local(self.preprocess),
                       labels=local(self.labels))


def times_summary(times_ms) -> dict:
    """``{"runs": n, "quantiles_ms": [q0, q5, ..., q100]}`` of the measured runs (linear interpolation)."""
    import numpy as np

    t = np.asarray(times_ms, dtype=np.float64)
    qs = np.percentile(t, np.arange(0, 101, 5)).tolist() if t.size else []
    return {"runs": int(t.size), "quantiles_ms": qs}


def _known(cls, d: dict):
    """``cls(**d)`` with only the fields ``cls`` has: fields added by a newer schema are ignored."""
    return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
