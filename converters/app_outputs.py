"""Classifier outputs an app shows as they are: probabilities, not logits.

An app's classifier client (MediaPipe Tasks' ImageClassifier, TFLite Task Library) takes the scores
of the model's output as they are and shows them beside the class names of the metadata; a model
that ends in logits shows numbers like 7.3 or -2.1 as "scores". For targets whose profile sets
``probabilities = true`` (android), a classifier whose first output is logits gets a Softmax over
its classes appended in the ONNX graph, before conversion: the float model, every quantized model
and the validation against ONNX all see the same function. The output keeps its name; the logits
tensor is renamed ``<name>_logits``.
"""
from __future__ import annotations

from dataclasses import dataclass

ALREADY_SCORES = ("Softmax", "Sigmoid", "LogSoftmax")   # outputs that are already scores of some kind


@dataclass(frozen=True)
class AppendedSoftmax:
    output: str            # the output that now holds probabilities
    classes: int

    def note(self) -> str:
        return (f"output {self.output!r} ends in logits: a Softmax over its {self.classes} classes was appended so "
                "that apps (MediaPipe's ImageClassifier) show probabilities (the target profile's "
                "probabilities = true)")


def classes_of(value_info) -> int | None:
    """K for an output of shape [N, K] or [N, 1, ..., K] with K >= 2, else None."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]
    if len(dims) < 2 or None in dims[1:]:
        return None
    rest = dims[1:]
    big = [d for d in rest if d != 1]
    return rest[-1] if len(big) == 1 and rest[-1] == big[0] and big[0] >= 2 else None


def append_softmax(model) -> tuple[object, AppendedSoftmax | None]:
    """``model`` with a Softmax after its first output when that output is a classifier's logits
    (shape [N, K] / [N, 1, .., K], produced by an op other than Softmax, Sigmoid or LogSoftmax);
    else ``model`` unchanged and None. The input model is not modified."""
    import onnx
    from onnx import helper

    out = model.graph.output[0]
    classes = classes_of(out)
    if classes is None:
        return model, None
    producer = next((n for n in model.graph.node if out.name in n.output), None)
    if producer is None or producer.op_type in ALREADY_SCORES:
        return model, None
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    logits = _free_name(graph, f"{out.name}_logits")
    for node in graph.node:
        node.output[:] = [logits if o == out.name else o for o in node.output]
        node.input[:] = [logits if i == out.name else i for i in node.input]
    for vi in graph.value_info:
        if vi.name == out.name:
            vi.name = logits
    graph.node.append(helper.make_node("Softmax", [logits], [out.name], name=f"{out.name}_softmax", axis=-1))
    return model, AppendedSoftmax(out.name, classes)


def _free_name(graph, base: str) -> str:
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.initializer} \
        | {i.name for i in graph.input}
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name
