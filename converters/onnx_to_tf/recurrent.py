"""LSTM and GRU (ONNX operators spec), unrolled over their static sequence length.

A CRNN text recognizer or a sequence head ends in ``nn.LSTM`` / ``nn.GRU``, which ONNX exports as
one LSTM / GRU node. TFLite's builtin sequence ops do not cover every ONNX variant, so the
recurrence is written out step by step with builtins only: one FULLY_CONNECTED for the input
projection of every step at once, then per step a FULLY_CONNECTED for the recurrent projection,
LOGISTIC/TANH gates and elementwise updates. Forward, reverse and bidirectional; ``layout`` 0
(``[seq, batch, input]``) and 1 (``[batch, seq, input]``); initial states and peepholes as
constants or graph values; GRU with either ``linear_before_reset``. Not handled (refused, naming
the attribute): other activations, ``clip``, ``input_forget``, ``sequence_lens`` shorter than the
sequence.

Equations (gate order i, o, f, c for LSTM; z, r, h for GRU; ``*`` elementwise):

    LSTM  i = s(x Wi + h Ri + Pi*c + b_i)   f = s(x Wf + h Rf + Pf*c + b_f)   g = tanh(x Wc + h Rc + b_c)
          c' = f*c + i*g                    o = s(x Wo + h Ro + Po*c' + b_o)  h' = o * tanh(c')
    GRU   z = s(x Wz + h Rz + b_z)          r = s(x Wr + h Rr + b_r)
          g = tanh(x Wh + (r*h) Rh + Rbh + Wbh)       (linear_before_reset = 0)
          g = tanh(x Wh + r*(h Rh + Rbh) + Wbh)       (otherwise)
          h' = (1 - z)*g + z*h
"""
from __future__ import annotations

import numpy as np

from edgenet.converters.onnx_to_tf.context import NodeContext
from edgenet.converters.onnx_to_tf.registry import handler

