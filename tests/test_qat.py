"""`edgenet train --qat`: fake quantization where TFLite quantizes, the QDQ ONNX export, and the
checkpoint that carries both (tiny runs: 64 digits, 1 epoch; accuracy is benchmarks/accuracy_table.py's)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "onnx", "onnxruntime", "sklearn")),
    reason="needs torch, onnx, onnxruntime and scikit-learn (the [convert] extra)")


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    from edgenet.qat_train import train_qat

    from edgenet.checkpoint import save_checkpoint
    from edgenet.data.preprocess import Preprocess
    from edgenet.zoo import create_model

    folder = tmp_path_factory.mktemp("qat")
    # an untrained float checkpoint (training it is test_train.py's): QAT fine-tunes whatever it is given
    model = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=10, in_channels=1)
    start = save_checkpoint(folder / "digits.pt", model="mobilenet_v1", alpha=0.25, resolution=32,
                            num_classes=10, in_channels=1, activation="relu6", state_dict=model.state_dict(),
                            class_names=list("0123456789"), preprocess=Preprocess.default(32, 1), dataset="digits")
    out = folder / "digits_qat.pt"
    seen = []
    result = train_qat(from_checkpoint=start, out=out, train_limit=64, test_limit=40, batch_size=32, threads=1,
                       qat_epochs=1, qat_lr=1e-3, progress=seen.append)
    return result, out, seen


def test_qat_writes_a_checkpoint_and_a_qdq_onnx_that_onnxruntime_runs_like_torch(qat_run):
    import onnx

    from edgenet.checkpoint import load_checkpoint

    result, out, seen = qat_run
    assert out.is_file() and result.qdq_path == out.with_name("digits_qat_qdq.onnx") and result.qdq_path.is_file()
    assert [s.epoch for s in seen] == [1] and result.float_train is None and result.test_samples == 40
    # onnxruntime (pairs run as written) vs the torch QAT model: a float rounding tie may land an
    # intermediate value one step off, which can grow by a step or two downstream; rarely
    assert result.qdq_within_step >= 0.99 and result.qdq_max_steps <= 4 and result.qdq_agreement >= 0.95
    model = onnx.load(result.qdq_path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 27 and ops.count("Gemm") == 1 and "BatchNormalization" not in ops
    assert ops.count("QuantizeLinear") == 30          # input + 27 conv outputs + pool + logits
    assert ops.count("DequantizeLinear") == 30 + 28   # ... + one per weight (27 convs + the classifier)
    ckpt = load_checkpoint(out)
    assert ckpt.qdq_onnx == result.qdq_path.read_bytes()
    import json

    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["edgenet.class_names"]) == list("0123456789") and props["edgenet.dataset"] == "digits"
    assert json.loads(props["edgenet.preprocess"]) == ckpt.preprocess.to_dict()
    assert ckpt.qat["qdq_file"] == result.qdq_path.name

    # the checkpoint rebuilds as a plain float zoo model (BN as x + bias; exactness: the prepare_qat test)
    assert ckpt.build_model() is not None
    from edgenet import qat

    assert ckpt.qat["ranges"]["activations"]["act_fq_0"]["zero_point"] in range(-128, 128)
    assert qat.ACT_RANGE == (-128, 127) and qat.WEIGHT_RANGE == (-127, 127)


def test_the_learned_scales_are_the_ones_in_the_onnx_and_weights_are_int8(qat_run):
    import onnx
    from onnx import numpy_helper

    from edgenet.checkpoint import load_checkpoint
    from edgenet.qat_export import onnx_ranges

    result, out, _ = qat_run
    ckpt = load_checkpoint(out)
    model = onnx.load(result.qdq_path)
    learned, in_onnx = ckpt.qat["ranges"], onnx_ranges(model)
    assert set(learned["activations"]) == {f"act_fq_{i}" for i in range(30)}
    assert len(learned["weights"]) == 28
    assert in_onnx == learned                      # the same numbers, exactly (float32 round trip)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, w in learned["weights"].items():
        q = inits[f"{name}_quantized"]
        assert q.dtype == np.int8 and q.min() >= -127 and w["axis"] == 0
        assert set(w["zero_point"]) == {0} and len(w["scale"]) == q.shape[0]
        # symmetric: the largest weight of each channel sits at +-127 (scale = max|w| / 127)
        assert np.all(np.abs(q.reshape(q.shape[0], -1)).max(axis=1) == 127)
        # ... and the float weights the checkpoint stores dequantize to within half a step
        float_w = ckpt.state_dict[name].numpy()
        scale = np.asarray(w["scale"], np.float32).reshape(-1, *[1] * (q.ndim - 1))
        assert np.abs(q * scale - float_w).max() <= 0.5 * scale.max() * 1.001
    for name, a in learned["activations"].items():
        assert a["scale"] > 0 and -128 <= a["zero_point"] <= 127


def test_a_damaged_qdq_model_in_the_checkpoint_is_refused_naming_it(qat_run, tmp_path):
    import torch

    from edgenet.checkpoint import load_checkpoint
    from edgenet.errors import ModelError

    _, out, _ = qat_run
    obj = torch.load(out, weights_only=True)
    obj["qat"]["qdq_onnx"][100] ^= 0xFF
    bad = tmp_path / "bad.pt"
    torch.save(obj, bad)
    with pytest.raises(ModelError, match="QDQ ONNX model does not match its recorded sha256") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)
    obj = torch.load(out, weights_only=True)
    obj["qat"]["ranges"]["activations"]["act_fq_3"]["scale"] = -1.0
    torch.save(obj, bad)
    with pytest.raises(ModelError, match="QAT range of act_fq_3 is not a positive scale") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)


def test_float_checkpoints_have_no_qdq_model(tmp_path):
    import torch

    from edgenet.checkpoint import load_checkpoint, save_checkpoint
    from edgenet.data.preprocess import Preprocess
    from edgenet.zoo import create_model

    model = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=2)
    path = save_checkpoint(tmp_path / "f.pt", model="mobilenet_v1", alpha=0.25, resolution=32, num_classes=2,
                           in_channels=3, activation="relu6", state_dict=model.state_dict(), class_names=["a", "b"],
                           preprocess=Preprocess.default(32, 3), dataset="digits")
    ckpt = load_checkpoint(path)
    assert ckpt.qat is None and ckpt.qdq_onnx is None and ckpt.qdq_model() is None
    assert isinstance(torch.load(path, weights_only=True), dict)


def test_prepare_qat_puts_fake_quant_after_the_fused_activation():
    import torch

    from edgenet import qat
    from edgenet.zoo import create_model

    model = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=3).eval()
    gm = qat.prepare_qat(model)
    nodes = {n.name: n for n in gm.graph.nodes}
    # the stem: input fake quant -> conv (BN folded) -> ReLU6 -> fake quant
    conv = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "features.0.0")
    relu = next(iter(conv.users))
    assert isinstance(gm.get_submodule(relu.target), torch.nn.ReLU6)
    assert next(iter(relu.users)).target == "act_fq_1" and conv.args[0].target == "act_fq_0"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gm.modules()) and nodes
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(gm.eval()(x) * 0, model(x) * 0)   # runs, same shape
    # the zoo model's own layout comes back with the folded weights: same function without fake quant
    qat.set_observers(gm, activations=False, weights=False)
    for _, fq in qat.activation_fake_quants(gm) + qat.weight_fake_quants(gm):
        fq.disable_fake_quant()
    rebuilt = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=3)
    rebuilt.load_state_dict(qat.float_state_dict(gm, model))
    with torch.inference_mode():
        assert torch.allclose(rebuilt.eval()(x), model(x), atol=1e-4)


def test_qat_refuses_bad_input_in_one_line(tmp_path):
    from edgenet.errors import UsageError
    from edgenet.qat_train import train_qat

    with pytest.raises(UsageError, match="--qat supports mobilenet_v1; not 'squeezenet1_1'"):
        train_qat("digits", out=tmp_path / "a.pt", model="squeezenet1_1", resolution=32, epochs=1)
    with pytest.raises(UsageError, match="give --out a file name"):
        train_qat("digits", out="-", resolution=32, epochs=1)
    with pytest.raises(UsageError, match="--qat-epochs"):
        train_qat("digits", out=tmp_path / "a.pt", resolution=32, epochs=1, qat_epochs=0)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--qat", "--model", "squeezenet1_1"], "--qat supports mobilenet_v1"),
    (["--qat", "--model", "resnet"], "unknown model 'resnet'"),
    (["--from", "x.pt"], "--from only acts with --qat"),
    (["--qat-epochs", "2"], "--qat-epochs only acts with --qat"),
])
def test_cli_bad_qat_input_is_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "edgenet", "train", *args, "--out", str(tmp_path / "q.pt")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_cli_help_shows_a_qat_example(capsys):
    from edgenet.cli import main

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "edgenet train --qat --from digits.pt --out digits_qat.pt" in text and "--qat-epochs" in text


@pytest.mark.slow
def test_cli_qat_from_a_checkpoint_refuses_conflicting_flags_then_runs(qat_run, tmp_path):
    _, out, _ = qat_run
    base = [sys.executable, "-m", "edgenet", "train", "--qat", "--from", str(out), "--qat-epochs", "1",
            "--threads", "1", "--quiet"]
    proc = subprocess.run([*base, "--alpha", "0.5", "--out", str(tmp_path / "b.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "drop --alpha" in proc.stderr
    proc = subprocess.run([*base, "--limit", "64", "--out", str(tmp_path / "b.pt"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    res = json.loads(proc.stdout)
    assert res["qdq_path"].endswith("b_qdq.onnx") and res["qdq_within_step"] >= 0.99 and res["float_train"] is None
    # without --from the float model is trained first, then fine-tuned
    proc = subprocess.run([sys.executable, "-m", "edgenet", "train", "--qat", "--dataset", "digits", "--epochs", "1",
                           "--limit", "64", "--qat-epochs", "1", "--in-channels", "1", "--threads", "1", "--quiet",
                           "--out", str(tmp_path / "c.pt"), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["float_train"]["epochs"] == 1 and (tmp_path / "c_qdq.onnx").is_file()


@pytest.mark.slow
def test_convert_int8_of_a_qat_checkpoint_uses_the_learned_scales(qat_run, tmp_path):
    """The int8 .tflite's activation scales and zero points are the QAT model's, not calibrated ones."""
    import edgenet
    from edgenet.checkpoint import load_checkpoint
    from edgenet.runtime import make_interpreter

    _, out, _ = qat_run
    learned = load_checkpoint(out).qat["ranges"]["activations"]
    res = edgenet.convert(str(out), int8=True, out=tmp_path / "c", layer_report=False, calib_samples=16,
                          eval_samples=16, allow_degraded=True, strict_int8=True)
    assert any("use the ranges learned by QAT" in n for n in res.report.notes)
    interp = make_interpreter(res.int8_path.read_bytes())
    params = {(round(d["quantization"][0], 9), int(d["quantization"][1])) for d in interp.get_tensor_details()
              if d["dtype"].__name__ == "int8" and d["quantization"][0] > 0}
    wanted = {(round(np.float32(a["scale"]).item(), 9), a["zero_point"]) for name, a in learned.items()
              if name not in ("act_fq_0", "act_fq_28")}   # the input keeps its pixel range; 28: the 1x1 pool
    close = {w for w in wanted if any(abs(w[0] - p[0]) <= 1e-6 * w[0] and w[1] == p[1] for p in params)}
    assert close == wanted


@pytest.mark.slow
def test_qat_of_a_folder_checkpoint_holds_out_the_images_the_float_run_held_out(tmp_path):
    from PIL import Image, ImageDraw

    from edgenet.qat_train import train_qat
    from edgenet.train import TrainConfig, train, training_data

    data = tmp_path / "data"
    for cls, shape in (("box", "rectangle"), ("dot", "ellipse")):
        (data / cls).mkdir(parents=True)
        for i in range(10):
            img = Image.new("RGB", (40, 40), (20 * i, 30, 60))
            getattr(ImageDraw.Draw(img), shape)((8 + i, 8, 30 + i, 30), fill=(250, 250, 0))
            img.save(data / cls / f"{i}.png")
    float_run = train(str(data), alpha=0.25, resolution=32, epochs=1, out=tmp_path / "f.pt", seed=3,
                      batch_size=4, threads=1)
    # a different --seed for the fine-tuning must not move images between training and held-out sets
    res = train_qat(from_checkpoint=tmp_path / "f.pt", out=tmp_path / "q.pt", seed=0, batch_size=4, threads=1,
                    qat_epochs=1)
    assert res.test_samples == float_run.test_samples
    held = training_data(TrainConfig(dataset=str(data), alpha=0.25, resolution=32, epochs=1, seed=3)).test_set.x
    from edgenet.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "q.pt").metrics["config"]["seed"] == 3
    assert held.shape[0] == res.test_samples
