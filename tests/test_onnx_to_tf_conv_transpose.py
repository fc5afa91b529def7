"""ConvTranspose end to end through TFLite vs onnxruntime and ONNX's reference implementation:
strides, pads, output_padding, output_shape, auto_pad, dilations, groups (depthwise too), 1-D and 2-D,
odd sizes."""
from __future__ import annotations

import pytest

from test_onnx_to_tf_helpers import assert_tflite_matches, onnx, rand, single_op, to_tflite

from edgenet.converters.onnx_to_tf.conv_transpose import transpose_geometry
from edgenet.errors import UnsupportedOpError


def _model(x_shape, w_shape, bias=True, **attrs):
    inits = {"w": rand(*w_shape, scale=0.3)}
    extra = ["w"]
    if bias:
        group = attrs.get("group", 1)
        inits["b"] = rand(w_shape[1] * group, scale=0.1)
        extra.append("b")
    return single_op("ConvTranspose", x_shape, attrs, inits, extra)


CASES = {  # x shape, w shape (C_in, C_out / group, k...), attributes
    "k4_s2_p1_upsampler": ((1, 5, 7, 9), (5, 3, 4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "k3_s1_no_pad": ((1, 5, 7, 9), (5, 4, 3, 3), {}),
    "k3_s2_asym_pads": ((1, 5, 7, 9), (5, 4, 3, 3), dict(strides=[2, 2], pads=[0, 1, 2, 0])),
    "k3_s2_output_padding": ((1, 5, 7, 9), (5, 4, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1],
                                                               output_padding=[1, 0])),
    "k3_s3_output_padding_2": ((1, 2, 5, 4), (2, 3, 3, 3), dict(strides=[3, 3], output_padding=[2, 1])),
    "k2_s2_rect": ((1, 3, 5, 7), (3, 2, 2, 3), dict(strides=[2, 1])),
    "dilations": ((1, 3, 5, 6), (3, 4, 3, 3), dict(dilations=[2, 3], pads=[1, 2, 0, 1])),
    "dilations_stride": ((1, 3, 5, 6), (3, 2, 3, 2), dict(dilations=[2, 1], strides=[2, 3])),
    "output_shape": ((1, 3, 5, 6), (3, 2, 3, 3), dict(strides=[2, 2], output_shape=[10, 13])),
    "output_shape_odd": ((1, 3, 5, 6), (3, 2, 4, 3), dict(strides=[2, 3], output_shape=[11, 17])),
    "same_upper": ((1, 3, 5, 6), (3, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "same_lower": ((1, 3, 5, 6), (3, 2, 4, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    "valid": ((1, 3, 5, 6), (3, 2, 3, 3), dict(strides=[2, 2], auto_pad="VALID")),
    "group_2": ((1, 4, 5, 7), (4, 3, 3, 3), dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1])),
    "group_3_output_padding": ((1, 6, 5, 4), (6, 2, 3, 3), dict(group=3, strides=[2, 2], output_padding=[1, 1])),
    "depthwise": ((1, 5, 7, 9), (5, 1, 4, 4), dict(group=5, strides=[2, 2], pads=[1, 1, 1, 1])),
    "depthwise_multiplier_dilated": ((1, 3, 5, 6), (3, 2, 3, 3), dict(group=3, dilations=[2, 2], strides=[2, 1],
                                                                      pads=[2, 0, 1, 3])),
    "depthwise_same_upper": ((1, 4, 5, 6), (4, 1, 3, 3), dict(group=4, strides=[2, 2], auto_pad="SAME_UPPER")),
    "batch_2": ((2, 3, 5, 4), (3, 2, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "no_bias": ((1, 3, 5, 4), (3, 2, 3, 3), dict(strides=[2, 2])),
    "1d": ((1, 4, 9), (4, 3, 4), dict(strides=[2], pads=[1, 1])),
    "1d_output_padding_dilation": ((2, 3, 7), (3, 2, 3), dict(strides=[3], output_padding=[2], dilations=[2])),
    "1d_depthwise": ((1, 4, 9), (4, 1, 3), dict(group=4, strides=[2], pads=[1, 0])),
}

@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_transpose_through_tflite(case):
    x_shape, w_shape, attrs = CASES[case]
    model = _model(x_shape, w_shape, bias=case != "no_bias", **attrs)
    feeds = {"x": rand(*x_shape)}
    assert_tflite_matches(model, feeds, atol=2e-5)
    # ONNX's reference implementation mixes up the groups of a grouped ConvTranspose and ignores
    # output_shape when pads are not given: onnxruntime only there
    if attrs.get("group", 1) == 1 and "output_shape" not in attrs:
        assert_tflite_matches(model, feeds, atol=2e-5, reference="spec")


def test_upsampler_is_one_transpose_conv_with_same_padding():
    """The usual x2 upsampler (k4 s2 p1) is exactly TF's SAME: one TRANSPOSE_CONV, no crop."""
    graph, ops = assert_tflite_matches(_model((1, 5, 7, 9), (5, 3, 4, 4), strides=[2, 2], pads=[1, 1, 1, 1]),
                                       {"x": rand(1, 5, 7, 9)}, atol=2e-5)
    assert [op for op in ops if op != "DELEGATE"] == ["TRANSPOSE_CONV"]


def test_depthwise_is_a_depthwise_conv():
    _, ops = assert_tflite_matches(_model((1, 5, 7, 9), (5, 1, 4, 4), group=5, strides=[2, 2], pads=[1, 1, 1, 1]),
                                   {"x": rand(1, 5, 7, 9)}, atol=2e-5)
    assert "DEPTHWISE_CONV_2D" in ops and "TRANSPOSE_CONV" not in ops and "CONV_2D" not in ops


def test_same_pads_follow_spec():
    """ONNX: total = s*(in-1) + output_padding + (k-1)*d + 1 - out; SAME_UPPER puts total//2 first,
    SAME_LOWER and NOTSET with output_shape put the larger half first."""
    assert transpose_geometry(5, 4, 2, 1, None, 0, None, "SAME_UPPER") == (1, 1, 10)
    assert transpose_geometry(5, 3, 2, 1, None, 0, None, "SAME_UPPER") == (0, 1, 10)
    assert transpose_geometry(5, 3, 2, 1, None, 0, None, "SAME_LOWER") == (1, 0, 10)
    assert transpose_geometry(5, 3, 2, 1, (0, 0), 0, 10, "NOTSET") == (1, 0, 10)
    assert transpose_geometry(5, 3, 2, 1, (1, 1), 1, None, "NOTSET") == (1, 1, 10)


def test_3d_is_refused_before_tflite():
    model = _model((1, 2, 3, 4, 5), (2, 2, 3, 3, 3))
    with pytest.raises(UnsupportedOpError, match=r"ConvTranspose \(node 'convtranspose_0'\)"):
        to_tflite(model)


def test_case_04_conv_transpose_s2():
    model = onnx.load("/work/shared/cases/04_conv_transpose_s2.onnx")
    assert_tflite_matches(model, {"input": rand(1, 3, 16, 16)}, atol=1e-5)


def _random_cases(count=10, seed=5):
    """Seeded mixes of groups (depthwise included), dilations, strides, asymmetric pads and
    output_padding on odd sizes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        group = int(rng.choice([1, 2, 3]))
        cin, per_group = group * int(rng.integers(1, 3)), int(rng.integers(1, 3))
        k = [int(rng.integers(1, 4)), int(rng.integers(2, 4))]
        strides, dil = [int(rng.integers(1, 3)), int(rng.integers(1, 4))], [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        attrs = dict(group=group, strides=strides, dilations=dil,
                     pads=[int(rng.integers(0, k[0])), int(rng.integers(0, k[1])), int(rng.integers(0, k[0])),
                           int(rng.integers(0, k[1]))],
                     output_padding=[int(rng.integers(0, s)) for s in strides])
        shape = (1, cin, int(rng.integers(4, 9)) | 1, int(rng.integers(4, 10)) | 1)
        cases.append(pytest.param(shape, (cin, per_group, *k), attrs, id=f"random{i}"))
    return cases


@pytest.mark.parametrize("x_shape, w_shape, attrs", _random_cases())
def test_mixed_attributes_through_tflite(x_shape, w_shape, attrs):
    assert_tflite_matches(_model(x_shape, w_shape, **attrs), {"x": rand(*x_shape)}, atol=2e-5)
