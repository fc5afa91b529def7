"""Quantization-aware fine-tuning (QAT) of a trained zoo model, in TFLite's int8 scheme.

PyTorch 2.13 no longer ships the PT2E flow (``torch.ao.quantization.quantize_pt2e`` moved to the
separate ``torchao`` package; torchao 0.18 keeps the XNNPACK quantizer only as a private testing
module, and a PT2E-converted graph reaches ONNX only through the dynamo exporter, which needs
onnxscript), and its FX flow (``prepare_qat_fx``, checked on the zoo MobileNetV1) fake-quantizes each
conv's output before its ReLU6 too, a rounding TFLite (ReLU6 fused into the conv) does not do; so edgenet
places torch's own fake-quantization modules (``torch.ao.quantization.FakeQuantize``) itself, exactly where a full-integer TFLite model quantizes (Jacob et al. 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", section 3):

1. BatchNorm is folded into the preceding conv first (``torch.fx.experimental.optimization.fuse``,
   eval statistics): TFLite has no BN, and training on folded weights is what the int8 model runs.
2. Every Conv2d / Linear weight gets a symmetric int8 fake-quant, one scale per output channel
   (axis 0 of the torch weight), integer range [-127, 127], zero point 0: ``scale = max|w| / 127``.
3. Every activation TFLite quantizes gets an asymmetric int8 fake-quant ([-128, 127], zero point
   free): the model input, each conv / linear output *after* its ReLU / ReLU6 (TFLite fuses the
   activation into the conv), sums, concatenations and average pools. Ops that keep their input's
   scale in TFLite (flatten, reshape, max pool, dropout) get none.
4. Ranges are tracked by moving-average min/max observers (momentum 0.01) while fine-tuning, and
   frozen for the last epoch, so the weights adapt to the ranges that will be used.

The ranges are "learned" in that sense -- tracked during training, not gradient-trained (LSQ).
:mod:`edgenet.qat_export` writes the result as a QDQ ONNX model (QuantizeLinear / DequantizeLinear
pairs holding these scales and zero points). Shapes: NCHW float32 in, logits out, as the zoo model.
"""
from __future__ import annotations

import operator

from edgenet.errors import UsageError

# zoo models whose QAT graph is tested (tests/test_qat.py); others are refused by name
QAT_MODELS = ("mobilenet_v1",)
ACT_RANGE = (-128, 127)      # int8 activations, asymmetric (TFLite)
WEIGHT_RANGE = (-127, 127)   # int8 weights, symmetric, per output channel (TFLite)
OBSERVER_MOMENTUM = 0.01     # moving-average min/max: the range follows the last ~100 batches


def check_qat_model(name: str) -> None:
    """UsageError (one line) unless ``name`` is a zoo model QAT is made for."""
    if name not in QAT_MODELS:
        raise UsageError(f"--qat supports {', '.join(QAT_MODELS)}; not {name!r} "
                         "(its fake-quantization points are not tested)")


def _act_fake_quant():
    import torch
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=ACT_RANGE[0], quant_max=ACT_RANGE[1],
                        dtype=torch.qint8, qscheme=torch.per_tensor_affine, averaging_constant=OBSERVER_MOMENTUM)


def _weight_qconfig():
    import torch
    from torch.ao.quantization import FakeQuantize, MovingAveragePerChannelMinMaxObserver, QConfig

    # averaging constant 1: the scale follows the weights as they are at each step (max|w| / 127),
    # what a post-training quantizer computes from the final weights
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, averaging_constant=1.0,
                                    quant_min=WEIGHT_RANGE[0], quant_max=WEIGHT_RANGE[1], dtype=torch.qint8,
                                    qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=torch.nn.Identity, weight=weight)


def _is_activation(gm, node) -> bool:
    import torch

    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (torch.nn.ReLU, torch.nn.ReLU6))
    return node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu,
                                                            torch.nn.functional.relu6)


def _owns_range(gm, node) -> bool:
    """True if TFLite gives this node's output a scale of its own (before any fused activation)."""
    import torch

    if node.op == "placeholder":
        return True
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target),
                          (torch.nn.Conv2d, torch.nn.Linear, torch.nn.AdaptiveAvgPool2d, torch.nn.AvgPool2d))
    if node.op == "call_function":
        return node.target in (operator.add, torch.add, torch.cat, torch.mean,
                               torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.avg_pool2d)
    return False


def _conv_bn_pairs(model) -> dict[str, str]:
    """``{BatchNorm2d name: Conv2d name}`` for every BN fed by a conv alone (what ``fuse`` folds)."""
    import torch
    from torch.fx import symbolic_trace

    traced = symbolic_trace(model)
    pairs = {}
    for node in traced.graph.nodes:
        if node.op == "call_module" and isinstance(traced.get_submodule(node.target), torch.nn.BatchNorm2d):
            src = node.args[0]
            if getattr(src, "op", None) == "call_module" and len(src.users) == 1 and \
                    isinstance(traced.get_submodule(src.target), torch.nn.Conv2d):
                pairs[node.target] = src.target
    return pairs


