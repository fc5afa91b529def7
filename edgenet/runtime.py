"""Finding and opening a TFLite runtime on the device.

Lookup order: ``ai_edge_litert`` (the maintained LiteRT), then ``tflite_runtime`` (only as a
fallback: 2.14, its last release, crashes with numpy 2), then ``tensorflow.lite``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from edgenet.errors import ModelError, RuntimeNotFoundError


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


def find_runtime() -> RuntimeInfo:
    problems = []
    for name, module_name, dist_module in _CANDIDATES:
        try:
            mod = importlib.import_module(module_name)
        except ImportError as exc:
            if name == "tflite-runtime" and "_ARRAY_API" in str(exc):
                problems.append("tflite-runtime is installed but cannot load with numpy 2")
            continue
        except AttributeError as exc:  # tflite-runtime 2.14 under numpy 2 fails this way too
            problems.append(f"{name} failed to import ({exc})")
            continue
        try:
            version = importlib.import_module(dist_module).__version__
        except Exception:
            version = "unknown"
        return RuntimeInfo(name, str(version), mod)
    extra = ("; " + "; ".join(problems)) if problems else ""
    raise RuntimeNotFoundError(
        "no TFLite runtime found: install it with: pip install ai-edge-litert" + extra
    )


def make_interpreter(model, num_threads: int | None = None, *, preserve_all_tensors: bool = False,
                     use_xnnpack: bool = True, runtime: RuntimeInfo | None = None):
    """An allocated Interpreter for a .tflite path or bytes. Raises ModelError on a bad model."""
    rt = runtime or find_runtime()
    kwargs = {}
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
    if not use_xnnpack or preserve_all_tensors:
        resolver = getattr(rt.module, "OpResolverType", None)
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = rt.module.Interpreter(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        where = kwargs.get("model_path", "model")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{where}: not a valid .tflite model ({first})") from exc
    return interp
