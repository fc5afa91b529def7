"""A base-only install (plain venv, the wheel README's `pip wheel --no-deps -w dist .` builds, no extras)
runs `edgenet bench`.

The venv is NOT made with --system-site-packages (it would see torch/TensorFlow). pip takes the
base dependencies (numpy, ai-edge-litert, click, pillow) from the index or its cache; without an
index the test is skipped with the reason. Then the runtime lookup's failure messages are checked
for real: no runtime at all, and tflite-runtime 2.14 (built for numpy 1) under numpy 2.
"""
from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
_OFFLINE = ("No matching distribution", "Could not find a version", "Failed to establish a new connection",
            "Network is unreachable", "Temporary failure in name resolution", "ProxyError")


def _pip(py: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_base_only_install_runs_edgenet_bench(tiny_convert_out, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # as README says: a wheel built in the source folder, copied to the device, installed there
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                            str(REPO)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0 and "No module named 'hatchling'" in built.stderr + built.stdout:
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(REPO)],
                               capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    from edgenet import __version__

    wheel = dist / f"edgenet-{__version__}-py3-none-any.whl"
    assert wheel.is_file(), sorted(p.name for p in dist.iterdir())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "pip wheel --no-deps -w dist ." in readme and f"pip install {wheel.name}" in readme
    done = _pip(py, "install", "--quiet", str(wheel))
    if done.returncode != 0:
        if any(word in done.stderr + done.stdout for word in _OFFLINE):
            pytest.skip(f"pip cannot reach a package index for the base dependencies: {done.stderr.strip()[-300:]}")
        pytest.fail(f"pip install . failed:\n{done.stderr[-3000:]}")

    work = tmp_path / "work"                                 # not the repo: only the installed edgenet
    work.mkdir()
    for heavy in ("torch", "tensorflow", "onnx", "onnxruntime", "matplotlib"):
        probe = subprocess.run([str(py), "-c", f"import {heavy}"], capture_output=True, text=True, cwd=work)
        assert probe.returncode != 0, f"{heavy} is importable in the base-only venv"

    from PIL import Image

    images = tmp_path / "images" / "class_3"
    images.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)).save(images / f"{i}.png")
    edgenet = env_dir / "bin" / "edgenet"
    run = subprocess.run([str(edgenet), "bench", str(tiny_convert_out), "--data", str(images.parent),
                          "--runs", "5", "--min-seconds", "0", "--warmup", "1", "--warmup-seconds", "0",
                          "--json", "-", "-q"], capture_output=True, text=True, cwd=work, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["environment"]["runtime"] == "ai-edge-litert"
    assert [m["role"] for m in result["models"]] == ["float", "int8"]
    assert result["accuracy"]["samples"] == 3 and result["speedup"]["p50"] > 0
    where = subprocess.run([str(py), "-c", "import edgenet; print(edgenet.__file__)"], capture_output=True,
                           text=True, cwd=work)
    assert str(env_dir) in where.stdout                      # the installed package, not the source tree

    # no runtime at all: one line naming the install command
    assert _pip(py, "uninstall", "--yes", "--quiet", "ai-edge-litert").returncode == 0
    none = subprocess.run([str(edgenet), "bench", str(tiny_convert_out)], capture_output=True, text=True, cwd=work)
    assert none.returncode == 3
    assert none.stderr.strip() == "edgenet: error: no TFLite runtime found: install it with: pip install ai-edge-litert"

    # tflite-runtime 2.14 (its last release, built for numpy 1) under numpy 2: named, never crashed into
    got = _pip(py, "install", "--quiet", "--no-deps", "tflite-runtime==2.14.0")
    if got.returncode != 0:
        pytest.skip(f"tflite-runtime 2.14.0 cannot be installed here for Python {sys.version_info[:2]}: "
                    f"{got.stderr.strip()[-200:]}")
    old = subprocess.run([str(edgenet), "bench", str(tiny_convert_out)], capture_output=True, text=True, cwd=work)
    assert old.returncode == 3, old.stderr
    assert "tflite-runtime 2.14.0 is installed but was built for numpy 1" in old.stderr
    assert "pip install ai-edge-litert" in old.stderr and "Traceback" not in old.stderr
