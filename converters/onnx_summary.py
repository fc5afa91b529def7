"""What an ONNX file holds, before a conversion (`edgenet info model.onnx`).

The first things an onnx2tf or TFLite converter user looks at: each input and output with its
element type and shape (dynamic dims by name, and the flag that fixes them), the opset, the op
types with their counts, and which op types edgenet's converter has no handler for. Reads the
file with onnx only (no torch, no TensorFlow, no shape inference run).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class TensorSummary:
    name: str
    dtype: str                       # ONNX element type name: FLOAT, INT64 ...
    shape: tuple[int | str | None, ...]   # static dims as ints, named dims by name, unknown as None

    @property
    def dynamic(self) -> tuple[int, ...]:
        """Axes whose size is not fixed in the file."""
        return tuple(i for i, d in enumerate(self.shape) if not isinstance(d, int))


@dataclass(frozen=True)
class OnnxSummary:
    path: str
    opset: int | None                # the default ("" / ai.onnx) domain's version
    producer: str
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]
    ops: tuple[tuple[str, int], ...]     # (op type, count), most frequent first
    unsupported: tuple[str, ...]         # op types edgenet converts no handler for
    parameters: int                      # elements of all initializers
    quantized: str = ""                  # "qdq" / "qoperator" for quantized graphs (docs/quantized-onnx.md)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ops"] = dict(self.ops)
        for key in ("inputs", "outputs"):
            for row, tensor in zip(d[key], getattr(self, key)):
                row["dynamic_axes"] = list(tensor.dynamic)
        return d

    def to_text(self) -> str:
        lines = [f"{self.path}: opset {self.opset}, {sum(n for _, n in self.ops)} nodes, "
                 f"{self.parameters:,} parameters" + (f" ({self.producer})" if self.producer else "")]
        for title, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{title}:")
            for t in tensors:
                dims = ",".join(_dim_text(d) for d in t.shape)
                note = f"   dynamic axes {list(t.dynamic)}" if t.dynamic else ""
                lines.append(f"  {t.name}  {t.dtype}[{dims}]{note}")
        lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in self.ops))
        if self.quantized == "qdq":
            lines.append("quantized (QDQ): `edgenet convert --int8` reads its QuantizeLinear/DequantizeLinear pairs "
                         "as the producer's ranges and converts the float graph between them")
        elif self.quantized == "qoperator":
            lines.append("quantized (QOperator format): `edgenet convert --int8` reads its integer operators as the "
                         "equivalent QDQ graph (static: the producer's scales are kept; dynamic: the weights are "
                         "dequantized and the activations calibrated)")
        if self.unsupported:
            lines.append(f"no edgenet handler: {', '.join(self.unsupported)} (such ops convert only where they fold "
                         "to constants once the input shapes are fixed; `edgenet info --ops` lists the op types "
                         "edgenet converts)")
        else:
            lines.append("every op type has an edgenet handler")
        dynamic = [t for t in self.inputs if t.dynamic]
        if dynamic:
            shape = dynamic[0].shape
            example = ",".join(str(d) if isinstance(d, int) else "1" if i == 0 else
                               ("H" if i == len(shape) - 2 else "W") if len(shape) == 4 and i >= 2 else f"D{i}"
                               for i, d in enumerate(shape))
            lines.append(f"dynamic input dims: fix them with --input-shape {dynamic[0].name}:{example} "
                         "(a dynamic batch alone becomes 1)")
        return "\n".join(lines)


def summarize(path: str | Path) -> OnnxSummary:
    """Summary of the ONNX file at ``path``. Raises ModelError for a missing or invalid file."""
    from edgenet.converters.export import load_onnx
    from edgenet.converters.model_inputs import _dims, graph_inputs
    from edgenet.converters.onnx_to_tf.registry import supported_ops

    import onnx

    model = load_onnx(path)
    graph = model.graph

    def tensor(value_info) -> TensorSummary:
        elem = value_info.type.tensor_type.elem_type
        return TensorSummary(value_info.name, onnx.TensorProto.DataType.Name(elem) if elem else "UNDEFINED",
                             tuple(_dims(value_info)))

    from edgenet.converters.qdq import QDQ_OPS, is_qdq, qoperator_ops

    counts = Counter(_all_nodes(graph))
    quantized = "qoperator" if qoperator_ops(model) else "qdq" if is_qdq(model) else ""
    known = set(supported_ops()) | (set(QDQ_OPS) if quantized else set())
    if quantized == "qoperator":
        from edgenet.converters.qoperator import DYNAMIC_OPS, STATIC_OPS

        known |= set(STATIC_OPS) | set(DYNAMIC_OPS)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    params = sum(_numel(i.dims) for i in graph.initializer) + sum(
        _numel(a.t.dims) for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t"))
    return OnnxSummary(str(path), opset, " ".join(x for x in (model.producer_name, model.producer_version) if x),
                       tuple(tensor(i) for i in graph_inputs(model)), tuple(tensor(o) for o in graph.output),
                       tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                       tuple(sorted(op for op in counts if op not in known)), params, quantized)


def _all_nodes(graph):
    """Op types of every node, subgraphs (If/Loop bodies) included."""
    for node in graph.node:
        yield node.op_type
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _dim_text(d) -> str:
    """A dim as shown: its size, its name (a long symbolic expression shortened), or ?."""
    if d is None:
        return "?"
    text = str(d)
    return text if len(text) <= 24 else text[:21] + "..."


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n
