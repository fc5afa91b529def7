import os
import stat

import pytest

from edgenet.io import atomic_write_bytes, atomic_write_json


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.bin"
    old = os.umask(0o022)
    try:
        atomic_write_bytes(p, b"one")
        atomic_write_bytes(p, b"two")
    finally:
        os.umask(old)
    assert p.read_bytes() == b"two"
    assert [x.name for x in p.parent.iterdir()] == ["f.bin"]
    assert stat.S_IMODE(p.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_failed_write_keeps_old_file(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert p.read_text().strip().startswith("{") and '"a": 1' in p.read_text()
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_json_safe_rounds_drops_non_finite_and_unwraps_enums():
    import json
    import math

    from edgenet.config import Precision
    from edgenet.io import json_safe

    data = {"a": (1.23456789123, math.nan), "b": [math.inf, {"p": Precision.FLOAT16}], "c": 3}
    assert json_safe(data, digits=3) == {"a": [1.235, None], "b": [None, {"p": "float16"}], "c": 3}
    json.dumps(json_safe(data), allow_nan=False)   # strict JSON
