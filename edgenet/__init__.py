"""edgenet: take a PyTorch vision model to phones and microcontrollers.

The public API is a handful of functions; heavy dependencies (torch, TensorFlow, onnx) are
imported only when a function that needs them runs, so ``import edgenet`` works on a device
with the base install (numpy + ai-edge-litert).

    >>> import edgenet
    >>> result = edgenet.convert("mobilenet_v1", target="rpi", int8=True, out="out")  # doctest: +SKIP
    >>> result.report.validation.int8_sqnr_db                                          # doctest: +SKIP
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path as _Path

# One top-level package: the pipeline stages and the target profiles are ``edgenet.converters`` and
# ``edgenet.targets``. A wheel puts those folders inside edgenet/ (pyproject.toml); the repository
# keeps them at its top (converters/, targets/), so a source tree or an editable install finds them
# there: the repository root is on this package's search path, after edgenet/ itself.
_root = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).resolve().parent / "converters").is_dir() and (_root / "converters").is_dir():
    __path__.append(str(_root))  # noqa: F821 - the package's own __path__
del _root

try:
    __version__ = _version("edgenet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"

from edgenet.errors import EdgenetError  # noqa: E402  (light; part of the API)

# public name -> "module:attribute", imported on first use
_LAZY = {
    "convert": "edgenet.api:convert",
    "ConvertOptions": "edgenet.config:ConvertOptions",
    "ConvertResult": "edgenet.report:ConvertResult",
    "Precision": "edgenet.config:Precision",
    "IOType": "edgenet.config:IOType",
    "info": "edgenet.zoo:info",
    "create_model": "edgenet.zoo:create_model",
    "list_models": "edgenet.zoo:list_models",
    "bench": "edgenet.benchmark:bench",
    "load_target": "edgenet.targets:load_target",
}

__all__ = ["EdgenetError", "__version__", *_LAZY]


def __getattr__(name: str):
    try:
        target = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgenet' has no attribute {name!r}") from None
    module, attr = target.split(":")
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
