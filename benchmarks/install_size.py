"""Installed size of edgenet's extras, measured in fresh virtual environments.

    python benchmarks/install_size.py                      # onnx (your .onnx files) and convert (+ torch)
    python benchmarks/install_size.py --extras base,onnx --json

Each extra is installed from this source folder into its own new venv (``python -m venv``; torch
pinned first, as README says, when the extra brings torch) and its site-packages folder is
measured on disk, distribution by distribution (the venv's own pip and setuptools left out: they
come with every venv). Needs the package index (pip downloads what is not cached); nothing of it
runs at conversion time. The venvs are removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_PIN = "torch==2.13.0"
NEEDS_TORCH = {"convert", "all"}
AIM_MB = {"onnx": 400.0}     # issue #20: what a user converting .onnx files installs
VENV_OWN = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure(extra: str, workdir: Path) -> dict:
    """Install edgenet[extra] (``base``: no extra) into a new venv under ``workdir``; its size in MB,
    the largest distributions first, and whether torch / TensorFlow came with it."""
    venv = workdir / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if extra in NEEDS_TORCH:
        subprocess.run(pip + [TORCH_PIN], check=True)
    subprocess.run(pip + [str(ROOT) if extra == "base" else f"{ROOT}[{extra}]"], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    parts = {}
    for entry in site.iterdir():
        if entry.name.startswith(VENV_OWN) or entry.name.endswith(".dist-info") or entry.name == "__pycache__":
            continue
        key = entry.name.split(".libs")[0] if entry.name.endswith(".libs") else entry.name
        key = {"pillow": "PIL"}.get(key, key)     # pillow.libs: Pillow's bundled libraries
        parts[key] = parts.get(key, 0) + _size(entry)
    total = sum(parts.values())
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:8]
    return {"extra": extra, "mb": round(total / 1e6, 1),
            "largest": {k: round(v / 1e6, 1) for k, v in top},
            "torch": (site / "torch").exists(), "tensorflow": (site / "tensorflow").exists()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--extras", default="onnx,convert", help="comma-separated: base, onnx, convert, keras, mcu ...")
    ap.add_argument("--json", action="store_true", help="print the measurements as JSON lines")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgenet-size-"))
    try:
        for extra in [e.strip() for e in args.extras.split(",") if e.strip()]:
            r = measure(extra, work)
            if extra in AIM_MB:
                r["aim_mb"], r["meets_aim"] = AIM_MB[extra], r["mb"] <= AIM_MB[extra]
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                largest = ", ".join(f"{k} {v:g}" for k, v in r["largest"].items())
                aim = AIM_MB.get(extra)
                verdict = "" if aim is None else \
                    f"; {'meets' if r['mb'] <= aim else 'MISSES'} the {aim:.0f} MB aim"
                print(f"edgenet[{extra}]: {r['mb']:.0f} MB installed (torch: {'yes' if r['torch'] else 'no'}, "
                      f"TensorFlow: {'yes' if r['tensorflow'] else 'no'}){verdict}; largest MB: {largest}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
