"""Per-layer parameters and mult-adds of any nn.Module, measured with forward hooks.

Mult-adds count what the MobileNet paper counts: one per weight use in convolutions and fully
connected layers (BatchNorm, activations and pooling are not counted). BatchNorm parameters are
reported on the row of the layer they follow, since they fold into it for deployment.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from edgenet._deps import require


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    mult_adds: int


@dataclass(frozen=True)
class ModelSummary:
    model: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerRow, ...]
    params: int
    mult_adds: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(r) for r in self.layers]
        return d

    def to_table(self) -> str:
        head = ("layer", "type", "output", "params", "mult-adds")
        rows = [(r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.mult_adds:,}")
                for r in self.layers]
        rows.append(("total", "", "", f"{self.params:,}", f"{self.mult_adds:,}"))
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        lines = ["  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                 for row in (head, *rows)]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        return "\n".join(lines) + (
            f"\n\n{self.model}: {self.params / 1e6:.2f} M parameters, {self.mult_adds / 1e6:.1f} M mult-adds"
            f" at input {'x'.join(map(str, self.input_shape))}"
        )


def _describe(module) -> str:
    nn = require("torch.nn")
    if isinstance(module, nn.Conv2d):
        k = "x".join(map(str, module.kernel_size))
        if module.groups == module.in_channels == module.out_channels and module.groups > 1:
            kind = "conv dw"
        elif module.groups > 1:
            kind = f"conv g{module.groups}"
        else:
            kind = "conv"
        return f"{kind} {k}/s{module.stride[0]}"
    if isinstance(module, nn.Linear):
        return "fc"
    return type(module).__name__


def summarize(model, input_shape: tuple[int, ...], name: str = "") -> ModelSummary:
    torch = require("torch")
    nn = torch.nn
    rows: list[dict] = []
    hooks = []

    def hook(mod, inputs, output):
        shape = tuple(output.shape[1:])
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and rows:
            rows[-1]["params"] += params  # folds into the layer before it
            return
        if isinstance(mod, nn.Conv2d):
            macs = output[0].numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            macs = output[0].numel() * mod.in_features
        else:
            macs = 0
        pooling = isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d))
        if params or macs or pooling:
            rows.append({"name": qualname[mod], "type": _describe(mod), "output_shape": shape,
                         "params": params, "mult_adds": macs})

    qualname = {}
    for qn, mod in model.named_modules():
        if not list(mod.children()):
            qualname[mod] = qn
            hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    layers = tuple(LayerRow(**r) for r in rows)
    total_params = sum(p.numel() for p in model.parameters())
    return ModelSummary(name, tuple(input_shape), layers, total_params, sum(r.mult_adds for r in layers))
