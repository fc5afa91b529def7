"""Per-layer quantization error: where does the int8 model lose precision?

The int8 model is the float model quantized (LiteRT Quantizer), so an op's output tensor carries the same name in
the float and the int8 .tflite. For each op of the int8 model we dequantize its output and compare
it with the float model's tensor of that name on the same inputs, as SQNR in dB
(10 log10 of signal power over error power; about 6 dB per bit, so ~40 dB is near int8's best).
The error of a layer includes what it inherited from the layers before it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgenet.converters.probe import with_outputs
from edgenet.inference import TFLiteModel, invocations
from edgenet.runtime import make_interpreter

SKIP_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class LayerError:
    index: int          # op index in the int8 graph (execution order)
    name: str           # output tensor name
    op: str             # builtin op type, e.g. CONV_2D
    sqnr_db: float | None
    onnx_node: str | None = None   # the ONNX node that made it (converters.onnx_to_tf name scopes)
    module: str | None = None      # for torch exports: the module path, as `edgenet info` prints it

    def to_dict(self) -> dict:
        return asdict(self)


def layer_sqnr(float_model: bytes, int8_model: bytes, samples) -> tuple[LayerError, ...]:
    """SQNR of every int8 op output against the float model, over ``samples``: float examples, one
    array per model input (or one array for a one-input model), TFLite layout, as
    :class:`edgenet.inference.TFLiteModel` takes them."""
    listing_f = make_interpreter(float_model, use_xnnpack=False)   # tensor and op listings only
    listing_q = make_interpreter(int8_model, use_xnnpack=False)
    f_tensors = {t["name"]: t["index"] for t in listing_f.get_tensor_details()}
    q_tensors = {t["index"]: t for t in listing_q.get_tensor_details()}
    pairs = []
    for i, op in enumerate(listing_q._get_ops_details()):
        if op["op_name"] in SKIP_OPS or not len(op["outputs"]):
            continue
        out = q_tensors[int(op["outputs"][0])]
        if out["name"] in f_tensors:
            pairs.append((i, op["op_name"], out, f_tensors[out["name"]]))
    # probes: the same models with every compared tensor as an output, run on the fast kernels
    f = make_interpreter(with_outputs(float_model, [fi for *_, fi in pairs]))
    q = make_interpreter(with_outputs(int8_model, [int(qt["index"]) for _, _, qt, _ in pairs]))
    signal = np.zeros(len(pairs))
    noise = np.zeros(len(pairs))
    f_runner, q_runner = TFLiteModel.from_interpreter(f), TFLiteModel.from_interpreter(q)
    arrays = [samples] if isinstance(samples, np.ndarray) else list(samples)
    f_groups = invocations([f_runner.quantize(x, k) for k, x in enumerate(arrays)], f_runner.batches)
    q_groups = invocations([q_runner.quantize(x, k) for k, x in enumerate(arrays)], q_runner.batches)
    for f_group, q_group in zip(f_groups, q_groups):
        for detail, value in zip(f_runner.inputs, f_group):
            f.set_tensor(detail["index"], value)
        f.invoke()
        for detail, value in zip(q_runner.inputs, q_group):
            q.set_tensor(detail["index"], value)
        q.invoke()
        for k, (_, _, qt, fi) in enumerate(pairs):
            # copies: a view of a runtime's buffer kept past this loop (an index output skipped
            # below) makes the next invoke() refuse to run
            ref = f.get_tensor(fi)
            got = q.get_tensor(int(qt["index"]))
            if not np.issubdtype(ref.dtype, np.floating):   # indices (ArgMax ...): no precision to lose
                continue
            if np.issubdtype(got.dtype, np.integer):
                params = qt["quantization_parameters"]
                scales, zps = params["scales"], params["zero_points"]
                if len(scales) != 1:          # per-channel outputs do not occur for activations
                    continue
                got = (got.astype(np.float32) - np.float32(zps[0])) * np.float32(scales[0])
            if got.shape != ref.shape:
                continue
            ref = ref.reshape(-1)
            err = ref - got.reshape(-1)
            signal[k] += float(np.dot(ref, ref))
            noise[k] += float(np.dot(err, err))
            del ref, got, err
    out = []
    for k, (i, op_name, qt, _) in enumerate(pairs):
        if noise[k] == 0:
            db = None if signal[k] == 0 else float("inf")
        else:
            db = 10 * np.log10(signal[k] / noise[k]) if signal[k] > 0 else None
        out.append(LayerError(i, qt["name"], op_name, None if db is None or not np.isfinite(db) else round(float(db), 2)))
    return tuple(out)


def module_path(onnx_node: str | None) -> str | None:
    """The torch module path an exported ONNX node name encodes: torch's exporter names nodes by
    their module scopes, ``/features/features.1/dw/dw.0/Conv`` for ``features[1].dw[0]``, i.e. the
    module ``features.1.dw.0`` (each scope repeats its parent's name when it is a container's child).
    None for names without scopes."""
    if not onnx_node or not onnx_node.startswith("/"):
        return None
    scopes = onnx_node.strip("/").split("/")[:-1]
    parts: list[str] = []
    previous = ""
    for scope in scopes:
        parts.append(scope[len(previous) + 1:] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    return ".".join(parts) or None


def named_rows(rows, onnx_node) -> tuple:
    """``rows`` (:func:`layer_sqnr`) with each one's ONNX node (``onnx_node(tflite_name)``) and module path."""
    from dataclasses import replace

    out = []
    for row in rows:
        node = onnx_node(row.name)
        out.append(replace(row, onnx_node=node, module=module_path(node)))
    return tuple(out)
