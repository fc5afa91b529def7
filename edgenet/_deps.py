"""Lazy imports of the heavy, optional dependencies (torch, TensorFlow, onnx ...).

``import edgenet`` and the device-side commands must work with the base install alone, so modules
that need an extra import it through :func:`require`, which turns a missing package into one
clear line naming the install command.
"""
from __future__ import annotations

import importlib
from types import ModuleType

_INSTALL = {
    "convert": "pip install torch==2.13.0 && pip install 'edgenet[convert]'",
    "mcu": "pip install 'edgenet[mcu]'",
    "plot": "pip install 'edgenet[plot]'",
    "digits": "pip install scikit-learn",   # the built-in digits ship inside scikit-learn
}

# module -> extra that provides it
_EXTRA_OF = {
    "torch": "convert",
    "onnx": "convert",
    "onnxruntime": "convert",
    "tensorflow": "convert",
    "sklearn": "digits",
    "tflite_micro": "mcu",
    "ethosu": "mcu",
    "matplotlib": "plot",
}


def install_hint(extra: str) -> str:
    return _INSTALL.get(extra, f"pip install 'edgenet[{extra}]'")


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
