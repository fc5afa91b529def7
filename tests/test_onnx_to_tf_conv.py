"""Conv and pooling handlers vs onnxruntime: strides, asymmetric pads, dilations, auto_pad, groups."""
from __future__ import annotations

import pytest

from test_onnx_to_tf_helpers import assert_matches_ort, rand, single_op, op_types, to_tflite

from edgenet.errors import UnsupportedOpError


def _conv(x_shape, w_shape, bias=True, **attrs):
    inits = {"w": rand(*w_shape, scale=0.3)}
    extra = ["w"]
    if bias:
        inits["b"] = rand(w_shape[0], scale=0.1)
        extra.append("b")
    return single_op("Conv", x_shape, attrs, inits, extra)


CONV_CASES = {
    "plain_3x3_pad1": ((1, 5, 7, 9), (4, 5, 3, 3), dict(pads=[1, 1, 1, 1])),
    "stride2_pad1": ((1, 5, 7, 9), (4, 5, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    "stride2_even_pad1": ((1, 3, 8, 8), (6, 3, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    "asymmetric_pads": ((1, 5, 7, 9), (4, 5, 3, 2), dict(pads=[0, 2, 1, 0], strides=[1, 2])),
    "no_pad_valid": ((1, 5, 7, 9), (4, 5, 3, 3), {}),
    "dilation2": ((1, 5, 9, 9), (4, 5, 3, 3), dict(pads=[2, 2, 2, 2], dilations=[2, 2])),
    "dilation_and_stride": ((1, 5, 11, 9), (4, 5, 3, 3), dict(pads=[1, 2, 1, 2], dilations=[2, 1], strides=[2, 2])),
    "same_upper_s2": ((1, 5, 7, 9), (4, 5, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "same_lower_s2": ((1, 5, 8, 9), (4, 5, 4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "same_upper_even_kernel": ((1, 5, 7, 9), (4, 5, 2, 4), dict(auto_pad="SAME_UPPER")),
    "valid": ((1, 5, 7, 9), (4, 5, 3, 3), dict(auto_pad="VALID", strides=[2, 1])),
    "pointwise": ((2, 5, 7, 9), (8, 5, 1, 1), {}),
    "depthwise": ((1, 5, 7, 9), (5, 1, 3, 3), dict(group=5, pads=[1, 1, 1, 1])),
    "depthwise_s2_asym": ((1, 5, 7, 9), (5, 1, 3, 3), dict(group=5, pads=[1, 0, 0, 1], strides=[2, 2])),
    "depthwise_multiplier2": ((1, 4, 7, 9), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    "depthwise_dilated": ((1, 4, 9, 9), (4, 1, 3, 3), dict(group=4, dilations=[2, 2], pads=[2, 2, 2, 2])),
    # TF's depthwise conv computes other values when dilated *and* strided: run at stride 1, subsampled
    "depthwise_dilated_strided": ((1, 3, 13, 13), (6, 1, 1, 2), dict(group=3, dilations=[3, 1], strides=[2, 3])),
    "grouped_2": ((1, 6, 7, 9), (4, 3, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    "grouped_3_s2": ((1, 6, 7, 9), (9, 2, 3, 3), dict(group=3, pads=[1, 1, 1, 1], strides=[2, 2])),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_matches_onnxruntime(case):
    x_shape, w_shape, attrs = CONV_CASES[case]
    model = _conv(x_shape, w_shape, **attrs)
    graph = assert_matches_ort(model, {"x": rand(*x_shape)}, atol=1e-4)
    assert "TRANSPOSE" not in op_types(graph)
    assert graph.inputs[0].channels_last and graph.outputs[0].channels_last
    assert graph.op_counts == {"Conv": 1}


def test_conv_without_bias_and_tf_padding_choice():
    # 3x3 stride 1 pad 1 is exactly TF 'SAME': no explicit pad op
    model = _conv((1, 5, 7, 9), (4, 5, 3, 3), bias=False, pads=[1, 1, 1, 1])
    graph = assert_matches_ort(model, {"x": rand(1, 5, 7, 9)})
    assert "PAD" not in op_types(graph)
    # asymmetric pads need one
    graph = to_tflite(_conv((1, 5, 7, 9), (4, 5, 3, 3), pads=[0, 2, 1, 0]))
    assert "PAD" in op_types(graph)


def test_conv3d_is_rejected_before_building():
    model = _conv((1, 2, 4, 4, 4), (3, 2, 3, 3, 3), kernel_shape=[3, 3, 3])
    with pytest.raises(UnsupportedOpError, match=r"Conv \(node 'conv_0'\): 3-D window"):
        to_tflite(model)


POOL_CASES = {
    "max_2x2_s2": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    "max_3x3_s2_pad1": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "max_3x3_s1_same": ("MaxPool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER")),
    "max_asym": ("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 1, 0])),
    "max_ceil": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "max_ceil_pad": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0], ceil_mode=1)),
    "avg_2x2": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    "avg_pad_exclude": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "avg_pad_include": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                             count_include_pad=1)),
    "avg_same_exclude": ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER")),
    "avg_same_include": ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", count_include_pad=1)),
    "avg_asym_exclude": ("AveragePool", dict(kernel_shape=[2, 3], pads=[1, 0, 0, 2])),
    "avg_ceil": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "avg_ceil_pad_include": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                                  ceil_mode=1, count_include_pad=1)),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool_matches_onnxruntime(case):
    op, attrs = POOL_CASES[case]
    model = single_op(op, (1, 5, 7, 9), attrs)
    graph = assert_matches_ort(model, {"x": rand(1, 5, 7, 9)})
    assert "TRANSPOSE" not in op_types(graph)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    graph = assert_matches_ort(single_op(op, (2, 5, 7, 9)), {"x": rand(2, 5, 7, 9)})
    assert graph.outputs[0].onnx_shape == (2, 5, 1, 1) and graph.outputs[0].tf_shape == (2, 1, 1, 5)


def test_maxpool_indices_output_rejected():
    model = single_op("MaxPool", (1, 2, 4, 4), dict(kernel_shape=[2, 2]), n_outputs=2)
    with pytest.raises(UnsupportedOpError, match="Indices"):
        to_tflite(model)


def test_pool_opset_variants():
    # opset 9: no ceil_mode / dilations attributes on MaxPool
    model = single_op("MaxPool", (1, 3, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2]), opset=9)
    assert_matches_ort(model, {"x": rand(1, 3, 6, 6)})
    model = single_op("AveragePool", (1, 3, 6, 6), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), opset=9)
    assert_matches_ort(model, {"x": rand(1, 3, 6, 6)})



def _random_conv_cases(count=16, seed=7):
    """Seeded combinations of groups, dilations, strides and asymmetric pads on odd sizes (the
    attributes interact: a grouped, dilated, strided conv is where output-shape arithmetic slips)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        group = int(rng.choice([1, 2, 3]))
        cin = group * int(rng.integers(1, 3))
        cout = group * int(rng.integers(1, 3))
        k = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        dil = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        strides = [int(rng.integers(1, 3)), int(rng.integers(1, 4))]
        pads = [int(rng.integers(0, k[0])), int(rng.integers(0, k[1])), int(rng.integers(0, k[0])), int(rng.integers(0, k[1]))]
        h, w = int(rng.integers(9, 16)) | 1, int(rng.integers(9, 18)) | 1
        cases.append(pytest.param((1, cin, h, w), (cout, cin // group, *k),
                                  dict(group=group, dilations=dil, strides=strides, pads=pads), id=f"random{i}"))
    return cases


@pytest.mark.parametrize("x_shape, w_shape, attrs", _random_conv_cases())
def test_grouped_dilated_strided_convs_match_onnxruntime(x_shape, w_shape, attrs):
    assert_matches_ort(_conv(x_shape, w_shape, **attrs), {"x": rand(*x_shape)}, atol=1e-4)


def _random_pool_cases(count=16, seed=11):
    """Seeded pools mixing strides, dilations (MaxPool, opset 10+), asymmetric pads, ceil_mode and
    count_include_pad on odd sizes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        op = "MaxPool" if i % 2 == 0 else "AveragePool"
        k = [int(rng.integers(1, 4)), int(rng.integers(2, 4))]
        attrs = dict(kernel_shape=k, strides=[int(rng.integers(1, 3)), int(rng.integers(1, 4))],
                     pads=[int(rng.integers(0, k[0])), int(rng.integers(0, k[1])), int(rng.integers(0, k[0])),
                           int(rng.integers(0, k[1]))], ceil_mode=int(rng.integers(0, 2)))
        if op == "MaxPool":
            attrs["dilations"] = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        else:
            attrs["count_include_pad"] = int(rng.integers(0, 2))
        shape = (1, 3, int(rng.integers(7, 14)) | 1, int(rng.integers(7, 16)) | 1)
        cases.append(pytest.param(op, shape, attrs, id=f"random{i}-{op}"))
    return cases


@pytest.mark.parametrize("op, shape, attrs", _random_pool_cases())
def test_pools_with_mixed_attributes_match_onnxruntime(op, shape, attrs):
    assert_matches_ort(single_op(op, shape, attrs), {"x": rand(*shape)})


def test_dilated_strided_same_conv_follows_the_spec():
    """auto_pad=SAME with dilation: onnxruntime refuses to run it, ONNX's reference implementation
    defines it (and edgenet validates such models against it)."""
    from test_onnx_to_tf_helpers import assert_tflite_matches

    for group, w_shape in ((4, (4, 1, 3, 3)), (1, (3, 4, 3, 3))):
        model = _conv((1, 4, 11, 15), w_shape, group=group, dilations=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
        assert_tflite_matches(model, {"x": rand(1, 4, 11, 15)}, atol=1e-4, reference="spec")


def test_a_window_larger_than_the_input_says_the_input_is_too_small():
    from edgenet.errors import ConversionError

    model = single_op("AveragePool", (1, 3, 6, 10), dict(kernel_shape=[7, 7], strides=[5, 5]))
    with pytest.raises(ConversionError, match="window of 7 along spatial axis 0 is larger than the padded input "
                                              r"\(6\): the input is too small"):
        to_tflite(model)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_ceil_mode_keeps_one_window_that_overhangs_a_small_input(op):
    """ceil((4 - 7) / 7 + 1) = 1: one window over the whole input, as onnxruntime and torch compute."""
    model = single_op(op, (1, 3, 4, 4), dict(kernel_shape=[7, 7], strides=[7, 7], ceil_mode=1))
    assert_matches_ort(model, {"x": rand(1, 3, 4, 4)})


@pytest.mark.parametrize("size, shape", [(5, (2, 7, 5, 3)), (3, (1, 4, 6, 6)), (1, (1, 3, 2, 5))])
def test_lrn_is_local_response_normalization(size, shape):
    """AlexNet / GoogLeNet's LRN across channels, against onnxruntime: one TFLite op, no TRANSPOSE."""
    model = single_op("LRN", shape, dict(size=size, alpha=2e-3, beta=0.75, bias=1.5))
    graph = assert_matches_ort(model, {"x": rand(*shape) * 3}, atol=1e-5)
    assert op_types(graph) == {"LOCAL_RESPONSE_NORMALIZATION"}


def test_lrn_with_an_even_window_is_refused_naming_it():
    with pytest.raises(UnsupportedOpError, match="size=4"):
        to_tflite(single_op("LRN", (1, 6, 3, 3), dict(size=4)))