def prepare_qat(model):
    """The zoo ``model`` (eval statistics) as a ``torch.fx.GraphModule`` with BN folded and
    fake-quantization modules inserted (module docstring); observers and fake quant enabled.

    Activation fake-quants are submodules ``act_fq_<i>`` in graph order (``act_fq_0`` = the
    input); weight fake-quants are the ``weight_fake_quant`` of the torch.ao QAT Conv2d / Linear
    modules that replace the float ones.
    """
    import copy

    import torch
    from torch.ao.nn import qat as nnqat
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).eval()
    folded = _conv_bn_pairs(model)
    gm = fuse(model, inplace=True)            # Conv2d + BatchNorm2d -> Conv2d with bias
    gm.folded_bn = folded
    qconfig = _weight_qconfig()
    for node in list(gm.graph.nodes):         # float Conv2d / Linear -> QAT modules (weight fake quant)
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        qat_cls = {torch.nn.Conv2d: nnqat.Conv2d, torch.nn.Linear: nnqat.Linear}.get(type(module))
        if qat_cls is None:
            if isinstance(module, torch.nn.BatchNorm2d):
                raise UsageError(f"--qat: BatchNorm {node.target} does not follow a conv, it cannot be folded")
            continue
        module.qconfig = qconfig
        parent_name, _, leaf = node.target.rpartition(".")
        setattr(gm.get_submodule(parent_name) if parent_name else gm, leaf, qat_cls.from_float(module))

    count = 0
    for node in list(gm.graph.nodes):
        if not _owns_range(gm, node):
            continue
        target = node
        users = list(node.users)
        if node.op != "placeholder" and len(users) == 1 and _is_activation(gm, users[0]):
            target = users[0]                 # TFLite fuses the ReLU / ReLU6: quantize after it
        name = f"act_fq_{count}"
        count += 1
        gm.add_submodule(name, _act_fake_quant())
        with gm.graph.inserting_after(target):
            fq = gm.graph.call_module(name, (target,))
        target.replace_all_uses_with(fq)
        fq.args = (target,)
    gm.graph.lint()
    gm.recompile()
    return gm.train()


def activation_fake_quants(gm) -> list[tuple[str, object]]:
    """``[(name, FakeQuantize)]`` of the activation fake-quants, in graph order."""
    return [(n.target, gm.get_submodule(n.target)) for n in gm.graph.nodes
            if n.op == "call_module" and n.target.startswith("act_fq_")]


def weight_fake_quants(gm) -> list[tuple[str, object]]:
    """``[(module name, FakeQuantize)]`` of the weight fake-quants (Conv2d / Linear), in graph order."""
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            fq = getattr(gm.get_submodule(n.target), "weight_fake_quant", None)
            if fq is not None:
                out.append((n.target, fq))
    return out


def set_observers(gm, *, activations: bool, weights: bool) -> None:
    """Switch the range observers on or off (fake quantization itself stays on)."""
    for _, fq in activation_fake_quants(gm):
        fq.enable_observer(activations)
    for _, fq in weight_fake_quants(gm):
        fq.enable_observer(weights)


def refresh_weight_ranges(gm) -> None:
    """Set every weight scale to ``max|w| / 127`` of the weights as they are now (after the last
    optimizer step), which is what a post-training quantizer computes from the same weights."""
    import torch

    for module_name, fq in weight_fake_quants(gm):
        weight = gm.get_submodule(module_name).weight.detach()
        fq.activation_post_process.reset_min_max_vals()
        fq.enable_observer(True)
        with torch.no_grad():
            fq(weight)
        fq.enable_observer(False)


def qat_ranges(gm) -> dict:
    """The ranges as plain data: ``{"activations": {name: {"scale", "zero_point"}}, "weights":
    {module name: {"scale": [per channel], "zero_point": [...], "axis": 0}}}`` (scales in real units
    per integer step; an activation covers ``[(-128 - zp) * scale, (127 - zp) * scale]``)."""
    acts = {name: {"scale": float(fq.scale.reshape(-1)[0]), "zero_point": int(fq.zero_point.reshape(-1)[0])}
            for name, fq in activation_fake_quants(gm)}
    weights = {f"{name}.weight": {"scale": [float(s) for s in fq.scale], "zero_point": [int(z) for z in fq.zero_point],
                      "axis": int(fq.ch_axis)} for name, fq in weight_fake_quants(gm)}
    return {"activations": acts, "weights": weights}


def float_state_dict(gm, model) -> dict:
    """The fine-tuned float weights of ``gm`` in the zoo ``model``'s own layout (its state_dict keys),
    so the usual checkpoint loader rebuilds the QAT model without fake quantization: each conv takes
    the folded weight, the BN after it becomes ``x + bias`` (gamma 1, beta = the folded bias, running
    mean 0, running variance ``1 - eps``, so ``sqrt(var + eps) = 1``)."""
    import torch

    own = gm.state_dict()
    out = {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        conv = getattr(gm, "folded_bn", {}).get(module)
        if conv is None:
            out[key] = own[key].detach().clone()
            continue
        bn = model.get_submodule(module)
        bias = own[f"{conv}.bias"].detach()
        out[key] = {"weight": torch.ones_like(bias), "bias": bias.clone(), "running_mean": torch.zeros_like(bias),
                    "running_var": torch.full_like(bias, 1.0 - bn.eps),
                    "num_batches_tracked": value.clone()}[leaf]
    return out
