"""The inputs of a user's ONNX graph: which they are, their shapes made static, which are images.

Graphs exported elsewhere rarely have static inputs: the batch is a named dim (``N``, ``batch``),
-1 or 0, and detectors and segmenters often leave height and width open too. onnx2tf's answer is
one flag that gives the shapes; ours is ``--input-shape`` (:func:`parse_input_shape`):

* ``N,C,H,W`` (any rank) for the model's only input, ``NAME:d0,d1,...`` (repeatable) for several;
* it fixes the dynamic dims; a static dim it contradicts is an error naming the input and axis;
* then ONNX shape inference runs again (:func:`fix_input_shapes`), so every later stage sees static
  shapes; an input dim still unknown is one line naming the input and the axis;
* without ``--input-shape`` a dynamic batch (axis 0) becomes 1, reported; any other dynamic dim is an
  error that says to pass ``--input-shape``.

Inputs must be float32 (int64 token ids, bool masks and friends are refused here, before any slow
stage, naming the input). A rank-4 input is an image (NCHW in ONNX, NHWC in the TFLite model) unless
``--keep-layout NAME`` says otherwise; other ranks keep their layout.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from edgenet.config import InputShape
from edgenet.errors import ModelError, UsageError

MAX_RANK = 5
MAX_INPUT_ELEMENTS = 1 << 27          # 128 M values (512 MB of float32) per input: far beyond any edge model
_SHAPE_TEXT = re.compile(r"\s*-?\d+(\s*[,x]\s*-?\d+)*\s*")


@dataclass(frozen=True)
class ModelInput:
    """One graph input as the pipeline feeds it.

    ``shape`` is the static ONNX shape (e.g. ``(1, 3, 224, 224)``); ``image`` says the input is
    held channels-last in the TFLite model (rank 4, not kept by ``--keep-layout``).
    """

    name: str
    shape: tuple[int, ...]
    image: bool

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def tflite_shape(self) -> tuple[int, ...]:
        """The input's shape in the TFLite model (NHWC for images)."""
        if self.image:
            n, c, h, w = self.shape
            return (n, h, w, c)
        return self.shape

    @property
    def batch(self) -> int:
        """Examples per invocation: dim 0 for ranks >= 2, 1 for a rank-1 (or rank-0) input."""
        return self.shape[0] if self.rank >= 2 else 1

    @property
    def example_shape(self) -> tuple[int, ...]:
        """One example of this input in the TFLite layout (the tflite shape without its batch dim)."""
        return self.tflite_shape[1:] if self.rank >= 2 else self.tflite_shape

    @property
    def channels(self) -> int | None:
        return self.shape[1] if self.image else None

    def describe(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.shape))}" + (" (image, NCHW -> NHWC)" if self.image else "")


@dataclass(frozen=True)
class FixedShapes:
    """What :func:`fix_input_shapes` did: the inputs, and the dims it set without being told."""

    inputs: tuple[ModelInput, ...]
    batch_fixed: tuple[str, ...]        # inputs whose dynamic batch became 1 (no --input-shape for them)


# -- --input-shape --------------------------------------------------------------------------------
def parse_input_shape(text: str) -> InputShape:
    """``"1,3,224,224"`` or ``"images:1,3,640,640"`` -> InputShape. The name may itself hold ``:``
    (``input_1:0:1,3,224,224``): the dims are what follows the last colon. UsageError if malformed."""
    name, dims_text = None, text
    if ":" in text:
        head, tail = text.rsplit(":", 1)
        if _SHAPE_TEXT.fullmatch(tail):
            name, dims_text = head.strip(), tail
    if not _SHAPE_TEXT.fullmatch(dims_text) or name == "":
        raise UsageError(f"--input-shape {text!r}: expected comma-separated dims (1,3,224,224) or NAME:dims "
                         "(images:1,3,640,640)")
    dims = tuple(int(d) for d in re.split(r"[,x]", dims_text.replace(" ", "")))
    if not 1 <= len(dims) <= MAX_RANK:
        raise UsageError(f"--input-shape {text!r}: {len(dims)} dims; inputs of rank 1 to {MAX_RANK} are supported")
    bad = [d for d in dims if d < 1]
    if bad:
        raise UsageError(f"--input-shape {text!r}: every dim must be a positive integer, got {bad[0]}")
    if math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise UsageError(f"--input-shape {text!r}: {math.prod(dims):,} values is more than an edge model's input "
                         f"can hold (at most {MAX_INPUT_ELEMENTS:,})")
    return InputShape(name, dims)


# -- graph inputs ---------------------------------------------------------------------------------
def graph_inputs(model: Any) -> list[Any]:
    """The graph inputs that are real inputs (not weights listed as inputs by old exporters)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(value_info: Any) -> list[int | str | None]:
    """Static dims as ints; named dims as their name; -1/0/unknown as None."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


def check_input_types(model: Any, source: str) -> None:
    """Every graph input must be a float32 tensor of rank 1..5; ModelError naming the first that is not."""
    onnx = _onnx()
    for vi in graph_inputs(model):
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"{source}: input {vi.name!r} is not a tensor (sequences and maps are not supported)")
        elem = vi.type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            name = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else str(elem)
            raise ModelError(f"{source}: input {vi.name!r} is {name.lower()}; edgenet converts models whose inputs are "
                             "all float32 (token ids, masks and other integer or bool inputs are not supported)")
        if not vi.type.tensor_type.HasField("shape"):
            raise ModelError(f"{source}: input {vi.name!r} has no shape; give it with --input-shape {vi.name}:d0,d1,...")
        rank = len(vi.type.tensor_type.shape.dim)
        if not 1 <= rank <= MAX_RANK:
            raise ModelError(f"{source}: input {vi.name!r} has rank {rank}; inputs of rank 1 to {MAX_RANK} are supported")


