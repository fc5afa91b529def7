"""What a `.tflite` file holds (`edgenet info model.tflite`): its inputs and outputs (shape, type and
quantization), its precision, and its ops by type and by the precision they compute in.

numpy and edgenet's flatbuffer reader only (targets/tflite_graph.py): it runs on the device install.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TensorSummary:
    name: str
    shape: tuple[int, ...]          # -1 where the model leaves the size to run time
    dtype: str
    scale: float | None             # quantized tensors: per-tensor scale (the first of per-channel ones)
    zero_point: int | None

    def text(self) -> str:
        q = f", scale {self.scale:.6g}, zero point {self.zero_point}" if self.scale is not None else ""
        return f"{self.name}: {self.dtype} {list(self.shape)}{q}"


@dataclass(frozen=True)
class TfliteSummary:
    path: str
    size_bytes: int
    precision: str                             # edgenet.converters.op_precision.model_precision
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]
    ops: dict                                  # op type -> count, in order of first use
    op_precisions: dict                        # precision ("int8", "float32", ...) -> ops computing in it
    other_precision: tuple[str, ...]           # ops computing in another precision than the model's

    def to_dict(self) -> dict:
        return {"path": self.path, "size_bytes": self.size_bytes, "precision": self.precision,
                "inputs": [t.__dict__ for t in self.inputs], "outputs": [t.__dict__ for t in self.outputs],
                "ops": dict(self.ops), "op_precisions": dict(self.op_precisions),
                "other_precision": list(self.other_precision)}

    def to_text(self) -> str:
        lines = [f"{self.path}: {self.precision} model, {self.size_bytes / 1e6:.2f} MB, "
                 f"{sum(self.ops.values())} ops"]
        lines += ["inputs:"] + [f"  {t.text()}" for t in self.inputs]
        lines += ["outputs:"] + [f"  {t.text()}" for t in self.outputs]
        lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in self.ops.items()))
        lines.append("computing in: " + ", ".join(f"{p} {n}" for p, n in self.op_precisions.items()))
        if self.other_precision:
            shown = ", ".join(self.other_precision[:6]) + (" ..." if len(self.other_precision) > 6 else "")
            lines.append(f"{len(self.other_precision)} op(s) in another precision than {self.precision}: {shown}")
        return "\n".join(lines)


def _tensor(t) -> TensorSummary:
    shape = tuple(int(d) for d in (t.shape_signature or t.shape))
    quantized = bool(t.scales) and t.dtype not in ("float32", "float16")
    return TensorSummary(t.name, shape, t.dtype, float(t.scales[0]) if quantized else None,
                         int(t.zero_points[0]) if quantized and t.zero_points else None)


def summarize_tflite(path: str | Path) -> TfliteSummary:
    """The summary of the .tflite file ``path``. Raises ModelError for a file that is not one (named)."""
    from edgenet.converters.op_precision import model_precision, op_precisions, ops_not_in
    from edgenet.targets.tflite_graph import read_tflite

    graph = read_tflite(path)
    entries = op_precisions(graph)
    precision = model_precision(graph)
    by_precision = Counter(e.precision.value if e.precision is not None else "no numeric data" for e in entries)
    other = tuple(f"{e.op} '{e.output}' ({e.precision.value})" for e in ops_not_in(graph, precision))
    return TfliteSummary(str(path), graph.size_bytes, precision.value, tuple(_tensor(t) for t in graph.input_tensors),
                         tuple(_tensor(t) for t in graph.output_tensors), dict(graph.op_counts()),
                         dict(by_precision), other)
