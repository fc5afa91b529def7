"""Confirm targets/kernels.toml by running: one tiny model per op, quantized int16x8 (a16w8) by the
LiteRT Quantizer from edgenet's ranges, run in LiteRT and in the real TFLite Micro interpreter.

For each op it prints what the table says (litert / tflm int16 kernel) and what happened: the op's
precision in the quantized model (the quantizer leaves an op without a 16x8 recipe in float), whether
LiteRT runs it, whether TFLite Micro runs it. A row where the table and the run disagree is marked.

    python benchmarks/kernel_table_probe.py [--ops CONV_2D,HARD_SWISH,...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _models(tf):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (3, 3, 4, 4)).astype(np.float32)
    dw = rng.normal(0, 0.3, (3, 3, 4, 1)).astype(np.float32)
    fc = rng.normal(0, 0.3, (64, 8)).astype(np.float32)
    spec = [tf.TensorSpec([1, 4, 4, 4], tf.float32)]
    return {
        "CONV_2D": lambda x: tf.nn.conv2d(x, w, 1, "SAME"),
        "DEPTHWISE_CONV_2D": lambda x: tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME"),
        "FULLY_CONNECTED": lambda x: tf.matmul(tf.reshape(x, [1, 64]), fc),
        "ADD": lambda x: x + tf.nn.relu(x),
        "MUL": lambda x: x * tf.nn.relu(x),
        "MEAN": lambda x: tf.reduce_mean(x, axis=[1, 2]),
        "LOGISTIC": tf.math.sigmoid,
        "TANH": tf.math.tanh,
        "SOFTMAX": lambda x: tf.nn.softmax(tf.reshape(x, [1, 64])),
        "HARD_SWISH": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0,
        "RESIZE_BILINEAR": lambda x: tf.image.resize(x, [8, 8], "bilinear"),
        "RESIZE_NEAREST_NEIGHBOR": lambda x: tf.image.resize(x, [8, 8], "nearest"),
        "EXP": tf.math.exp,
        "MIRROR_PAD": lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT"),
        "RSQRT": lambda x: tf.math.rsqrt(tf.abs(x) + 1.0),
        "LEAKY_RELU": lambda x: tf.nn.leaky_relu(x, 0.1),
        "SUM": lambda x: tf.reduce_sum(x, axis=[1, 2]),
        "REDUCE_MAX": lambda x: tf.reduce_max(x, axis=[1, 2]),
        "SQUARED_DIFFERENCE": lambda x: tf.math.squared_difference(x, tf.nn.relu(x)),
        "LOG": lambda x: tf.math.log(tf.abs(x) + 1.0),
        "TRANSPOSE": lambda x: tf.transpose(x, [0, 3, 1, 2]),
        "CONCATENATION": lambda x: tf.concat([x, tf.nn.relu(x)], axis=3),
        "PAD": lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]),
        "GATHER": lambda x: tf.gather(x, [0, 2], axis=3),
        "BATCH_MATMUL": lambda x: tf.matmul(tf.reshape(x, [1, 16, 4]), tf.reshape(tf.nn.relu(x), [1, 4, 16])),
    }, spec


def probe(names: list[str]) -> list[dict]:
    import tensorflow as tf

    from edgenet.config import Precision
    from edgenet.converters.op_precision import op_precisions
    from edgenet.converters.quantize import quantize_calibrated
    from edgenet.converters.repair.kernels import runtime_kernels
    from edgenet.converters.tflite import with_signature
    from edgenet.inference import TFLiteModel
    from edgenet.targets.tflm import run_tflm

    makers, spec = _models(tf)
    litert, tflm = runtime_kernels("litert"), runtime_kernels("tflm")
    calib = np.random.default_rng(1).normal(0, 1, (32, 4, 4, 4)).astype(np.float32)
    rows = []
    for name in names:
        fn = tf.function(makers[name], input_signature=spec)
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        float_model = with_signature(bytes(conv.convert()))
        q = quantize_calibrated(float_model, [calib], precision=Precision.INT16X8).model
        precisions = {e.op: e.precision.value for e in op_precisions(q) if e.op == name}
        try:
            TFLiteModel(q).predict_all(calib[:2])
            lite = "runs"
        except Exception as exc:    # noqa: BLE001 (a probe: the failure is the finding)
            lite = f"fails: {str(exc).splitlines()[0][:60]}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.tflite"
            path.write_bytes(q)
            r = run_tflm(path, samples=1)
        micro = "runs" if r.ok else f"fails: {(r.error or '')[:60]}"
        int16 = precisions.get(name) == "int16x8"
        rows.append({"op": name, "quantized_as": precisions.get(name, "(fused away)"),
                     "table_litert": name in litert.int16, "table_tflm": name in tflm.int16,
                     "litert": lite, "tflm": micro,
                     "disagrees": int16 and ((name in litert.int16) != (lite == "runs")
                                             or (name in tflm.int16) != (micro == "runs"))})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="")
    args = ap.parse_args()
    import tensorflow as tf

    names = [n for n in args.ops.split(",") if n] or list(_models(tf)[0])
    rows = probe(names)
    print(f"{'op':<24} {'quantized as':<13} {'table litert/tflm':<18} {'LiteRT':<10} TFLite Micro")
    for r in rows:
        table = f"{'int16' if r['table_litert'] else '-'} / {'int16' if r['table_tflm'] else '-'}"
        print(f"{r['op']:<24} {r['quantized_as']:<13} {table:<18} {r['litert'][:10]:<10} {r['tflm']}"
              + ("   <-- table disagrees" if r["disagrees"] else ""))
    return 1 if any(r["disagrees"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
