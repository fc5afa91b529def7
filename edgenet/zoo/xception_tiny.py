"""Xception-tiny: a small network in the style of Xception (Chollet 2017, "Xception: Deep Learning with
Depthwise Separable Convolutions", Figure 5), sized for edge devices. Our own table; Xception's
structure with ~13x fewer channels-times-depth (1.8 M parameters with 1000 classes, 228 M
mult-adds at 160 px, 82 M at 96 px):

    Flow     Layer                                              Output (160 px)   Xception (299 px)
    entry    conv 3x3/s2, 32, ReLU                              80x80x32          conv 32/s2, conv 64
             block: SepConv 64, ReLU, SepConv 64, MaxPool/s2    40x40x64          128
             block: ReLU, SepConv 128, ReLU, SepConv 128, MP    20x20x128         256
             block: ReLU, SepConv 256, ReLU, SepConv 256, MP    10x10x256         728
    middle   3 x block: (ReLU, SepConv 256) x 3                 10x10x256         8 x 728
    exit     block: ReLU, SepConv 256, ReLU, SepConv 384, MP    5x5x384           728, 1024
             SepConv 512, ReLU                                  5x5x512           1536, 2048
             global average pool, FC                            classes

As in Xception: a SepConv is a 3x3 depthwise conv followed directly (no BatchNorm or activation in
between) by a 1x1 pointwise conv, then BatchNorm; MaxPool is 3x3/s2 with "same" padding; every
entry/exit block has a residual connection through a 1x1/s2 conv + BatchNorm, the middle blocks an
identity one; the first entry block has no leading ReLU (the stem's ReLU precedes it). Returns
logits (no softmax). ``alpha`` scales every width (rounded to a multiple of 8).

A pre-activation ReLU reads a residual sum that the shortcut reads too, so it cannot fuse into the
add; XNNPACK runs no standalone int8 RELU, so the converter emits such ReLUs as identity 1x1
depthwise convs with the ReLU fused (see converters/onnx_to_tf/activations.py).
"""
from __future__ import annotations

import torch
from torch import nn

from edgenet.zoo.layers import Act, ConvBN, init_weights, normalize_batchnorm_scales, scaled_width

STEM_CHANNELS = 32
# entry flow blocks (output channels; each halves the resolution)
ENTRY: tuple[int, ...] = (64, 128, 256)
MIDDLE_BLOCKS = 3
MIDDLE_CHANNELS = 256
# exit flow: the residual block's two SepConvs, then the last SepConv
EXIT: tuple[int, int] = (256, 384)
FINAL_CHANNELS = 512


class SepConv(nn.Sequential):
    """3x3 depthwise conv -> 1x1 pointwise conv -> BatchNorm (Xception's separable convolution)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )


class XceptionBlock(nn.Module):
    """[ReLU -> SepConv] x n (the widths in ``channels``), then MaxPool 3x3/s2 when ``downsample``;
    plus the input, through a 1x1/s2 conv + BN when the block downsamples."""

    def __init__(self, cin: int, channels: tuple[int, ...], downsample: bool, first_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for i, cout in enumerate(channels):
            if i > 0 or first_relu:
                layers.append(nn.ReLU())  # not in place: the shortcut still reads the block input
            layers.append(SepConv(c, cout))
            c = cout
        if downsample:
            layers.append(nn.MaxPool2d(3, 2, padding=1))
            self.shortcut = ConvBN(cin, c, 1, 2, act=Act.NONE)
        else:
            if cin != c:
                raise ValueError(f"an identity shortcut needs equal widths ({cin} != {c})")
            self.shortcut = nn.Identity()
        self.branch = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class XceptionTiny(nn.Module):
    def __init__(self, alpha: float = 1.0, resolution: int = 224, num_classes: int = 1000,
                 in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        self.alpha, self.resolution, self.num_classes, self.in_channels = alpha, resolution, num_classes, in_channels

        def width(c: int) -> int:
            return scaled_width(c, alpha)

        cin = width(STEM_CHANNELS)
        self.stem = ConvBN(in_channels, cin, 3, 2, act=Act.RELU)
        entry = []
        for i, c in enumerate(ENTRY):
            entry.append(XceptionBlock(cin, (width(c), width(c)), downsample=True, first_relu=i > 0))
            cin = width(c)
        self.entry = nn.Sequential(*entry)
        mid = width(MIDDLE_CHANNELS)
        if cin != mid:
            raise ValueError("the middle flow keeps the entry flow's width")
        self.middle = nn.Sequential(*(XceptionBlock(mid, (mid,) * 3, downsample=False)
                                      for _ in range(MIDDLE_BLOCKS)))
        self.exit = XceptionBlock(mid, tuple(width(c) for c in EXIT), downsample=True)
        final = width(FINAL_CHANNELS)
        self.final = nn.Sequential(SepConv(width(EXIT[-1]), final), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(final, num_classes)
        self.num_features = final
        init_weights(self)
        for m in self.modules():  # no activation between a SepConv's depthwise and pointwise convs
            if isinstance(m, SepConv):
                nn.init.kaiming_normal_(m[0].weight, mode="fan_in", nonlinearity="linear")
        normalize_batchnorm_scales(self, (1, in_channels, resolution, resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.exit(self.middle(self.entry(self.stem(x))))
        x = torch.flatten(self.pool(self.final(x)), 1)
        return self.classifier(self.dropout(x))
