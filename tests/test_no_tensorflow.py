"""TensorFlow stays off the ONNX path (issue #20): no module of edgenet/, converters/ or targets/ imports it
except the Keras source modules (converters/keras_*.py: Keras models and SavedModels, which only
TensorFlow reads) and two last fallbacks on a device that has TensorFlow and neither ai-edge-litert nor
tflite-runtime (they never convert): edgenet/runtime.py (``tensorflow.lite``'s interpreter) and
targets/tflite_graph.py (its copy of the TFLite schema, to read a model's ops).

Read from the source (AST), so it runs in milliseconds and needs nothing installed. Counted as an
import: ``import tensorflow...`` / ``from tensorflow... import``, a call such as
``importlib.import_module("tensorflow")`` or ``require("tensorflow")`` with the name as a string, and
any dotted module path ``"tensorflow.<...>"`` written as a string (a fallback list of modules to import).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("edgenet", "converters", "targets")
ALLOWED = {"edgenet/runtime.py", "targets/tflite_graph.py"} | {
    f"converters/{p.name}" for p in (ROOT / "converters").glob("keras_*.py")}
_IMPORTERS = {"import_module", "require", "__import__", "find_spec", "import_tensorflow"}
_TF_MODULE = re.compile(r"^tensorflow(\.|$)")
_TF_DOTTED = re.compile(r"^tensorflow\.[A-Za-z_][\w.]*$")


def tensorflow_imports(source: str) -> list[int]:
    """Line numbers in ``source`` that import TensorFlow (see the module docstring)."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            hits += [node.lineno for a in node.names if _TF_MODULE.match(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.module and _TF_MODULE.match(node.module) and not node.level:
                hits.append(node.lineno)
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "import_tensorflow":
                hits.append(node.lineno)
            elif name in _IMPORTERS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and _TF_MODULE.match(node.args[0].value):
                hits.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _TF_DOTTED.match(node.value):
            hits.append(node.lineno)
    return sorted(set(hits))


def test_the_rule_sees_every_form_of_import():
    forms = ["import tensorflow as tf", "import tensorflow.lite", "from tensorflow.lite.python import schema",
             "importlib.import_module('tensorflow')", "require('tensorflow', purpose='x')",
             "import_tensorflow()", "MODULES = ('ai_edge_litert.x', 'tensorflow.lite.tools.flatbuffer_utils')"]
    assert [bool(tensorflow_imports(f)) for f in forms] == [True] * len(forms)
    quiet = ["import tensorflow_datasets_like_name_is_not_tf", "'tensorflow' in sys.modules",
             "DIST = ('tensorflow-cpu', 'tensorflow')", "x = 'TensorFlow Lite Micro'", "from . import tflite"]
    assert [bool(tensorflow_imports(f)) for f in quiet] == [False] * len(quiet)


def test_only_the_keras_source_modules_import_tensorflow():
    found = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            lines = tensorflow_imports(path.read_text(encoding="utf-8"))
            if lines:
                found[rel] = lines
    assert not found, f"TensorFlow imported outside the Keras source modules (file: lines): {found}"
    assert {"converters/keras_source.py", "converters/keras_tf.py"} <= ALLOWED
