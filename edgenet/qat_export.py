"""A QAT model (:func:`edgenet.qat.prepare_qat`) as a QDQ ONNX model, and the check that it computes
what the PyTorch QAT model computes.

The QDQ format (onnxruntime's "QDQ" quantization format, ONNX opset >= 13 for per-axis scales):
every fake-quantized activation becomes ``QuantizeLinear -> DequantizeLinear`` with the activation's
scale and int8 zero point; every weight is stored as an int8 initializer (``<weight>_quantized``,
``round_half_even(w / scale)`` per output channel, axis 0) behind a ``DequantizeLinear`` with its
per-channel scales (``<weight>_scale``) and zero points 0 (``<weight>_zero_point``). Biases stay
float (the int8 converter quantizes them to int32 at ``input scale x weight scale``). Between the
pairs the graph is the float graph: Conv, Clip (ReLU6) / Relu, GlobalAveragePool, Flatten, Gemm.

torch's TorchScript exporter writes the pairs (``torch.fake_quantize_per_*_affine`` -> Q/DQ); its
output is tidied here: ``Constant`` nodes become initializers, ``Identity`` nodes go, each pair gets
its own named zero point, and each weight's QuantizeLinear is evaluated into the int8 initializer.
"""
from __future__ import annotations

import copy

import numpy as np

from edgenet._deps import require
from edgenet.errors import ConversionError

QDQ_OPSET = 17


def export_qdq(gm, input_shape: tuple[int, ...]):
    """``onnx.ModelProto`` of the QAT GraphModule ``gm`` (observers off, eval mode), input ``input``
    (NCHW float32, static ``input_shape``), output ``logits``. ``gm`` itself is not changed."""
    from edgenet import qat
    from edgenet.converters.export import export_onnx

    twin = copy.deepcopy(gm)
    qat.set_observers(twin, activations=False, weights=False)
    for _, fq in qat.weight_fake_quants(twin):
        # torch's exporter refuses the integer range [-127, 127] (ONNX has int8 = [-128, 127]); the
        # scales are max|w| / 127, so no weight reaches -128 and the result is the same
        fq.quant_min = fq.activation_post_process.quant_min = -128
    return tidy_qdq(export_onnx(twin.eval(), tuple(input_shape), opset=QDQ_OPSET))


