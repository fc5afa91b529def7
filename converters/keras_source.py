"""TensorFlow and Keras users' own models: ``.keras`` / ``.h5`` files and SavedModel folders.

This is the one module of the conversion path that imports TensorFlow (and Keras 3, for ``.keras``
and ``.h5``), in the main process: it is what only TensorFlow can read. It gives the rest of the
pipeline what every other source ends in, a float32 ``.tflite`` with a ``serving_default`` signature,
plus the model's own outputs to judge that file against:

* :func:`load_keras` reads the model and fixes its input shape (NHWC: Keras models are channels-last
  already). The shape is ``--input-shape`` (N,H,W,C) or the model's own static one (a functional
  model's input, a subclassed model's build shape, a SavedModel signature); a dynamic batch becomes
  1, a dynamic height or width without ``--input-shape`` is a UsageError;
* :meth:`KerasModel.float_tflite` converts the traced, inference-mode function with TensorFlow's
  TFLiteConverter (float only: float32, float16 weights, dynamic range; int8 and int16x8 are made
  from the float32 model by :mod:`edgenet.converters.quantize`, never by TensorFlow's quantizer);
* :meth:`KerasModel.predict` runs that same function in TensorFlow: the reference of the float verdict.

A ``.keras`` file of a subclassed model records the module and class it was built from; Keras can
rebuild it only with that class imported, so the module is imported first
(:mod:`edgenet.converters.keras_files`, which also checks the file is a zip archive / HDF5).

Errors are one line: MissingDependencyError (no TensorFlow / Keras: the ``keras`` extra), ModelError
(a file Keras or TensorFlow cannot read, several inputs, a non-float input, the converter failing),
UsageError (a missing or contradicting --input-shape).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgenet.config import Precision
from edgenet.converters.keras_files import check_container, import_custom_modules
from edgenet.errors import ConversionError, ModelError, UsageError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SAVED_MODEL_FILE = "saved_model.pb"
PURPOSE = "Keras and SavedModel sources"


def is_saved_model(path: str | Path) -> bool:
    """``path`` is a SavedModel folder (it holds saved_model.pb)."""
    path = Path(path)
    return path.is_dir() and (path / SAVED_MODEL_FILE).is_file()


def _tf():
    from edgenet.converters.keras_tf import import_tensorflow

    return import_tensorflow(purpose=PURPOSE, extra="keras")


def _keras():
    from edgenet._deps import require

    _tf()
    return require("keras", extra="keras", purpose=".keras and .h5 models")


def preload(saved_model: bool = False) -> None:
    """Import TensorFlow (and Keras for .keras / .h5 files) now, so that later stages time their own work."""
    from edgenet.converters._capture import captured_fd

    with captured_fd(2):
        _tf() if saved_model else _keras()


@dataclass(frozen=True)
class KerasTensor:
    """An input or output of the converted model as the verdicts see it: its name, its shape in the
    model (NHWC for rank 4), and whether a rank-4 value is channels-last (always, for Keras)."""

    name: str
    tf_shape: tuple[int, ...]
    channels_last: bool
    dtype: str = "float32"


class KerasModel:
    """A loaded Keras model or SavedModel with its input shape fixed: a TensorFlow function of one
    float32 NHWC tensor returning the model's outputs as a flat list (Keras' nesting order; a
    SavedModel signature's outputs sorted by key)."""

    def __init__(self, source: Path, kind: str, function, keeper, input_name: str, shape: tuple[int, ...],
                 output_names: Sequence[str]):
        self.source, self.kind, self._fn, self._keeper = source, kind, function, keeper
        self.input_name, self.shape, self.output_names = input_name, tuple(shape), tuple(output_names)

    @property
    def batch(self) -> int:
        return self.shape[0]

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output on ``x`` (examples along axis 0, a whole number of batches), in TensorFlow."""
        tf = _tf()
        from edgenet.inference import invocations, stack_outputs

        runs = [[np.asarray(y, np.float32) for y in self._fn(tf.constant(group[0]))]
                for group in invocations([np.asarray(x, np.float32)], [self.batch])]
        return [stack_outputs([run[k] for run in runs], [self.batch]) for k in range(len(runs[0]))]

    def float_tflite(self, precision: Precision = Precision.FLOAT32) -> bytes:
        """The model as a float .tflite with a ``serving_default`` signature (input under its name,
        outputs ``output_<k>`` in :attr:`output_names` order): float32, float16 weights or dynamic
        range (int8 weights, float activations), by TensorFlow's converter. ConversionError when it fails."""
        from edgenet.converters._capture import captured_fd
        from edgenet.converters.keras_tf import explain_failure
        from edgenet.converters.tflite import with_signature

        tf = _tf()
        precision = Precision(precision)
        if precision.full_integer:
            raise ValueError(f"{precision.value} needs calibration: use edgenet.converters.quantize")
        concrete = self._fn.get_concrete_function()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], self._keeper)
        # the frozen function directly: through a SavedModel on disk (the default) Keras 3 variables
        # come back unset and the model computes NaN
        conv.experimental_lower_to_saved_model = False
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision is not Precision.FLOAT32:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if precision is Precision.FLOAT16:
                conv.target_spec.supported_types = [tf.float16]
        with captured_fd(2) as log:
            try:
                blob = bytes(conv.convert())
            except Exception as exc:
                raise ConversionError(f"TFLite {precision.value} conversion of {self.source.name} failed: "
                                      f"{_explain(str(exc) + chr(10) + log.text, explain_failure)}") from exc
        return with_signature(short_names(blob))

    def outputs(self, model: bytes) -> tuple[KerasTensor, ...]:
        """The converted model's outputs as :class:`KerasTensor` (named as Keras names them)."""
        from edgenet.inference import TFLiteModel, outputs_in_model_order

        interp = TFLiteModel(model, 1).interpreter
        details = outputs_in_model_order(interp)
        return tuple(KerasTensor(name, tuple(int(d) for d in det["shape"]), len(det["shape"]) == 4,
                                 np.dtype(det["dtype"]).name) for name, det in zip(self.output_names, details))


