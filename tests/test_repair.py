"""Mixed-precision repair (converters/repair): the op whose int8 quantization breaks the output is
the one promoted, within the target's kernel table and the search's budget, and the repaired model
runs in the target's runtime.

The model: MIRROR_PAD -> conv1 + ReLU -> conv2 -> conv3 -> mean. conv2's channel 0 carries values ``k``
times the others plus an offset of 5k; conv3 ignores that channel. One int8 scale over conv2's
output zeroes the small channels, which are all the output depends on: conv2's output tensor must
be carried in more than 8 bits (int16 holds k = 300, not k = 10,000), and the input-side ops (PAD,
conv1) are harmless.
"""
from __future__ import annotations


import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from edgenet.config import OpPrecision, Precision  # noqa: E402
from edgenet.converters.quantize import quantize_calibrated, requantize  # noqa: E402
from edgenet.converters.repair import Budget, Quantizer, Stop, candidates, repair  # noqa: E402
from edgenet.converters.repair.graph import ops  # noqa: E402
from edgenet.converters.repair.kernels import kernel_table, promotions, runtime_kernels  # noqa: E402
from edgenet.converters.repair.sensitivity import output_score  # noqa: E402
from edgenet.errors import TargetError  # noqa: E402
from edgenet.inference import TFLiteModel  # noqa: E402
from edgenet.quality import judge as quality_judge  # noqa: E402
from edgenet.verdicts import OutputKind  # noqa: E402
from edgenet.targets.profile import RepairStep, available_targets, load_target  # noqa: E402

LITERT_ORDER = ("int16", "float", "split")
INTEGER_ORDER = ("int16", "split")


def _float_model(k: float) -> bytes:
    from edgenet.converters.tflite import with_signature

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.4, (3, 3, 3, 8)).astype(np.float32)
    w2 = rng.normal(0, 0.4, (1, 1, 8, 8)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 8).astype(np.float32)
    w2[..., 0] *= k
    b2[0] = 5 * k
    w3 = rng.normal(0, 0.4, (1, 1, 8, 4)).astype(np.float32)
    w3[0, 0, 0, :] = 0.0

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def model(x):
        y = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")   # a PAD op of its own
        y = tf.nn.relu(tf.nn.conv2d(y, w1, 1, "VALID"))
        y = tf.nn.conv2d(y, w2, 1, "VALID") + b2
        y = tf.nn.conv2d(y, w3, 1, "VALID")
        return tf.reduce_mean(y, axis=[1, 2])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    return with_signature(bytes(conv.convert()))


class Case:
    """A float model, its int8 model, data, and the repair's callables over the real quantizer."""

    def __init__(self, k: float):
        rng = np.random.default_rng(1)
        self.float_model = _float_model(k)
        calib = rng.normal(0, 1, (64, 16, 16, 3)).astype(np.float32)
        self.x = rng.normal(0, 1, (32, 16, 16, 3)).astype(np.float32)
        self.result = quantize_calibrated(self.float_model, [calib], precision=Precision.INT8)
        self.int8 = self.result.model
        self.float_outs = TFLiteModel(self.float_model).predict_all(self.x)
        self.verdict = self.judge(self.int8)
        self.quantize = Quantizer(lambda a: requantize(self.result, dict(a)),
                                  frozenset({OpPrecision.INT16, OpPrecision.FLOAT}))
        self.names = {op.op + str(i): op.name for i, op in enumerate(ops(self.float_model))}

    def judge(self, model: bytes):
        outs = TFLiteModel(model).predict_all(self.x)
        # judged on SQNR (a mean over the map, not class scores: the kind is generic, not a classifier)
        return quality_judge("int8", ["y"], self.float_outs, outs, [False], kinds={"y": OutputKind.GENERIC})

    def score(self, model: bytes) -> float:
        return output_score(model, self.x[:8], [f[:8] for f in self.float_outs], [0])

    def repair(self, runtime: str, order, rounds: int = 64, runs=None):
        return repair(self.float_model, self.int8, self.verdict, self.x[:8], self.quantize, self.judge, self.score,
                      runtime, order, Budget(rounds), runs)

    def op(self, kind: str) -> str:
        """The output tensor of the first op of type ``kind`` (CONV_2D: conv1, the input side)."""
        return next(op.name for op in ops(self.float_model) if op.op == kind)

    def conv(self, k: int) -> str:
        return [op.name for op in ops(self.float_model) if op.op == "CONV_2D"][k]


