"""ShuffleNetV2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design"), Table 5, the 1x column.

    Layer        Output size   KSize   Stride   Repeat   Output channels (1x)
    Image        224x224                                 3
    Conv1        112x112       3x3     2        1        24
    MaxPool      56x56         3x3     2
    Stage2       28x28                 2        1        116
                 28x28                 1        3
    Stage3       14x14                 2        1        232
                 14x14                 1        7
    Stage4       7x7                   2        1        464
                 7x7                   1        3
    Conv5        7x7           1x1     1        1        1024
    GlobalPool   1x1           7x7
    FC                                                   1000
    FLOPs 146M, # of weights 2.3M

The units are Figure 3 (c) and (d). Basic unit (stride 1): a channel split sends half the channels
through unchanged and the other half through 1x1 conv-BN-ReLU -> 3x3 depthwise conv-BN ->
1x1 conv-BN-ReLU; the halves are concatenated and the channels shuffled (2 groups). Downsampling
unit (stride 2): no split; both branches see every channel, the left one is 3x3 depthwise (s2)
conv-BN -> 1x1 conv-BN-ReLU, the right one as in the basic unit with the depthwise conv at stride 2;
concatenation doubles the channels, then the shuffle. The model returns logits (no softmax).

There is no width multiplier argument: the paper's widths (0.5x ... 2x) are different channel
tables (``WIDTHS``), and the zoo registers the 1x network under its own name.
"""
from __future__ import annotations

import torch
from torch import nn

from edgenet.zoo.layers import Act, ConvBN, init_weights, normalize_batchnorm_scales

STEM_CHANNELS = 24
# units per stage (the first has stride 2), Table 5 "Repeat": 1 + 3, 1 + 7, 1 + 3
STAGE_UNITS: tuple[int, ...] = (4, 8, 4)
# Table 5, output channels of Stage2..4 and Conv5 for each width
WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "0.5x": (48, 96, 192, 1024),
    "1x": (116, 232, 464, 1024),
    "1.5x": (176, 352, 704, 1024),
    "2x": (244, 488, 976, 2048),
}
SHUFFLE_GROUPS = 2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Zhang et al. 2017's shuffle: (N, g*k, H, W) -> view (N, g, k, H, W) -> swap g, k -> flatten."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Figure 3 (c) for stride 1, (d) for stride 2; ``cout`` is the unit's output channel count."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        branch = cout // 2
        self.stride = stride
        if stride == 1:
            if cin != cout:
                raise ValueError(f"a stride-1 unit keeps its width ({cin} != {cout})")
            self.left = nn.Identity()
            right_in = cin // 2
        else:
            self.left = nn.Sequential(
                ConvBN(cin, cin, 3, stride, groups=cin, act=Act.NONE),
                ConvBN(cin, branch, 1, act=Act.RELU),
            )
            right_in = cin
        self.right = nn.Sequential(
            ConvBN(right_in, branch, 1, act=Act.RELU),
            ConvBN(branch, branch, 3, stride, groups=branch, act=Act.NONE),
            ConvBN(branch, branch, 1, act=Act.RELU),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, x = x.chunk(2, dim=1)
            out = torch.cat((kept, self.right(x.contiguous())), dim=1)  # a channel slice: a strided view
        else:
            out = torch.cat((self.left(x), self.right(x)), dim=1)
        return channel_shuffle(out, SHUFFLE_GROUPS)


class ShuffleNetV2(nn.Module):
    def __init__(self, resolution: int = 224, num_classes: int = 1000, in_channels: int = 3,
                 width: str = "1x", dropout: float = 0.0):
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {', '.join(WIDTHS)}, got {width!r}")
        self.resolution, self.num_classes, self.in_channels, self.width = resolution, num_classes, in_channels, width
        *stage_channels, head = WIDTHS[width]
        self.conv1 = ConvBN(in_channels, STEM_CHANNELS, 3, 2, act=Act.RELU)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        cin = STEM_CHANNELS
        stages: list[nn.Module] = []
        for units, cout in zip(STAGE_UNITS, stage_channels):
            stages.append(nn.Sequential(*(ShuffleUnit(cin if i == 0 else cout, cout, 2 if i == 0 else 1)
                                          for i in range(units))))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = ConvBN(cin, head, 1, act=Act.RELU)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(head, num_classes)
        self.num_features = head
        init_weights(self)
        normalize_batchnorm_scales(self, (1, in_channels, resolution, resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = torch.flatten(self.pool(self.conv5(x)), 1)
        return self.classifier(self.dropout(x))
