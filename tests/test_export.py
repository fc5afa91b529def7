"""converters.export: torch -> ONNX export, load_onnx errors, parity vs onnxruntime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from edgenet.converters.export import export_onnx, load_onnx, onnx_parity, run_onnxruntime  # noqa: E402
from edgenet.errors import ConversionError, ModelError, UsageError  # noqa: E402

SHAPE = (1, 3, 16, 16)


class SmallCNN(nn.Module):
    """conv s2 + BN + ReLU6, depthwise + BN + ReLU6, pointwise, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = nn.functional.relu6(self.bn1(self.conv(x)))
        x = nn.functional.relu6(self.bn2(self.dw(x)))
        x = nn.functional.relu6(self.pw(x))
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(x.view(x.size(0), -1))


def small_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):  # non-trivial running statistics
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.3, 3)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    return model


def test_export_matches_torch_and_names_io():
    module = small_cnn()
    model = export_onnx(module, SHAPE)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(SHAPE)
    # BatchNormalization reaches edgenet's own folding pass (torch's EVAL-mode export would fold it)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    assert n_bn and sum(n.op_type == "BatchNormalization" for n in model.graph.node) == n_bn
    assert onnx_parity(module, model, SHAPE) < 1e-5


def test_export_is_deterministic_and_restores_train_mode():
    module = small_cnn()
    module.train()
    first = export_onnx(module, SHAPE).SerializeToString()
    second = export_onnx(module, SHAPE).SerializeToString()
    assert first == second
    assert module.training  # export ran in eval mode, then put the module back


def test_parity_detects_a_different_model():
    model = export_onnx(small_cnn(seed=0), SHAPE)
    assert onnx_parity(small_cnn(seed=1), model, SHAPE) > 1e-3


def test_export_failures_are_conversion_errors():
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("no forward for you\nsecond line")

    with pytest.raises(ConversionError, match=r"torch.onnx.export failed for Broken.*no forward for you$"):
        export_onnx(Broken(), SHAPE)


def test_export_failure_prints_nothing(capfd):
    class UsesUnsupportedOp(nn.Module):
        def forward(self, x):
            return torch.fft.fft2(x).real  # no ONNX symbolic in the TorchScript exporter

    with pytest.raises(ConversionError, match="UsesUnsupportedOp"):
        export_onnx(UsesUnsupportedOp(), SHAPE)
    captured = capfd.readouterr()
    assert "Torch IR graph" not in captured.out + captured.err


@pytest.mark.parametrize("opset", [6, 99])
def test_export_rejects_opsets_the_exporter_lacks(opset):
    with pytest.raises(UsageError, match="opset must be an int from 7 to"):
        export_onnx(small_cnn(), SHAPE, opset=opset)


@pytest.mark.parametrize("shape", [(), (1, 0, 8, 8), ("a", 3)])
def test_export_rejects_bad_shapes(shape):
    with pytest.raises(UsageError):
        export_onnx(small_cnn(), shape)


def test_load_onnx_round_trip(tmp_path: Path):
    model = export_onnx(small_cnn(), SHAPE)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = load_onnx(path)
    assert loaded.SerializeToString() == model.SerializeToString()


def test_load_onnx_with_external_data(tmp_path: Path):
    module = small_cnn()
    model = export_onnx(module, SHAPE)
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").stat().st_size > 1000
    loaded = load_onnx(path)
    assert onnx_parity(module, loaded, SHAPE) < 1e-5

    (tmp_path / "ext.data").unlink()
    with pytest.raises(ModelError, match="ext.onnx: its external data file 'ext.data' is missing"):
        load_onnx(path)


def test_load_onnx_errors(tmp_path: Path):
    with pytest.raises(ModelError, match=r"nope\.onnx: no such file$"):
        load_onnx(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="not a file"):
        load_onnx(tmp_path)

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="garbage.onnx: not a valid ONNX model"):
        load_onnx(garbage)

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_onnx(empty)

    data = export_onnx(small_cnn(), SHAPE).SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.onnx: not a valid ONNX model") as info:
        load_onnx(truncated)
    assert "\n" not in str(info.value)


def test_run_onnxruntime_reports_bad_feeds_as_conversion_error():
    model = export_onnx(small_cnn(), SHAPE)
    with pytest.raises(ConversionError, match="onnxruntime cannot run"):
        run_onnxruntime(model, {"input": np.zeros((1, 2), np.float32)})