def short_names(model: bytes) -> bytes:
    """``model`` with each tensor named by the first part of TensorFlow's fused name (``a/Relu;a/add;
    a/conv`` -> ``a/Relu``, what the fused op outputs) without the ``StatefulPartitionedCall/``
    scopes of a SavedModel function; constants (folded weights and biases, which TensorFlow names
    after the op they feed) get ``/const``, and a repeated name ``_1``, ``_2`` ... Activations are
    named first, so they keep the plain names. The full names took 7 kB of a 25 kB int8 MobileNetV1
    (20 kB from a SavedModel), flash a microcontroller pays for; the per-layer error then names
    layers as Keras does."""
    from edgenet.converters import _flatbuffer

    obj = _flatbuffer.read(model)
    for graph in obj.subgraphs:
        seen: set[str] = set()

        def constant(tensor) -> bool:
            data = obj.buffers[tensor.buffer].data if 0 < tensor.buffer < len(obj.buffers) else None
            return data is not None and len(data) > 0

        for want_constant in (False, True):
            for tensor in graph.tensors:
                if constant(tensor) != want_constant:
                    continue
                name = _short(_flatbuffer.tensor_name(tensor)) + ("/const" if want_constant else "")
                unique, k = name, 0
                while unique in seen:
                    k += 1
                    unique = f"{name}_{k}"
                seen.add(unique)
                tensor.name = unique.encode()
    return _flatbuffer.write(obj)


def _short(name: str) -> str:
    name = name.split(";")[0]
    while name.startswith("StatefulPartitionedCall") and "/" in name:
        name = name.split("/", 1)[1]
    return name or "tensor"