_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _check(ctx: NodeContext, gates: int):
    """(directions, hidden size, layout) after refusing what is not handled."""
    op = ctx.node.op_type
    acts = [a.decode() if isinstance(a, bytes) else a for a in (ctx.attr("activations", None) or [])]
    defaults = _DEFAULT_ACTIVATIONS[op]
    if acts and [a.lower() for a in acts] != [a.lower() for a in defaults] * (len(acts) // len(defaults)):
        raise ctx.unsupported(f"activations {acts} (only the defaults {defaults})")
    if ctx.has_attr("clip"):
        raise ctx.unsupported("clip")
    if int(ctx.attr("input_forget", 0)):
        raise ctx.unsupported("input_forget=1")
    direction = ctx.attr("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ctx.unsupported(f"direction {direction!r}")
    w = ctx.const_input(1, "W")
    r = ctx.const_input(2, "R")
    if w is None or r is None:
        raise ctx.unsupported("W and R computed at run time (constant weights only)")
    hidden = int(ctx.attr("hidden_size", r.shape[-1]))
    dirs = 2 if direction == "bidirectional" else 1
    if w.shape[0] != dirs or w.shape[1] != gates * hidden or r.shape != (dirs, gates * hidden, hidden):
        raise ctx.unsupported(f"W {w.shape} / R {r.shape} do not match hidden_size {hidden} and {direction}")
    return direction, hidden, int(ctx.attr("layout", 0)), w, r


def _sequence(ctx: NodeContext, layout: int):
    """The input as a list of per-step [batch, input] tensors, and (steps, batch)."""
    tf = ctx.tf
    x = ctx.required(0)
    if x.rank != 3:
        raise ctx.unsupported(f"a rank-{x.rank} input (X is [seq, batch, input])")
    tx = ctx.onnx_order(x)
    if layout:                                  # [batch, seq, input] -> [seq, batch, input]
        tx = tf.transpose(tx, [1, 0, 2])
    steps, batch, features = (int(d) for d in tx.shape)
    lens = ctx.input(4)
    if lens is not None:
        if not lens.is_const or np.any(np.asarray(lens.const) != steps):
            raise ctx.unsupported("sequence_lens shorter than the sequence (padded batches)")
    return tx, steps, batch, features


def _state(ctx: NodeContext, index: int, direction: int, batch: int, hidden: int, layout: int):
    """Initial state ``index`` (initial_h / initial_c) of one direction as [batch, hidden] (zeros if absent)."""
    tf = ctx.tf
    value = ctx.input(index)
    if value is None:
        return tf.zeros([batch, hidden], tf.float32)
    t = ctx.onnx_order(value)
    if layout:                                  # [batch, directions, hidden]
        return t[:, direction, :]
    return t[direction]


def _projection(ctx: NodeContext, tx, weights: np.ndarray, bias: np.ndarray | None):
    """x W^T + b for every step at once: [seq, batch, input] -> [seq, batch, gates*hidden]."""
    tf = ctx.tf
    steps, batch, features = (int(d) for d in tx.shape)
    y = tf.matmul(tf.reshape(tx, [steps * batch, features]), np.ascontiguousarray(weights.T.astype(np.float32)))
    if bias is not None:
        y = y + bias.astype(np.float32)
    return tf.reshape(y, [steps, batch, weights.shape[0]])


def _outputs(ctx: NodeContext, per_direction: list[list], finals: list[list], layout: int):
    """Y ([seq, dirs, batch, hidden], or [batch, seq, dirs, hidden] for layout 1) and the final states."""
    tf = ctx.tf
    ys = []
    for hs in per_direction:                    # hs: per step [batch, hidden], in sequence order
        ys.append(tf.concat([tf.expand_dims(h, 0) for h in hs], axis=0))       # [seq, batch, hidden]
    y = tf.concat([tf.expand_dims(v, 1) for v in ys], axis=1)                   # [seq, dirs, batch, hidden]
    if layout:
        y = tf.transpose(y, [2, 0, 1, 3])
    results = [ctx.out(y)]
    for states in finals:                       # one list per state kind: per direction [batch, hidden]
        s = tf.concat([tf.expand_dims(v, 0) for v in states], axis=0)           # [dirs, batch, hidden]
        results.append(ctx.out(tf.transpose(s, [1, 0, 2]) if layout else s))
    return results


def _order(direction: str, d: int, steps: int):
    backwards = direction == "reverse" or (direction == "bidirectional" and d == 1)
    return range(steps - 1, -1, -1) if backwards else range(steps)


@handler("LSTM")
def lstm(ctx: NodeContext):
    tf = ctx.tf
    direction, hidden, layout, w, r = _check(ctx, 4)
    b = ctx.const_input(3, "B")
    peep = ctx.const_input(7, "P")
    tx, steps, batch, _ = _sequence(ctx, layout)
    dirs = w.shape[0]
    per_direction, final_h, final_c = [], [], []
    for d in range(dirs):
        xw = _projection(ctx, tx, w[d], None if b is None else b[d, :4 * hidden] + b[d, 4 * hidden:])
        rt = tf.constant(np.ascontiguousarray(r[d].T.astype(np.float32)))  # [hidden, 4*hidden], one tensor for all steps
        pi, po, pf = ((peep[d, k * hidden:(k + 1) * hidden].astype(np.float32) for k in range(3))
                      if peep is not None else (None, None, None))
        h = _state(ctx, 5, d, batch, hidden, layout)
        c = _state(ctx, 6, d, batch, hidden, layout)
        hs = [None] * steps
        for t in _order(direction, d, steps):
            g = xw[t] + tf.matmul(h, rt)
            gi, go, gf, gc = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
            if pi is not None:
                gi, gf = gi + pi * c, gf + pf * c
            i, f = tf.sigmoid(gi), tf.sigmoid(gf)
            c = f * c + i * tf.tanh(gc)
            o = tf.sigmoid(go + po * c if po is not None else go)
            h = o * tf.tanh(c)
            hs[t] = h
        per_direction.append(hs)
        final_h.append(h)
        final_c.append(c)
    return _outputs(ctx, per_direction, [final_h, final_c], layout)


@handler("GRU")
def gru(ctx: NodeContext):
    tf = ctx.tf
    direction, hidden, layout, w, r = _check(ctx, 3)
    b = ctx.const_input(3, "B")
    before_reset = bool(int(ctx.attr("linear_before_reset", 0)))
    tx, steps, batch, _ = _sequence(ctx, layout)
    dirs = w.shape[0]
    per_direction, final_h = [], []
    for d in range(dirs):
        wb = None if b is None else b[d, :3 * hidden]
        rb = np.zeros(3 * hidden, np.float32) if b is None else b[d, 3 * hidden:].astype(np.float32)
        # z and r take both biases at once; the candidate's recurrent bias goes where the variant says
        xw = _projection(ctx, tx, w[d], None if wb is None else wb + np.concatenate([rb[:2 * hidden],
                                                                                     np.zeros(hidden, np.float32)]))
        # one tensor each for all steps (a numpy constant would be a new one per step)
        rz = tf.constant(np.ascontiguousarray(r[d, :2 * hidden].T.astype(np.float32)))   # [hidden, 2*hidden]
        rh = tf.constant(np.ascontiguousarray(r[d, 2 * hidden:].T.astype(np.float32)))   # [hidden, hidden]
        rbh = tf.constant(rb[2 * hidden:])
        h = _state(ctx, 5, d, batch, hidden, layout)
        hs = [None] * steps
        for t in _order(direction, d, steps):
            zr = tf.sigmoid(xw[t][:, :2 * hidden] + tf.matmul(h, rz))
            z, reset = zr[:, :hidden], zr[:, hidden:]
            if before_reset:
                candidate = xw[t][:, 2 * hidden:] + reset * (tf.matmul(h, rh) + rbh)
            else:
                candidate = xw[t][:, 2 * hidden:] + tf.matmul(reset * h, rh) + rbh
            g = tf.tanh(candidate)
            h = g + z * (h - g)                 # (1 - z) * g + z * h
            hs[t] = h
        per_direction.append(hs)
        final_h.append(h)
    return _outputs(ctx, per_direction, [final_h], layout)
