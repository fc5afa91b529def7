"""Einsum in its matmul-like forms: one or two operands, each index at most once per operand.

Two operands ``"bij,bjk->bik"``: indices in both operands and the output are batch dims, in both
operands only are contracted, in one operand and the output are that operand's free dims; an index
in one operand only is summed first. Each operand is transposed to (batch, free, contracted) order
and reshaped to 3-D, one batched matmul (BATCH_MATMUL / FULLY_CONNECTED) does the work, and the
result is reshaped and transposed to the output order. One operand: a transpose and/or a sum.
Refused with the reason: more than two operands, a repeated index within an operand (diagonals),
output indices that no operand has, batch dims whose sizes differ.
"""
from __future__ import annotations

import string
from math import prod

import numpy as np

from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler, node_attrs


def parse(equation: str) -> tuple[list[str], str | None]:
    """Operand index strings and the output string (None when implicit), spaces removed."""
    equation = equation.replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    return lhs.split(","), (rhs if "->" in equation else None)


def _check_einsum(node, opset: int) -> str | None:
    equation = node_attrs(node).get("equation", "")
    operands, output = parse(equation)
    if len(operands) not in (1, 2):
        return f"equation {equation!r}: {len(operands)} operands (one or two are supported)"
    for term in operands + ([output] if output is not None else []):
        letters = term.replace("...", "")
        if any(not c.isalpha() for c in letters):
            return f"equation {equation!r}: unexpected characters"
        if len(set(letters)) != len(letters):
            return f"equation {equation!r}: an index repeated within one term (diagonals are not supported)"
    if output is not None and set(output.replace("...", "")) - set("".join(operands)):
        return f"equation {equation!r}: output indices that no operand has"
    return None


def _expand_ellipsis(terms: list[str], ranks: list[int], output: str | None) -> tuple[list[str], str]:
    """Replace '...' by fresh letters (numpy's rule: the ellipsis dims broadcast from the right)."""
    used = set("".join(terms) + (output or ""))
    fresh = [c for c in string.ascii_letters if c not in used]
    ell_rank = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell = "".join(fresh[:ell_rank])
    out_terms = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            n = rank - len(term.replace("...", ""))
            term = term.replace("...", ell[ell_rank - n:])
        out_terms.append(term)
    if output is None:  # implicit: ellipsis dims, then the indices that appear exactly once, sorted
        counts = {c: "".join(out_terms).count(c) for c in "".join(out_terms)}
        output = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        output = output.replace("...", ell)
    return out_terms, output


@handler("Einsum", check=_check_einsum)
def einsum(ctx: NodeContext):
    tf = ctx.tf
    terms, output = parse(ctx.attr("equation"))
    values = [ctx.required(i) for i in range(len(terms))]
    terms, output = _expand_ellipsis(terms, [v.rank for v in values], output)
    tensors, shapes, reduced = [], [], []
    for k, (term, value) in enumerate(zip(terms, values)):
        if len(term) != value.rank:
            raise ctx.unsupported(f"term {term!r} for a rank-{value.rank} operand")
        if None in value.onnx_shape:
            raise ctx.unsupported("a dynamic batch")
        t = tf.constant(np.ascontiguousarray(value.const)) if value.is_const else ctx.onnx_order(value)
        # indices in this operand only and not in the output: summed away first
        others = "".join(x for j, x in enumerate(terms) if j != k) + output
        lonely = [i for i, c in enumerate(term) if c not in others]
        if lonely:
            t = tf.math.reduce_sum(t, axis=lonely)
            term = "".join(c for i, c in enumerate(term) if i not in lonely)
        tensors.append(t)
        shapes.append(dict(zip(term, t.shape.as_list())))
        reduced.append(term)
    terms = reduced
    if len(tensors) == 1:
        term = terms[0]
        return [ctx.out(_to_order(tf, tensors[0], term, output))]
    (a, b), (ta, tb) = terms, tensors
    size = {**shapes[0], **shapes[1]}
    batch = [c for c in output if c in a and c in b]
    free_a = [c for c in output if c in a and c not in b]
    free_b = [c for c in output if c in b and c not in a]
    contracted = [c for c in a if c in b and c not in output]
    for c in batch + contracted:
        if shapes[0][c] != shapes[1][c]:
            raise ctx.unsupported(f"index {c!r} has size {shapes[0][c]} in one operand, {shapes[1][c]} in the other")
    nb, m, k, n = (prod(size[c] for c in group) for group in (batch, free_a, contracted, free_b))
    ta = tf.reshape(_to_order(tf, ta, a, "".join(batch + free_a + contracted)), [nb, m, k])
    tb = tf.reshape(_to_order(tf, tb, b, "".join(batch + contracted + free_b)), [nb, k, n])
    y = tf.linalg.matmul(ta, tb)
    result = "".join(batch + free_a + free_b)
    y = tf.reshape(y, [size[c] for c in result])
    return [ctx.out(_to_order(tf, y, result, output))]


def _to_order(tf, t, term: str, order: str):
    """``t`` (indexed by ``term``) transposed to ``order`` (the same letters)."""
    if term == order:
        return t
    return tf.transpose(t, [term.index(c) for c in order])
