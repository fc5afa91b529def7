"""Finding and opening a TFLite runtime on the device (numpy + a runtime only; no TensorFlow needed).

Lookup order: ``ai_edge_litert`` (the maintained LiteRT), then ``tflite_runtime`` (only as a
fallback: 2.14, its last release, crashes with numpy 2), then ``tensorflow.lite``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgenet.errors import ModelError, RuntimeNotFoundError, TargetError

INSTALL_COMMAND = "pip install ai-edge-litert"


@dataclass(frozen=True)
class RuntimeInfo:
    name: str        # "ai-edge-litert", "tflite-runtime" or "tensorflow"
    version: str
    module: object   # the module exposing Interpreter


_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite-runtime", "tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow", "tensorflow.lite", "tensorflow"),
)


def _distribution_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _numpy_major() -> int:
    import numpy

    return int(numpy.__version__.split(".")[0])


def _built_for_numpy1(tflite_runtime_version: str) -> bool:
    """tflite-runtime up to 2.14 (its last release) is compiled against numpy 1."""
    try:
        major, minor = (int(p) for p in tflite_runtime_version.split(".")[:2])
    except ValueError:
        major, minor = 2, 14
    return _numpy_major() >= 2 and (major, minor) <= (2, 14)


def _import_problem(name: str, exc: BaseException) -> str | None:
    """A one-phrase explanation of why an installed runtime failed to import (None: not installed)."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in (
            "ai_edge_litert", "tflite_runtime", "tensorflow"):
        return None  # simply not installed
    installed = _distribution_version(name)
    if name == "tflite-runtime" and _numpy_major() >= 2:
        version = installed or "(unknown version)"
        import numpy

        return (f"tflite-runtime {version} is installed but was built for numpy 1 and cannot run with "
                f"numpy {numpy.__version__} (use ai-edge-litert, or pip install 'numpy<2')")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{name} is installed but failed to import ({first})"


def find_runtime() -> RuntimeInfo:
    """The first importable TFLite runtime; RuntimeNotFoundError (one line, install command) if none."""
    problems = []
    for name, module_name, dist_module in _CANDIDATES:
        try:
            mod = importlib.import_module(module_name)
            if not hasattr(mod, "Interpreter"):
                raise ImportError(f"{module_name} has no Interpreter")
        except (ImportError, AttributeError, OSError) as exc:
            # tflite-runtime 2.14 under numpy 2 raises ImportError or AttributeError (_ARRAY_API)
            problem = _import_problem(name, exc)
            if problem:
                problems.append(problem)
            continue
        try:
            version = str(importlib.import_module(dist_module).__version__)
        except Exception:
            version = _distribution_version(name) or "unknown"
        if name == "tflite-runtime" and _built_for_numpy1(version):
            # it imports, then crashes in Interpreter() ("_ARRAY_API not found"): never hand it out
            problems.append(_import_problem(name, ImportError("numpy 2")))
            continue
        return RuntimeInfo(name, version, mod)
    extra = ("; " + "; ".join(problems)) if problems else ""
    raise RuntimeNotFoundError(f"no TFLite runtime found: install it with: {INSTALL_COMMAND}{extra}")


def load_delegate(library: str, runtime: RuntimeInfo | None = None, *, hint: str = "") -> object:
    """An external delegate (``libedgetpu.so.1`` or a path to a .so); TargetError if it cannot load.

    The library is opened with ctypes first: a failed ``load_delegate`` in LiteRT leaves a noisy
    "Exception ignored in Delegate.__del__" on stderr, which a one-line error should not carry.
    """
    import ctypes

    rt = runtime or find_runtime()
    extra = f": {hint}" if hint else ""
    try:
        handle = ctypes.CDLL(library)
    except OSError as exc:
        raise TargetError(f"cannot load delegate library {library} ({_first_line(exc)}){extra}") from exc
    if not hasattr(handle, "tflite_plugin_create_delegate"):
        raise TargetError(f"{library} is not a TFLite delegate (it has no tflite_plugin_create_delegate)")
    loader = getattr(rt.module, "load_delegate", None)
    if loader is None:
        raise TargetError(f"{rt.name} {rt.version} cannot load external delegates")
    try:
        return loader(library)
    except (ValueError, RuntimeError, OSError) as exc:
        raise TargetError(f"delegate {library} failed to initialise ({_first_line(exc)}){extra}") from exc


def create_interpreter(model, num_threads: int | None = None, *, preserve_all_tensors: bool = False,
                       use_xnnpack: bool = True, delegates: Sequence[object] = (),
                       runtime: RuntimeInfo | None = None):
    """An Interpreter for a .tflite path or bytes, not yet allocated. Raises ModelError on a bad model."""
    rt = runtime or find_runtime()
    kwargs: dict = {}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        kwargs["model_path"] = str(path)
    if num_threads:
        kwargs["num_threads"] = int(num_threads)
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    if not use_xnnpack or preserve_all_tensors:
        resolver = getattr(rt.module, "OpResolverType", None)
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return rt.module.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as exc:
        where = kwargs.get("model_path", "model")
        raise ModelError(f"{where}: not a valid .tflite model ({_first_line(exc)})") from exc


def allocate(interpreter, where: str = "model") -> None:
    """``allocate_tensors()`` with the runtime's errors turned into one-line ModelErrors."""
    try:
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{where}: the runtime cannot prepare this model ({_first_line(exc)})") from exc


def make_interpreter(model, num_threads: int | None = None, *, preserve_all_tensors: bool = False,
                     use_xnnpack: bool = True, runtime: RuntimeInfo | None = None):
    """An allocated Interpreter for a .tflite path or bytes. Raises ModelError on a bad model."""
    with runtime_info_lines_dropped():
        interp = create_interpreter(model, num_threads, preserve_all_tensors=preserve_all_tensors,
                                    use_xnnpack=use_xnnpack, runtime=runtime)
        allocate(interp, str(model) if not isinstance(model, (bytes, bytearray)) else "model")
    return interp


@contextlib.contextmanager
def runtime_info_lines_dropped():
    """Drop the runtime's "INFO: Created TensorFlow Lite XNNPACK delegate" lines (written by C++
    to file descriptor 2) while a model opens; anything else it writes is passed on to stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("INFO: ")]
            if kept:
                sys.stderr.write("".join(kept))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
