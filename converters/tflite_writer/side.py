"""The conversion's float-model side with the native writer first and TensorFlow as the fallback.

:class:`NativeSide` offers the stages the pipeline calls on :mod:`~edgenet.converters.tf_worker`'s
objects (``graph_and_floats``, ``float_tflite``, ``layer_sqnr``, ``onnx_nodes`` ...). It writes the
float32 model natively (:func:`~edgenet.converters.tflite_writer.native_tflite`), and float16 /
dynamic-range models from it with the LiteRT Quantizer (:mod:`edgenet.converters.float_weights`); when
the model needs something the native writer lacks (:class:`NotNative`), it starts the TensorFlow side
then and hands the model to it (every float precision then comes from TensorFlow's converter), and
says so in :meth:`take_notes`. The divergence finder's ``evaluate_values`` runs the native float model
in LiteRT with every tensor kept (no TensorFlow), or the TensorFlow graph for a model TensorFlow made.

The switch: ``EDGENET_TFLITE_WRITER=tf`` makes every model through TensorFlow (the former path,
worker process included); unset or ``native``: this side.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from edgenet.config import Precision
from edgenet.converters.tflite_writer.convert import NativeGraph, native_tflite
from edgenet.converters.tflite_writer.tensors import NotNative
from edgenet.errors import UsageError

ENV = "EDGENET_TFLITE_WRITER"
MODES = ("native", "tf")


def writer_mode() -> str:
    mode = os.environ.get(ENV, "native").strip().lower() or "native"
    if mode not in MODES:
        raise UsageError(f"{ENV}={mode!r}: use one of {', '.join(MODES)}")
    return mode


def conversion_side(in_process: bool = False):
    """The side the pipeline converts through: :class:`NativeSide` (TensorFlow only if a model needs
    it), or with ``EDGENET_TFLITE_WRITER=tf`` TensorFlow's side as before."""
    from edgenet.converters.tf_worker import tf_stages

    if writer_mode() == "tf":
        return tf_stages(in_process=in_process)
    return NativeSide(lambda: tf_stages(in_process=in_process))


class NativeSide:
    """See the module docstring; ``fallback`` makes the TensorFlow side when first needed."""

    NATIVE = True  # the pipeline names the float stage after it

    def __init__(self, fallback: Callable[[], Any]) -> None:
        self._factory = fallback
        self._tf_side = None
        self._graph: NativeGraph | None = None
        self._onnx = None
        self._keep_layout: tuple[str, ...] = ()
        self._on_tf = False
        self._notes: list[str] = []

    # ---- plumbing -----------------------------------------------------------------------------
    def _tf(self):
        if self._tf_side is None:
            self._tf_side = self._factory()
        return self._tf_side

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def ready(self) -> None:
        """Nothing to import ahead (TensorFlow loads only when a model falls back)."""

    def start(self, name: str, *args, **kwargs):
        from edgenet.converters.tf_worker import Pending

        # run when the result is asked for, so that the stage that waits for it is the one timed
        return Pending(receive=lambda: getattr(self, name)(*args, **kwargs))

    # ---- stages -------------------------------------------------------------------------------
    def onnx_to_tf(self, onnx_model, keep_layout: tuple[str, ...] = ()):
        from edgenet.converters.tf_worker import GraphInfo

        self._onnx, self._keep_layout, self._graph = onnx_model, tuple(keep_layout), None
        try:
            self._graph = native_tflite(onnx_model, keep_layout=self._keep_layout)
        except NotNative as exc:
            self._on_tf = True
            self._notes.append(f"the float model was made through TensorFlow: the native TFLite writer does not "
                               f"handle this graph yet ({exc})")
            return self._tf().onnx_to_tf(onnx_model, self._keep_layout)
        self._on_tf = False
        g = self._graph
        return GraphInfo(g.inputs, g.outputs, dict(g.op_counts))

    def graph_and_floats(self, onnx_model, keep_layout: tuple[str, ...] = (), precisions=(Precision.FLOAT32,)):
        info = self.onnx_to_tf(onnx_model, keep_layout)
        return info, {Precision(p): self.float_tflite(Precision(p)) for p in precisions}

    def float_tflite(self, precision: Precision = Precision.FLOAT32) -> bytes:
        precision = Precision(precision)
        if not self._on_tf and self._graph is not None:
            if precision is Precision.FLOAT32:
                return self._graph.model
            from edgenet.converters.float_weights import WEIGHT_PRECISIONS, weight_model

            if precision in WEIGHT_PRECISIONS:
                return weight_model(self._graph.model, precision)
        if not self._on_tf:   # TensorFlow's side has not seen this model yet
            self._tf().onnx_to_tf(self._onnx, self._keep_layout)
            self._on_tf = True
        return self._tf().float_tflite(precision)

    def float_tflite_of(self, onnx_model) -> bytes:
        try:
            return native_tflite(onnx_model, keep_layout=self._keep_layout).model
        except NotNative as exc:
            self._notes.append(f"the equalized float model was made through TensorFlow ({exc})")
            return self._tf().float_tflite_of(onnx_model)

    def evaluate_values(self, onnx_model, feeds):
        """Every ONNX value the float model of ``onnx_model`` computes on ``feeds`` (ONNX layout): the
        native model's kept tensors (:func:`~edgenet.converters.tflite_writer.evaluate.native_values`),
        or, for a model made through TensorFlow, the TF graph's values."""
        from edgenet.converters.tflite_writer.evaluate import native_values

        if not self._on_tf:
            graph = self._graph if onnx_model is self._onnx else None
            if graph is None:
                try:
                    graph = native_tflite(onnx_model, keep_layout=self._keep_layout)
                except NotNative:
                    graph = None
            if graph is not None:
                return native_values(graph, feeds)
        return self._tf().evaluate_values(onnx_model, feeds)

    def layer_sqnr(self, float_model: bytes, int8_model: bytes, samples):
        if self._on_tf:
            return self._tf().layer_sqnr(float_model, int8_model, samples)
        from edgenet.converters.layer_error import layer_sqnr, named_rows

        return named_rows(layer_sqnr(float_model, int8_model, samples), self.onnx_node)

    def onnx_node(self, tflite_name: str) -> str | None:
        if self._on_tf:
            return self._tf().onnx_node(tflite_name)
        return None if self._graph is None else self._graph.onnx_node(tflite_name)

    def onnx_nodes(self, tflite_names) -> dict:
        if self._on_tf:
            return self._tf().onnx_nodes(tflite_names)
        return {name: self.onnx_node(name) for name in tflite_names}

    def release(self, failed: bool = False) -> None:
        self._graph, self._onnx = None, None
        if self._tf_side is not None:
            self._tf_side.release(failed)

    def close(self) -> None:
        self.release()
        if self._tf_side is not None:
            self._tf_side.close()
