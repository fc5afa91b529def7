"""The conversion's float-model side: the stages the pipeline calls to get from ONNX to float models.

:class:`NativeSide` offers ``graph_and_floats``, ``float_tflite``, ``float_tflite_of``, ``layer_sqnr``,
``onnx_nodes`` and ``evaluate_values``. It writes the float32 model with the TFLite writer
(:func:`~edgenet.converters.tflite_writer.native_tflite`), and float16 / dynamic-range models from it
with the LiteRT Quantizer (:mod:`edgenet.converters.float_weights`). A graph the writer cannot express
in TFLite builtins fails with a ConversionError naming the ONNX node
(:class:`~edgenet.converters.tflite_writer.tensors.NotNative`); there is no other route (no TensorFlow
on the ONNX path, issue #20). The divergence finder's ``evaluate_values`` runs the float model in
LiteRT with every tensor kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Any

from edgenet.config import Precision
from edgenet.converters.tflite_writer.convert import NativeGraph, native_tflite


@dataclass(frozen=True)
class GraphInfo:
    """What the pipeline needs to know of the converted graph: its inputs and outputs, ops converted."""

    inputs: tuple[Any, ...]      # converters.onnx_to_tf.TensorInfo
    outputs: tuple[Any, ...]
    op_counts: dict[str, int]


class Pending:
    """A stage's result, computed when asked for (so that the stage that waits for it is the one timed)."""

    def __init__(self, receive) -> None:
        self._receive, self._value, self._error = receive, None, None

    def result(self) -> Any:
        if self._receive is not None:
            receive, self._receive = self._receive, None
            try:
                self._value = receive()
            except BaseException as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._value


def conversion_side(unfused: Collection[str] = ()) -> "NativeSide":
    """The side the pipeline converts through; ``unfused``: the target's ``unfused_ops``."""
    return NativeSide(unfused)


class NativeSide:
    """See the module docstring."""

    def __init__(self, unfused: Collection[str] = ()) -> None:
        self._graph: NativeGraph | None = None
        self._onnx = None
        self._keep_layout: tuple[str, ...] = ()
        self._unfused = tuple(unfused)

    # ---- plumbing -----------------------------------------------------------------------------
    def start(self, name: str, *args, **kwargs) -> Pending:
        return Pending(lambda: getattr(self, name)(*args, **kwargs))

    # ---- stages -------------------------------------------------------------------------------
    def onnx_to_tflite(self, onnx_model, keep_layout: tuple[str, ...] = ()) -> GraphInfo:
        """Write the float32 model of ``onnx_model`` (static shapes); raises ConversionError naming the
        node the writer cannot express, UnsupportedOpError naming every node no handler converts."""
        self._onnx, self._keep_layout, self._graph = onnx_model, tuple(keep_layout), None
        self._graph = g = native_tflite(onnx_model, keep_layout=self._keep_layout, unfused=self._unfused)
        return GraphInfo(g.inputs, g.outputs, dict(g.op_counts))

    def graph_and_floats(self, onnx_model, keep_layout: tuple[str, ...] = (), precisions=(Precision.FLOAT32,)):
        info = self.onnx_to_tflite(onnx_model, keep_layout)
        return info, {Precision(p): self.float_tflite(Precision(p)) for p in precisions}

    def float_tflite(self, precision: Precision = Precision.FLOAT32) -> bytes:
        """The float32 model written last, or its float16 / dynamic-range twin (LiteRT Quantizer)."""
        precision = Precision(precision)
        if self._graph is None:
            raise RuntimeError("float_tflite before onnx_to_tflite")
        if precision is Precision.FLOAT32:
            return self._graph.model
        from edgenet.converters.float_weights import WEIGHT_PRECISIONS, weight_model

        if precision not in WEIGHT_PRECISIONS:
            raise ValueError(f"{precision.value} needs calibration: use edgenet.converters.quantize")
        return weight_model(self._graph.model, precision)

    def float_tflite_of(self, onnx_model) -> bytes:
        return native_tflite(onnx_model, keep_layout=self._keep_layout, unfused=self._unfused).model

    def evaluate_values(self, onnx_model, feeds):
        """Every ONNX value the float model of ``onnx_model`` computes on ``feeds`` (ONNX layout): the
        model's kept tensors (:func:`~edgenet.converters.tflite_writer.evaluate.native_values`)."""
        from edgenet.converters.tflite_writer.evaluate import native_values

        graph = self._graph if onnx_model is self._onnx and self._graph is not None else \
            native_tflite(onnx_model, keep_layout=self._keep_layout, unfused=self._unfused)
        return native_values(graph, feeds)

    def layer_sqnr(self, float_model: bytes, int8_model: bytes, samples):
        from edgenet.converters.layer_error import layer_sqnr, named_rows

        return named_rows(layer_sqnr(float_model, int8_model, samples), self.onnx_node)

    def onnx_node(self, tflite_name: str) -> str | None:
        return None if self._graph is None else self._graph.onnx_node(tflite_name)

    def onnx_nodes(self, tflite_names) -> dict:
        return {name: self.onnx_node(name) for name in tflite_names}

    def release(self, failed: bool = False) -> None:
        self._graph, self._onnx = None, None

    def close(self) -> None:
        self.release()
