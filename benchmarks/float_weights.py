"""float16 and dynamic-range models: the LiteRT Quantizer's (default) against TensorFlow's converter's.

``edgenet convert NAME --target rpi --precision float32,float16,dynamic`` runs twice in fresh
processes, with this tree (float16 / dynamic come from the LiteRT Quantizer,
converters/float_weights.py) and with TensorFlow's converter (an edgenet tree from before issue #20,
``--tf-tree``: see benchmarks/native_writer.py); then, per precision:

* file size and op types / counts, both ways;
* each model against its own conversion's float32 model on the evaluation set: largest |diff| of
  the outputs and top-1 agreement;
* latency (ai_edge_litert, 1 thread): the two models invoked alternately, ``--rounds`` pairs of
  ``--runs`` invocations each, median per model (paired, interleaved), with LiteRT's default
  XNNPACK delegate and without any delegate (builtin kernels), and how many XNNPACK partitions the
  model becomes (1: XNNPACK runs every op; more: ops it does not take, such as hybrid
  DEPTHWISE_CONV_2D, run in LiteRT's own kernels between them).

    python benchmarks/float_weights.py --tf-tree DIR [--models mobilenet_v1] [--rounds 7] [--runs 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import native_writer   # benchmarks/ is the script's folder
from native_writer import op_counts, writer_env

PRECISIONS = {"float16": "model_float16.tflite", "dynamic": "model_dynamic.tflite"}


def convert(name: str, out: Path, writer: str) -> float:
    env = writer_env(writer)
    cmd = [sys.executable, "-m", "edgenet", "convert", name, "--target", "rpi", "--precision",
           "float32,float16,dynamic", "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} ({writer}): {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def _interpreter(path: Path, xnnpack: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    return it


def xnnpack_partitions(path: Path) -> int:
    """DELEGATE nodes LiteRT made of the model with its default XNNPACK delegate."""
    return sum(op["op_name"] == "DELEGATE" for op in _interpreter(path, True)._get_ops_details())


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """The first output on each sample of ``x`` (N, ...), one invoke per sample."""
    it = _interpreter(path, True)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for sample in x:
        it.set_tensor(inp["index"], sample[None].astype(np.float32))
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def latency(paths: dict[str, Path], rounds: int, runs: int, xnnpack: bool) -> dict[str, float]:
    """Median ms per invoke of each model, invoked alternately (paired, interleaved)."""
    from native_writer import latency as paired

    return paired(paths, rounds, runs, make=lambda path: _interpreter(path, xnnpack))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tf-tree", help="an edgenet source tree from before issue #20 (makes the TF models)")
    ap.add_argument("--models", default="mobilenet_v1")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--samples", type=int, default=32, help="evaluation-set samples for the agreement")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="write the conversions to this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    native_writer.TF_TREE = args.tf_tree
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for name in args.models.split(","):
            outs = {w: Path(tmp) / f"{name}-{w}" for w in ("native", "tf")}
            walls = {w: round(convert(name, outs[w], w), 2) for w in outs}
            data = np.load(outs["native"] / "eval_set.npz")
            x = data[data.files[0]][: args.samples].astype(np.float32)
            refs = {w: outputs(outs[w] / "model_float.tflite", x) for w in outs}
            for precision, file in PRECISIONS.items():
                row = {"model": name, "precision": precision, "convert_wall_seconds": walls}
                paths = {w: outs[w] / file for w in outs}
                row["bytes"] = {w: p.stat().st_size for w, p in paths.items()}
                row["float32_bytes"] = {w: (outs[w] / "model_float.tflite").stat().st_size for w in outs}
                row["ops"] = {w: dict(sorted(op_counts(p).items())) for w, p in paths.items()}
                row["vs_float32"] = {}
                for w, p in paths.items():
                    got = outputs(p, x)
                    row["vs_float32"][w] = {
                        "max_abs_diff": float(np.max(np.abs(got - refs[w]))),
                        "top1_agreement": float(np.mean(np.argmax(got.reshape(len(x), -1), 1)
                                                        == np.argmax(refs[w].reshape(len(x), -1), 1)))}
                row["latency_ms_xnnpack"] = latency(paths, args.rounds, args.runs, True)
                row["latency_ms_builtin"] = latency(paths, args.rounds, args.runs, False)
                row["xnnpack_partitions"] = {w: xnnpack_partitions(p) for w, p in paths.items()}
                results.append(row)
                if not args.json:
                    v = row["vs_float32"]
                    print(f"{name} {precision}: size quantizer {row['bytes']['native']:,} B / TF {row['bytes']['tf']:,} B "
                          f"(float32 {row['float32_bytes']['native']:,} / {row['float32_bytes']['tf']:,}); "
                          f"vs float32 max|diff| {v['native']['max_abs_diff']:.2e} / {v['tf']['max_abs_diff']:.2e}, "
                          f"top-1 {v['native']['top1_agreement']:.1%} / {v['tf']['top1_agreement']:.1%}")
                    print(f"  latency XNNPACK quantizer {row['latency_ms_xnnpack']['native']} ms / TF "
                          f"{row['latency_ms_xnnpack']['tf']} ms; builtin kernels {row['latency_ms_builtin']['native']} "
                          f"/ {row['latency_ms_builtin']['tf']} ms; XNNPACK partitions {row['xnnpack_partitions']['native']} / "
                          f"{row['xnnpack_partitions']['tf']}")
                    print(f"  ops quantizer {row['ops']['native']}\n      TF        {row['ops']['tf']}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
