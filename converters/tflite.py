"""The ``serving_default`` signature every .tflite edgenet writes carries: inputs under their tensor
names, outputs as ``output_0``, ``output_1`` ... in subgraph order.

The float models come from the TFLite writer (:mod:`edgenet.converters.tflite_writer`), which adds it
itself; the LiteRT Quantizer's models (int8, int16x8, float16, dynamic) and TensorFlow's (Keras
sources, :mod:`edgenet.converters.keras_source`) get it here.
"""
from __future__ import annotations

from edgenet.converters import _flatbuffer

SIGNATURE_KEY = "serving_default"


def with_signature(model: bytes) -> bytes:
    """``model`` with a ``serving_default`` signature over its main subgraph, if it has none: each
    input under its tensor name, outputs as ``output_<k>`` in subgraph order (the function's order)."""
    schema = _flatbuffer.schema()
    if schema.Model.GetRootAsModel(bytes(model), 0).SignatureDefsLength():
        return model        # (looked at in place: unpacking a 5,500-op model takes seconds)
    obj = _flatbuffer.read(model)
    graph = obj.subgraphs[0]

    def entry(name: str, index: int):
        t = schema.TensorMapT()
        t.name, t.tensorIndex = name, int(index)
        return t

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [entry(graph.tensors[i].name.decode().split(":")[0], i) for i in graph.inputs]
    sig.outputs = [entry(f"output_{k}", i) for k, i in enumerate(graph.outputs)]
    obj.signatureDefs = [sig]
    return _flatbuffer.write(obj)
