"""A small end-to-end (NMS-free) detector written as ONNX, in the shape of Ultralytics' YOLO26 /
YOLOv10 exports with ``nms=False``: convs to two levels (strides 8 and 16 on a 64x64 image), a box
head of distances (left, top, right, bottom, in grid cells) and a class head, the decode (anchor
centres -/+ distances, times each anchor's stride), the sigmoid, the TopK of each anchor's best
score and GatherElements of its box, score and class -> ``[1, K, 6]`` (x1, y1, x2, y2, score, class).

Hand-set weights make it a detector of bright squares: a cell's share of bright pixels ``f`` makes
class 0's logit ``20 f - 15`` on the 8 px level and the distances ``1.5 + (D - 1.5) b`` cells, with
``b = relu(0.6 - f) / 0.6`` (1.5 cells on an object, up to ``D`` = 40 on background: the wild boxes of background anchors a real head makes, which the TopK's leftover rows
carry). The decoded boxes of the 16 px level span about -640..700 px, so one int8 scale over the
decode puts the objects' 24 px boxes on a 5 px grid, while the distances (their own scale, in
cells) keep them.
"""
from __future__ import annotations

import numpy as np

SIZE, K, CLASSES, D = 64, 16, 2, 40.0
FILLER = 40         # 1x1 convs between the stem and the heads (a backbone's depth: more candidates than
                    # the repair measures one at a time)


