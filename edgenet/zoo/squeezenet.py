"""SqueezeNet 1.1 (Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters
and <0.5MB model size", Table 1, with the v1.1 changes published with the paper's reference model).

Table 1 (v1.0) stacks Fire modules between max pools; a Fire module is a 1x1 "squeeze" conv
(s1x1 filters) feeding a 1x1 and a 3x3 "expand" conv (e1x1 + e3x3 filters, concatenated), every conv
followed by ReLU. v1.1 keeps the Fire modules and their sizes but starts with 64 3x3/2 filters
instead of 96 7x7/2 and moves the max pools earlier (after conv1, fire3, fire5), which cuts the
computation 2.4x at the same accuracy:

    Layer      Filter / stride     Output (224 px)   s1x1   e1x1   e3x3
    conv1      3x3/2, 64           111x111x64
    maxpool1   3x3/2               55x55x64
    fire2                          55x55x128         16     64     64
    fire3                          55x55x128         16     64     64
    maxpool3   3x3/2               27x27x128
    fire4                          27x27x256         32     128    128
    fire5                          27x27x256         32     128    128
    maxpool5   3x3/2               13x13x256
    fire6                          13x13x384         48     192    192
    fire7                          13x13x384         48     192    192
    fire8                          13x13x512         64     256    256
    fire9                          13x13x512         64     256    256
    dropout    p=0.5
    conv10     1x1/1, classes      13x13xclasses     (then ReLU)
    avgpool10  global              1x1xclasses

Convs have biases and no BatchNorm; conv1 has no padding and the max pools round up (Caffe's
pooling), as in the reference model. The network has no width multiplier. Returns the pooled
conv10 output (non-negative "logits", as in the paper; no softmax).
"""
from __future__ import annotations

import torch
from torch import nn

from edgenet.zoo.layers import init_weights

STEM_CHANNELS = 64
POOL = "maxpool"
# Fire modules as (s1x1, e1x1, e3x3), with the max pools between them (v1.1 layout)
FEATURES: tuple[tuple[int, int, int] | str, ...] = (
    POOL,
    (16, 64, 64), (16, 64, 64),
    POOL,
    (32, 128, 128), (32, 128, 128),
    POOL,
    (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256),
)


class Fire(nn.Module):
    """Squeeze 1x1 -> ReLU -> (expand 1x1 -> ReLU) ++ (expand 3x3 -> ReLU), concatenated on channels."""

    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_act = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_act = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_act = nn.ReLU(inplace=True)
        self.out_channels = expand1x1 + expand3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_act(self.squeeze(x))
        return torch.cat((self.expand1x1_act(self.expand1x1(s)), self.expand3x3_act(self.expand3x3(s))), dim=1)


class SqueezeNet(nn.Module):
    def __init__(self, resolution: int = 224, num_classes: int = 1000, in_channels: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        self.resolution, self.num_classes, self.in_channels = resolution, num_classes, in_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2), nn.ReLU(inplace=True)]
        cin = STEM_CHANNELS
        for row in FEATURES:
            if row == POOL:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                fire = Fire(cin, *row)
                layers.append(fire)
                cin = fire.out_channels
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.classifier = nn.Sequential(
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(cin, num_classes, 1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)
