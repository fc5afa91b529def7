"""Reading .tflite graphs without TensorFlow, and the embeddable C array / op resolver."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import _tiny_tflite as tiny
from edgenet.data.preprocess import Preprocess
from edgenet.errors import ModelError, UsageError
from edgenet.targets.c_array import (ArenaEstimate, arena_size_constant, c_name_from, camel, check_c_name, model_data_sources,
                             op_resolver_source, write_model_data)
from edgenet.targets.tflite_graph import read_tflite

MAIN_CC = r"""
#include <cstdint>
#include <cstdio>
#include <vector>
#include "model_model_data.h"

int main(int argc, char** argv) {
  FILE* f = std::fopen(argv[1], "rb");
  if (!f) return 2;
  std::vector<unsigned char> bytes;
  int c;
  while ((c = std::fgetc(f)) != EOF) bytes.push_back(static_cast<unsigned char>(c));
  std::fclose(f);
  if (bytes.size() != g_model_model_data_len) { std::printf("length %u != %zu\n", g_model_model_data_len, bytes.size()); return 3; }
  for (unsigned int i = 0; i < g_model_model_data_len; ++i)
    if (bytes[i] != g_model_model_data[i]) { std::printf("byte %u differs\n", i); return 4; }
  if (reinterpret_cast<std::uintptr_t>(g_model_model_data) % 16 != 0) { std::printf("not 16-byte aligned\n"); return 5; }
  std::printf("ok %u %u\n", g_model_model_data_len, kModelTensorArenaSize);
  return 0;
}
"""


def test_reads_ops_tensors_and_quantization_of_a_tflite_model():
    g = read_tflite(tiny.mobilenet_like())
    assert g.num_subgraphs == 1
    assert g.op_names() == ["CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    assert g.op_counts()["CONV_2D"] == 2
    (inp,), (out,) = g.input_tensors, g.output_tensors
    assert inp.shape == (1, 32, 32, 3) and inp.dtype == "int8" and len(inp.scales) == 1
    assert out.shape == (1, 10) and out.dtype == "int8"
    conv = g.operators[0]
    assert conv.options["stride_h"] == 2 and conv.options["dilation_h"] == conv.options["dilation_w"] == 1
    mean = g.operators[3]
    assert mean.name == "MEAN" and list(g.constants[mean.inputs[1]]) == [1, 2]  # axes decoded from the buffer


def test_reader_rejects_files_that_are_not_tflite(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelError, match="not a .tflite model"):
        read_tflite(bad)
    with pytest.raises(ModelError, match="no such model file"):
        read_tflite(tmp_path / "missing.tflite")


def test_c_array_text_matches_bytes_and_alignment():
    model = tiny.mobilenet_like()
    data = model.read_bytes()
    source, header = model_data_sources(data, "m.tflite", arena=ArenaEstimate(10_000))
    assert "alignas(16) const unsigned char g_model_model_data[] = {" in source
    assert f"const unsigned int g_model_model_data_len = {len(data)};" in source
    body = source.split("{", 1)[1].split("}", 1)[0]
    values = bytes(int(tok, 16) for tok in body.replace(",", " ").split())
    assert values == data
    assert "extern const unsigned char g_model_model_data[];" in header
    # 10,000 + 10% + 2 KiB = 13,048 -> 13 KiB
    assert "kModelTensorArenaSize = 13312;" in header and arena_size_constant(10_000) == 13_312


def test_arena_margin_is_a_percentage_plus_a_fixed_amount():
    for measured in (1, 1000, 100_000, 1_738_640):
        size = ArenaEstimate(measured).size
        assert size >= measured * 1.10 + 2048 and size % 1024 == 0 and size - (measured * 1.10 + 2048) < 1024
    text = ArenaEstimate(5000, "vela").comment()
    assert "vela" in text and "5,000 + 10% + 2,048 bytes" in text and "arena_used_bytes()" in text


def test_header_carries_io_quantization_shape_normalization_and_labels():
    model = tiny.mobilenet_like()
    graph = read_tflite(model)
    inp, out = graph.input_tensors[0], graph.output_tensors[0]
    pre = Preprocess(32, 32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    labels = [f"class {i}" for i in range(9)] + ['say "hi"?']
    _, h = model_data_sources(model.read_bytes(), "m.tflite", c_name="kws_v2", preprocess=pre, labels=labels)
    assert f"constexpr float kKwsV2InputScale = {inp.scales[0]:.9g}f;" in h
    assert f"constexpr int kKwsV2InputZeroPoint = {inp.zero_points[0]};" in h
    assert f"constexpr int kKwsV2OutputZeroPoint = {out.zero_points[0]};" in h
    assert "constexpr int kKwsV2InputShape[kKwsV2InputDims] = {1, 32, 32, 3};" in h
    assert "constexpr float kKwsV2Mean[kKwsV2NormChannels] = {0.485f, 0.456f, 0.406f};" in h
    assert "constexpr int kKwsV2LabelCount = 10;" in h and "kKwsV2Labels[kKwsV2LabelCount];" in h
    assert "inline signed char KwsV2QuantizePixel(unsigned char pixel, int c)" in h
    source, _ = model_data_sources(model.read_bytes(), "m.tflite", c_name="kws_v2", labels=labels)
    assert r'"say \042hi\042\077",' in source


@pytest.mark.parametrize("bad", ["2fast", "a b", "x__y", "_x", "x_", "", "näme", "a" * 49])
def test_invalid_c_names_are_refused_in_one_line(bad):
    with pytest.raises(UsageError) as info:
        check_c_name(bad)
    assert "\n" not in str(info.value) and "--c-name" in str(info.value)


def test_a_long_c_name_is_refused_before_any_slow_stage(tmp_path):
    import edgenet

    events = []
    with pytest.raises(UsageError, match="--c-name is 300 characters; at most 48"):
        edgenet.convert("mobilenet_v1", target="cortex-m", c_name="a" * 300, out=tmp_path / "o",
                        progress=lambda *e: events.append(e))
    assert events == [] and not (tmp_path / "o").exists()        # no stage started


def test_default_c_name_comes_from_the_model_name():
    assert c_name_from("mobilenet_v1") == "mobilenet_v1" and c_name_from("My-Net 2.onnx") == "my_net_2_onnx"
    assert c_name_from("3d-net") == "m_3d_net" and c_name_from("---") == "model"
    for name in ("mobilenet_v1", "My-Net 2.onnx", "3d-net", "---"):
        check_c_name(c_name_from(name))
    assert camel("person_detect") == "PersonDetect" and camel("mobilenet_v1") == "MobilenetV1"


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_c_array_compiles_and_equals_the_tflite(tmp_path):
    model = tiny.mobilenet_like()
    cc, h = write_model_data(model, tmp_path, arena=ArenaEstimate(12_345))
    assert {cc.name, h.name} == {"model_model_data.cc", "model_model_data.h"}
    (tmp_path / "main.cc").write_text(MAIN_CC)
    exe = tmp_path / "check_model"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", str(cc), "-o", str(tmp_path / "model_data.o")],
                   check=True, capture_output=True)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-I", str(tmp_path), str(tmp_path / "main.cc"),
                    str(tmp_path / "model_data.o"), "-o", str(exe)], check=True, capture_output=True)
    run = subprocess.run([str(exe), str(model)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    assert run.stdout.split() == ["ok", str(model.stat().st_size), str(ArenaEstimate(12_345).size)]


def test_op_resolver_registers_exactly_the_models_ops():
    text = op_resolver_source(read_tflite(tiny.mobilenet_like()), "model_int8.tflite")
    adds = [ln.split("resolver.")[1].split("(")[0] for ln in text.splitlines() if "resolver.Add" in ln and "if" in ln]
    assert adds == ["AddConv2D", "AddDepthwiseConv2D", "AddMean", "AddFullyConnected", "AddSoftmax"]
    assert "constexpr int kModelOpCount = 5;" in text
    assert "tflite::MicroMutableOpResolver<kModelOpCount>" in text and "TODO" not in text


TWO_MODELS_CC = r"""
#include <cstdio>
#include "kws_model_data.h"
#include "vww_model_data.h"

