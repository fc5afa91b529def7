"""The models under test: finding them from TARGET, opening them with the chosen delegate, and
running them on float samples (quantizing inputs and dequantizing outputs for int8 models)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenet import limits
from edgenet import runtime as rt
from edgenet.benchmark.environment import current_rss_bytes, file_sha256
from edgenet.benchmark.options import BenchSettings, DelegateKind
from edgenet.errors import DataError, ModelError, UsageError
from edgenet.converters.op_precision import model_precision   # numpy + the .tflite schema: no TensorFlow
from edgenet.config import Precision
from edgenet.inference import TFLiteModel
from edgenet.limits import regular_file

FLOAT, INT8 = "float", "int8"
_QUANTIZED = (np.int8, np.uint8, np.int16)


@dataclass(frozen=True)
class BenchTarget:
    """What TARGET names: the model files by role, and the preprocessing and labels beside them."""

    models: tuple[tuple[str | None, Path], ...]   # (role, path), float first; role None: detect
    preprocess: Path | None
    labels: Path | None
    eval_set: Path | None = None                  # eval_set.npz: the held-out examples convert wrote


def resolve_target(target: str | Path, float_model: str | Path | None = None,
                   precision: str | None = None) -> BenchTarget:
    """A `convert` output folder (model_int8/model_float/preprocess.json/labels.txt) or a .tflite file.

    Every file is checked to be a readable regular file before anything opens it (a FIFO, a device,
    a folder, a broken link or an unreadable file is a one-line ModelError/DataError, never a hang
    or a silent skip). The roles given here come from the file names; the benchmark re-decides them
    from the models' tensors.
    """
    path = Path(target)
    if not os.path.lexists(path):
        raise ModelError(f"{path}: no such file or folder")
    if float_model is not None:
        regular_file(float_model, "model file (--float)", ModelError, limits.MAX_MODEL_BYTES)
    if path.is_dir():
        folder = path
        candidate = folder / _candidate_file(folder, precision)
        candidates = ((FLOAT, Path(float_model) if float_model is not None else folder / "model_float.tflite"),
                      (INT8, candidate))
        models = []
        for role, p in candidates:
            if os.path.lexists(p):      # there in any form: it must be a usable model, not skipped
                models.append((role, regular_file(p, "model file", ModelError, limits.MAX_MODEL_BYTES)))
        if not models:
            raise ModelError(f"{folder}: no model_int8.tflite or model_float.tflite in this folder")
        models = tuple(models)
    else:
        regular_file(path, "model file", ModelError, limits.MAX_MODEL_BYTES)
        _refuse_not_tflite(path)
        folder = path.parent
        if float_model is not None:
            models = ((FLOAT, Path(float_model)), (INT8, path))
        else:
            models = ((None, path),)
    extras = []
    for name in ("preprocess.json", "labels.txt"):
        p = folder / name
        extras.append(regular_file(p, name, DataError, limits.MAX_TEXT_BYTES) if os.path.lexists(p) else None)
    held = folder / "eval_set.npz"
    held = regular_file(held, "eval_set.npz", DataError, limits.MAX_DATA_BYTES) if os.path.lexists(held) else None
    return BenchTarget(models, *extras, eval_set=held)


_SOURCE_SUFFIXES = (".onnx", ".pt", ".pth", ".ckpt", ".pt2", ".keras", ".h5")


def _refuse_not_tflite(path: Path) -> None:
    """UsageError for a model file bench cannot run: a source model that must be converted first."""
    if path.suffix.lower() in _SOURCE_SUFFIXES:
        raise UsageError(f"{path}: a {path.suffix} model, not a .tflite one; convert it first "
                         f"(edgenet convert {path} --out DIR) and bench the folder (edgenet bench DIR)")


def _candidate_file(folder: Path, precision: str | None) -> str:
    """The model compared with model_float.tflite: model_<precision>.tflite, by default the int8
    one, else the only other precision `convert` wrote."""
    if precision is not None:
        try:
            chosen = Precision(precision)
        except ValueError:
            raise UsageError(f"--precision {precision!r}: one of {', '.join(p.value for p in Precision)}") from None
        if chosen is Precision.FLOAT32:
            raise UsageError("--precision float32 is the reference itself; choose the model to compare with it")
        if not os.path.lexists(folder / chosen.file_name):
            raise ModelError(f"{folder}: no {chosen.file_name} (convert with --precision {chosen.value})")
        return chosen.file_name
    others = [p.file_name for p in Precision if p is not Precision.FLOAT32 and os.path.lexists(folder / p.file_name)]
    if Precision.INT8.file_name in others or len(others) != 1:
        return Precision.INT8.file_name
    return others[0]


def read_labels(path: Path | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: labels are not UTF-8 text") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read labels ({exc.strerror or exc})") from exc
    while names and not names[-1]:
        names.pop()
    return tuple(names) or None


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    scale: float | None          # quantization parameters; None for float tensors
    zero_point: int | None

    @classmethod
    def of(cls, detail: dict) -> "TensorInfo":
        dtype = np.dtype(detail["dtype"])
        scale, zp = detail.get("quantization", (0.0, 0))
        quantized = dtype in [np.dtype(t) for t in _QUANTIZED] and scale
        return cls(tuple(int(d) for d in detail["shape"]), dtype.name,
                   float(scale) if quantized else None, int(zp) if quantized else None)

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorInfo":
        return cls(tuple(d["shape"]), d["dtype"], d.get("scale"), d.get("zero_point"))


class LoadedModel:
    """An allocated interpreter plus what was measured while opening it."""

    def __init__(self, path: Path, role: str | None, settings: BenchSettings, runtime: rt.RuntimeInfo):
        self.path = path
        self.sha256 = file_sha256(path)
        self.size_bytes = path.stat().st_size
        delegates = []
        kind = settings.delegate.kind
        if kind in (DelegateKind.EDGETPU, DelegateKind.LIBRARY):
            hint = ("install the Edge TPU runtime (apt install libedgetpu1-std) and plug in the Coral"
                    if kind is DelegateKind.EDGETPU else "")
            delegates.append(rt.load_delegate(settings.delegate.library, runtime, hint=hint))
        with rt.runtime_info_lines_dropped():
            t0 = time.perf_counter()
            self.interpreter = rt.create_interpreter(path, settings.effective_threads,
                                                     use_xnnpack=kind is not DelegateKind.NONE,
                                                     delegates=delegates, runtime=runtime)
            t1 = time.perf_counter()
            check_shapes(self.interpreter, path)      # before allocate_tensors() sizes anything
            rt.allocate(self.interpreter, str(path))
            t2 = time.perf_counter()
        self.load_s, self.init_s = t1 - t0, t2 - t1
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{path}: has {len(inputs)} inputs; the benchmark handles one-input models")
        if not self.interpreter.get_output_details():
            raise ModelError(f"{path}: has no outputs: there is nothing to measure or compare")
        self._runner = TFLiteModel.from_interpreter(self.interpreter)   # quantize, run, dequantize
        self._input, self._output = inputs[0], self._runner.outputs[0]   # the model's first output
        self.input, self.output = TensorInfo.of(inputs[0]), TensorInfo.of(self._output)
        self.precision = model_precision(path)   # from its tensors, not its file name
        self.named_role = role                   # what the file name or position said
        self.role = role_of(self.precision)
        self.delegated = _has_delegate_node(self.interpreter)
        self.first_inference_s: float | None = None
        self.rss_after_load_bytes: int | None = None

    @property
    def invoke(self):
        return self.interpreter.invoke

    def prepare(self, sample: np.ndarray) -> None:
        """Set one invocation's float examples (the input's batch of them, e.g. (1, H, W, C)) as the
        input, quantized if needed; time the first invoke."""
        self.set_input(sample)
        t0 = time.perf_counter()
        try:
            self.interpreter.invoke()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.path}: inference failed ({_first_line(exc)})") from exc
        self.first_inference_s = time.perf_counter() - t0
        self.rss_after_load_bytes = current_rss_bytes()
        first = self.interpreter.get_tensor(self._output["index"])
        if np.issubdtype(first.dtype, np.floating) and not np.all(np.isfinite(first)):
            raise ModelError(f"{self.path}: the model's output holds NaN or infinite values on a valid input: "
                             "its weights are broken; benchmark numbers would be meaningless")

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return self._runner.quantize(x)

    def set_input(self, examples: np.ndarray) -> None:
        """One invocation's examples: (batch, ...) as the input tensor takes them."""
        self.interpreter.set_tensor(self._input["index"], self.quantize(examples))

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Float samples (N, H, W, C) -> the first output of each, dequantized to float32."""
        check_samples(x, self.input.shape, str(self.path))
        return self._runner.predict(x)

    def all_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Float samples (N, H, W, C) -> every output (the model's order), dequantized to float32."""
        check_samples(x, self.input.shape, str(self.path))
        return self._runner.predict_all(x)

    @property
    def output_names(self) -> list[str]:
        return [d["name"] for d in self._runner.outputs]

    @property
    def index_outputs(self) -> list[bool]:
        """Which outputs hold indices (an integer type without a quantization scale: ArgMax maps)."""
        return [not np.issubdtype(np.dtype(d["dtype"]), np.floating) and not d["quantization"][0]
                for d in self._runner.outputs]

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in d["shape"][1:]) for d in self._runner.outputs]


