"""Every intermediate ONNX value as the converted TensorFlow graph computes it (for locating where a
conversion diverges from onnxruntime)."""
from __future__ import annotations

from typing import Any, Collection, Mapping

import numpy as np

from edgenet.converters.onnx_to_tf.graph import GraphTracer
from edgenet.converters.onnx_to_tf.inputs import declared_dims
from edgenet.errors import UsageError


def evaluate_values(model: Any, feeds: Mapping[str, np.ndarray], keep_layout: Collection[str] = ()
                    ) -> dict[str, np.ndarray]:
    """Run the TF graph ``onnx_to_tf`` builds for ``model`` (not TFLite) on ``feeds`` and return every
    node output it computes, by ONNX value name, in ONNX layout (transposed back from the layout the
    converter held it in), in node order.

    ``feeds`` maps each graph input to an array in ONNX layout (NCHW for images); a dynamic dim 0
    takes the feeds' batch. Node outputs folded to constants at conversion time are included (as the
    converter computed them). Values inside a multi-node pattern converted as one op (the erf GELU)
    are not computed: only the pattern's output is. Raises UsageError for missing or misshapen feeds,
    and what :func:`~edgenet.converters.onnx_to_tf.onnx_to_tf` raises for models it cannot convert (the
    TFLite-builtin rule aside: this runs TensorFlow only).
    """
    tf_inputs = [vi for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
    missing = [vi.name for vi in tf_inputs if vi.name not in feeds]
    if missing:
        raise UsageError(f"evaluate_values: no array for input(s) {', '.join(missing)}")
    batch = None
    for vi in tf_inputs:
        dims = declared_dims(vi, "input")
        if dims and not isinstance(dims[0], int):
            batch = int(np.asarray(feeds[vi.name]).shape[0])
    tracer = GraphTracer(model, batch, keep_layout, dynamic_batch=False)
    _, concrete = tracer.concrete_function(collect=True)
    tf = tracer.tf
    args = []
    for plan in tracer.inputs:
        array = np.asarray(feeds[plan.name])
        if tuple(array.shape) != plan.info.onnx_shape:
            raise UsageError(f"evaluate_values: input {plan.name!r} has shape {tuple(array.shape)}, the model "
                             f"wants {plan.info.onnx_shape}")
        args.append(tf.constant(np.transpose(array, plan.perm).astype(plan.info.dtype)))
    results = concrete(*args)
    computed = dict(zip(tracer.collected, (np.asarray(r) for r in results[len(model.graph.output):])))
    values: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        for name in node.output:
            if name in computed:
                values[name] = computed[name]
            elif name in tracer.values and tracer.values[name].is_const:
                values[name] = np.asarray(tracer.values[name].const)
    return values
