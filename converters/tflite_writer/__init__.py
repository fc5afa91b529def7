"""The native TFLite writer: ONNX -> TFLite builtin operators -> flatbuffer, without TensorFlow (issue #20).

onnx_to_tf's handlers call TensorFlow through ``ctx.tf``; here a recording backend stands in for it
(:mod:`.backend`, :mod:`.nn_ops`), TFLite's own rewrites are applied to what it recorded (:mod:`.fuse`)
and the model is written with the TFLite schema LiteRT ships (:mod:`.serialize`). A model that needs
a function the backend does not implement raises :class:`NotNative`, and the conversion goes through
TensorFlow as before (:mod:`.side`, which also holds the switch: ``EDGENET_TFLITE_WRITER``).
Importing this package does not import TensorFlow.
"""
from __future__ import annotations

from edgenet.converters.tflite_writer.convert import NativeGraph, native_tflite
from edgenet.converters.tflite_writer.tensors import NotNative

__all__ = ["native_tflite", "NativeGraph", "NotNative"]
