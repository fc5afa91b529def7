"""Einsum's matmul-like forms through TFLite vs onnxruntime; other forms refused with the reason."""
from __future__ import annotations

import pytest

from test_onnx_to_tf_helpers import assert_tflite_matches, helper, make_model, rand, to_tflite

from edgenet.errors import UnsupportedOpError

FORMS = {  # equation, shapes of the two operands (the second is a graph input too unless constant)
    "bij,bjk->bik": ((3, 5, 7), (3, 7, 4)),
    "bhqd,bhkd->bhqk": ((2, 3, 5, 7), (2, 3, 6, 7)),
    "ij,jk->ik": ((5, 7), (7, 3)),
    "ij,kj->ik": ((5, 7), (3, 7)),
    "bij,jk->bik": ((2, 5, 7), (7, 3)),
    "bhqk,bhkd->bhqd": ((1, 2, 5, 6), (1, 2, 6, 3)),
    "nchw,oc->nohw": ((1, 5, 3, 7), (4, 5)),
    "...ij,...jk->...ik": ((2, 3, 5, 7), (2, 3, 7, 4)),
    "ij,jk": ((5, 7), (7, 3)),
    "bij,bkj->bki": ((3, 5, 7), (3, 6, 7)),
    "ij,ij->i": ((5, 7), (5, 7)),
    "ik,jl->ijkl": ((3, 4), (5, 2)),
    "ij->ji": ((5, 7), None),
    "bij->bj": ((2, 5, 7), None),
}


@pytest.mark.parametrize("equation", sorted(FORMS))
@pytest.mark.parametrize("constant_b", [False, True])
def test_einsum_forms(equation, constant_b):
    a_shape, b_shape = FORMS[equation]
    if b_shape is None and constant_b:
        pytest.skip("one operand")
    inputs = {"x": a_shape}
    inits = {}
    names = ["x"]
    if b_shape is not None:
        names.append("w")
        if constant_b:
            inits["w"] = rand(*b_shape)
        else:
            inputs["w"] = b_shape
    model = make_model([helper.make_node("Einsum", names, ["y"], equation=equation)], inputs, ["y"], inits, opset=12)
    feeds = {n: rand(*s) for n, s in inputs.items()}
    assert_tflite_matches(model, feeds, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("equation,reason", [
    ("ii->i", "repeated within one term"), ("ij,jk,kl->il", "3 operands"), ("ij,jk->iz", "output indices"),
])
def test_other_forms_are_refused_with_the_reason(equation, reason):
    n = equation.split("->")[0].count(",") + 1
    shapes = {"ii->i": [(3, 3)], "ij,jk,kl->il": [(2, 3), (3, 4), (4, 5)], "ij,jk->iz": [(2, 3), (3, 4)]}[equation]
    names = [f"x{k}" for k in range(n)]
    model = make_model([helper.make_node("Einsum", names, ["y"], equation=equation, name="e")],
                       dict(zip(names, shapes)), ["y"], opset=12)
    with pytest.raises(UnsupportedOpError, match=rf"Einsum \(node 'e'\): .*{reason}"):
        to_tflite(model)
