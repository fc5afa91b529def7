"""The repair of int8 error spread over many ops (converters/repair/backward.py, segments.py): a
sequence model in the shape of a CTC text recognizer -- a backbone, then a LayerNorm written as
ReduceMean/Sub/Mul/ReduceMean/Add/Rsqrt/Mul, self-attention (MatMul, Softmax), a final FC and a
softmax over classes at every step -- whose int8 damage is made by the backbone, a little per layer.

The backbone: 8 dense layers, each an orthogonal rotation of 15 feature channels plus (all but the
last) one wide junk channel the next layer ignores; one int8 scale over the junk starves the
features a little at every layer. No single layer promoted helps; most of the backbone promoted
does; the LayerNorm and the attention do not matter (what PP-OCRv4's recognizer does: see
converters/repair/segments.py).
"""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from edgenet.config import OpPrecision, Precision  # noqa: E402
from edgenet.converters.quantize import quantize_calibrated, requantize  # noqa: E402
from edgenet.converters.repair import Budget, Quantizer, Stop, repair  # noqa: E402
from edgenet.converters.repair.graph import Op, ops  # noqa: E402
from edgenet.converters.repair.segments import cut_points, live_counts, segment_members  # noqa: E402
from edgenet.converters.repair.sensitivity import output_score  # noqa: E402
from edgenet.inference import TFLiteModel  # noqa: E402
from edgenet.quality import judge as quality_judge  # noqa: E402
from edgenet.verdicts import OutputKind  # noqa: E402

T, D, C, LAYERS = 24, 16, 10, 8
LITERT_ORDER = ("int16", "float", "split")
ATTENTION_AND_NORM = {"MEAN", "SUB", "RSQRT", "SOFTMAX", "BATCH_MATMUL"}


def _recognizer(k: float) -> bytes:
    from edgenet.converters.tflite import with_signature

    rng = np.random.default_rng(0)
    layers, rotation = [], np.eye(D - 1)
    for i in range(LAYERS):
        q, _ = np.linalg.qr(rng.normal(size=(D - 1, D - 1)))
        w, b = np.zeros((D, D)), np.zeros(D)
        w[1:, 1:] = q
        if i < LAYERS - 1:     # the wide junk channel 0 (its reader's row 0 is zero)
            w[1:, 0] = rng.normal(0, k, D - 1)
            b[0] = 4 * k
        layers.append((w.astype(np.float32), b.astype(np.float32)))
        rotation = rotation @ q
    wq, wk, wv = (rng.normal(0, 0.3, (D, D)).astype(np.float32) for _ in range(3))
    head = np.zeros((D, C), np.float32)
    head[1:] = np.linalg.inv(rotation)[:, :C]       # the classes, rotated back

    @tf.function(input_signature=[tf.TensorSpec([1, T, D], tf.float32)])
    def model(x):
        h = x
        for w, b in layers:
            h = tf.matmul(h, w) + b
        mu = tf.reduce_mean(h, -1, keepdims=True)
        c = h - mu
        n = c * tf.math.rsqrt(tf.reduce_mean(c * c, -1, keepdims=True) + 1e-5)
        att = tf.nn.softmax(tf.matmul(tf.matmul(n, wq), tf.matmul(n, wk), transpose_b=True) / 4.0)
        n = n + 0.1 * tf.matmul(att, tf.matmul(n, wv))
        return tf.nn.softmax(4.0 * tf.matmul(n, head))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    return with_signature(bytes(conv.convert()))


def _lines(rng, n: int) -> np.ndarray:
    """Steps that each carry one class clearly (as a trained recognizer's features would)."""
    x = rng.normal(0, 0.3, (n, T, D)).astype(np.float32)
    x[..., 0] = 0
    cls = rng.integers(0, C, (n, T))
    x[np.arange(n)[:, None], np.arange(T)[None], 1 + cls] += 3.0
    return x


class Case:
    def __init__(self, k: float):
        rng = np.random.default_rng(1)
        self.float_model = _recognizer(k)
        self.x = _lines(rng, 48)
        self.result = quantize_calibrated(self.float_model, [_lines(rng, 64)], precision=Precision.INT8)
        self.float_outs = TFLiteModel(self.float_model).predict_all(self.x)
        self.quantize = Quantizer(lambda a: requantize(self.result, dict(a)),
                                  frozenset({OpPrecision.INT16, OpPrecision.FLOAT}))
        self.ops = ops(self.float_model)
        self.verdict = self.judge(self.result.model)

    def judge(self, model: bytes):
        outs = TFLiteModel(model).predict_all(self.x)
        return quality_judge("int8", ["y"], self.float_outs, outs, [False], kinds={"y": OutputKind.SEQUENCE})

    def score(self, model: bytes) -> float:
        return output_score(model, self.x[:8], [f[:8] for f in self.float_outs], [0])

    def repair(self, max_ops: int, rounds: int = 24):
        return repair(self.float_model, self.result.model, self.verdict, self.x[:8], self.quantize, self.judge,
                      self.score, "litert", LITERT_ORDER, Budget(rounds), max_ops=max_ops)