def detector():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def conv(x, w, b, out, stride=1, act=True):
        k = w.shape[-1]
        nodes.append(helper.make_node("Conv", [x, const(out + "_w", w), const(out + "_b", b)], [out + "_c" if act else out],
                                      kernel_shape=[k, k], strides=[stride, stride]))
        if act:
            nodes.append(helper.make_node("Relu", [out + "_c"], [out]))
        return out

    def stem(cin, cout, scale):
        w = rng.normal(0, 0.05, (cout, cin, 2, 2))
        w[0] = 0
        w[0, 0 if cin > 3 else slice(None)] = scale      # channel 0: the share of bright pixels
        return w

    h = conv("images", stem(3, 8, 1 / 12), np.zeros(8), "s1", 2)      # 32x32
    h = conv(h, stem(8, 8, 1 / 4), np.zeros(8), "s2", 2)               # 16x16
    p3 = conv(h, stem(8, 8, 1 / 4), np.zeros(8), "s3", 2)              # 8x8, stride 8
    for i in range(FILLER):
        w = np.eye(8)[:, :, None, None] + rng.normal(0, 0.02, (8, 8, 1, 1))
        w[0] = 0
        w[0, 0] = 1
        p3 = conv(p3, w, np.zeros(8), f"f{i}")
    p4 = conv(p3, stem(8, 8, 1 / 4), np.zeros(8), "s4", 2)             # 4x4, stride 16

    def heads(x, level):
        # background: b = relu(0.6 - f) / 0.6 (0 on an object's cells)
        wg = rng.normal(0, 0.05, (8, 8, 1, 1))
        wg[0] = 0
        wg[0, 0] = -1 / 0.6
        bg = conv(x, wg, np.array([1.0] + [0.0] * 7), f"bg{level}")
        wb = rng.normal(0, 0.01, (4, 8, 1, 1))
        wb[:, 0, 0, 0] = D - 1.5
        box = conv(bg, wb, np.full(4, 1.5), f"box{level}", act=False)
        wc = rng.normal(0, 0.05, (CLASSES, 8, 1, 1))
        wc[0, 0, 0, 0] = 20.0 if level == 0 else 0.0       # objects are found on the 8 px level
        cls = conv(x, wc, np.array([-15.0] + [-6.0] * (CLASSES - 1)), f"cls{level}", act=False)
        n = (SIZE // (8 * 2 ** level)) ** 2
        nodes.append(helper.make_node("Reshape", [box, const(f"rb{level}", [1, 4, n], np.int64)], [f"box{level}_r"]))
        nodes.append(helper.make_node("Reshape", [cls, const(f"rc{level}", [1, CLASSES, n], np.int64)],
                                      [f"cls{level}_r"]))
        return f"box{level}_r", f"cls{level}_r"

    (b3, c3), (b4, c4) = heads(p3, 0), heads(p4, 1)
    anchors, strides = [], []
    for stride in (8, 16):
        g = SIZE // stride
        ys, xs = np.meshgrid(np.arange(g) + 0.5, np.arange(g) + 0.5, indexing="ij")
        anchors.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(g * g, stride))
    a = np.concatenate(anchors, 1)[None]                       # [1, 2, A] in cells
    s = np.concatenate(strides)[None].astype(np.float32)       # [1, A]
    n_anchors = a.shape[-1]
    nodes += [helper.make_node("Concat", [b3, b4], ["dist"], axis=2),
              helper.make_node("Concat", [c3, c4], ["logits"], axis=2),
              helper.make_node("Slice", ["dist", const("z0", [0], np.int64), const("z2", [2], np.int64),
                                         const("ax1", [1], np.int64)], ["lt"]),
              helper.make_node("Slice", ["dist", "z2", const("z4", [4], np.int64), "ax1"], ["rb"]),
              helper.make_node("Sub", [const("anchors", a), "lt"], ["x1y1"]),
              helper.make_node("Add", ["anchors", "rb"], ["x2y2"]),
              helper.make_node("Concat", ["x1y1", "x2y2"], ["cells"], axis=1),
              helper.make_node("Mul", ["cells", const("strides", s)], ["pixels"]),
              helper.make_node("Transpose", ["pixels"], ["boxes"], perm=[0, 2, 1]),          # [1, A, 4]
              helper.make_node("Sigmoid", ["logits"], ["probs"]),
              helper.make_node("Transpose", ["probs"], ["scores"], perm=[0, 2, 1]),          # [1, A, C]
              helper.make_node("ReduceMax", ["scores"], ["best"], axes=[-1], keepdims=0),     # [1, A]
              helper.make_node("TopK", ["best", const("k", [K], np.int64)], ["top", "idx"], axis=-1),
              helper.make_node("Unsqueeze", ["idx", const("ax_1", [-1], np.int64)], ["idx1"]),  # [1, K, 1]
              helper.make_node("Expand", ["idx1", const("e4", [1, K, 4], np.int64)], ["idx4"]),
              helper.make_node("GatherElements", ["boxes", "idx4"], ["kbox"], axis=1),       # [1, K, 4]
              helper.make_node("Expand", ["idx1", const("ec", [1, K, CLASSES], np.int64)], ["idxc"]),
              helper.make_node("GatherElements", ["scores", "idxc"], ["kscores"], axis=1),   # [1, K, C]
              helper.make_node("ArgMax", ["kscores"], ["kcls"], axis=-1, keepdims=1),
              helper.make_node("Cast", ["kcls"], ["kclsf"], to=TensorProto.FLOAT),
              helper.make_node("Unsqueeze", ["top", "ax_1"], ["ktop"]),
              helper.make_node("Concat", ["kbox", "ktop", "kclsf"], ["output0"], axis=-1)]
    assert n_anchors >= K
    g = helper.make_graph(nodes, "e2e", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, K, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def squares(rng, n: int) -> np.ndarray:
    """[n, 3, SIZE, SIZE] images in 0..1 (pixels / 255): 1-3 bright squares of 16-24 px on a dark,
    noisy background."""
    x = rng.uniform(0, 0.1, (n, 3, SIZE, SIZE)).astype(np.float32)
    for img in x:
        for _ in range(rng.integers(1, 4)):
            side = rng.integers(16, 25)
            y0, x0 = rng.integers(0, SIZE - side, 2)
            img[:, y0:y0 + side, x0:x0 + side] = rng.uniform(0.85, 1.0)
    return x
