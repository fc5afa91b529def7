"""MixNet-S (Tan & Le 2019, "MixConv: Mixed Depthwise Convolutional Kernels"), the paper's MixNet-S
architecture figure as written out by its reference builder (``mixnet_builder.mixnet_s``):

    Input   Operator (kernels of the mixed depthwise conv)   Exp   Out   SE     Act    Stride  Repeat
    224^2   conv 3x3                                         -     16    -      ReLU   2       1
    112^2   MB, dw {3}                                       1     16    -      ReLU   1       1
    112^2   MB, dw {3}, grouped 1x1 (2 groups)               6     24    -      ReLU   2       1
    56^2    MB, dw {3}, grouped 1x1                          3     24    -      ReLU   1       1
    56^2    MB, dw {3, 5, 7}                                 6     40    0.5    Swish  2       1
    28^2    MB, dw {3, 5}, grouped 1x1                       6     40    0.5    Swish  1       3
    28^2    MB, dw {3, 5, 7}, grouped project                6     80    0.25   Swish  2       1
    14^2    MB, dw {3, 5}, grouped project                   6     80    0.25   Swish  1       2
    14^2    MB, dw {3, 5, 7}, grouped 1x1                    6     120   0.5    Swish  1       1
    14^2    MB, dw {3, 5, 7, 9}, grouped 1x1                 3     120   0.5    Swish  1       2
    14^2    MB, dw {3, 5, 7, 9, 11}                          6     200   0.5    Swish  2       1
    7^2     MB, dw {3, 5, 7, 9}, grouped project             6     200   0.5    Swish  1       2
    7^2     conv 1x1                                         -     1536  -      ReLU   1       1
    7^2     global average pool, dropout 0.2, FC             -     classes
    ImageNet: 4.1M parameters, 256M FLOPS (mult-adds), 75.8% top-1.

An MB (inverted bottleneck) block is: 1x1 expansion conv to ``in x Exp`` channels (skipped when
Exp is 1) -> mixed depthwise conv (MDConv: the channels split into equal groups, one kernel size
per group, outputs concatenated) -> squeeze-and-excitation with ``in x SE`` reduced channels ->
1x1 linear projection; every conv is followed by BatchNorm and (except the projection) the row's
activation; a residual connection when stride is 1 and in == out. "Grouped 1x1" means the
expansion and projection convs are 2-group convs (the channels split in halves, one 1x1 conv each,
concatenated), "grouped project" only the projection. The stem and head use ReLU. Returns logits
(no softmax).

The width multiplier ``alpha`` is the reference builder's ``depth_multiplier``: stem and block
widths are scaled and rounded to multiples of 8 (the 1536-wide head is not scaled).

Deployment note (measured with LiteRT 2.3 + XNNPACK on x86): int8 depthwise convs with 9x9 and 11x11
kernels run 5-8x slower than float (no specialised int8 kernels for them), so the int8 model is
slower than the float one on such CPUs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgenet.zoo.layers import (Act, ConvBN, SqueezeExcite, init_weights, normalize_batchnorm_scales,
                                scaled_width, split_channels)


@dataclass(frozen=True)
class Stage:
    """One row of the table: ``repeat`` MB blocks, the first with ``stride``."""

    kernels: tuple[int, ...]   # kernel sizes of the mixed depthwise conv
    expand_groups: int         # groups of the 1x1 expansion conv
    project_groups: int        # groups of the 1x1 projection conv
    stride: int
    expand: int                # expansion ratio
    out: int
    se: float                  # SE ratio (of the block's input channels); 0: no SE
    act: Act
    repeat: int


R, S = Act.RELU, Act.SWISH
STEM_CHANNELS = 16
HEAD_CHANNELS = 1536
DROPOUT = 0.2
STAGES: tuple[Stage, ...] = (
    Stage((3,), 1, 1, 1, 1, 16, 0.0, R, 1),
    Stage((3,), 2, 2, 2, 6, 24, 0.0, R, 1),
    Stage((3,), 2, 2, 1, 3, 24, 0.0, R, 1),
    Stage((3, 5, 7), 1, 1, 2, 6, 40, 0.5, S, 1),
    Stage((3, 5), 2, 2, 1, 6, 40, 0.5, S, 3),
    Stage((3, 5, 7), 1, 2, 2, 6, 80, 0.25, S, 1),
    Stage((3, 5), 1, 2, 1, 6, 80, 0.25, S, 2),
    Stage((3, 5, 7), 2, 2, 1, 6, 120, 0.5, S, 1),
    Stage((3, 5, 7, 9), 2, 2, 1, 3, 120, 0.5, S, 2),
    Stage((3, 5, 7, 9, 11), 1, 1, 2, 6, 200, 0.5, S, 1),
    Stage((3, 5, 7, 9), 1, 2, 1, 6, 200, 0.5, S, 2),
)


class GroupedConvBN(nn.Module):
    """The reference builder's GroupedConv2D/MDConv: the input channels split into groups
    (``split_channels``), one conv per group (kernel ``kernels[g]``; depthwise for MDConv), outputs
    concatenated, then BatchNorm and the activation. Both are per channel, so they are applied per
    group before the concatenation (the same function), which lets the export fold each BatchNorm
    into its conv and TFLite fuse each ReLU."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], stride: int = 1, depthwise: bool = False,
                 act: Act = Act.NONE):
        super().__init__()
        if depthwise and cin != cout:
            raise ValueError(f"a depthwise conv keeps its width ({cin} != {cout})")
        self.splits = split_channels(cin, len(kernels))
        outs = self.splits if depthwise else split_channels(cout, len(kernels))
        self.convs = nn.ModuleList(ConvBN(ci, co, k, stride, groups=ci if depthwise else 1, act=act)
                                   for ci, co, k in zip(self.splits, outs, kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)


class MixBlock(nn.Module):
    """One MB block (see the module docstring)."""

    def __init__(self, cin: int, cout: int, stage: Stage, stride: int):
        super().__init__()
        mid = cin * stage.expand
        self.expand = (GroupedConvBN(cin, mid, (1,) * stage.expand_groups, act=stage.act)
                       if stage.expand != 1 else nn.Identity())
        self.dw = GroupedConvBN(mid, mid, stage.kernels, stride, depthwise=True, act=stage.act)   # MDConv
        self.se = (SqueezeExcite(mid, max(1, int(cin * stage.se)), stage.act)
                   if stage.se > 0 else nn.Identity())
        self.project = GroupedConvBN(mid, cout, (1,) * stage.project_groups, act=Act.NONE)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MixNet(nn.Module):
    def __init__(self, alpha: float = 1.0, resolution: int = 224, num_classes: int = 1000,
                 in_channels: int = 3, stages: tuple[Stage, ...] = STAGES, dropout: float = DROPOUT):
        super().__init__()
        self.alpha, self.resolution, self.num_classes, self.in_channels = alpha, resolution, num_classes, in_channels

        def width(c: int) -> int:
            return scaled_width(c, alpha)

        cin = width(STEM_CHANNELS)
        self.stem = ConvBN(in_channels, cin, 3, 2, act=Act.RELU)
        blocks: list[nn.Module] = []
        for stage in stages:
            cout = width(stage.out)
            for i in range(stage.repeat):
                blocks.append(MixBlock(cin, cout, stage, stage.stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(cin, HEAD_CHANNELS, 1, act=Act.RELU)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self.num_features = HEAD_CHANNELS
        init_weights(self)
        normalize_batchnorm_scales(self, (1, in_channels, resolution, resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.dropout(x))