@pytest.fixture(scope="module")
def mid():
    return Case(300.0)     # int16 holds it


@pytest.fixture(scope="module")
def huge():
    return Case(10000.0)   # float only


def test_the_op_that_breaks_the_output_is_promoted_not_input_side_ones(huge):
    assert not huge.verdict.passed
    ranked, _ = candidates(huge.float_model, huge.int8, [0], huge.x[:8], "litert", LITERT_ORDER,
                           huge.quantize.supports)
    first = next(c for c in ranked if not c.reason.startswith("produces"))
    assert first.name == huge.conv(1)                    # conv2, by its own error ...
    pad = next(c for c in ranked if c.name == huge.op("MIRROR_PAD"))
    assert pad.proxy_db > first.proxy_db + 20            # ... far ahead of the PAD (and conv1)
    r = huge.repair("litert", LITERT_ORDER)
    assert r.passed and r.stop is Stop.PASSED and r.verdict.passed
    named = {p.tensor: p for p in r.promoted}
    assert huge.conv(1) in named and named[huge.conv(1)].gain_db > 20
    assert huge.conv(0) not in named and huge.op("MIRROR_PAD") not in named
    # its reader reads it in the same precision, and nothing else is promoted
    assert set(named) == {huge.conv(1), huge.conv(2)}
    assert all(p.precision is OpPrecision.FLOAT for p in r.promoted)   # int16 cannot hold 1000x + 5000
    assert r.size_after != r.size_before and r.to_dict()["verdict_before"]["passed"] is False


def test_int16_first_where_the_runtime_has_the_kernel(mid):
    r = mid.repair("litert", LITERT_ORDER)
    assert r.passed and {p.precision for p in r.promoted} == {OpPrecision.INT16}
    assert {p.tensor for p in r.promoted} == {mid.conv(1), mid.conv(2)}
    d = r.to_dict()
    assert len(d["int16"]) == 2 and d["kept_float"] == [] and "2 to int16" in d["summary"]


def test_cortex_m_gets_int16_run_in_tflite_micro_and_never_float(mid, huge):
    from edgenet.converters.mixed_precision_stage import _runtime_check
    from edgenet.targets.tflm import run_tflm

    profile = load_target("cortex-m")
    assert profile.repair_order == (RepairStep.INT16, RepairStep.SPLIT)
    r = mid.repair("tflm", [s.value for s in profile.repair_order], runs=_runtime_check(profile))
    assert r.passed and all(p.precision is OpPrecision.INT16 for p in r.promoted)
    # checked in the real TFLite Micro interpreter (the search's own check ran it too)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.tflite").write_bytes(r.model)
        assert run_tflm(Path(tmp) / "m.tflite", samples=2).ok
    # the model int16 cannot hold: no float on a microcontroller, even if the order asked for it
    r = huge.repair("tflm", ("int16", "float", "split"))
    assert not r.passed and r.stop is Stop.EXHAUSTED and "still fails" in r.stop_detail
    assert r.promoted and all(p.precision is OpPrecision.INT16 for p in r.promoted)


