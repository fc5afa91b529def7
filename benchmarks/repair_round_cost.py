"""What one mixed-precision repair round's quantization costs: a float .tflite calibrated once, then
quantized again from the same ranges with a few op assignments, as the repair's rounds do
(:func:`edgenet.converters.quantize.requantize` with ``trial=True``; its models inlined afterwards, outside
the timing, to check they are the written bytes). Prints wall and CPU seconds per round and a hash of each
model: the same hashes before and after a change to the round's cost mean the same models.

The assignments, over the float model's ops in execution order (converters.repair.graph.ops): 50 ops to
float, 20 ops to int16, the last 5 ops to float with the first output float32 (the head), and 1,500 ops to
float (a segment of an unrolled LSTM; one regex per op made this one take minutes).

Measured on PP-OCRv2's recognizer (CNN + BiLSTM unrolled into 5,467 ops, 1x32x320x3), 2 shared cores,
CPU seconds a round: before 3.3-4.1 / 3.3-3.4 / 3.5-3.6 / 376 s wall (50 / 20 / head / 1,500 ops);
after 1.1 / 1.0-1.1 / 1.7-1.8 / 1.1, the same models. The int8 stage: 20.3 -> 8.1 s CPU, the same model.

    python benchmarks/repair_round_cost.py MODEL_FLOAT.tflite CALIB.npz [--samples 128] [--repeat 2]

CALIB.npz: key ``x``, NCHW float32 already preprocessed (transposed to NHWC here).
"""
from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    from edgenet.config import OpPrecision, Precision
    from edgenet.converters.quant_io import inline_buffers
    from edgenet.converters.quantize import float_ops_of_types, quantize_calibrated, requantize
    from edgenet.converters.repair.graph import ops

    float_model = open(args.model, "rb").read()
    x = np.load(args.calib)["x"][: args.samples].transpose(0, 2, 3, 1).copy()
    t0, c0 = time.perf_counter(), time.process_time()
    own = float_ops_of_types(float_model, ["HARD_SWISH"])      # rpi's int8_float_ops
    result = quantize_calibrated(float_model, [x], precision=Precision.INT8, io_type="int8", op_precision=own)
    print(f"int8 stage: {time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU "
          f"(calibration {result.calibration.seconds:.2f} s)")
    names = [op.name for op in ops(float_model)]
    assignments = {
        "50 float": ({n: OpPrecision.FLOAT for n in names[100:150]}, ()),
        "20 int16": ({n: OpPrecision.INT16 for n in names[400:420]}, ()),
        "head float": ({n: OpPrecision.FLOAT for n in names[-5:]}, (0,)),
        "1500 float": ({n: OpPrecision.FLOAT for n in names[2000:3500]}, ()),
    }
    base = dict(result.op_precision)
    for _ in range(args.repeat):
        for label, (assignment, outs) in assignments.items():
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                model = requantize(result, {**base, **assignment}, outs, trial=True)
            except TypeError:     # an edgenet before requantize(trial=...): its rounds inlined every model
                model = requantize(result, {**base, **assignment}, outs)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            digest = hashlib.sha256(inline_buffers(model)).hexdigest()[:16]
            print(f"{label:>10}: {wall:6.2f} s wall {cpu:6.2f} s CPU  {digest}")


if __name__ == "__main__":
    main()
