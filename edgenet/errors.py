"""One error hierarchy for edgenet.

Library code raises these; only the CLI prints them (one line) and exits with ``exit_code``.
"""
from __future__ import annotations


class EdgenetError(Exception):
    """Base of every error edgenet raises on purpose. ``str(err)`` is one line for the user."""

    exit_code = 1


class UsageError(EdgenetError):
    """An argument or option value that cannot work (alpha out of range, unknown target ...)."""

    exit_code = 2


class MissingDependencyError(EdgenetError):
    """An optional package is not installed; the message names the pip command that installs it."""

    exit_code = 3


class ModelError(EdgenetError):
    """A model file or checkpoint that is missing, corrupt or does not match the architecture."""


class UnsupportedOpError(ModelError):
    """The ONNX graph holds an op (or an op variant) that the converter has no handler for."""


class DataError(EdgenetError):
    """Calibration or evaluation data that is missing, empty, undecodable or mismatching."""


class ConversionError(EdgenetError):
    """A pipeline stage failed on a model it accepted (exporter, TFLite converter ...)."""


class TargetError(EdgenetError):
    """A target profile that is invalid, or a model that does not fit or run on the target."""


class OutputExistsError(UsageError):
    """The output folder exists and is not empty, and --force was not given."""


class OutputError(EdgenetError):
    """The output folder cannot be written: read-only, full, permission denied, a file in the way,
    or another conversion is writing there. Nothing in it was changed."""


class OutputBusyError(OutputError):
    """Another edgenet conversion holds the output folder's lock."""


class RuntimeNotFoundError(MissingDependencyError):
    """No TFLite runtime (ai-edge-litert, tflite-runtime, tensorflow) can be imported."""


class RemoteError(EdgenetError):
    """Running on a remote device over SSH failed (auth, host key, no python/edgenet there)."""