@pytest.fixture(scope="module")
def spread():
    return Case(20.0)


def test_spread_error_no_single_layer_helps(spread):
    """The kind of damage: int8 loses the CTC argmax, and promoting any one backbone layer does not
    bring it back (what a one-op-at-a-time search measures as no gain)."""
    assert not spread.verdict.passed
    assert "per-step agreement" in spread.verdict.message()
    backbone = [op.name for op in spread.ops if op.op == "FULLY_CONNECTED"][:LAYERS]
    for name in backbone[:3]:
        assert not spread.judge(spread.quantize({name: OpPrecision.INT16})).passed
    assert spread.judge(spread.quantize({name: OpPrecision.INT16 for name in backbone})).passed


def test_segments_find_the_backbone_not_the_layernorm_or_attention(spread):
    cap = len(spread.ops) // 2
    r = spread.repair(max_ops=cap)
    assert r.passed and r.stop is Stop.PASSED and r.verdict.passed and "segments" in r.stop_detail
    assert r.rounds <= 24
    promoted = {p.tensor for p in r.promoted}
    backbone = {op.name for op in spread.ops[:LAYERS + 1]}     # the dense layers (and the first reader)
    assert promoted and promoted <= backbone and len(promoted) <= cap
    kinds = {op.name: op.op for op in spread.ops}
    assert not {kinds[t] for t in promoted} & ATTENTION_AND_NORM
    assert all(p.precision is OpPrecision.INT16 for p in r.promoted)     # int16 first: it holds it
    assert all("segment" in p.reason for p in r.promoted)
    assert spread.judge(r.model).passed


def test_spread_error_over_the_cap_is_refused_with_the_int16x8_advice(spread):
    r = spread.repair(max_ops=2)
    assert not r.passed and r.stop is Stop.MOSTLY_PROMOTED and r.model is None
    assert "more than 2 ops promoted" in r.stop_detail and "segments" in r.stop_detail
    assert "int16x8" in r.summary() and r.rounds <= 24


def _op(i: int, *inputs: str) -> Op:
    return Op(i, f"t{i}", "ADD", tuple(inputs), None)


def test_segments_are_cut_where_fewest_tensors_are_alive():
    """Two residual blocks (x -> a -> b, x + b) and a tail: a cut inside a block crosses two live
    tensors, a cut between blocks one; the cuts fall between blocks."""
    listing = [_op(0), _op(1, "t0"), _op(2, "t1"), _op(3, "t0", "t2"),         # block 1
               _op(4, "t3"), _op(5, "t4"), _op(6, "t3", "t5"),                  # block 2
               _op(7, "t6"), _op(8, "t7")]
    live = live_counts(listing)
    assert live[1] == 2 and live[3] == 1 and live[5] == 2 and live[6] == 1
    cuts = cut_points(listing, 3)
    assert cuts == [3, 6]
    groups = segment_members(listing, [type("M", (), {"ops": (op,)})() for op in listing], 3)
    assert [[m.ops[0].index for m in g] for g in groups] == [[0, 1, 2, 3], [4, 5, 6], [7, 8]]
    assert cut_points(listing[:1], 4) == [] and len(segment_members(listing, [], 3)) == 0