int main() {
  std::printf("kws %u %u %s %d %d\n", g_kws_model_data_len, kKwsTensorArenaSize, kKwsLabels[kKwsLabelCount - 1],
              kKwsInputHeight, static_cast<int>(KwsQuantizePixel(200, 0)));
  std::printf("vww %u %u %s %d %d\n", g_vww_model_data_len, kVwwTensorArenaSize, kVwwLabels[0],
              kVwwInputHeight, static_cast<int>(VwwQuantizePixel(200, 0)));
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_two_models_with_different_prefixes_link_into_one_program(tmp_path):
    from edgenet.targets.metadata import add_metadata

    pre = Preprocess(32, 32)                                   # mean = std = 0.5
    kws = add_metadata(tiny.mobilenet_like().read_bytes(), pre, [f"word{i}" for i in range(10)], name="kws")
    vww = tiny.mobilenet_like_uint8_io().read_bytes()
    (tmp_path / "kws.tflite").write_bytes(kws)
    (tmp_path / "vww.tflite").write_bytes(vww)
    objects = []
    for name, labels, arena in (("kws", [f"word{i}" for i in range(10)], 20_000), ("vww", ["no", "person"] + ["x"] * 8,
                                                                                   30_000)):
        cc, _ = write_model_data(tmp_path / f"{name}.tflite", tmp_path, c_name=name, arena=ArenaEstimate(arena),
                                 preprocess=pre, labels=labels)
        objects.append(tmp_path / f"{name}.o")
        subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", str(cc), "-o", str(objects[-1])],
                       check=True, capture_output=True)
    (tmp_path / "main.cc").write_text(TWO_MODELS_CC)
    exe = tmp_path / "two_models"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path), str(tmp_path / "main.cc"),
                    *map(str, objects), "-o", str(exe)], check=True, capture_output=True)
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    kws_in, vww_in = read_tflite(kws).input_tensors[0], read_tflite(vww).input_tensors[0]

    def expected_q(t) -> int:                       # the pixel 200 through normalization and quantization
        return int(np.clip(np.round((200 / 255 - 0.5) / 0.5 / t.scales[0] + t.zero_points[0]), -128 if t.dtype ==
                           "int8" else 0, 127 if t.dtype == "int8" else 255))

    assert lines[0].split() == ["kws", str(len(kws)), str(ArenaEstimate(20_000).size), "word9", "32",
                                str(expected_q(kws_in))]
    assert lines[1].split() == ["vww", str(len(vww)), str(ArenaEstimate(30_000).size), "no", "32",
                                str(expected_q(vww_in))]
