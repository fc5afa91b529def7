"""Architectures of the kind users bring from other projects, written small, for tests and benchmarks.

They are not edgenet's zoo: they exist to be exported to ONNX the way other projects export them
(dynamic batch and image size, opset 17, the TorchScript exporter) and converted as a user's file.

* :class:`YoloStyleDetector` -- CSP-like backbone with SiLU, a two-level neck with nearest upsampling,
  and a head that decodes boxes to pixels on a grid and concatenates them with sigmoid scores into
  one ``[N, 4 + classes, anchors]`` output (the YOLOv5/v8 export layout);
* :class:`TextDetector` -- a DBNet-style segmenter: strided backbone, ConvTranspose upsampling head,
  a probability map;
* :class:`MobileNetV3Style` -- inverted residuals with hard-swish and squeeze-excite (scaled with
  ``expand_as``), as in Howard et al. 2019, Table 2 (shortened);
* :class:`ConvAttention` -- a conv stem, then tokens through one multi-head self-attention block with
  LayerNorm and an exact-GELU MLP, then a classifier.
"""
from __future__ import annotations

import io

import torch
from torch import nn


def conv_bn_act(cin: int, cout: int, k: int = 3, s: int = 1, act: type = nn.SiLU, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


class _Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = conv_bn_act(c, c, 1), conv_bn_act(c, c, 3)

    def forward(self, x):
        return x + self.b(self.a(x))


class _CSP(nn.Module):
    def __init__(self, cin: int, cout: int, n: int = 1):
        super().__init__()
        mid = cout // 2
        self.left, self.right = conv_bn_act(cin, mid, 1), conv_bn_act(cin, mid, 1)
        self.blocks = nn.Sequential(*[_Bottleneck(mid) for _ in range(n)])
        self.out = conv_bn_act(2 * mid, cout, 1)

    def forward(self, x):
        return self.out(torch.cat([self.blocks(self.left(x)), self.right(x)], 1))


class YoloStyleDetector(nn.Module):
    """``width`` scales the channels: 16 gives ~0.9 M parameters, 28 about 3 M. ``csp=False`` keeps
    the strided convs only (a shallow body: its int8 error stays small even with random weights, so
    what a test sees is the head's)."""

    def __init__(self, classes: int = 3, width: int = 16, csp: bool = True, act: type = nn.SiLU):
        super().__init__()
        w = width
        self.classes = classes

        def block(c, n=1):
            return _CSP(c, c, n) if csp else nn.Identity()

        self.stem = conv_bn_act(3, w, 3, 2, act)
        self.s2 = nn.Sequential(conv_bn_act(w, 2 * w, 3, 2, act), block(2 * w))
        self.s3 = nn.Sequential(conv_bn_act(2 * w, 4 * w, 3, 2, act), block(4 * w, 2))     # stride 8
        self.s4 = nn.Sequential(conv_bn_act(4 * w, 8 * w, 3, 2, act), block(8 * w, 2))     # stride 16
        self.s5 = nn.Sequential(conv_bn_act(8 * w, 16 * w, 3, 2, act), block(16 * w))      # stride 32
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = _CSP(16 * w + 8 * w, 8 * w) if csp else conv_bn_act(16 * w + 8 * w, 8 * w, 1, 1, act)
        self.heads = nn.ModuleList([nn.Conv2d(8 * w, 4 + classes, 1), nn.Conv2d(16 * w, 4 + classes, 1)])
        self.strides = (16, 32)

    def forward(self, x):
        p4 = self.s4(self.s3(self.s2(self.stem(x))))
        p5 = self.s5(p4)
        f4 = self.fuse(torch.cat([self.up(p5), p4], 1))
        outs = []
        for feat, head, stride in zip((f4, p5), self.heads, self.strides):
            y = head(feat)
            n, c, h, w = y.shape
            y = y.reshape(n, c, h * w)
            gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 0)[None]          # [1, 2, h*w]
            xy = (torch.sigmoid(y[:, 0:2]) * 2 - 0.5 + grid) * stride               # pixels
            wh = (torch.sigmoid(y[:, 2:4]) * 2) ** 2 * stride * 4                   # pixels
            scores = torch.sigmoid(y[:, 4:])
            outs.append(torch.cat([xy, wh, scores], 1))
        return torch.cat(outs, 2)                                                   # [N, 4 + classes, anchors]


