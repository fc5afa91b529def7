"""README's digits walk-through (its quick start; docs/results.md gives the numbers), run as written (fewer epochs) in fresh processes: train a
checkpoint, convert it with no data flags (it calibrates on the digits it was trained on), bench the
folder with no --data (the held-out digits convert kept). What a new user does in the first hour."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _walkthrough_block(page: Path) -> str:
    """The code block of `page` that starts with `edgenet train --dataset digits`."""
    text = page.read_text()
    block = text[text.index("edgenet train --dataset digits"):]
    return block[: block.index("```")]


def _readme_commands() -> list[list[str]]:
    """The three commands of README's quick start ("A trained model, converted and benchmarked"), which
    docs/results.md gives, word for word, beside the numbers they measured."""
    block = _walkthrough_block(ROOT / "README.md")
    commands = [shlex.split(line.split("#", 1)[0]) for line in block.splitlines() if line.startswith("edgenet ")]
    assert [c[1] for c in commands] == ["train", "convert", "bench"]
    return commands


def test_results_page_gives_the_walkthrough_readme_runs():
    assert _walkthrough_block(ROOT / "docs" / "results.md") == _walkthrough_block(ROOT / "README.md")


def test_digits_walkthrough_runs_as_readme_says(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("tensorflow")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    outputs = []
    for command in _readme_commands():
        if command[1] == "train":   # 8 epochs instead of 40: the same steps, a less trained model
            command[command.index("--epochs") + 1] = "8"
        proc = subprocess.run([sys.executable, "-m", "edgenet", *command[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        outputs.append(proc.stdout + proc.stderr)

    trained = float(re.search(r"test top-1 ([\d.]+)%", outputs[0]).group(1))
    assert trained > 50                                           # it learned (10 classes: chance is 10%)
    report = json.loads((tmp_path / "digits_out" / "report.json").read_text())
    assert report["data"]["dataset"] == "digits" and not report["data"]["synthetic"]
    assert "untrained" not in outputs[1] and "synthetic" not in outputs[1]

    bench = json.loads((tmp_path / "bench.json").read_text())
    accuracy = bench["accuracy"]
    assert accuracy["samples"] == 400 and accuracy["labelled"] and "digits" in accuracy["data"]
    float_top1 = accuracy["models"]["float"]["top1"]
    assert abs(float_top1 - trained / 100) < 0.01                 # bench scores what train measured
    assert accuracy["quality"]["passed"]
    assert (tmp_path / "bench.md").read_text().count("top-1") >= 1
