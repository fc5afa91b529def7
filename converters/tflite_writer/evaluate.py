"""Every ONNX value a natively written float model keeps, as LiteRT computes it (for locating where a
conversion diverges from onnxruntime, without TensorFlow).

The native writer names each tensor after the ONNX value it holds and records the value's layout
(:attr:`~edgenet.converters.tflite_writer.convert.NativeGraph.values`: tensor name and perm, with
``tensor = np.transpose(onnx_value, perm)``). :func:`kept_values` runs the float .tflite once with
every intermediate tensor preserved (``experimental_preserve_all_tensors``, which runs TFLite's
reference kernels, not XNNPACK) and returns those tensors in ONNX layout, by ONNX value name.
Node outputs folded to constants at conversion time come as the writer computed them; values with no
tensor of their own (fused away: a conv's bias ADD, a fused RELU) are not returned.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from edgenet.converters.onnx_to_tf.layout import invert
from edgenet.errors import UsageError

WHERE = "the float .tflite model (LiteRT's reference kernels, every tensor kept)"
ALL_AGREE = ("every ONNX value the float .tflite model keeps matches onnxruntime on the first example when LiteRT "
             "runs it on its reference kernels: the difference arises in the optimized kernels (XNNPACK) the "
             "verdict ran, or on another example")


def native_values(graph, feeds: Mapping[str, np.ndarray]):
    """:func:`kept_values` as the divergence finder takes them
    (:class:`~edgenet.converters.divergence.ConvertedValues`)."""
    from edgenet.converters.divergence import ConvertedValues

    return ConvertedValues(kept_values(graph, feeds), WHERE, ALL_AGREE)


def kept_values(graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ONNX values ``graph`` (a :class:`~edgenet.converters.tflite_writer.convert.NativeGraph`)
    holds in tensors, computed by LiteRT on ``feeds`` (graph input name -> array in ONNX layout, NCHW
    for images, with the model's static shape), in ONNX layout and the model's dtypes (int64 ONNX
    values may come back as int32), and the node outputs the conversion folded to constants
    (``graph.constants``). Raises UsageError for a missing or misshapen feed."""
    from edgenet.runtime import make_interpreter

    interp = make_interpreter(graph.model, preserve_all_tensors=True, use_xnnpack=False)
    details = {d["name"]: d for d in interp.get_tensor_details()}
    index = {name: d["index"] for name, d in details.items()}
    for info, signature_order in zip(graph.inputs, interp.get_input_details()):
        if info.name not in feeds:
            raise UsageError(f"kept_values: no array for input {info.name!r}")
        tensor_name, perm = graph.values.get(info.name, (signature_order["name"], tuple(range(len(info.tf_shape)))))
        detail = details.get(tensor_name, signature_order)
        array = np.transpose(np.asarray(feeds[info.name]), perm)
        if tuple(array.shape) != tuple(detail["shape"]):
            raise UsageError(f"kept_values: input {info.name!r} has shape {tuple(np.shape(feeds[info.name]))}, "
                             f"the model wants {info.onnx_shape}")
        interp.set_tensor(detail["index"], np.ascontiguousarray(array, detail["dtype"]))
    interp.invoke()
    values: dict[str, np.ndarray] = dict(graph.constants)
    for name, (tensor_name, perm) in graph.values.items():
        i = index.get(tensor_name)
        if i is None:
            continue
        try:
            got = interp.get_tensor(i)
        except ValueError:   # a tensor the runtime did not keep (none should be, with preserve_all_tensors)
            continue
        values[name] = np.transpose(got, invert(perm)) if len(perm) == got.ndim else got
    return values
