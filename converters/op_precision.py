"""What precision each op of a .tflite model computes in, read from its tensor types.

numpy + the flatbuffer schema that ships with ai-edge-litert only (no TensorFlow): ``edgenet bench``
uses it on the device to label a model by what it is, and the converter to name the ops an int8
model left in float.

An op's precision follows TFLite's post-training quantization modes (see
https://ai.google.dev/edge/litert/models/post_training_quantization):

- ``int16x8``: an int16 activation among its inputs or outputs (int8 weights, int64 biases);
- ``int8``: an int8 (or uint8) activation among its inputs or outputs;
- ``float16``: float activations, weights stored as float16 (a DEQUANTIZE of a float16 constant
  feeds it), or float16 activations;
- ``dynamic``: float activations, int8 weights (a hybrid kernel quantizes its input on the fly);
- ``float32``: float activations and float32 weights;
- None: no numeric activation at all (shape and index arithmetic on int32/int64/bool tensors).

Activations are the tensors an op reads or writes that are not stored in the model; weights are the
constants (and constants passed through a DEQUANTIZE). QUANTIZE and DEQUANTIZE between float and an
integer type are conversions at the edge of the integer part: they take the precision of their
integer side (an int8 model with float32 input and output is int8 from end to end, and an op left
in float inside it is listed, not the conversions around it). A DEQUANTIZE of a constant (float16
or int8 weights turned into float32 when the model is prepared) takes the precision of its weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from edgenet.config import Precision
from edgenet.targets.tflite_graph import TfliteGraph, read_tflite

_EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")
_INT8 = ("int8", "uint8")
_FLOAT = ("float32", "float16")


class OpPrecision(NamedTuple):
    """One op of a model and the precision it computes in."""

    index: int                    # position in the main subgraph's execution order
    op: str                       # builtin name, e.g. "CONV_2D"
    output: str                   # name of its first output tensor (as in the model)
    precision: Precision | None   # None: no numeric activation (shape / index arithmetic)


def _graph(model: str | Path | bytes | TfliteGraph) -> TfliteGraph:
    return model if isinstance(model, TfliteGraph) else read_tflite(model)


def op_precisions(model: str | Path | bytes | TfliteGraph) -> list[OpPrecision]:
    """Every op of the model's main subgraph, in execution order, with the precision it computes in.
    ``model``: a path, the model's bytes, or a parsed graph. Raises ModelError for a file that is
    not a .tflite model."""
    return [entry for entry, _ in _classified(_graph(model))]


def _classified(graph: TfliteGraph) -> list[tuple[OpPrecision, bool]]:
    """Each op's entry, and whether it has numeric weights (float or int8 constants, not axes/shapes)."""
    tensors = graph.tensors
    # float tensors that are constants passed through DEQUANTIZE: weights, typed by what is stored
    dequantized: dict[int, str] = {}
    for op in graph.operators:
        if op.name == "DEQUANTIZE" and op.inputs and op.inputs[0] >= 0 and tensors[op.inputs[0]].is_constant:
            for out in op.outputs:
                dequantized[out] = tensors[op.inputs[0]].dtype
    result = []
    for op in graph.operators:
        activations, weights = set(), set()
        for i in op.inputs:
            if i < 0:
                continue
            if tensors[i].is_constant:
                weights.add(tensors[i].dtype)
            elif i in dequantized:
                weights.add(dequantized[i])
            else:
                activations.add(tensors[i].dtype)
        activations.update(tensors[i].dtype for i in op.outputs if i >= 0)
        if op.name in _EDGE_OPS:
            precision = _edge_precision(op.name, activations, weights)
        else:
            precision = _compute_precision(activations, weights)
        name = tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else ""
        result.append((OpPrecision(op.index, op.name, name, precision), bool(weights & set(_FLOAT + _INT8))))
    return result


def _compute_precision(activations: set[str], weights: set[str]) -> Precision | None:
    if "int16" in activations:
        return Precision.INT16X8
    if activations & set(_INT8):
        return Precision.INT8
    if not activations & set(_FLOAT):
        return None
    if "float16" in activations:
        return Precision.FLOAT16
    if weights & set(_INT8):
        return Precision.DYNAMIC
    if "float16" in weights:
        return Precision.FLOAT16
    return Precision.FLOAT32


def _edge_precision(name: str, activations: set[str], weights: set[str]) -> Precision | None:
    if name == "DEQUANTIZE" and weights:     # constant weights dequantized at prepare time
        if "float16" in weights:
            return Precision.FLOAT16
        return Precision.DYNAMIC if weights & set(_INT8) else Precision.FLOAT32
    if "int16" in activations:
        return Precision.INT16X8
    if activations & set(_INT8):
        return Precision.INT8
    return Precision.FLOAT16 if "float16" in activations else Precision.FLOAT32


def model_precision(model: str | Path | bytes | TfliteGraph) -> Precision:
    """The precision a model is, by the ops that compute in it (not by its file name).

    Full integer when any op (other than QUANTIZE/DEQUANTIZE) computes in an integer type: int8 or
    int16x8, whichever more ops compute in (int8 on a tie); else dynamic when an op has int8 weights;
    else float16 when float16 weights are stored; else float32. The ops computed otherwise are
    :func:`ops_not_in` the result."""
    entries = op_precisions(model)
    counts: dict[Precision, int] = {}
    for e in entries:
        if e.precision is not None and e.op not in _EDGE_OPS:
            counts[e.precision] = counts.get(e.precision, 0) + 1
    if not counts:   # only conversions (or nothing): what they convert to
        counts = {e.precision: 1 for e in entries if e.precision is not None}
    if counts.get(Precision.INT8) or counts.get(Precision.INT16X8):
        return Precision.INT16X8 if counts.get(Precision.INT16X8, 0) > counts.get(Precision.INT8, 0) \
            else Precision.INT8
    if Precision.DYNAMIC in counts:
        return Precision.DYNAMIC
    if Precision.FLOAT16 in counts or any(e.precision is Precision.FLOAT16 for e in entries):
        return Precision.FLOAT16
    return Precision.FLOAT32


def ops_not_in(model: str | Path | bytes | TfliteGraph, precision: Precision | str) -> list[OpPrecision]:
    """The ops computed in another precision than ``precision`` (e.g. the ops an int8 model left in
    float), in execution order; ops with no numeric activation are never listed, nor are QUANTIZE /
    DEQUANTIZE conversions at the edges of a full-integer model.

    float16 and dynamic change only how weights are stored: in such a model an op without weights
    (MEAN, ADD of two activations ...) computes in float32 as it should and is not listed; an op
    whose weights stayed float32 (TF's dynamic-range quantizer keeps weights of under 1,024 values
    in float) is."""
    precision = Precision(precision)
    weights_only = precision in (Precision.FLOAT16, Precision.DYNAMIC)
    return [e for e, has_weights in _classified(_graph(model))
            if e.precision is not None and e.precision is not precision
            and not (weights_only and e.precision is Precision.FLOAT32 and not has_weights)]


def describe(entries: list[OpPrecision], limit: int = 5) -> str:
    """One line naming ``entries``, e.g. "MIRROR_PAD 'pad' (float32), MAX_POOL_2D 'pool' (float32)"."""
    shown = [f"{e.op} '{e.output}' ({e.precision.value if e.precision else 'no numeric data'})"
             for e in entries[:limit]]
    more = len(entries) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
