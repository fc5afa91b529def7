"""A Keras file before Keras reads it (no TensorFlow here): is it what its suffix says, and which
Python modules must be imported for Keras to rebuild it.

* :func:`check_container` -- a ``.keras`` file is a zip archive, an ``.h5`` file starts with the
  HDF5 signature (Keras' own message for a damaged file says it is not found);
* :func:`import_custom_modules` -- a ``.keras`` file of a subclassed model (or one with custom
  layers) records each custom class's ``module`` and ``class_name``; Keras rebuilds them only when
  that module is imported, so it is imported here, from the working directory first, then the
  installed packages (as ``module:function`` sources are).

Errors are one line: ModelError for a damaged file or a module that fails to import, UsageError for
a module that is nowhere to be found.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from edgenet.errors import ModelError, UsageError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_container(path: Path) -> None:
    """ModelError unless a ``.keras`` file is a zip archive and an ``.h5`` file starts as HDF5 does
    (Keras' own message for a damaged file says it is not found)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelError(f"{path}: not a .keras model (a .keras file is a zip archive; this one is damaged or "
                             "something else)")
    elif head != HDF5_SIGNATURE:
        raise ModelError(f"{path}: not an HDF5 Keras model (it does not start with the HDF5 signature; the file is "
                         "damaged or something else)")


def import_custom_modules(path: Path) -> None:
    """Import the modules of the custom classes a ``.keras`` file names (subclassed models and layers
    record ``module`` and ``class_name``), from the working directory first: Keras rebuilds them
    only when they are imported. UsageError naming the module when it cannot be found."""
    from edgenet.converters.user_models import _cwd_on_path

    if not zipfile.is_zipfile(path):
        return   # an .h5 file (HDF5): functional / Sequential models of built-in layers
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: not a readable .keras archive ({type(exc).__name__}: {exc})") from None
    modules = sorted(_custom_modules(config))
    import importlib
    import importlib.util

    importlib.invalidate_caches()
    with _cwd_on_path():
        for module in modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise UsageError(f"{path}: it was built from custom classes of module {module!r}, which is not in "
                                 f"the working directory ({os.getcwd()}) or the installed packages; run edgenet "
                                 "where that module is, or convert a SavedModel of it (model.export(DIR))")
            try:
                importlib.import_module(module)
            except Exception as exc:
                raise ModelError(f"{path}: importing {module} (its custom classes) failed: "
                                 f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _custom_modules(config: Any) -> set[str]:
    """Modules named by the serialized objects of a .keras config that are not Keras' own, nor
    Python's standard library (no model class lives there, and some of its modules act on import)."""
    import sys

    found: set[str] = set()
    if isinstance(config, dict):
        module = config.get("module")
        if isinstance(module, str) and "class_name" in config:
            top = module.split(".")[0]
            if top not in ("keras", "tensorflow", "tf_keras", "numpy") and top not in sys.stdlib_module_names:
                found.add(module)
        for value in config.values():
            found |= _custom_modules(value)
    elif isinstance(config, list):
        for value in config:
            found |= _custom_modules(value)
    return found


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip() or type(exc).__name__).splitlines()
    return text[0][:300] if text else type(exc).__name__
