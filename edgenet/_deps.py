"""Lazy imports of the heavy, optional dependencies (torch, TensorFlow, onnx ...).

``import edgenet`` and the device-side commands must work with the base install alone, so modules
that need an extra import it through :func:`require`, which turns a missing package into one
clear line naming the install command.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
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
    "tensorflow": "tf",
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


def import_tensorflow(purpose: str | None = None, extra: str | None = None) -> ModuleType:
    """TensorFlow, imported quietly (no C++ start-up chatter, Python logger at ERROR) and without Keras.

    TensorFlow's ``__init__`` eagerly imports Keras 3, which drags in scikit-learn, SciPy and
    matplotlib: about 2.5 s of a ~6 s import on the development machine, and edgenet never uses
    Keras. When the legacy ``tf_keras`` package is absent, pointing TensorFlow at it for the
    duration of the import makes that eager import a caught ImportError. The variable is restored
    right after, and ``tf.keras`` is resolved lazily at first use, so Keras still works for anyone
    who asks for it later (``import keras``: Keras 3, as Keras sources do). ``extra``: the extra a
    missing TensorFlow is installed with (default ``tf``; Keras sources: ``keras``).
    """
    if "tensorflow" in sys.modules:
        return require("tensorflow", extra=extra, purpose=purpose)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    skip_keras = "TF_USE_LEGACY_KERAS" not in os.environ and importlib.util.find_spec("tf_keras") is None
    if skip_keras:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        tf = require("tensorflow", extra=extra, purpose=purpose)
    finally:
        if skip_keras:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
    tf.get_logger().setLevel("ERROR")
    return tf
