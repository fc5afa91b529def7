"""PyTorch -> ONNX export, loading ONNX files, and parity checks against onnxruntime.

The export uses torch's TorchScript exporter (``dynamo=False``): ~0.6 s for MobileNetV1, no
onnxscript needed, and deterministic -- the same module gives the same bytes.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from edgenet._deps import require
from edgenet.errors import ConversionError, ModelError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(
    module: "torch.nn.Module", input_shape: tuple[int, ...], opset: int = 17
) -> "onnx.ModelProto":
    """Export ``module`` (traced in eval mode, static ``input_shape``) to a checked ONNX model.

    The graph input is named ``input``, the output ``logits``. The module runs in eval mode, but is
    exported with ``TrainingMode.PRESERVE``: in ``EVAL`` mode torch's exporter folds every Conv +
    BatchNormalization itself, silently; this way the BatchNormalization nodes reach edgenet's own
    folding pass (converters/bn_fold.py), which folds them, counts them and measures the change.
    The module's train/eval mode is restored afterwards. Exporter failures raise ConversionError.
    """
    torch = require("torch")
    onnx = require("onnx")
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"export_onnx needs a torch.nn.Module, got {type(module).__name__}")
    shape = _check_shape(input_shape)
    _check_opset(torch, opset)

    was_training = module.training
    buffer = io.BytesIO()
    module.eval()
    try:
        # the exporter prints the whole TorchScript graph to stdout (from C++) when it fails
        with warnings.catch_warnings(), torch.no_grad(), _native_stdout_silenced():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.zeros(shape, dtype=torch.float32),),
                buffer,
                dynamo=False,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                training=torch.onnx.TrainingMode.PRESERVE,   # module.eval() above: BN kept, not folded
            )
    except Exception as exc:
        raise ConversionError(
            f"torch.onnx.export failed for {type(module).__name__} (opset {opset}): {_first_line(exc)}"
        ) from exc
    finally:
        module.train(was_training)

    model = onnx.load_from_string(buffer.getvalue())
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"exported ONNX graph is invalid: {_first_line(exc)}") from exc
    return model


def load_onnx(path: str | Path) -> "onnx.ModelProto":
    """Load and check an ONNX file (external data next to it is loaded too); ModelError if bad."""
    onnx = require("onnx")
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from exc
    _load_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, or a model over protobuf's 2 GB limit
        raise ModelError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from exc
    return model


def _load_external_data(model: "onnx.ModelProto", path: Path) -> None:
    """Read the tensors a model keeps in files next to it; ModelError naming a missing file."""
    from onnx import external_data_helper

    locations = set()
    for tensor in model.graph.initializer:
        if external_data_helper.uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            locations.add(info.get("location", ""))
    if not locations:
        return
    for location in sorted(locations):
        if not (path.parent / location).is_file():
            raise ModelError(f"{path}: its external data file '{location}' is missing")
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read its external data ({_first_line(exc)})") from exc


def onnx_parity(
    module: "torch.nn.Module", model: "onnx.ModelProto", input_shape: tuple[int, ...], seed: int = 0
) -> float:
    """Max abs difference between ``module`` (eval mode) and onnxruntime on one seeded input."""
    torch = require("torch")
    shape = _check_shape(input_shape)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            expected = module(torch.from_numpy(x))
    finally:
        module.train(was_training)
    if isinstance(expected, (tuple, list)):
        expected_arrays = [t.detach().cpu().numpy() for t in expected]
    else:
        expected_arrays = [expected.detach().cpu().numpy()]
    input_name = model.graph.input[0].name if model.graph.input else INPUT_NAME
    actual = run_onnxruntime(model, {input_name: x})
    if len(actual) != len(expected_arrays):
        raise ConversionError(
            f"ONNX model has {len(actual)} outputs, the torch module returns {len(expected_arrays)}"
        )
    return max(_max_abs_diff(a, e) for a, e in zip(actual, expected_arrays))


# --------------------------------------------------------------------------------------------
# onnxruntime helpers (shared with the graph passes)


def run_onnxruntime(
    model: "onnx.ModelProto", feeds: Mapping[str, np.ndarray], optimize: bool = False
) -> list[np.ndarray]:
    """Run ``model`` once on CPU; ``optimize=False`` turns off onnxruntime's own graph fusions."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 4   # fatal only: a failing run is raised as ConversionError, not logged
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return list(session.run(None, dict(feeds)))
    except Exception as exc:
        raise ConversionError(f"onnxruntime cannot run the model: {_first_line(exc)}") from exc


def random_inputs(model: "onnx.ModelProto", seed: int = 0) -> dict[str, np.ndarray]:
    """One seeded random array per graph input (not initializers); unknown dims become 1."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    init_names = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, 4, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise ConversionError(f"cannot make a random input of type {dtype} for '{vi.name}'")
    return feeds


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ConversionError(f"output shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _check_opset(torch, opset: int) -> None:
    constants = getattr(torch.onnx, "_constants", None)
    low = getattr(constants, "ONNX_MIN_OPSET", 7)
    high = getattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)
    if not isinstance(opset, int) or not low <= opset <= high:
        raise UsageError(
            f"opset must be an int from {low} to {high} for torch's exporter, got {opset!r}"
        )


@contextlib.contextmanager
def _native_stdout_silenced():
    """Send file descriptor 1 (what C++ code writes to) to a discarded temp file meanwhile."""
    fd = 1
    try:
        sys.stdout.flush()
    except Exception:  # closed or missing sys.stdout: nothing to flush
        pass
    try:
        saved = os.dup(fd)
    except OSError:  # no fd 1 at all: nothing to silence
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise UsageError(f"input shape must be a tuple of ints, got {input_shape!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"input shape must be positive ints, got {input_shape!r}")
    return shape


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
