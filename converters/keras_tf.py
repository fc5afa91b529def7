"""TensorFlow for Keras and SavedModel sources, and only for them (issue #20): importing it quietly,
and one readable line out of its TFLite converter's MLIR diagnostics.

The ONNX path never imports TensorFlow (converters/tflite_writer writes the float model);
tests/test_no_tensorflow.py holds every other module of edgenet/, converters/ and targets/ to that.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from types import ModuleType

from edgenet._deps import require


def import_tensorflow(purpose: str | None = None, extra: str | None = None) -> ModuleType:
    """TensorFlow, imported quietly (no C++ start-up chatter, Python logger at ERROR) and without Keras.

    TensorFlow's ``__init__`` eagerly imports Keras 3, which drags in scikit-learn, SciPy and
    matplotlib: about 2.5 s of a ~6 s import on the development machine, and a SavedModel source needs no
    Keras. When the legacy ``tf_keras`` package is absent, pointing TensorFlow at it for the
    duration of the import makes that eager import a caught ImportError. The variable is restored
    right after, and ``tf.keras`` is resolved lazily at first use, so Keras still works for anyone
    who asks for it later (``import keras``: Keras 3, as Keras sources do). ``extra``: the extra a
    missing TensorFlow is installed with (default ``keras``).
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


def explain_failure(text: str) -> str:
    """One readable line out of the TFLite converter's MLIR diagnostics."""
    flex = re.search(r"TF Select ops: ([^\n]+)", text)
    if flex:
        return (f"TFLite's builtin op set has no kernel for {flex.group(1).strip()} (an ONNX op that maps to it "
                "cannot run on the device runtimes edgenet targets)")
    for line in text.splitlines():
        m = re.search(r"error: (.+)$", line)
        if m and "failed while converting" not in m.group(1):
            return m.group(1).strip()[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:300] if lines else "unknown error"