def _chain(stem: int, confirmed: int | None, n: int = 40):
    """The segment search over a chain of ``n`` ops whose verdict passes only with the first ``stem``
    ops promoted, and whose ``confirm`` (other examples) only with the first ``confirmed``: a choice
    that fits the evaluation examples. The quantizer's "model" is the promoted set, written out."""
    import json

    from edgenet.converters.repair.promote import Candidate, search

    chain = [Op(k, f"t{k}", "CONV_2D", (f"t{k - 1}",) if k else ("x",), n - 1 if k == n - 1 else None)
             for k in range(n)]
    candidates = [Candidate((op,), (OpPrecision.FLOAT,), "own error") for op in chain]
    ref = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    noisy = ref + np.random.default_rng(0).normal(0, 1, ref.shape).astype(np.float32)

    def first(model: bytes) -> int:
        promoted = set(json.loads(model))
        return next((k for k in range(n) if f"t{k}" not in promoted), n)

    def judge(model: bytes):
        good = first(model) >= stem
        return quality_judge("int8", ["y"], [ref], [ref if good else noisy], [False], kinds={"y": OutputKind.GENERIC})

    def confirm(model: bytes):
        return None if confirmed is not None and first(model) >= confirmed else "fails on other examples"

    quantize = Quantizer(lambda a: json.dumps(sorted(a)).encode(), frozenset({OpPrecision.FLOAT}))
    return search(candidates, b"[]", judge(b"[]"), quantize, judge, lambda m: float(min(first(m), stem)), 24,
                  max_ops=n // 2, confirm=confirm, listing=chain)


def test_a_choice_that_fits_its_examples_grows_until_it_passes_on_others():
    from edgenet.converters.repair.backward import CONFIRM_ROUNDS

    r = _chain(stem=5, confirmed=12)
    assert r.passed and r.stop is Stop.PASSED and "not the" in r.stop_detail
    promoted = {p.tensor for p in r.promoted}
    assert {f"t{k}" for k in range(12)} <= promoted and len(promoted) <= 20
    # grown, it stands: refining it on the evaluation examples alone would cut it back below what
    # the other examples need (rounds spent for a model the confirmation refuses)
    assert "not refined" in r.stop_detail and r.rounds <= 12
    plain = _chain(stem=5, confirmed=5)          # confirmed as chosen: no growth, refined, fewer ops
    assert plain.passed and "not the" not in plain.stop_detail and len(plain.promoted) < len(promoted)
    assert "not refined" not in plain.stop_detail
    never = _chain(stem=5, confirmed=None)
    assert not never.passed and never.stop is Stop.NOT_CONFIRMED and never.model is None
    assert "fails on other examples" in never.stop_detail and never.rounds <= 24 + CONFIRM_ROUNDS


def test_ops_the_int8_model_had_in_float_already_are_not_counted_as_promoted(spread):
    """rpi computes hard-swish in float in every int8 model (int8_float_ops): a repair whose groups
    include such an op did not move it out of int8, and its count does not say so."""
    from edgenet.converters.repair.result import Promotion
    from edgenet.converters.mixed_precision_stage import _new_promotions

    r = spread.repair(max_ops=len(spread.ops) // 2)
    own = r.promoted[0]
    extra = Promotion("hardswish_0", "HARD_SWISH", OpPrecision.FLOAT, "reads it")
    from dataclasses import replace

    padded = replace(r, promoted=(*r.promoted, extra))
    kept = _new_promotions(padded, (("hardswish_0", OpPrecision.FLOAT),))
    assert kept.promoted == r.promoted and f"{len(r.promoted)} op(s) promoted" in kept.summary()
    # the same op asked in another precision than the model had is a promotion
    assert _new_promotions(r, ((own.tensor, OpPrecision.FLOAT),)).promoted == r.promoted


def test_a_search_by_segments_measures_no_own_error(spread):
    """More candidates than can be measured one at a time are ranked by segments, as they run: the
    own-error proxy (a float run keeping every tensor, on reference kernels: 3 s for YOLOv8n at
    800x608) would rank nothing there, and is not computed."""
    import math

    from edgenet.converters.repair import candidates
    from edgenet.converters.repair.promote import MEASURE_MAX

    ranked, _ = candidates(spread.float_model, spread.result.model, [0], spread.x[:8], "litert", LITERT_ORDER,
                           spread.quantize.supports)
    assert len(ranked) > MEASURE_MAX
    assert all(c.proxy_db == math.inf and c.reason.startswith(("no own error", "produces failing")) for c in ranked)


def test_refinement_judged_quickly_keeps_the_last_state_that_passes_in_full():
    """Refinement steps are judged on the quick subset; the whole verdict then finds, by bisection over
    the states it passed through, the last whose model passes it (models already made: no requantizing)."""
    from types import SimpleNamespace

    from edgenet.converters.repair.backward import _last_passing

    states = [([k], f"model{k}".encode(), SimpleNamespace(passed=True, k=k)) for k in range(9)]
    judged = []

    def full(model):
        k = int(model.decode()[5:])
        judged.append(k)
        return SimpleNamespace(passed=k <= 5, k=k)

    chosen, model, verdict = _last_passing(states, full)
    assert chosen == [5] and model == b"model5" and verdict.passed and verdict.k == 5
    assert len(judged) <= 4 and 5 in judged
    judged.clear()
    chosen, model, verdict = _last_passing(states, lambda m: SimpleNamespace(passed=False))
    assert chosen == [0] and model == b"model0"     # the counted choice, judged in full before
