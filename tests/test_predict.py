"""`edgenet predict`: a converted folder's model on real image files, class names from labels.txt."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgenet.cli import main


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(3).random((41, 57, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_predict_prints_the_top_classes_by_name_as_the_float_model_computes_them(tiny_convert_out, image, capsys):
    from edgenet.data.preprocess import Preprocess
    from edgenet.inference import TFLiteModel

    assert main(["predict", str(tiny_convert_out / "model_float.tflite"), str(image), "--json", "--top", "3"]) == 0
    got = json.loads(capsys.readouterr().out)
    top = got["images"][0]["outputs"][0]["top"]
    # independently: the same preprocessing and model, by hand
    pre = Preprocess.load(tiny_convert_out / "preprocess.json")
    with Image.open(image) as img:
        y = TFLiteModel(tiny_convert_out / "model_float.tflite").predict(pre(img)[None])[0]
    assert [t["index"] for t in top] == list(np.argsort(-y)[:3])
    assert top[0]["label"] == f"class_{top[0]['index']}" and abs(top[0]["score"] - float(y.max())) < 1e-5


def test_predict_on_a_folder_uses_the_int8_model_and_names_classes(tiny_convert_out, image, capsys):
    assert main(["predict", str(tiny_convert_out), str(image)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("model_int8.tflite (int8 input)")
    assert len([line for line in out if "class_" in line]) == 5


@pytest.mark.parametrize("args, said", [
    (["predict"], "Missing argument"),
    (["predict", "{out}"], "give at least one IMAGE"),
    (["predict", "{out}", "{text}"], "not an image Pillow can decode"),
    (["predict", "{out}", "{image}", "--top", "0"], "--top 0: at least 1"),
    (["predict", "{out}/model.onnx", "{image}"], "no such file"),
])
def test_predict_bad_input_is_one_line(tiny_convert_out, image, capsys, args, said):
    text = image.parent / "notes.jpg"
    text.write_text("not pixels")
    argv = [a.format(out=tiny_convert_out, image=image, text=text) for a in args]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err


def test_scores_kind_reads_softmax_sigmoid_log_softmax_and_logits():
    import numpy as np

    from edgenet.predict import scores_kind

    z = np.array([2.0, -1.0, 0.5])
    soft = np.exp(z) / np.exp(z).sum()
    assert scores_kind(soft) == "probabilities"
    assert scores_kind(1 / (1 + np.exp(-z))) == "independent probabilities"
    assert scores_kind(np.log(soft)) == "log-probabilities"
    assert scores_kind(z) == "logits"


@pytest.mark.parametrize("last, kind", [(None, "logits"), ("Sigmoid", "independent probabilities")])
def test_what_the_scores_are_comes_from_the_op_that_computes_them(tmp_path, image, last, kind):
    """Small logits all in [0, 1] read as sigmoids by their values; the FULLY_CONNECTED that computes
    them says logits (int8 and float files alike), a LOGISTIC says independent probabilities."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    import edgenet
    from edgenet.predict import predict

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(0, 1e-4, (192, 5)).astype(np.float32), "w"),
             numpy_helper.from_array(np.full(5, 0.2, np.float32), "b")]
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["g" if last else "y"])]
    if last:
        nodes.append(helper.make_node(last, ["g"], ["y"]))
    graph = helper.make_graph(nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "fc.onnx"))
    edgenet.convert(str(tmp_path / "fc.onnx"), int8=False, out=tmp_path / "out", calib_samples=8, eval_samples=4)
    got = predict(tmp_path / "out" / "model_float.tflite", [image])
    assert got.images[0].outputs[0].scores_are == kind