class AnchorDetector(nn.Module):
    """The YOLOv5 export layout: per level a 1x1 head viewed as ``[N, anchors, no, H, W]``, permuted
    to ``[N, anchors, H, W, no]`` (rank 5), sigmoid, boxes decoded to pixels from slices of the last
    axis, ``cat(xy, wh, scores, -1)`` viewed as ``[N, anchors*H*W, no]``, levels concatenated along
    axis 1: ``[N, boxes, 4 + 1 + classes]``, channels last."""

    def __init__(self, classes: int = 3, width: int = 16, act: type = nn.SiLU):
        super().__init__()
        w, self.no, self.na = width, classes + 5, 3
        self.stem = nn.Sequential(conv_bn_act(3, w, 3, 2, act), conv_bn_act(w, 2 * w, 3, 2, act))   # stride 4
        self.down = conv_bn_act(2 * w, 2 * w, 3, 2, act)                                           # stride 8
        self.heads = nn.ModuleList([nn.Conv2d(2 * w, self.na * self.no, 1) for _ in range(2)])
        self.strides = (4, 8)
        self.register_buffer("anchors", torch.tensor([[[10, 13], [16, 30], [33, 23]],
                                                      [[30, 61], [62, 45], [59, 119]]], dtype=torch.float32))

    def forward(self, x):
        f1 = self.stem(x)
        outs = []
        for k, feat in enumerate((f1, self.down(f1))):
            y = self.heads[k](feat)
            n, _, h, w = y.shape
            y = y.view(n, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous().sigmoid()
            gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            grid = torch.stack((gx, gy), 2).view(1, 1, h, w, 2).float()
            xy = (y[..., 0:2] * 2 - 0.5 + grid) * self.strides[k]
            wh = (y[..., 2:4] * 2) ** 2 * self.anchors[k].view(1, self.na, 1, 1, 2)
            outs.append(torch.cat((xy, wh, y[..., 4:]), -1).view(n, -1, self.no))
        return torch.cat(outs, 1)


class TextDetector(nn.Module):
    """DBNet-like: 1/4-resolution features up to full size by two stride-2 ConvTranspose layers."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(conv_bn_act(3, w, 3, 2, nn.ReLU), conv_bn_act(w, 2 * w, 3, 2, nn.ReLU),
                                  conv_bn_act(2 * w, 2 * w, 3, 1, nn.ReLU))
        self.head = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
                                  nn.ConvTranspose2d(w, 1, 2, 2), nn.Sigmoid())

    def forward(self, x):
        return self.head(self.body(x))


class _SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, max(8, c // 4), 1), nn.ReLU(), nn.Conv2d(max(8, c // 4), c, 1),
                                nn.Hardsigmoid())

    def forward(self, x):
        return x * self.fc(self.pool(x)).expand_as(x)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, exp: int, cout: int, k: int, s: int, se: bool, act: type):
        super().__init__()
        layers = [conv_bn_act(cin, exp, 1, act=act), conv_bn_act(exp, exp, k, s, act=act, groups=exp)]
        if se:
            layers.append(_SE(exp))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Style(nn.Module):
    """The first rows of MobileNetV3-Small's Table 2 (Howard et al. 2019), then a classifier."""

    def __init__(self, classes: int = 8):
        super().__init__()
        hs, re = nn.Hardswish, nn.ReLU
        self.features = nn.Sequential(
            conv_bn_act(3, 16, 3, 2, hs),
            _InvertedResidual(16, 16, 16, 3, 2, True, re),
            _InvertedResidual(16, 72, 24, 3, 2, False, re),
            _InvertedResidual(24, 88, 24, 3, 1, False, re),
            _InvertedResidual(24, 96, 40, 5, 2, True, hs),
            _InvertedResidual(40, 240, 40, 5, 1, True, hs),
            conv_bn_act(40, 96, 1, 1, hs))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 128), nn.Hardswish(),
                                        nn.Linear(128, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class ConvAttention(nn.Module):
    def __init__(self, classes: int = 8, dim: int = 32, heads: int = 4):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(3, dim // 2, 3, 2, nn.ReLU), conv_bn_act(dim // 2, dim, 3, 2, nn.ReLU))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)               # [N, tokens, dim]
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return self.fc(t.mean(1))


def export(module: nn.Module, shape: tuple[int, ...], path, dynamic_hw: bool = True, output: str = "output") -> None:
    """Export as other projects do: TorchScript exporter, opset 17, dynamic batch (and H, W)."""
    module.eval()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(*shape),), buffer, dynamo=False, opset_version=17,
                      input_names=["images"], output_names=[output], dynamic_axes={"images": axes, output: {0: "batch"}})
    with open(path, "wb") as fh:
        fh.write(buffer.getvalue())


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def calibrate_batchnorm(module: nn.Module, images, batches: int = 4) -> nn.Module:
    """Set BatchNorm running statistics from real images (train-mode forward passes, no gradient),
    so that an untrained network's activations -- and outputs -- depend on its input the way a
    trained one's do; then eval mode. ``images``: NCHW float tensor."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None            # cumulative average over the passes
    module.train()
    with torch.no_grad():
        for chunk in torch.chunk(images, batches):
            module(chunk)
    return module.eval()


def spread_head(detector: "YoloStyleDetector", images, target_std: float = 2.0) -> "YoloStyleDetector":
    """Scale each head conv so that its outputs vary across ``images`` with ``target_std``, as a
    trained detector's do (boxes move over the image, scores go from ~0 to ~1). Untrained, the head's
    outputs hardly depend on the input: an int8 verdict on them would be about noise."""
    captured = {}
    hooks = [head.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o.detach()))
             for k, head in enumerate(detector.heads)]
    with torch.no_grad():
        detector.eval()(images)
        for k, head in enumerate(detector.heads):
            out = captured[k]
            std = out.std(dim=0).mean().clamp_min(1e-6)         # variation across the images
            head.weight.mul_(target_std / std)
            head.bias.sub_(out.mean(dim=(0, 2, 3))).mul_(target_std / std)   # centred: sigmoid(0) = 0.5
    for hook in hooks:
        hook.remove()
    return detector


def shapes_images(resolution: int, count: int = 64, seed: int = 0, zero_one: bool = False):
    """NCHW float tensor of the built-in shapes images, normalized to [-1, 1] (edgenet's default),
    or to [0, 1] with ``zero_one`` (a model converted with ``--mean 0 --std 1``)."""
    from edgenet.data.datasets import load_dataset
    from edgenet.data.preprocess import Preprocess

    pre = Preprocess(resolution, resolution, mean=(0.0,) * 3, std=(1.0,) * 3) if zero_one else \
        Preprocess.default(resolution)
    x = load_dataset("shapes", pre, split="train", limit=count, seed=seed).x
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
