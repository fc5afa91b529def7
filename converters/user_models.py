"""The user's own PyTorch models: ``package.module:function`` callables and torch.export ``.pt2`` programs.

Both give an ``nn.Module`` that ``edgenet.converters.export.export_onnx`` (the TorchScript exporter) can trace:

* ``load_callable("pkg.mod:build")`` imports ``pkg.mod`` with the working directory first on
  ``sys.path`` (then the installed packages), calls ``build()`` and checks it returns a one-input
  ``nn.Module``;
* ``load_program("model.pt2", input_shape)`` loads an ``ExportedProgram`` (``torch.export.save``) and
  wraps its ``.module()``, which refuses ``eval()``/``train()``, so the exporter's mode switches pass
  it by. This needs no onnxscript (the dynamo exporter does); the input shape is the one recorded
  in the program unless its dims are dynamic.

Errors are one line: UsageError for what the user named wrongly (module, attribute, shape),
ModelError for a model that fails or does not fit (import/call errors, several inputs or outputs,
a program exported in training mode).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
from pathlib import Path

from edgenet.errors import ModelError, UsageError

CALLABLE_PATTERN = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


# -- package.module:function ------------------------------------------------------------------
class _cwd_on_path:
    """The working directory first on sys.path meanwhile (as `python -m` would have it)."""

    def __enter__(self):
        self.cwd = os.getcwd()
        self.added = self.cwd not in sys.path and "" not in sys.path
        if self.added:
            sys.path.insert(0, self.cwd)
        return self

    def __exit__(self, *exc):
        if self.added and self.cwd in sys.path:
            sys.path.remove(self.cwd)
        return False


def find_module(source: str) -> str:
    """The module part of ``module:function``, checked to exist (without running it)."""
    match = CALLABLE_PATTERN.fullmatch(source)
    if match is None:
        raise UsageError(f"{source}: not of the form package.module:function")
    module = match["module"]
    importlib.invalidate_caches()  # a module file written since the last import must be seen
    with _cwd_on_path():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:  # a parent package is missing or broken
            spec, reason = None, _first_line(exc)
        else:
            reason = ""
    if spec is None:
        raise UsageError(f"{source}: no module named {module!r} in the working directory ({os.getcwd()}) "
                         f"or the installed packages{f' ({reason})' if reason else ''}")
    return module


def load_callable(source: str):
    """Import ``package.module:function`` and call it; the nn.Module it returns, in eval mode."""
    from edgenet._deps import require

    torch = require("torch", purpose="module:function models")
    module_name = find_module(source)
    attr_path = source.split(":", 1)[1]
    with _cwd_on_path():
        try:
            obj = importlib.import_module(module_name)
        except Exception as exc:  # the module's own imports or code fail
            raise ModelError(f"{source}: importing {module_name} failed: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{source}: {getattr(obj, '__name__', module_name)} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{source}: {attr_path} is not callable (it is of type {type(obj).__name__}); "
                         "name a function that returns the model")
    try:
        model = obj()
    except Exception as exc:
        raise ModelError(f"{source}: calling {attr_path}() failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{source}: {attr_path}() returned an object of type {type(model).__name__}, "
                         "not a torch.nn.Module")
    _check_single_input(model, source)
    return model.eval()


def _check_single_input(module, source: str) -> None:
    """Refuse a forward() that needs more than one tensor (the pipeline feeds one image)."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: let the export decide
        return
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(required) > 1:
        names = ", ".join(p.name for p in required)
        raise ModelError(f"{source}: forward() takes {len(required)} inputs ({names}); edgenet converts "
                         "single-input image models")


# -- torch.export programs (.pt2) -------------------------------------------------------------
def load_program(path: str | Path, input_shape: tuple[int, ...] | None):
    """(module, input shape) of a ``.pt2`` file; ``input_shape`` is required only for dynamic dims
    and must otherwise match the recorded one."""
    from edgenet._deps import require

    torch = require("torch", purpose=".pt2 (torch.export) models")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such torch.export program (.pt2) file")
    quiet = logging.getLogger("torch.export")  # it logs the loader's traceback before re-raising
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a torch.export program ({type(exc).__name__}: {_first_line(exc)})") from exc
    finally:
        quiet.setLevel(level)
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        raise ModelError(f"{path}: takes {len(inputs)} inputs; edgenet converts single-input image models")
    if _exported_in_training_mode(program):
        raise ModelError(f"{path}: was exported in training mode (BatchNorm batch statistics or dropout); "
                         "call model.eval() before torch.export.export")
    recorded = _placeholder_shape(program, inputs[0])
    if recorded is None and input_shape is None:
        raise UsageError(f"{path}: its input shape is dynamic; give --input-shape N,C,H,W")
    if recorded is not None and input_shape is not None and tuple(input_shape) != recorded:
        raise UsageError(f"{path}: was exported for input {','.join(map(str, recorded))}, not "
                         f"--input-shape {','.join(map(str, input_shape))}")
    return _program_module(program, torch), tuple(input_shape or recorded)


def _program_module(program, torch):
    """``ExportedProgram.module()`` wrapped so that export_onnx's eval()/train() calls, which the
    unlifted graph module refuses, leave it alone (its mode was fixed when it was exported)."""

    class ExportedProgramModule(torch.nn.Module):
        def __init__(self, graph_module):
            super().__init__()
            self.program = graph_module

        def train(self, mode: bool = True):
            self.training = mode
            return self

        def forward(self, x):
            return self.program(x)

    return ExportedProgramModule(program.module())


def _exported_in_training_mode(program) -> bool:
    """BatchNorm using batch statistics or an active dropout in the exported graph."""
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if "batch_norm" in target and "no_training" not in target:
            training = node.args[5] if len(node.args) > 5 else node.kwargs.get("training")
            if training is True or "functional" in target:
                return True
        if "dropout" in target:
            train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train")
            if train is True:
                return True
    return False


def _placeholder_shape(program, name: str) -> tuple[int, ...] | None:
    """The static shape recorded for input ``name``, or None if any dim is symbolic."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == name:
            shape = getattr(node.meta.get("val"), "shape", None)
            if shape is None:
                return None
            dims = tuple(shape)
            return dims if all(isinstance(d, int) for d in dims) else None  # torch.SymInt: dynamic
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