def _quantize(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear to int8 (round half to even, saturate), per-axis when ``scale`` is 1-D."""
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * w.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    q = np.rint(w.astype(np.float64) / scale.astype(np.float64)) + zero_point.astype(np.int64)
    return np.clip(q, -128, 127).astype(np.int8)


def tidy_qdq(model):
    """The exporter's QDQ graph without Constant / Identity nodes, with int8 weight initializers and
    one named zero point per pair (module docstring). ConversionError if a weight has no Q/DQ."""
    onnx = require("onnx")
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    alias: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next(a for a in node.attribute if a.name == "value")
            consts[node.output[0]] = numpy_helper.to_array(value.t)
        elif node.op_type == "Identity":
            alias[node.output[0]] = node.input[0]

    def real(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    new_inits: dict[str, np.ndarray] = {}
    int8_weights: dict[str, str] = {}       # QuantizeLinear output -> int8 initializer name
    nodes = []
    for node in graph.node:
        if node.op_type in ("Constant", "Identity"):
            continue
        inputs = [real(i) if i else i for i in node.input]
        if node.op_type == "QuantizeLinear" and inputs[0] in consts:      # a weight
            weight = inputs[0]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            scale, zp = consts[inputs[1]], consts[inputs[2]]
            name = f"{weight}_quantized"
            new_inits[name] = _quantize(consts[weight], scale, zp, axis)
            new_inits[f"{weight}_scale"] = scale.astype(np.float32)
            new_inits[f"{weight}_zero_point"] = zp.astype(np.int8)
            int8_weights[node.output[0]] = weight
            continue
        if node.op_type == "DequantizeLinear" and inputs[0] in int8_weights:
            weight = int8_weights[inputs[0]]
            inputs = [f"{weight}_quantized", f"{weight}_scale", f"{weight}_zero_point"]
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            owner = node.name.split("/")[1] if node.name.count("/") >= 2 else node.name
            zp_name = f"{owner}.zero_point"
            new_inits[zp_name] = consts[inputs[2]].astype(np.int8)
            new_inits.setdefault(inputs[1], consts[inputs[1]].astype(np.float32))
            inputs = [inputs[0], inputs[1], zp_name]
        for i in inputs:
            if i in consts and i not in new_inits:
                new_inits[i] = consts[i]
        nodes.append(helper.make_node(node.op_type, inputs, list(node.output), name=node.name,
                                      domain=node.domain or None,
                                      **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
    outputs = list(graph.output)
    for out in outputs:
        if out.name in alias:
            raise ConversionError(f"QDQ export: graph output {out.name} is an Identity of {alias[out.name]}")
    new_graph = helper.make_graph(nodes, graph.name, list(graph.input), outputs,
                                  [numpy_helper.from_array(v, k) for k, v in new_inits.items()])
    tidy = helper.make_model(new_graph, opset_imports=list(model.opset_import),
                             producer_name="edgenet qat", ir_version=model.ir_version)
    if not int8_weights:
        raise ConversionError("QDQ export: no weight QuantizeLinear found (the model was not fake-quantized)")
    try:
        onnx.checker.check_model(tidy)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"QDQ export produced an invalid graph: {str(exc).splitlines()[0]}") from exc
    return tidy


def qdq_session(model_bytes: bytes, *, reference: bool = True):
    """An onnxruntime session on the QDQ model. ``reference=True`` disables graph optimizations, so
    the pairs run as written (quantize, dequantize, float op): the arithmetic the QAT model trained
    with. ``False`` lets onnxruntime fuse them into integer kernels (QLinearConv ...), which round
    intermediate results differently."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if reference:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run_qdq(session, x_nchw: np.ndarray, batch: int = 1) -> np.ndarray:
    """Logits of the QDQ model for NCHW float32 inputs (the export has a static batch of ``batch``)."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: np.ascontiguousarray(x_nchw[i:i + batch], np.float32)})[0]
            for i in range(0, len(x_nchw), batch)]
    return np.concatenate(outs)


def onnx_ranges(model) -> dict:
    """The scales and zero points a QDQ model holds, in :func:`edgenet.qat.qat_ranges`'s layout:
    activations by fake-quant name (the exporter's node scope ``/act_fq_<i>/QuantizeLinear``), weights
    by their float initializer's name (``features.0.0.weight``) -- so both can be compared."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    acts, weights = {}, {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            owner = node.name.split("/")[1]
            acts[owner] = {"scale": float(inits[node.input[1]].reshape(-1)[0]),
                           "zero_point": int(inits[node.input[2]].reshape(-1)[0])}
        elif node.op_type == "DequantizeLinear" and node.input[0].endswith("_quantized"):
            weight = node.input[0][:-len("_quantized")]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            weights[weight] = {"scale": [float(s) for s in inits[node.input[1]]],
                               "zero_point": [int(z) for z in inits[node.input[2]]], "axis": int(axis)}
    return {"activations": acts, "weights": weights}


def describe(model, *, preprocess, class_names, dataset: str) -> None:
    """Record in ``model.metadata_props`` what a converter needs besides the graph (in place):
    ``edgenet.preprocess`` (JSON of :meth:`Preprocess.to_dict`: size, color, mean, std of the NCHW
    input), ``edgenet.class_names`` (JSON list, index = logit), ``edgenet.dataset`` (what the model
    was trained and calibrated on: "digits", "shapes" or a folder)."""
    import json

    from onnx import helper

    entries = {"edgenet.preprocess": json.dumps(preprocess.to_dict()),
               "edgenet.class_names": json.dumps([str(c) for c in class_names]),
               "edgenet.dataset": str(dataset)}
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **entries})