def role_of(precision: Precision) -> str:
    """"int8" (the quantized model under test) for any quantized precision, else "float" (the reference)."""
    return INT8 if precision.quantized else FLOAT


def check_shapes(interpreter, path: Path) -> None:
    """ModelError unless the input is static (only the batch may be dynamic) and of a sane size, and no
    tensor needs more than :data:`edgenet.limits.MAX_TENSOR_BYTES`; checked before allocation."""
    for detail in interpreter.get_input_details():
        signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
        if any(d < 0 for d in signature[1:]):
            raise ModelError(f"{path}: input {detail['name']!r} has dynamic dimensions {signature} (-1 = any); "
                             "the benchmark needs a static input: convert with a static --input-shape "
                             "(e.g. 1,3,224,224)")
        shape = [int(d) for d in detail["shape"]]
        if any(d <= 0 for d in shape[1:]):
            raise ModelError(f"{path}: input {detail['name']!r} has an empty dimension {shape}")
        elements = math.prod(shape[1:])
        if elements > limits.MAX_INPUT_ELEMENTS:
            raise ModelError(f"{path}: input {detail['name']!r} of shape {shape} has {elements:,} elements per "
                             f"sample, more than the {limits.MAX_INPUT_ELEMENTS:,} the benchmark accepts")
    for detail in interpreter.get_tensor_details():
        shape = [max(int(d), 1) for d in detail["shape"]]
        size = math.prod(shape) * np.dtype(detail["dtype"]).itemsize
        if size > limits.MAX_TENSOR_BYTES:
            raise ModelError(f"{path}: tensor {detail['name']!r} of shape {list(detail['shape'])} needs "
                             f"{size:,} bytes, more than {limits.MAX_TENSOR_BYTES:,}")