# -- loading ------------------------------------------------------------------------------------------
def load_keras(path: str | Path, input_shape: Sequence[int] | None = None) -> KerasModel:
    """Read a ``.keras`` / ``.h5`` file or a SavedModel folder; its input fixed to ``input_shape``
    (N,H,W,C) or to its own static shape (a dynamic batch: 1). See the module docstring for errors."""
    path = Path(path)
    if not (path.is_file() or is_saved_model(path)):
        raise ModelError(f"{path}: no such Keras model file" if not path.exists() else
                         f"{path}: not a .keras/.h5 file or a SavedModel folder (holding {SAVED_MODEL_FILE})")
    if is_saved_model(path):
        return _saved_model(path, input_shape)
    return _keras_file(path, input_shape)


def _keras_file(path: Path, input_shape) -> KerasModel:
    from edgenet.converters._capture import captured_fd

    check_container(path)
    keras = _keras()
    tf = _tf()
    import_custom_modules(path)
    with captured_fd(2) as log:
        try:
            model = keras.models.load_model(str(path), compile=False)
        except Exception as exc:
            raise ModelError(f"{path}: Keras cannot load it ({_first_line(exc, log.text)})") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    recorded = _recorded_shape(model)
    inputs = _inputs_or_none(model) or ()
    dtype = str(getattr(inputs[0], "dtype", "float32")) if inputs else "float32"
    if "float" not in dtype:
        raise ModelError(f"{path}: its input is {dtype.rsplit('.', 1)[-1].strip('>')}; edgenet converts models with "
                         "float inputs (a model taking 0..255 pixels: give its Input float32 and convert with "
                         "--mean 0 --std 0.00392156862745098)")
    names = [getattr(t, "name", None) for t in inputs]
    input_name = _clean(names[0]) if names and names[0] else "input"
    shape = _fix_shape(path, recorded, input_shape)

    def call(x):
        return [tf.cast(y, tf.float32) for y in tf.nest.flatten(model(x, training=False))]

    fn = tf.function(call, input_signature=[tf.TensorSpec(shape, tf.float32, name=input_name)], autograph=False)
    probe = _trace(fn, path)
    names = _output_names(model, len(probe))
    return KerasModel(path, "keras", fn, model, input_name, shape, names)


def _inputs_or_none(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):   # a subclassed model has no symbolic inputs
        return None
    return inputs or None


def _recorded_shape(model) -> tuple[int | None, ...] | None:
    """The model's input shape as it records it (None where a dim is dynamic), or None when unknown.
    Raises ModelError for several inputs."""
    inputs = _inputs_or_none(model)
    if inputs is not None:
        if len(inputs) != 1:
            raise ModelError(f"{model.name}: takes {len(inputs)} inputs; edgenet converts single-input Keras models")
        return tuple(None if d is None else int(d) for d in inputs[0].shape)
    config = model.get_build_config() if hasattr(model, "get_build_config") else None
    shape = (config or {}).get("input_shape")
    if shape is None:
        return None
    if isinstance(shape, dict) or (shape and isinstance(shape[0], (list, tuple))):
        raise ModelError(f"{model.name}: takes several inputs; edgenet converts single-input Keras models")
    return tuple(None if d is None else int(d) for d in shape)


def _output_names(model, count: int) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == count and len(set(names)) == count:
        return [_clean(n) for n in names]
    return [f"output_{k}" for k in range(count)]


