"""Lazy imports of the heavy, optional dependencies (torch, onnx, onnxruntime ...).

``import edgenet`` and the device-side commands must work with the base install alone, so modules
that need an extra import it through :func:`require`, which turns a missing package into one
clear line naming the install command.
"""
from __future__ import annotations

import importlib
from types import ModuleType

_INSTALL = {
    "convert": "pip install torch==2.13.0 && pip install '{src}[convert]'",
    "digits": "pip install scikit-learn",   # the built-in digits ship inside scikit-learn
}

# module -> extra that provides it
_EXTRA_OF = {
    "torch": "convert",
    "onnx": "onnx",                   # .onnx sources need no torch: the onnx extra (convert includes it)
    "onnxruntime": "onnx",
    "litert_quantizer": "onnx",
    "tensorflow": "keras",
    "keras": "keras",
    "sklearn": "digits",
    "tflite_micro": "mcu",
    "ethosu": "mcu",
    "matplotlib": "plot",
}


def source_spec() -> str:
    """What pip installs edgenet from, here: edgenet is not on a package index, so an extra is added
    to the source tree this edgenet runs from (an editable or source install), else to the wheel
    (``edgenet-<version>-py3-none-any.whl``, built with ``pip wheel --no-deps -w dist .`` in the source tree)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        if "name = \"edgenet\"" in (root / "pyproject.toml").read_text(encoding="utf-8"):
            return str(root)
    except OSError:
        pass
    from edgenet import __version__

    return f"edgenet-{__version__}-py3-none-any.whl"


def install_hint(extra: str) -> str:
    """The pip command that brings ``extra``: ``pip install '/path/to/edgenet[plot]'`` from a source
    tree, ``pip install 'edgenet-*.whl[plot]'`` (the wheel a device got) otherwise."""
    return _INSTALL.get(extra, "pip install '{src}[%s]'" % extra).format(src=source_spec())


def require(module: str, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the extra that installs it."""
    from edgenet.errors import MissingDependencyError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = extra or _EXTRA_OF.get(top, "convert")
        what = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"{top} is not installed{what}; install it with: {install_hint(extra)}"
        ) from exc
