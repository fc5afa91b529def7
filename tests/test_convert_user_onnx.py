"""Bring your own ONNX: dynamic dims, several inputs, any rank, other channel counts, array data,
preprocessing flags and the float verdict, through `edgenet.convert` and the real CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import edgenet  # noqa: E402
from edgenet.cli import main  # noqa: E402
from edgenet.errors import ConversionError, DataError, ModelError, UsageError  # noqa: E402
from edgenet.inference import TFLiteModel  # noqa: E402

FAST = dict(calib_samples=16, eval_samples=8)


def _export(net, args, path, names, dynamic=None, outputs=("y",)):
    net.eval()
    torch.onnx.export(net, args, str(path), dynamo=False, opset_version=17, input_names=list(names),
                      output_names=list(outputs), dynamic_axes=dynamic)
    return path


class _Detector(torch.nn.Module):
    """A tiny fully convolutional detector: any H x W, a [N, 6, H/4 * W/4] head."""

    def __init__(self, channels=3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, 2, 1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 6, 3, 2, 1))

    def forward(self, x):
        y = self.body(x)
        return y.reshape(y.shape[0], 6, -1)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("det") / "det.onnx"
    return _export(_Detector(), (torch.randn(1, 3, 32, 32),), path, ["images"],
                   {"images": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "anchors"}})


def test_dynamic_hw_needs_input_shape_then_converts(detector, tmp_path, capsys):
    assert main(["convert", str(detector), "--float", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip().splitlines()    # found before any stage ran
    assert len(err) == 1 and "dynamic dims at axis 2 (height), 3 (width)" in err[0] and "--input-shape" in err[0]
    assert not (tmp_path / "a").exists()

    r = edgenet.convert(str(detector), input_shape=(1, 3, 48, 40), int8=False, out=tmp_path / "b", **FAST)
    assert r.report.model["inputs"][0]["tflite_shape"] == [1, 48, 40, 3]
    assert r.report.validation.float_verdict["passed"] and r.report.validation.float_rel_err < 1e-5
    out = TFLiteModel(r.float_path).predict(np.zeros((2, 48, 40, 3), np.float32))
    assert out.shape == (2, 6, 120)


def test_dynamic_batch_alone_becomes_one_with_a_note(tmp_path):
    torch.manual_seed(0)
    path = _export(_Detector(), (torch.randn(1, 3, 32, 32),), tmp_path / "b.onnx", ["images"],
                   {"images": {0: "N"}, "y": {0: "N"}})
    r = edgenet.convert(str(path), int8=False, out=tmp_path / "o", **FAST)
    assert r.report.model["batch_fixed"] == ["images"]
    assert any("dynamic batch of input images set to 1" in n for n in r.report.notes)
    assert "dynamic batch" in (tmp_path / "o" / "report.md").read_text()


def test_static_batch_above_one_stays_in_the_tflite_model(detector, tmp_path):
    r = edgenet.convert(str(detector), input_shape="2,3,32,32" .split(","), out=tmp_path / "o", **FAST)
    assert r.report.model["inputs"][0]["tflite_shape"] == [2, 32, 32, 3]
    for path in (r.float_path, r.int8_path):
        model = TFLiteModel(path)
        assert model.input_shape == (2, 32, 32, 3) and model.batches == [2]
    # validation runs whole batches: 8 held-out images are 4 invocations of 2
    assert r.report.validation.n_samples == 8 and r.report.validation.float_verdict["passed"]
    assert r.report.validation.int8_sqnr_db > 15


def test_four_channel_image_input(tmp_path):
    torch.manual_seed(0)
    path = _export(_Detector(channels=4), (torch.randn(1, 4, 32, 32),), tmp_path / "rgbd.onnx", ["rgbd"])
    r = edgenet.convert(str(path), out=tmp_path / "o", **FAST)
    pre = json.loads((tmp_path / "o" / "preprocess.json").read_text())
    assert pre["color"] == "RGBA" and len(pre["mean"]) == 4
    assert r.report.validation.int8_sqnr_db > 15


def _mlp(path, features=20):
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [features, 16], rng.normal(0, 0.3, (features, 16)).ravel())
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [16, 3], rng.normal(0, 0.3, (16, 3)).ravel())
    nodes = [helper.make_node("MatMul", ["feats", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["scores"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["N", features])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_feature_mlp_float_validates_on_seeded_random_examples(tmp_path):
    r = edgenet.convert(str(_mlp(tmp_path / "mlp.onnx")), int8=False, out=tmp_path / "o", **FAST)
    assert r.report.data["kind"] == "random" and r.report.validation.float_verdict["passed"]
    assert any("seeded random examples" in n for n in r.report.notes)
    assert not (tmp_path / "o" / "preprocess.json").exists()    # nothing to preprocess


def test_feature_mlp_int8_needs_data_and_takes_npy(tmp_path):
    path = _mlp(tmp_path / "mlp.onnx")
    with pytest.raises(DataError, match=r"--calib shapes cannot feed this model.*FILE.npy or FILE.npz"):
        edgenet.convert(str(path), int8=True, out=tmp_path / "o", **FAST)
    assert not (tmp_path / "o").exists()
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(60, 20)).astype(np.float32))
    r = edgenet.convert(str(path), int8=True, calib=str(tmp_path / "x.npy"), out=tmp_path / "o", calib_samples=48,
                        eval_samples=8)
    assert r.report.data["kind"] == "arrays" and r.report.data["eval_samples"] == 8
    assert r.report.validation.int8_sqnr_db > 20
    with pytest.raises(DataError, match=r"array 'feats' has shape \(60, 21\).*wants \(examples, 20\)"):
        np.save(tmp_path / "bad.npy", np.zeros((60, 21), np.float32))
        edgenet.convert(str(path), calib=str(tmp_path / "bad.npy"), out=tmp_path / "p", **FAST)


class _ImageAndMeta(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.fc = torch.nn.Linear(8 + 5, 4)

    def forward(self, image, meta):
        pooled = torch.relu(self.conv(image)).mean(dim=(2, 3))
        return self.fc(torch.cat([pooled, meta], dim=1))


def test_two_inputs_with_npz_data_calibrate_and_validate(tmp_path):
    torch.manual_seed(0)
    path = _export(_ImageAndMeta(), (torch.randn(1, 3, 16, 16), torch.randn(1, 5)), tmp_path / "two.onnx",
                   ["image", "meta"], {"image": {0: "N"}, "meta": {0: "N"}})
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", image=rng.normal(size=(40, 3, 16, 16)).astype(np.float32),
             meta=rng.normal(size=(40, 5)).astype(np.float32))
    r = edgenet.convert(str(path), calib=str(tmp_path / "d.npz"), out=tmp_path / "o", **FAST)
    assert [i["name"] for i in r.report.model["inputs"]] == ["image", "meta"]
    assert r.report.validation.float_verdict["passed"] and r.report.validation.int8_sqnr_db > 20
    model = TFLiteModel(r.int8_path)
    assert [tuple(d["shape"]) for d in model.inputs] == [(1, 16, 16, 3), (1, 5)]
    np.savez(tmp_path / "short.npz", image=np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(DataError, match="no array named 'meta'"):
        edgenet.convert(str(path), calib=str(tmp_path / "short.npz"), out=tmp_path / "p", **FAST)


def test_keep_layout_keeps_a_rank4_non_image_input(tmp_path):
    torch.manual_seed(0)

    class Tokens(torch.nn.Module):
        def forward(self, x):            # (1, heads, tokens, dim): attention-like, not an image
            return torch.softmax(x @ x.transpose(-1, -2), dim=-1)

    path = _export(Tokens(), (torch.randn(1, 2, 5, 4),), tmp_path / "t.onnx", ["x"])
    r = edgenet.convert(str(path), keep_layout=["x"], int8=False, out=tmp_path / "o", **FAST)
    assert r.report.model["inputs"][0]["tflite_shape"] == [1, 2, 5, 4]
    assert r.report.validation.float_verdict["passed"]


def test_non_float_input_refused_before_any_slow_stage(tmp_path, capsys):
    graph = helper.make_graph([helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])])
    path = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["convert", str(path), "--float", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edgenet: error:") and "input 'ids' is int64" in err[-1]


@pytest.mark.parametrize("flags, words", [
    (["--alpha", "0.5"], "--alpha applies to zoo models, not to an .onnx model"),
    (["--num-classes", "3", "--weights", "w.pt"], "--num-classes, --weights apply to zoo models"),
    (["--input-shape", "x:1,3,32,32"], "the model has no input 'x' (its inputs: images)"),
    (["--mean", "0.5,0.5"], "--mean has 2 values; give 1 or one per channel (3)"),
    (["--std", "0"], "std must be > 0"),
    (["--resize", "sideways"], "resize must be stretch, crop or a shorter-side size"),
    (["--calib", "nowhere/"], "--calib nowhere/: not a built-in dataset"),
])
def test_options_that_do_not_apply_or_do_not_fit_are_one_line(detector, tmp_path, capsys, flags, words):
    code = main(["convert", str(detector), "--input-shape", "1,3,32,32", *flags, "--out", str(tmp_path / "o")]
                if "--input-shape" not in flags else ["convert", str(detector), *flags, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o").exists()


def test_preprocessing_flags_reach_preprocess_json_and_calibration(detector, tmp_path):
    r = edgenet.convert(str(detector), input_shape=(1, 3, 32, 32), mean=[0], std=[1], channel_order="bgr",
                        resize=40, out=tmp_path / "o", **FAST)
    pre = json.loads((tmp_path / "o" / "preprocess.json").read_text())
    assert pre["mean"] == [0, 0, 0] and pre["std"] == [1, 1, 1] and pre["channel_order"] == "BGR"
    assert pre["resize"] == 40
    # inputs in 0..1: the int8 input's quantization covers [0, 1], not [-1, 1]
    scale, zero_point = TFLiteModel(r.int8_path).input["quantization"]
    assert zero_point == -128 and abs(scale * 255 - 1.0) < 0.05
    # the same preprocessing, taken from the file
    r2 = edgenet.convert(str(detector), input_shape=(1, 3, 32, 32), preprocess=tmp_path / "o" / "preprocess.json",
                         out=tmp_path / "p", **FAST)
    assert json.loads((tmp_path / "p" / "preprocess.json").read_text()) == pre
    assert (tmp_path / "o" / "model_int8.tflite").read_bytes() == (tmp_path / "p" / "model_int8.tflite").read_bytes()
    assert r2.report.validation.float_verdict["passed"]


def test_python_api_argument_errors_name_the_argument(tmp_path):
    with pytest.raises(UsageError, match="unknown argument 'calib_sample' \\(did you mean 'calib_samples'\\?\\)"):
        edgenet.convert("mobilenet_v1", calib_sample=3, out=tmp_path / "o")
    with pytest.raises(UsageError, match="precisions must be one of"):
        edgenet.convert("mobilenet_v1", precisions=("int4",), out=tmp_path / "o")
    with pytest.raises(UsageError, match="alpha must be a number"):
        edgenet.convert("mobilenet_v1", alpha="wide", out=tmp_path / "o")
    with pytest.raises(UsageError, match="model must be a zoo name, a path or a torch.nn.Module"):
        edgenet.convert(42, out=tmp_path / "o")


def test_nn_module_converts_through_the_python_api(tmp_path):
    torch.manual_seed(0)
    r = edgenet.convert(_Detector(), input_shape=(1, 3, 32, 32), out=tmp_path / "o", **FAST)
    assert r.report.model["name"] == "_Detector" and r.report.validation.float_verdict["passed"]


# -- the float verdict -------------------------------------------------------------------------------
@pytest.fixture
def broken_relu(monkeypatch):
    """Fault injection: the converter's Relu handler scales its result by 1.5, as a converter bug would.
    (TensorFlow runs in this process in the tests, so the patched registry is the one used.)"""
    from edgenet.converters.onnx_to_tf import registry

    original = registry._REGISTRY["Relu"]

    def wrong(ctx):
        (value,) = original.convert(ctx)
        return [type(value)(value.tensor * 1.5, value.perm)]

    monkeypatch.setitem(registry._REGISTRY, "Relu", registry.OpHandler("Relu", wrong, original.check))


def test_float_mismatch_fails_naming_the_first_diverging_node(detector, tmp_path, broken_relu, capsys):
    code = main(["convert", str(detector), "--input-shape", "1,3,32,32", "--float", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not (tmp_path / "o").exists()
    assert len([ln for ln in err if ln.startswith("edgenet:")]) == 1
    line = err[-1]
    assert "differs from ONNX: output 'y' relative error" in line and "> tolerance 0.001" in line
    assert "first diverging ONNX node: '/body/body.1/Relu' (Relu" in line and "--allow-mismatch" in line

    r = edgenet.convert(str(detector), input_shape=(1, 3, 32, 32), int8=False, allow_mismatch=True,
                        out=tmp_path / "p", **FAST)
    verdict = r.report.validation.float_verdict
    assert not verdict["passed"] and verdict["first_divergence"]["op"] == "Relu"
    saved = json.loads((tmp_path / "p" / "report.json").read_text())["validation"]["float_verdict"]
    assert saved["passed"] is False and saved["worst_output"] == "y"
    assert "**FAIL**" in (tmp_path / "p" / "report.md").read_text()


def test_nan_weights_are_a_failure_not_a_number(tmp_path):
    path = _mlp(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "w1"))
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="weight 'w1' holds NaN or infinity \\(1 of 320 values\\)"):
        edgenet.convert(str(path), int8=False, out=tmp_path / "o", **FAST)


def test_unknown_input_shape_name_in_several_inputs(tmp_path):
    torch.manual_seed(0)
    path = _export(_ImageAndMeta(), (torch.randn(1, 3, 16, 16), torch.randn(1, 5)), tmp_path / "two.onnx",
                   ["image", "meta"])
    with pytest.raises(UsageError, match="has 2 inputs .* name each one"):
        edgenet.convert(str(path), input_shape=(1, 3, 16, 16), out=tmp_path / "o")
    with pytest.raises(ModelError):
        edgenet.convert(str(tmp_path / "missing.onnx"), out=tmp_path / "o")


def test_concurrent_python_api_calls_both_succeed(tmp_path):
    """Two threads converting at once: each gets its own complete output (one at a time inside)."""
    import threading

    results, errors = {}, []

    def one(name):
        try:
            results[name] = edgenet.convert("mobilenet_v1", alpha=0.25, resolution=32, num_classes=2, int8=False,
                                            calib_samples=4, eval_samples=4, out=tmp_path / name)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and set(results) == {"a", "b"}
    assert (tmp_path / "a" / "model_float.tflite").read_bytes() == (tmp_path / "b" / "model_float.tflite").read_bytes()


def _dilated_same_conv(path):
    """A dilated Conv with auto_pad=SAME_LOWER: valid ONNX that onnxruntime refuses to run."""
    rng = np.random.default_rng(1)
    w = onnx.numpy_helper.from_array(rng.normal(0, 0.3, (6, 2, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2, strides=[1, 2], dilations=[1, 3],
                            auto_pad="SAME_LOWER")
    graph = helper.make_graph([node], "dilated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 13, 17])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 13, 9])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_model_onnxruntime_cannot_run_is_validated_against_the_spec(tmp_path):
    r = edgenet.convert(str(_dilated_same_conv(tmp_path / "d.onnx")), int8=False, out=tmp_path / "o", **FAST)
    assert r.report.validation.float_verdict["passed"]
    assert any("onnxruntime cannot run" in n and "reference implementation" in n for n in r.report.notes)


def test_a_model_nothing_can_run_is_one_model_error(tmp_path, monkeypatch):
    import onnx.reference

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("no kernel")
    monkeypatch.setattr(onnx.reference.ReferenceEvaluator, "run", refuse)
    with pytest.raises(ModelError, match="cannot be run to validate the conversion: onnxruntime: Dilation not supported"):
        edgenet.convert(str(_dilated_same_conv(tmp_path / "d.onnx")), int8=False, out=tmp_path / "o", **FAST)
    assert not (tmp_path / "o").exists()


def test_normalize_in_model_computes_the_same_function_of_the_pixels(tmp_path):
    """The ONNX pass alone: (x - mean) / std inside the graph, checked in onnxruntime against the
    original model fed normalized pixels."""
    import onnxruntime as ort

    from edgenet.converters.normalize_input import fold_normalization
    from edgenet.data.preprocess import Preprocess

    rng = np.random.default_rng(2)
    w = onnx.numpy_helper.from_array(rng.normal(0, 0.3, (5, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["img", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 9, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 9, 7])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    pre = Preprocess(9, 7, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    inside, fed = fold_normalization(model, "img", pre)
    assert fed.mean == (0.0, 0.0, 0.0) and fed.std == (1.0, 1.0, 1.0) and fed.height == 9
    assert [i.name for i in inside.graph.input] == ["img"]
    pixels = rng.uniform(0, 1, (1, 3, 9, 7)).astype(np.float32)
    normalized = (pixels - np.array(pre.mean, np.float32)[:, None, None]) / np.array(pre.std, np.float32)[:, None, None]
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"img": normalized})[0]
    got = ort.InferenceSession(inside.SerializeToString()).run(None, {"img": pixels})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_normalize_in_model_needs_an_image_and_says_when_there_is_nothing_to_move(tmp_path, detector):
    with pytest.raises(UsageError, match="--normalize-in-model applies to a model with one image input"):
        edgenet.convert(str(_mlp(tmp_path / "mlp.onnx")), int8=False, normalize_in_model=True,
                        out=tmp_path / "o", **FAST)
    r = edgenet.convert(str(detector), int8=False, normalize_in_model=True, mean=0, std=1,
                        input_shape=(1, 3, 64, 64), out=tmp_path / "p", **FAST)
    assert any("nothing moved" in n for n in r.report.notes)


def test_int8_model_with_an_argmax_output(tmp_path):
    """A segmentation map as indices (ArgMax, int64): int8 converts (the per-layer report used to
    crash on the index tensor) and is judged by how many indices match float."""
    rng = np.random.default_rng(4)
    w = onnx.numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"], pads=[1, 1, 1, 1]),
             helper.make_node("ArgMax", ["logits"], ["mask"], axis=1, keepdims=1)]
    graph = helper.make_graph(nodes, "seg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 1, 16, 16])], [w])
    path = tmp_path / "seg.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    r = edgenet.convert(str(path), int8=True, mean=0, std=1, out=tmp_path / "o", **FAST)
    out = r.report.validation.quantized[0]["outputs"][0]
    assert out["index_agreement"] > 0.9 and out["sqnr_centered_db"] is None and out["passed"]
    assert "index agreement" in (tmp_path / "o" / "report.md").read_text()


def test_all_zero_examples_cannot_judge_the_int8_model(tmp_path, capsys):
    path = _mlp(tmp_path / "mlp.onnx")
    np.save(tmp_path / "zeros.npy", np.zeros((60, 20), np.float32))
    assert main(["convert", str(path), "--int8", "--calib", str(tmp_path / "zeros.npy"), "--out", str(tmp_path / "o"),
                 "--calib-samples", "48", "--eval-samples", "8"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("int8 vs float"))
    assert "verdict not judged" in line and "does not vary" in line and "verdict pass" not in line
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["validation"]["quantized"][0]["status"] == "not judged"


def test_a_model_over_a_microcontroller_budget_is_advised_what_it_can_do(tmp_path, capsys):
    """An .onnx model cannot be resized with --alpha/--resolution/--fit: the hint says what can be done."""
    torch.manual_seed(0)
    big = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1))
    path = _export(big, (torch.randn(1, 3, 128, 128),), tmp_path / "big.onnx", ["x"])
    assert main(["convert", str(path), "--target", "cortex-m", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "the model cannot fit" in err and "export a smaller model" in err and "resize zoo models only" in err
    assert "or --fit)" not in err
    assert main(["convert", "mobilenet_v1", "--resolution", "224", "--target", "cortex-m",
                 "--out", str(tmp_path / "p")]) == 1
    assert "a lower --alpha or --resolution, or --fit" in capsys.readouterr().err


def test_all_zero_data_through_a_model_without_biases_is_not_judged_not_a_runtime_error(tmp_path, capsys):
    """Every activation exactly zero on the calibration data: each gets a small range instead of a zero
    scale (which XNNPACK refuses), and the verdict says the data cannot judge the model."""
    class NoBias(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, 2, 1, bias=False), torch.nn.Linear(8, 3, bias=False)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    path = _export(NoBias(), (torch.randn(1, 3, 16, 16),), tmp_path / "nb.onnx", ["x"])
    np.save(tmp_path / "zeros.npy", np.zeros((24, 3, 16, 16), np.float32))
    assert main(["convert", str(path), "--int8", "--calib", str(tmp_path / "zeros.npy"), "--out", str(tmp_path / "o"),
                 "--calib-samples", "16", "--eval-samples", "8"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("int8 vs float"))
    assert "verdict not judged" in line and "does not vary" in line


def test_a_zoo_model_onnx_with_untrained_weights_stays_not_judged(tmp_path):
    """model.onnx of a seeded random zoo model says so in its metadata: converting that file again
    measures the int8 model but does not judge (or repair) it; a trained one's file carries no mark."""
    first = edgenet.convert("mobilenet_v1", alpha=0.25, resolution=32, num_classes=4, out=tmp_path / "zoo", **FAST)
    model = onnx.load(str(tmp_path / "zoo" / "model.onnx"))
    assert {p.key: p.value for p in model.metadata_props}["edgenet.weights"].startswith("untrained")
    again = edgenet.convert(str(tmp_path / "zoo" / "model.onnx"), out=tmp_path / "again", **FAST)
    assert again.report.model["trained"] is False
    assert any("untrained" in n and "model.onnx" in n for n in again.report.notes)
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    plain = edgenet.convert(str(tmp_path / "plain.onnx"), int8=False, out=tmp_path / "plain", **FAST)
    assert plain.report.model["trained"] is True


def test_an_activation_nan_on_every_calibration_example_is_named(tmp_path, capsys):
    """sqrt(-|x| - 1) is NaN: one line naming the activation, not "range [inf, -inf]"."""
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["n"]),
             helper.make_node("Sub", ["n", "one"], ["m"]), helper.make_node("Sqrt", ["m"], ["s"]),
             helper.make_node("Conv", ["s", "w"], ["y"])]
    graph = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
                              [onnx.numpy_helper.from_array(np.ones(1, np.float32), "one"),
                               onnx.numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "nan.onnx"))
    assert main(["convert", str(tmp_path / "nan.onnx"), "--int8", "--calib-samples", "8", "--eval-samples", "4",
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds NaN on the calibration data" in err and "inf" not in err


def test_a_wrongly_declared_output_shape_is_the_files_not_the_conversions(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 7, 7])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bad.onnx"))
    assert main(["convert", str(tmp_path / "bad.onnx"), "--float", "--eval-samples", "4",
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "declares output 'y' as (1, 4, 7, 7)" in err and "computes (1, 4, 8, 8)" in err
