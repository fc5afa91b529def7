"""Reading .tflite graphs without TensorFlow, and the embeddable C array / op resolver."""
from __future__ import annotations

import shutil
import subprocess

import pytest

import _tiny_tflite as tiny
from edgenet.errors import ModelError
from targets.c_array import arena_size_constant, model_data_sources, op_resolver_source, write_model_data
from targets.tflite_graph import read_tflite

MAIN_CC = r"""
#include <cstdint>
#include <cstdio>
#include <vector>
#include "model_data.h"

int main(int argc, char** argv) {
  FILE* f = std::fopen(argv[1], "rb");
  if (!f) return 2;
  std::vector<unsigned char> bytes;
  int c;
  while ((c = std::fgetc(f)) != EOF) bytes.push_back(static_cast<unsigned char>(c));
  std::fclose(f);
  if (bytes.size() != g_model_data_len) { std::printf("length %u != %zu\n", g_model_data_len, bytes.size()); return 3; }
  for (unsigned int i = 0; i < g_model_data_len; ++i)
    if (bytes[i] != g_model_data[i]) { std::printf("byte %u differs\n", i); return 4; }
  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) { std::printf("not 16-byte aligned\n"); return 5; }
  std::printf("ok %u %u\n", g_model_data_len, kTensorArenaSize);
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
    data = bytes(range(256)) * 3 + b"\x07"
    source, header = model_data_sources(data, "m.tflite", arena_bytes=10_000)
    assert "alignas(16) const unsigned char g_model_data[] = {" in source
    assert f"const unsigned int g_model_data_len = {len(data)};" in source
    body = source.split("{", 1)[1].split("}", 1)[0]
    values = bytes(int(tok, 16) for tok in body.replace(",", " ").split())
    assert values == data
    assert "extern const unsigned char g_model_data[];" in header
    assert "kTensorArenaSize = 10240;" in header and arena_size_constant(10_240) == 10_240


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_c_array_compiles_and_equals_the_tflite(tmp_path):
    model = tiny.mobilenet_like()
    cc, h = write_model_data(model, tmp_path, arena_bytes=12_345)
    assert {cc.name, h.name} == {"model_data.cc", "model_data.h"}
    (tmp_path / "main.cc").write_text(MAIN_CC)
    exe = tmp_path / "check_model"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", str(cc), "-o", str(tmp_path / "model_data.o")],
                   check=True, capture_output=True)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-I", str(tmp_path), str(tmp_path / "main.cc"),
                    str(tmp_path / "model_data.o"), "-o", str(exe)], check=True, capture_output=True)
    run = subprocess.run([str(exe), str(model)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    assert run.stdout.split() == ["ok", str(model.stat().st_size), "13312"]


def test_op_resolver_registers_exactly_the_models_ops():
    text = op_resolver_source(read_tflite(tiny.mobilenet_like()), "model_int8.tflite")
    adds = [ln.split("resolver.")[1].split("(")[0] for ln in text.splitlines() if "resolver.Add" in ln and "if" in ln]
    assert adds == ["AddConv2D", "AddDepthwiseConv2D", "AddMean", "AddFullyConnected", "AddSoftmax"]
    assert "constexpr int kModelOpCount = 5;" in text
    assert "tflite::MicroMutableOpResolver<kModelOpCount>" in text and "TODO" not in text