def check_finite_weights(model: Any, source: str) -> None:
    """ModelError naming the first weight (initializer) that holds NaN or infinity: the model can
    give nothing meaningful, whatever the data."""
    import numpy as np

    onnx = _onnx()
    for init in model.graph.initializer:
        if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        values = onnx.numpy_helper.to_array(init)
        if values.size and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            raise ModelError(f"{source}: weight {init.name!r} holds NaN or infinity ({bad} of {values.size} values)")


def fix_input_shapes(model: Any, shapes: Sequence[InputShape], keep_layout: Sequence[str], source: str) -> FixedShapes:
    """Make every graph input of ``model`` static, in place, from ``shapes`` (``--input-shape``),
    then rerun ONNX shape inference. Returns the inputs and which dynamic batches became 1.

    Raises UsageError for a shape that names no input, has the wrong rank or contradicts a static
    dim, or for a ``--keep-layout`` name that is no rank-4 input; ModelError for a dynamic dim nobody
    fixed (naming input and axis, and the flag to pass) or an input larger than an edge model takes.
    """
    inputs = graph_inputs(model)
    names = [vi.name for vi in inputs]
    if not inputs:
        raise ModelError(f"{source}: the graph has no inputs")
    by_name: dict[str, InputShape] = {}
    for shape in shapes:
        if shape.name is None:
            if len(inputs) != 1:
                raise UsageError(f"{source}: has {len(inputs)} inputs ({', '.join(names)}); name each one: "
                                 f"--input-shape {names[0]}:d0,d1,...")
            key = names[0]
        elif shape.name not in names:
            raise UsageError(f"--input-shape {shape}: the model has no input {shape.name!r} "
                             f"(its inputs: {', '.join(names)})")
        else:
            key = shape.name
        if key in by_name:
            raise UsageError(f"--input-shape given twice for input {key!r}")
        by_name[key] = shape
    for name in keep_layout:
        if name not in names:
            raise UsageError(f"--keep-layout {name}: the model has no input {name!r} (its inputs: {', '.join(names)})")

    batch_fixed: list[str] = []
    for vi in inputs:
        dims = _dims(vi)
        given = by_name.get(vi.name)
        if given is not None:
            if len(given.dims) != len(dims):
                raise UsageError(f"--input-shape {given}: input {vi.name!r} has rank {len(dims)} "
                                 f"({_show(dims)}), not {len(given.dims)}")
            for axis, (have, want) in enumerate(zip(dims, given.dims)):
                if isinstance(have, int) and have != want:
                    raise UsageError(f"--input-shape {given}: input {vi.name!r} axis {axis} is fixed to {have} in the "
                                     f"model, not {want}")
            new = list(given.dims)
        else:
            new = list(dims)
            if len(new) >= 2 and not isinstance(new[0], int):
                new[0] = 1
                batch_fixed.append(vi.name)
            open_axes = [axis for axis, d in enumerate(new) if not isinstance(d, int)]
            if open_axes:
                axes = ", ".join(f"{axis} ({new[axis] or '?'})" for axis in open_axes)
                example = ",".join(str(d) if isinstance(d, int) else "?" for d in new)
                flag = f"{vi.name}:{example}" if len(inputs) > 1 else example
                raise ModelError(f"{source}: input {vi.name!r} has dynamic dims at axis {axes}; give them with "
                                 f"--input-shape {flag}")
        if math.prod(new) > MAX_INPUT_ELEMENTS:
            raise ModelError(f"{source}: input {vi.name!r} of shape {_show(new)} holds {math.prod(new):,} values, "
                             f"more than an edge model's input can hold (at most {MAX_INPUT_ELEMENTS:,})")
        _set_dims(vi, new)
    for name in keep_layout:
        vi = inputs[names.index(name)]
        if len(vi.type.tensor_type.shape.dim) != 4:
            raise UsageError(f"--keep-layout {name}: only rank-4 inputs are treated as images; {name!r} has rank "
                             f"{len(vi.type.tensor_type.shape.dim)} and keeps its layout anyway")
    _reinfer(model, source)
    result = tuple(ModelInput(vi.name, tuple(int(d) for d in _dims(vi)), len(_dims(vi)) == 4
                              and vi.name not in keep_layout) for vi in inputs)
    return FixedShapes(result, tuple(batch_fixed))


def _set_dims(value_info: Any, dims: Sequence[int]) -> None:
    shape = value_info.type.tensor_type.shape
    for d, value in zip(shape.dim, dims):
        d.ClearField("dim_param")
        d.dim_value = int(value)


def _reinfer(model: Any, source: str) -> None:
    """Drop the shapes recorded for the dynamic graph and infer them again from the static inputs."""
    onnx = _onnx()
    del model.graph.value_info[:]
    for out in model.graph.output:  # symbolic output dims would contradict the static ones now
        if out.type.HasField("tensor_type") and out.type.tensor_type.HasField("shape"):
            for d in out.type.tensor_type.shape.dim:
                if not (d.HasField("dim_value") and d.dim_value > 0):
                    d.Clear()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # InferenceError: the fixed shapes do not fit the graph
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source}: the input shapes do not fit the graph (ONNX shape inference: {first[:300]})") from exc
    model.CopyFrom(inferred)


def _show(dims: Sequence) -> str:
    return "x".join(str(d) if isinstance(d, int) else (d or "?") for d in dims)


def _onnx():
    from edgenet._deps import require

    return require("onnx", purpose="ONNX models")