def _has_delegate_node(interpreter) -> bool:
    try:
        return any(op.get("op_name") == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:  # private API: absent in some runtimes
        return False


def check_samples(x: np.ndarray, input_shape: tuple[int, ...], where: str) -> None:
    """DataError unless x is (N, *input_shape[1:]); names the channel count when that is the cause."""
    want = tuple(input_shape[1:])
    got = tuple(x.shape[1:])
    if got == want:
        return
    if len(got) == len(want) and got[:-1] == want[:-1]:
        raise DataError(f"data has {got[-1]} channel(s) per pixel but {where} takes {want[-1]} "
                        f"(check the data or the color mode in preprocess.json)")
    raise DataError(f"data samples have shape {got} but {where} takes {want}")


def check_compatible(float_model: LoadedModel, int8_model: LoadedModel) -> None:
    """ModelError unless the two models take and give tensors of the same shapes (every output,
    matched as :func:`output_order` matches them)."""
    if float_model.input.shape != int8_model.input.shape:
        raise ModelError(f"the float model takes input {float_model.input.shape} but the int8 model takes "
                         f"{int8_model.input.shape}: they are not the same network")
    f_shapes, q_shapes = float_model.output_shapes, int8_model.output_shapes
    if len(f_shapes) != len(q_shapes):
        raise ModelError(f"the float model has {len(f_shapes)} output(s) but the int8 model {len(q_shapes)}: "
                         "they are not the same network")
    for k, j in enumerate(output_order(float_model, int8_model)):
        if f_shapes[k] != q_shapes[j]:
            which = "output" if len(f_shapes) == 1 else f"output {float_model.output_names[k]!r}"
            raise ModelError(f"the float model gives {which} of shape {list(f_shapes[k])} per example but the "
                             f"int8 model gives {list(q_shapes[j])}: they are not the same network")


def output_order(float_model: LoadedModel, int8_model: LoadedModel) -> list[int]:
    """For each float output (in its order), the index of the int8 model's matching output: by
    tensor name when both models name their outputs alike (TFLite may order them differently), by
    position otherwise."""
    f_names, q_names = float_model.output_names, int8_model.output_names
    if sorted(f_names) == sorted(q_names) and len(set(f_names)) == len(f_names):
        return [q_names.index(name) for name in f_names]
    return list(range(len(q_names)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