def test_kernel_table_decides_what_an_op_may_get():
    tflm, litert, edgetpu = (runtime_kernels(r) for r in ("tflm", "litert", "edgetpu"))
    both = {OpPrecision.INT16, OpPrecision.FLOAT}
    assert promotions(["CONV_2D"], tflm, LITERT_ORDER, both)[0] == (OpPrecision.INT16,)
    options, why = promotions(["CONV_2D", "HARD_SWISH"], tflm, LITERT_ORDER, both)
    assert options == () and "no int16 kernel for HARD_SWISH" in why and "runs no float" in why
    assert promotions(["HARD_SWISH"], litert, LITERT_ORDER, both)[0] == (OpPrecision.FLOAT,)   # no a16w8 recipe
    assert promotions(["CONV_2D"], litert, ("float", "int16"), both)[0] == (OpPrecision.FLOAT, OpPrecision.INT16)
    assert promotions(["CONV_2D"], edgetpu, LITERT_ORDER, both)[0] == ()
    assert promotions(["CONV_2D"], litert, LITERT_ORDER, {OpPrecision.FLOAT})[0] == (OpPrecision.FLOAT,)
    table = kernel_table()
    assert set(table) == {"litert", "tflm", "ethos-u", "edgetpu"}
    # what benchmarks/kernel_table_probe.py saw: int16x8 RESIZE_BILINEAR and MIRROR_PAD run in LiteRT, not in TFLM
    for op in ("RESIZE_BILINEAR", "MIRROR_PAD"):
        assert op in table["litert"].int16 and op not in table["tflm"].int16
    assert not table["tflm"].float and not table["ethos-u"].float and table["litert"].float


def test_no_promotable_op_is_said_not_searched(mid):
    r = mid.repair("edgetpu", LITERT_ORDER)
    assert not r.passed and r.stop is Stop.NO_CANDIDATES and r.rounds == 0
    assert "edgetpu has no int16 kernel" in r.stop_detail and "no passing model" in r.summary()


def test_the_search_stops_within_its_budget_and_says_so(huge):
    r = huge.repair("litert", LITERT_ORDER, rounds=0)
    assert not r.passed and r.stop is Stop.BUDGET and r.rounds == 0
    assert "budget spent: all 0 round(s) used" in r.stop_detail and "0 of 0 round(s)" in r.summary()
    # a budget of a few rounds: never more rounds than that, whatever it found
    t = huge.repair("litert", LITERT_ORDER, rounds=3)
    assert t.rounds <= 3 and t.stop in (Stop.BUDGET, Stop.PASSED)


def test_the_search_is_counted_not_timed_so_reruns_give_the_same_model(huge):
    import time

    first = huge.repair("litert", LITERT_ORDER, rounds=6)
    slow = Quantizer(lambda a: (time.sleep(0.05), requantize(huge.result, dict(a)))[1], huge.quantize.supports)
    again = repair(huge.float_model, huge.int8, huge.verdict, huge.x[:8], slow, huge.judge, huge.score,
                   "litert", LITERT_ORDER, Budget(6))                 # the same search on a slower machine
    assert again.rounds == first.rounds and again.model == first.model
    assert [p.tensor for p in again.promoted] == [p.tensor for p in first.promoted]


def test_profiles_carry_the_repair_order():
    assert "kernels" not in available_targets()
    assert load_target("rpi").repair_order == (RepairStep.FLOAT, RepairStep.INT16, RepairStep.SPLIT)
    assert load_target("android").repair_order == load_target("rpi").repair_order   # XNNPACK: no int16 kernels
    assert load_target("coral").repair_order == (RepairStep.SPLIT,)
    assert load_target("ethos-u55").repair_rounds == 24


