"""The TFLite writer: ONNX -> TFLite builtin operators -> flatbuffer, without TensorFlow (issue #20).

onnx_to_tf's handlers call ``ctx.tf`` with TensorFlow's function names; a recording backend answers
them (:mod:`.backend`, :mod:`.nn_ops`), TFLite's own rewrites are applied to what it recorded (:mod:`.fuse`)
and the model is written with the TFLite schema LiteRT ships (:mod:`.serialize`). A node that needs
a function the backend does not implement raises :class:`NotNative`, a ConversionError naming the
ONNX node; it is the only route from ONNX to TFLite (:mod:`.side` gives the pipeline its stages).
Nothing here imports TensorFlow.
"""
from __future__ import annotations

from edgenet.converters.tflite_writer.convert import NativeGraph, native_tflite
from edgenet.converters.tflite_writer.tensors import NotNative

__all__ = ["native_tflite", "NativeGraph", "NotNative"]
