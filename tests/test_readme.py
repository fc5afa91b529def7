"""README's promises that can be run: the Python API example, the exit codes table, the test command."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


@pytest.mark.slow
def test_python_api_example_runs_as_written(tmp_path):
    pytest.importorskip("tensorflow")
    code = re.search(r"```python\n(.*?)```", _section("Python API"), re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("True ") and lines[0].endswith("model_int8.tflite")
    assert lines[1].startswith("int8 ") and lines[2] == "['float32', 'int8'] True"
    assert (tmp_path / "api_out" / "report.json").is_file()


def test_exit_codes_table_matches_the_error_classes():
    from edgenet import errors

    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", _section("Exit codes"), re.M))
    assert errors.UsageError.exit_code == 2 and "2" in table
    assert errors.MissingDependencyError.exit_code == 3 and "3" in table
    for cls in (errors.ModelError, errors.DataError, errors.ConversionError, errors.TargetError):
        assert cls.exit_code == 1
    assert "70" in table


def test_ci_runs_exactly_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    command = re.search(r"The test command is `([^`]+)`", text).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert [ln.strip() for ln in ci.splitlines() if "pytest" in ln and not ln.strip().startswith("#")] == [command]