def test_a_profile_may_not_promote_to_float_on_an_integer_runtime(tmp_path):
    base = (tmp_path / "m.toml")
    text = ('name = "m"\ndescription = "d"\ndevice = "d"\nruntime = "tflm"\nprecisions = ["int8"]\n'
            'ram_bytes = 100000\nchecks = ["tflm"]\n')
    base.write_text(text + 'repair = ["float"]\n')
    with pytest.raises(TargetError, match="repair lists 'float'"):
        load_target(base)
    base.write_text(text + 'repair = ["int32"]\n')
    with pytest.raises(TargetError, match="repair"):
        load_target(base)
    for bad in ("-1", "2.5", "true"):
        base.write_text(text + f'repair_rounds = {bad}\n')
        with pytest.raises(TargetError, match="repair_rounds"):
            load_target(base)
    base.write_text(text + 'repair = ["split"]\nrepair_rounds = 2\n')
    p = load_target(base)
    assert p.repair_order == (RepairStep.SPLIT,) and p.repair_rounds == 2


@pytest.mark.slow


def _huge_range_onnx(tmp_path, width: int):
    """(path, output name) of the ONNX model of this module's docstring, ``width`` channels wide,
    exported by torch: PAD -> conv1 + ReLU -> conv2 (channel 0 300x, offset 1500) -> conv3 -> mean."""
    torch = pytest.importorskip("torch")
    import onnx
    from foreign_models import export

    class HugeRange(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pad = torch.nn.ZeroPad2d(1)
            self.conv1, self.conv2, self.conv3 = (torch.nn.Conv2d(3, width, 3), torch.nn.Conv2d(width, width, 1),
                                                  torch.nn.Conv2d(width, 4, 1))
            with torch.no_grad():
                self.conv2.weight[0] *= 300.0
                self.conv2.bias[0] = 1500.0
                self.conv3.weight[:, 0] = 0.0

        def forward(self, x):
            return self.conv3(self.conv2(torch.relu(self.conv1(self.pad(x))))).mean(dim=(2, 3))

    torch.manual_seed(0)
    path = tmp_path / "huge.onnx"
    export(HugeRange().eval(), (1, 3, 16, 16), path, dynamic_hw=False)
    return path, onnx.load(str(path)).graph.output[0].name


@pytest.mark.parametrize("target", ["rpi", "cortex-m"])
def test_convert_reports_the_repair_by_onnx_node(tmp_path, target):
    """End to end: the ONNX model with conv2's 300x channel, converted for ``target``."""
    import json

    import edgenet

    path, output = _huge_range_onnx(tmp_path, width=8)      # a mean over the map, judged on SQNR (generic)
    r = edgenet.convert(str(path), target=target, int8=True, calib_samples=64, eval_samples=32, out=tmp_path / "o",
                        output_kinds={output: "generic"})
    mp = json.loads((tmp_path / "o" / "report.json").read_text())["mixed_precision"]
    assert mp["passed"] and mp["verdict_before"]["passed"] is False and mp["verdict_after"]["passed"]
    assert {p["onnx_node"] for p in mp["promoted"]} == {"/conv2/Conv", "/conv3/Conv"}
    # rpi's XNNPACK has no int16 kernels: float first there; cortex-m runs no float
    assert {p["precision"] for p in mp["promoted"]} == ({"float"} if target == "rpi" else {"int16"})
    assert {"int8", "repaired", "float32"} <= set(mp["latency_ms"]) and mp["stop"] == "passed"
    assert "same_ops_float" not in mp["latency_ms"]       # float ops already, or no float on the target
    assert "## Mixed precision" in (tmp_path / "o" / "report.md").read_text()
    assert r.report.validation.quantized[0]["passed"]
    if target == "cortex-m":    # the repaired model ran in TFLite Micro (the target check)
        assert "runs in TFLite Micro" in r.report.target["summary"]


def test_a_repair_may_promote_at_most_its_cap_of_ops_and_says_why_not(mid):
    """The one op that needs 16 bits, with a cap of 0 ops: no int8 model can pass, and the search
    stops at the cap instead of counting on (the result names the cap and suggests int16x8)."""
    capped = repair(mid.float_model, mid.int8, mid.verdict, mid.x[:8], mid.quantize, mid.judge, mid.score,
                    "litert", LITERT_ORDER, Budget(64), max_ops=0)
    assert not capped.passed and capped.stop is Stop.MOSTLY_PROMOTED and capped.model is None
    assert "more than 0 ops promoted" in capped.stop_detail and not capped.promoted and "int16x8" in capped.summary()
    free = repair(mid.float_model, mid.int8, mid.verdict, mid.x[:8], mid.quantize, mid.judge, mid.score,
                  "litert", LITERT_ORDER, Budget(64), max_ops=len(ops(mid.float_model)))
    assert free.passed and len(free.promoted) <= len(ops(mid.float_model))
    assert capped.rounds < free.rounds + 2      # stopping at the cap costs no more than the search itself


def test_a_repaired_model_that_fails_on_other_examples_is_not_taken(huge):
    """The search chooses on the evaluation examples; ``confirm`` judges the choice on examples it
    did not choose on: refused there, no model is taken (Stop.NOT_CONFIRMED), and the summary says so."""
    seen = []

    def refuse(model: bytes):
        seen.append(model)
        return "fails on 64 calibration examples"

    r = repair(huge.float_model, huge.int8, huge.verdict, huge.x[:8], huge.quantize, huge.judge, huge.score,
               "litert", LITERT_ORDER, Budget(64), confirm=refuse)
    assert not r.passed and r.stop is Stop.NOT_CONFIRMED and r.model is None and not r.promoted
    assert seen and "fails on 64 calibration examples" in r.summary()
    kept = repair(huge.float_model, huge.int8, huge.verdict, huge.x[:8], huge.quantize, huge.judge, huge.score,
                  "litert", LITERT_ORDER, Budget(64), confirm=lambda m: None)
    assert kept.passed and {p.tensor for p in kept.promoted} == {huge.conv(1), huge.conv(2)}


def _chain_search(stem: int, n: int = 40, confirm=None):
    """The search over a chain of ``n`` ops where the verdict passes only with the first ``stem`` ops
    (from the input) all promoted and no single op gains anything alone: error that enters at the
    input side and grows, as in a YOLO stem. The quantizer's "model" is the promoted set, written out;
    the score is the failing output's SQNR, as the real one measures it."""
    import json

    from edgenet.converters.repair.graph import Op
    from edgenet.converters.repair.promote import Candidate, search
    from edgenet.verdicts.base import plain_sqnr_db

    chain = [Op(k, f"t{k}", "CONV_2D", (f"t{k - 1}",) if k else ("x",), n - 1 if k == n - 1 else None)
             for k in range(n)]
    candidates = [Candidate((op,), (OpPrecision.FLOAT,), "own error", proxy_db=float(k)) for k, op in enumerate(
        reversed(chain))]                                        # ranked output side first: the wrong end
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (8, 64)).astype(np.float32)
    noisy = ref + rng.normal(0, 1, ref.shape).astype(np.float32)

    def output(model: bytes):
        promoted = set(json.loads(model))
        return ref if all(f"t{k}" in promoted for k in range(stem)) else noisy

    def judge(model: bytes):
        return quality_judge("int8", ["y"], [ref], [output(model)], [False], kinds={"y": OutputKind.GENERIC})

    quantize = Quantizer(lambda a: json.dumps(sorted(a)).encode(), frozenset({OpPrecision.FLOAT}))
    return search(candidates, b"[]", judge(b"[]"), quantize, judge, lambda m: min(plain_sqnr_db(ref, output(m)), 60.0),
                  24, max_ops=n // 2, confirm=confirm, listing=chain)


def test_error_entering_at_the_input_side_is_found_by_segments():
    r = _chain_search(stem=6)
    assert r.passed and r.stop is Stop.PASSED
    assert {p.tensor for p in r.promoted} == {f"t{k}" for k in range(6)}     # refined to the stem exactly
    assert not _chain_search(stem=6, confirm=lambda m: "fails elsewhere").passed    # and confirmed, when asked
    # spread over most of the chain: refused at the cap
    spread = _chain_search(stem=30)
    assert not spread.passed and spread.stop is Stop.MOSTLY_PROMOTED


def test_a_promotions_reason_names_onnx_nodes_by_whole_tensor_names():
    """A model output tensor called "out" is no part of the word "output" (was: "produces failing
    /Mulput 0"); a tensor named in a reason is named by its node, the longer of two overlapping first."""
    from dataclasses import replace as dc_replace

    from edgenet.converters.repair.result import Promotion, Repair
    from edgenet.verdicts import Thresholds, Verdict

    v = Verdict("int8", Thresholds(), (), 0)
    promoted = (Promotion("out", "FULLY_CONNECTED", OpPrecision.FLOAT, "produces failing output 0"),
                Promotion("/a", "MUL", OpPrecision.INT16, "reads /a_x (own int8 error 3.0 dB), then out, /a."))
    r = Repair(None, v, v, promoted, 1, 0.0, 1, Stop.PASSED, "", 0, 0)
    named = r.named({"out": "/Mul", "/a": "/A", "/a_x": "/AX"})
    assert [p.reason for p in named.promoted] == ["produces failing output 0",
                                                  "reads /AX (own int8 error 3.0 dB), then /Mul, /A."]
    assert [p.onnx_node for p in named.promoted] == ["/Mul", "/A"]
    assert dc_replace(r, promoted=()).named({}).promoted == ()


def test_a_repair_whose_verdict_judges_nothing_does_not_say_it_passes():
    """One evaluation example: the repaired model's verdict is 'not judged' (nothing varies), so the
    repair says it no longer fails, not that the verdict passes."""
    from edgenet.converters.repair.result import Promotion, Repair, passes_text
    from edgenet.verdicts import Thresholds, judge

    f = np.array([[0.1, 2.0, -1.0]], np.float32)
    single = judge("int8", ["y"], [f], [f], [False], Thresholds(), kinds={"y": OutputKind.GENERIC})
    varied = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    judged = judge("int8", ["y"], [varied], [varied], [False], Thresholds(), kinds={"y": OutputKind.GENERIC})
    assert passes_text(single).startswith("the verdict no longer fails (not judged")
    assert passes_text(judged) == "the verdict passes"
    r = Repair(b"m", single, single, (Promotion("y", "ADD", OpPrecision.FLOAT, "own int8 error 3.0 dB"),),
               1, 0.0, 4, Stop.PASSED, passes_text(single), 10, 20)
    assert "the verdict no longer fails" in r.summary() and "the verdict passes" not in r.summary()


def test_subset_runs_give_the_arrays_a_fresh_run_gives_and_run_each_model_once(mid):
    """The repair's shared runs (converters/repair/runs.py): a model's outputs on the subset and on the
    whole set equal one interpreter's run over them (int8, int16 and float promotions alike: split among
    single-threaded interpreters, subset then rest), and asking again for the same model runs nothing."""
    from edgenet.converters.repair.runs import SubsetRuns

    conv2 = mid.names["CONV_2D2"]
    models = [mid.int8, mid.quantize({conv2: OpPrecision.INT16}), mid.quantize({conv2: OpPrecision.FLOAT})]
    runs = SubsetRuns([mid.x], [1], 7, threads=2)      # 7 of 32: the rest (25) splits unevenly too
    for model in models:
        fresh = TFLiteModel(model, 2).predict_all(mid.x)
        sub = runs.outputs(model)
        assert [a.shape for a in sub] == [(7, 4)]
        assert all(np.array_equal(a, f[:7]) for a, f in zip(sub, fresh))
        whole = runs.full(model)
        assert all(np.array_equal(a, f) for a, f in zip(whole, fresh))
    assert runs.runs == 2 * len(models) and runs.reused == len(models)   # full(): the subset's run reused
    assert runs.outputs(models[-1]) is runs.outputs(models[-1])
    assert runs.runs == 2 * len(models) and runs.reused == len(models) + 2
    # fewer examples than the subset: the whole set is the subset, nothing is run twice
    small = SubsetRuns([mid.x[:5]], [1], 8, threads=2)
    assert np.array_equal(small.full(mid.int8)[0], TFLiteModel(mid.int8).predict_all(mid.x[:5])[0])
    assert small.runs == 1


def test_allow_degraded_keeps_the_split_only_when_it_keeps_clearly_more_of_the_task():
    """Two failing int8 verdicts on one detection head: the split's F1 0.80 against the whole's 0.15 is
    clearly better (the parts are written with --allow-degraded); 0.85 against 0.80 is not."""
    from types import SimpleNamespace

    from edgenet.converters.repair_stage import _clearly_better

    def checked(f1: float, other_passes: bool = True):
        out = SimpleNamespace(name="output0", passed=False,
                              to_dict=lambda: {"kind": "detection", "metrics": {"detection_f1": f1}})
        other = SimpleNamespace(name="output1", passed=other_passes, to_dict=lambda: {"kind": "generic"})
        return SimpleNamespace(verdicts={Precision.INT8: SimpleNamespace(outputs=[out, other])})

    assert _clearly_better(checked(0.80), checked(0.15), "output0")
    # better on the split head but another output, passing whole, fails with the parts: not better
    assert not _clearly_better(checked(0.80, other_passes=False), checked(0.15), "output0")
    assert not _clearly_better(checked(0.85), checked(0.80), "output0")
    assert not _clearly_better(checked(0.80), checked(0.15), "another")


def test_a_float_repair_holding_most_weights_is_retried_in_int16(tmp_path, monkeypatch):
    """rpi promotes to float first: conv2 (the 300x channel) and conv3 in float hold 92% of the float
    model's bytes, refused as not an int8 model; int16 activations (int8 weights) then repair it at a third
    of the size. Without the retry the conversion failed saying the error was 'spread over most of the
    model'. The size floor is lowered so that a 85 kB model stands for a >= 1 MB one."""
    import json

    import edgenet
    import edgenet.converters.mixed_precision_stage as stage

    monkeypatch.setattr(stage, "MIN_SIZED_BYTES", 0)

    path, output = _huge_range_onnx(tmp_path, width=128)
    r = edgenet.convert(str(path), target="rpi", int8=True, calib_samples=64, eval_samples=32, out=tmp_path / "o",
                        output_kinds={output: "generic"})
    mp = json.loads((tmp_path / "o" / "report.json").read_text())["mixed_precision"]
    assert mp["passed"] and {p["precision"] for p in mp["promoted"]} == {"int16"}
    assert r.int8_path.stat().st_size < 0.5 * r.float_path.stat().st_size


def test_a_repair_slower_than_float_says_so(huge):
    """A latency is a verdict: a repaired model slower than the float model on this host says so."""
    from dataclasses import replace

    r = huge.repair("litert", LITERT_ORDER)
    slow = replace(r, latency_ms={"int8": 1.0, "repaired": 5.0, "float32": 2.0})
    fast = replace(r, latency_ms={"int8": 1.0, "repaired": 1.5, "float32": 2.0})
    assert "slower than the float model (2.00 ms)" in slow.summary()
    assert "slower than the float model" not in fast.summary()
    # a tiny model: 10 against 11 us is no finding, and its times keep their digits
    tiny = replace(r, latency_ms={"int8": 0.009, "repaired": 0.0105, "float32": 0.010})
    assert "slower than the float model" not in tiny.summary() and "9.0 us -> 10.5 us" in tiny.summary()
    tinier = replace(r, latency_ms={"int8": 0.009, "repaired": 0.02, "float32": 0.010})
    assert "slower than the float model (10.0 us)" in tinier.summary()
