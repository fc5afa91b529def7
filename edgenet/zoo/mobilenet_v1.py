"""MobileNetV1 (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications"), Table 1.

    Type / stride      Filter shape          Input size
    Conv / s2          3x3x3x32              224x224x3
    Conv dw / s1       3x3x32 dw             112x112x32
    Conv / s1          1x1x32x64             112x112x32
    Conv dw / s2       3x3x64 dw             112x112x64
    Conv / s1          1x1x64x128            56x56x64
    ...                (13 depthwise-separable blocks in all, see ``BLOCKS``)
    Avg Pool / s1      Pool 7x7              7x7x1024
    FC / s1            1024x1000             1x1x1024
    Softmax / s1       Classifier            1x1x1000

Every conv is followed by BatchNorm and ReLU6 (ReLU selectable). The width multiplier alpha thins
every layer; the resolution multiplier is the input size. The final softmax is left to the user
(the model returns logits). The table's last depthwise conv is listed with stride 2 but its input
and output are both 7x7, so it is stride 1 here, as in the reference implementation.
"""
from __future__ import annotations

import torch
from torch import nn

from edgenet.config import Activation
from edgenet.zoo.layers import init_weights

# (stride of the depthwise 3x3 conv, output channels of the pointwise 1x1 conv), Table 1
BLOCKS: tuple[tuple[int, int], ...] = (
    (1, 64),
    (2, 128), (1, 128),
    (2, 256), (1, 256),
    (2, 512), (1, 512), (1, 512), (1, 512), (1, 512), (1, 512),
    (2, 1024), (1, 1024),
)
STEM_CHANNELS = 32


def scale_channels(channels: int, alpha: float, divisor: int = 8) -> int:
    """Thin a layer by alpha, rounded to a multiple of ``divisor`` (never below it)."""
    scaled = max(divisor, int(channels * alpha + divisor / 2) // divisor * divisor)
    if scaled < 0.9 * channels * alpha:  # rounding down must not lose more than 10%
        scaled += divisor
    return scaled


def _activation(kind: Activation) -> nn.Module:
    return nn.ReLU6(inplace=True) if kind is Activation.RELU6 else nn.ReLU(inplace=True)


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm -> ReLU6/ReLU: one row of Table 1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int, act: Activation):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            _activation(act),
        )


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv (stride s) then 1x1 pointwise conv, each with BN and activation."""

    def __init__(self, cin: int, cout: int, stride: int, act: Activation):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, stride, groups=cin, act=act)
        self.pw = ConvBNAct(cin, cout, 1, 1, groups=1, act=act)


class MobileNetV1(nn.Module):
    def __init__(self, alpha: float = 1.0, resolution: int = 224, num_classes: int = 1000,
                 in_channels: int = 3, activation: Activation | str = Activation.RELU6,
                 dropout: float = 0.0):
        super().__init__()
        act = Activation(activation)
        self.alpha, self.resolution, self.num_classes, self.in_channels = alpha, resolution, num_classes, in_channels
        self.activation = act
        cin = scale_channels(STEM_CHANNELS, alpha)
        layers: list[nn.Module] = [ConvBNAct(in_channels, cin, 3, 2, groups=1, act=act)]
        for stride, channels in BLOCKS:
            cout = scale_channels(channels, alpha)
            layers.append(DepthwiseSeparable(cin, cout, stride, act))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(cin, num_classes)
        self.num_features = cin
        # fan_in keeps the activation scale from layer to layer in eval mode with fresh BN statistics, so
        # an untrained model still gives meaningful outputs to validate a conversion against
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.dropout(x))
