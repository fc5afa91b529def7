"""The bench JSON schema: what the code writes is exactly what SCHEMA.md documents, with those types."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgenet.benchmark import SCHEMA_VERSION, BenchResult, RemoteInfo, bench
from edgenet.errors import DataError

SCHEMA_MD = Path(__file__).resolve().parents[1] / "edgenet" / "benchmark" / "SCHEMA.md"
_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


def documented_fields() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", SCHEMA_MD.read_text(), flags=re.M)
    assert len(rows) > 50
    return {path: kind.strip() for path, kind in rows}


def written_fields(obj, prefix: str = "") -> dict[str, object]:
    """Every field path in a result dict -> its value (list items as ``[]``, roles as ``<role>``)."""
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = "<role>" if prefix == "accuracy.models" else key
            path = f"{prefix}.{name}" if prefix else name
            out[path] = value
            out.update(written_fields(value, path))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                out.update(written_fields(item, prefix + "[]"))
    return out


def _type_ok(value, kind: str) -> bool:
    if value is None:
        return kind.endswith("or null")
    base = kind.split()[0]
    want = _TYPES[base]
    if base in ("integer", "number") and isinstance(value, bool):
        return False
    if not isinstance(value, want):
        return False
    if base == "array" and "of" in kind and value:
        item = kind.split(" of ")[1].split()[0].rstrip("s")
        return all(_type_ok(v, item) for v in value)
    return True


@pytest.fixture(scope="module")
def full_result(tiny_convert_out) -> dict:
    x = np.random.default_rng(0).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    result = bench(tiny_convert_out, data=(x, np.arange(6)), warmup=1, warmup_seconds=0, runs=5, min_seconds=0.01)
    return result.with_remote(RemoteInfo("pi@example:22", "python3"), {}).to_dict()


def test_every_written_field_is_documented_and_every_documented_field_is_written(full_result, tiny_convert_out):
    documented = documented_fields()
    written = written_fields(full_result)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    summary = bench(tiny_convert_out, data=(x, np.arange(6)), warmup=1, warmup_seconds=0, runs=5,
                    min_seconds=0.01).to_dict(raw_times=False)          # the default file: runs summarized
    written.update(written_fields(summary))
    assert sorted(set(written) - set(documented)) == [], "fields written but not in SCHEMA.md"
    assert sorted(set(documented) - set(written)) == [], "fields in SCHEMA.md never written"


def test_written_values_have_the_documented_types(full_result):
    documented = documented_fields()
    wrong = {path: (value, documented[path]) for path, value in written_fields(full_result).items()
             if not _type_ok(value, documented[path])}
    assert wrong == {}


def test_schema_identity_and_json_cleanliness(full_result):
    assert full_result["schema"] == "edgenet.bench" and full_result["schema_version"] == SCHEMA_VERSION == 1
    text = json.dumps(full_result, allow_nan=False)      # no NaN/Infinity: strict JSON
    assert BenchResult.from_dict(json.loads(text)).to_dict() == full_result


def test_from_dict_rejects_other_documents(full_result):
    with pytest.raises(DataError, match="not an edgenet bench result"):
        BenchResult.from_dict({"schema": "something else"})
    with pytest.raises(DataError, match="schema version 2 is not supported"):
        BenchResult.from_dict({**full_result, "schema_version": 2})
    broken = json.loads(json.dumps(full_result))
    del broken["models"][0]["latency"]
    with pytest.raises(DataError, match="malformed bench result"):
        BenchResult.from_dict(broken)


def test_reader_ignores_fields_a_newer_writer_adds(full_result):
    d = json.loads(json.dumps(full_result))
    d["gpu"] = "none"
    d["environment"]["npu"] = None
    d["models"][0]["latency"]["p999_ms"] = 1.0
    d["windows"][0]["core"] = 3
    d["speedup"]["ci95"] = [1.0, 2.0]
    d["remote"]["port"] = 22
    again = BenchResult.from_dict(d)
    assert again.to_dict() == full_result