def _saved_model(path: Path, input_shape) -> KerasModel:
    from edgenet.converters._capture import captured_fd

    tf = _tf()
    with captured_fd(2) as log:
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: TensorFlow cannot load the SavedModel ({_first_line(exc, log.text)})") from exc
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if not signatures:
        raise ModelError(f"{path}: the SavedModel has no signature to convert (save it with "
                         "tf.saved_model.save(model, dir, signatures=...) or model.export(dir))")
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    sig = signatures[key]
    specs = sig.structured_input_signature[1]
    if len(specs) != 1 or sig.structured_input_signature[0]:
        raise ModelError(f"{path}: signature {key!r} takes {len(specs) or 'positional'} inputs; edgenet converts "
                         "single-input models")
    (arg, spec), = specs.items()
    if not spec.dtype.is_floating:
        raise ModelError(f"{path}: input {arg!r} is {spec.dtype.name}; edgenet converts float image models")
    recorded = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    shape = _fix_shape(path, recorded, input_shape)
    keys = sorted(sig.structured_outputs) if isinstance(sig.structured_outputs, dict) else None

    def call(x):
        out = sig(**{arg: tf.cast(x, spec.dtype)})
        values = [out[k] for k in keys] if keys is not None else tf.nest.flatten(out)
        return [tf.cast(y, tf.float32) for y in values]

    fn = tf.function(call, input_signature=[tf.TensorSpec(shape, tf.float32, name=_clean(arg))], autograph=False)
    probe = _trace(fn, path)
    names = [_clean(k) for k in keys] if keys is not None else [f"output_{k}" for k in range(len(probe))]
    return KerasModel(path, "saved_model", fn, loaded, _clean(arg), shape, names)


def _trace(fn, path: Path) -> list:
    """Trace ``fn`` at its fixed shape (the model's layers run once, symbolically); ModelError if they fail."""
    from edgenet.converters._capture import captured_fd

    with captured_fd(2) as log:
        try:
            outputs = fn.get_concrete_function().structured_outputs
        except Exception as exc:
            raise ModelError(f"{path}: the model cannot run at input shape "
                             f"{','.join(map(str, fn.input_signature[0].shape.as_list()))} "
                             f"({_first_line(exc, log.text)})") from exc
    if not outputs:
        raise ModelError(f"{path}: the model has no output")
    return list(outputs)


def _fix_shape(path: Path, recorded, given) -> tuple[int, ...]:
    """The static NHWC input shape: ``given`` (--input-shape) checked against the recorded static
    dims, or the recorded shape with a dynamic batch set to 1."""
    if given is not None:
        given = tuple(int(d) for d in given)
        if recorded is not None:
            if len(recorded) != len(given):
                raise UsageError(f"{path.name}: its input has rank {len(recorded)}; --input-shape "
                                 f"{','.join(map(str, given))} has {len(given)} dims (Keras models take N,H,W,C)")
            for axis, (want, got) in enumerate(zip(recorded, given)):
                if want is not None and axis > 0 and want != got:
                    raise UsageError(f"{path.name}: its input is {_dims(recorded)}; --input-shape "
                                     f"{','.join(map(str, given))} contradicts axis {axis} "
                                     "(Keras models take N,H,W,C)")
        return given
    if recorded is None:
        raise UsageError(f"{path.name}: its input shape is not recorded; give --input-shape N,H,W,C "
                         "(e.g. --input-shape 1,224,224,3)")
    if any(d is None for d in recorded[1:]):
        raise UsageError(f"{path.name}: its input {_dims(recorded)} has dynamic dims; give --input-shape N,H,W,C "
                         f"(e.g. --input-shape 1,{','.join(str(d or 224) for d in recorded[1:])})")
    return (recorded[0] or 1, *recorded[1:])


def _dims(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _clean(name: str) -> str:
    """A tensor name TFLite and the signature keep: ``:0`` and scope prefixes dropped."""
    return str(name).split(":")[0].split("/")[-1] or "input"


def _explain(text: str, fallback) -> str:
    """One line out of the converter's diagnostics: the TensorFlow ops TFLite's builtin set has no
    kernel for, by name, else ``fallback(text)`` (:func:`edgenet.converters.keras_tf.explain_failure`)."""
    import re

    missing = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    if missing:
        return (f"TFLite's builtin op set has no kernel for the TensorFlow op{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} (edgenet writes builtin ops only, which every LiteRT and TFLite Micro "
                "runtime has)")
    return fallback(text)


def _first_line(exc: BaseException, log: str = "") -> str:
    text = (str(exc).strip() or log.strip() or type(exc).__name__).splitlines()
    return text[0][:300] if text else type(exc).__name__
