"""The native TFLite writer against TensorFlow's converter (issue #20): op counts, exactness, latency.

For MobileNetV1 and each zoo network, `edgenet convert NAME --target rpi --int8` runs twice in fresh
processes, with this tree's writer and with TensorFlow's converter; then, per model:

* op types and counts of model_float.tflite and model_int8.tflite, native vs TensorFlow-made;
* the float32 models against each other on the conversion's own evaluation set (max |diff|), and
  whether the native conversion fell back to TensorFlow (its report's notes say so);
* int8 latency (ai_edge_litert, 1 thread, XNNPACK): native and TF-made models invoked alternately,
  ``--rounds`` pairs of ``--runs`` invocations each, median per model (paired, interleaved: the
  shared machine's drift hits both alike);
* the conversion's wall time (whole command, fresh process) both ways.

    python benchmarks/native_writer.py --tf-tree DIR [--models mobilenet_v1,mixnet_s,...] [--rounds 7]
                                       [--runs 20] [--json]

TensorFlow left the ONNX path with issue #20, so the TensorFlow-made models come from an edgenet tree
from before (``--tf-tree``, e.g. ``git worktree add /tmp/edgenet-tf 9c1556b``), run with
``EDGENET_TFLITE_WRITER=tf`` (its switch) and that tree first on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ZOO = ("mobilenet_v1", "mixnet_s", "shufflenet_v2_x1_0", "squeezenet1_1", "xception_tiny")


TF_TREE: str | None = None   # --tf-tree: an edgenet source tree from before issue #20


def writer_env(writer: str) -> dict:
    """The environment of a conversion by ``writer``: "native" (this tree) or "tf" (``TF_TREE``)."""
    if writer == "native":
        return dict(os.environ)
    if not TF_TREE or not (Path(TF_TREE) / "converters" / "tf_worker.py").is_file():
        sys.exit("--tf-tree: give an edgenet source tree from before issue #20 (it has converters/tf_worker.py)")
    path = os.pathsep.join(p for p in (TF_TREE, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, EDGENET_TFLITE_WRITER="tf", PYTHONPATH=path)


def convert(name: str, out: Path, writer: str) -> float:
    env = writer_env(writer)
    cmd = [sys.executable, "-m", "edgenet", "convert", name, "--target", "rpi", "--int8", "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} ({writer}): {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def op_counts(path: Path) -> Counter:
    """Builtin operator names in the model's flatbuffer (its main subgraph)."""
    from ai_edge_litert import schema_py_generated as schema

    from edgenet.converters import _flatbuffer

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    obj = _flatbuffer.read(path.read_bytes())
    return Counter(names[_flatbuffer.builtin_code(obj, op)] for op in obj.subgraphs[0].operators)


def run_float(path: Path, x: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    key = next(iter(runner.get_input_details()))
    out = runner(**{key: x})
    return [out[k] for k in sorted(out)]


def latency(paths: dict[str, Path], rounds: int, runs: int, make=None) -> dict[str, float]:
    """Median ms per invoke of each model, invoked alternately (paired, interleaved); ``make(path)``
    gives an allocated interpreter (default: LiteRT, 1 thread, its default XNNPACK delegate)."""
    def default(path):
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        return it

    interps = {}
    for key, path in paths.items():
        it = (make or default)(path)
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
        interps[key] = it
    times = {k: [] for k in paths}
    for _ in range(rounds):
        for key, it in interps.items():
            t0 = time.perf_counter()
            for _ in range(runs):
                it.invoke()
            times[key].append((time.perf_counter() - t0) / runs * 1e3)
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tf-tree", help="an edgenet source tree from before issue #20 (makes the TF models)")
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="write the conversions to this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    global TF_TREE
    TF_TREE = args.tf_tree
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for name in args.models.split(","):
            outs = {w: Path(tmp) / f"{name}-{w}" for w in ("native", "tf")}
            walls = {w: round(convert(name, outs[w], w), 2) for w in outs}
            report = json.loads((outs["native"] / "report.json").read_text())
            fell_back = [n for n in report.get("notes", []) if "through TensorFlow" in str(n)]
            x = np.load(outs["native"] / "eval_set.npz")
            x = x[x.files[0]][:1].astype(np.float32)
            a, b = run_float(outs["native"] / "model_float.tflite", x), run_float(outs["tf"] / "model_float.tflite", x)
            diff = max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))
            row = {"model": name, "convert_wall_seconds": walls, "fell_back": fell_back,
                   "float_max_abs_diff_native_vs_tf": diff}
            for kind, file in (("float", "model_float.tflite"), ("int8", "model_int8.tflite")):
                counts = {w: op_counts(outs[w] / file) for w in outs}
                row[f"{kind}_ops"] = {w: dict(sorted(c.items())) for w, c in counts.items()}
                row[f"{kind}_op_total"] = {w: sum(c.values()) for w, c in counts.items()}
            row["int8_latency_ms"] = latency({w: outs[w] / "model_int8.tflite" for w in outs}, args.rounds, args.runs)
            results.append(row)
            if not args.json:
                print(f"{name}: float ops native {row['float_op_total']['native']} / TF {row['float_op_total']['tf']}, "
                      f"int8 ops {row['int8_op_total']['native']} / {row['int8_op_total']['tf']}; float models differ by "
                      f"{diff:.2e}; int8 latency native {row['int8_latency_ms']['native']} ms / TF "
                      f"{row['int8_latency_ms']['tf']} ms; convert {walls['native']} s / {walls['tf']} s"
                      + ("; FELL BACK: " + fell_back[0] if fell_back else ""))
                for kind in ("float", "int8"):
                    n, t = row[f"{kind}_ops"]["native"], row[f"{kind}_ops"]["tf"]
                    if n != t:
                        print(f"  {kind} ops differ: native {n}\n  {' ' * len(kind)}             TF     {t}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
