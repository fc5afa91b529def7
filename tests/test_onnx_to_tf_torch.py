"""Models exported from torch (TorchScript exporter, dynamo=False) converted all the way to TFLite."""
from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest

from test_onnx_to_tf_helpers import onnx, run_ort, op_types, tflite_bytes, tflite_run, to_tflite


torch = pytest.importorskip("torch")


def _torch_cnn():
    from torch import nn

    def block(cin, cout, k, s, groups):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]

    torch.manual_seed(0)
    net = nn.Sequential(*block(3, 8, 3, 2, 1), *block(8, 8, 3, 1, 8), *block(8, 16, 1, 1, 1),
                        *block(16, 16, 3, 2, 16), *block(16, 24, 1, 1, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))
    with torch.no_grad():  # non-trivial BN statistics so folding mistakes show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_torch_cnn_end_to_end_to_tflite():
    x = torch.randn(1, 3, 32, 32)
    model = _export(_torch_cnn(), x, 17)
    expected = run_ort(model, {"input": x.numpy()})[0]
    graph = to_tflite(model)
    assert graph.op_counts["Conv"] == 5 and graph.op_counts["Gemm"] == 1
    assert "TRANSPOSE" not in op_types(graph)
    outs, ops = tflite_run(tflite_bytes(graph), [x.numpy().transpose(0, 2, 3, 1).copy()])
    assert "TRANSPOSE" not in ops
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED"} <= set(ops)
    assert np.abs(outs[0] - expected).max() < 1e-4


def _export(net, x, opset: int):
    buf = io.BytesIO()
    torch.onnx.export(net, x, buf, dynamo=False, opset_version=opset, input_names=["input"], output_names=["out"])
    return onnx.load_from_string(buf.getvalue())


def _mixed_net():
    """MobileNetV3/ShuffleNet/ResNet-style pieces: hardswish, max pool, squeeze-excite, channel shuffle,
    nearest and bilinear upsampling, SiLU, concat, grouped conv, ceil-mode avg pool, mean, view, softmax."""
    from torch import nn
    from torch.nn import functional as F

    class SqueezeExcite(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

        def forward(self, x):
            return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.Hardswish())
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.se = SqueezeExcite(8)
            self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
            self.grouped = nn.Conv2d(16, 16, 3, 1, 1, groups=4)
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            x = self.se(self.pool(self.stem(x)))
            n, c, h, w = x.shape
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
            up = F.interpolate(x, scale_factor=2, mode="nearest")
            smooth = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = torch.cat([F.silu(self.dw(up)), F.leaky_relu(smooth, 0.1)], 1)
            x = F.avg_pool2d(self.grouped(x), 2, ceil_mode=True).mean((2, 3))
            return F.softmax(self.head(x.view(x.size(0), -1)), dim=1)

    torch.manual_seed(0)
    return Net().eval()


@pytest.mark.parametrize("opset", [11, 17])
def test_torch_mixed_net_end_to_end(opset):
    x = torch.randn(1, 3, 33, 31)
    model = _export(_mixed_net(), x, opset)
    expected = run_ort(model, {"input": x.numpy()})[0]
    graph = to_tflite(model)
    outs, ops = tflite_run(tflite_bytes(graph), [x.numpy().transpose(0, 2, 3, 1).copy()])
    counts = Counter(ops)
    assert counts["TRANSPOSE"] == 1  # the channel shuffle's own, on the NHWC tensor
    assert {"RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "SPLIT", "SOFTMAX"} <= set(counts)
    assert "HARD_SWISH" in counts   # opset 11 has no HardSwish: torch exports x * HardSigmoid(x), fused too
    assert np.abs(outs[0] - expected).max() < 1e-5
