"""Building blocks shared by the zoo architectures, and the initialisation of untrained models.

``ConvBN`` is one "conv -> BatchNorm -> activation" row of a paper's table (the activation may be
absent: the linear bottlenecks and the depthwise convs of ShuffleNetV2 have none). Untrained
weights are drawn so that activations keep their scale from layer to layer in eval mode (fresh
BN statistics are the identity): He-normal with fan_in, gain sqrt(2) where a ReLU-like activation
follows and 1 where none does. Swish and squeeze-and-excitation gates (about 0.5 at init) still
shrink the signal several times per block, so models with BatchNorm then get a data-dependent
rescaling in the spirit of LSUV (Mishkin & Matas 2016): one forward pass of a seeded random batch
sets each BatchNorm's scale so that its output has unit standard deviation. A converted untrained
model thus still gives outputs worth comparing.
"""
from __future__ import annotations

from enum import Enum

import torch
from torch import nn


class Act(str, Enum):
    """Activation after a conv (closed choice)."""

    NONE = "none"
    RELU = "relu"
    RELU6 = "relu6"
    SWISH = "swish"   # x * sigmoid(x) (Ramachandran et al. 2017), nn.SiLU

    def module(self) -> nn.Module:
        if self is Act.RELU:
            return nn.ReLU(inplace=True)
        if self is Act.RELU6:
            return nn.ReLU6(inplace=True)
        if self is Act.SWISH:
            return nn.SiLU(inplace=True)
        return nn.Identity()


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never below it, never more than
    10% down): the rounding of the MobileNet/MnasNet/MixNet reference builders."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def scaled_width(channels: int, alpha: float) -> int:
    """``channels`` times the width multiplier ``alpha``, rounded by :func:`make_divisible`
    (unchanged at alpha 1, as the reference tables list them)."""
    return channels if alpha == 1.0 else make_divisible(channels * alpha)


class ConvBN(nn.Sequential):
    """conv (no bias) -> BatchNorm -> activation (or none)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: Act = Act.RELU, padding: int | None = None):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if padding is None else padding,
                      groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not Act.NONE:
            layers.append(act.module())
        super().__init__(*layers)
        self.act = act


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global average pool -> 1x1 conv (reduce) ->
    activation -> 1x1 conv (expand) -> sigmoid, which scales each channel of the input."""

    def __init__(self, channels: int, reduced: int, act: Act = Act.RELU):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = act.module()
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


def split_channels(total: int, parts: int) -> list[int]:
    """``total`` channels in ``parts`` groups as equal as possible, the remainder to the first
    (MixConv's channel partition)."""
    sizes = [total // parts] * parts
    sizes[0] += total - sum(sizes)
    return sizes


def init_weights(model: nn.Module) -> None:
    """Signal-preserving initialisation of an untrained model (see the module docstring)."""
    linear_convs = {id(m[0]) for m in model.modules() if isinstance(m, ConvBN) and m.act is Act.NONE}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            gain = "linear" if id(m) in linear_convs else "relu"
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def normalize_batchnorm_scales(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Set every BatchNorm's weight so that its output has unit std on a random batch (drawn from
    torch's current generator, so seeded builds stay identical); one forward pass, in eval mode."""
    def rescale(bn, inputs, output):
        std = float(output.std())
        if std > 0:
            bn.weight.div_(std)
            bn.bias.div_(std)
            return output / std
        return None

    hooks = [m.register_forward_hook(rescale) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    model.eval()
    try:
        model(torch.randn(input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
