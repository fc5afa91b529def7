"""Pure layout and window arithmetic (no TensorFlow)."""
from __future__ import annotations

import numpy as np
import pytest

from edgenet.converters.onnx_to_tf import layout
from edgenet.converters.onnx_to_tf.padding import same_pads, window_pads


def _attrs(**kw):
    return lambda name, default=None: kw.get(name, default)


def test_perm_helpers():
    assert layout.tf_axis(layout.NHWC, 1) == 3 and layout.tf_axis(layout.NHWC, -1) == 2
    assert layout.invert((0, 2, 3, 1)) == (0, 3, 1, 2)
    assert layout.relative((0, 2, 3, 1), (0, 1, 2, 3)) == (0, 3, 1, 2)
    assert layout.onnx_shape_of((1, 7, 9, 5), layout.NHWC) == (1, 5, 7, 9)
    assert layout.moves_only_unit_dims((1, 1, 1, 5), (0, 3, 1, 2))
    assert not layout.moves_only_unit_dims((1, 7, 9, 5), (0, 3, 1, 2))
    with pytest.raises(ValueError):
        layout.tf_axis(layout.NHWC, 4)


def _check_plan(in_shape, in_perm, out_shape, preferred=()):
    """The plan must reproduce numpy's reshape of the ONNX tensor."""
    onnx_in = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    in_layout, out_layout = layout.plan_reshape(in_shape, in_perm, out_shape, preferred)
    tf_tensor = np.transpose(onnx_in, in_layout)  # after the (possible) transpose
    tf_out = tf_tensor.reshape(layout.permute_shape(out_shape, out_layout))
    np.testing.assert_array_equal(tf_out, np.transpose(onnx_in.reshape(out_shape), out_layout))
    return in_layout, out_layout


def test_plan_flatten_after_global_pool_needs_no_transpose():
    assert _check_plan((2, 5, 1, 1), layout.NHWC, (2, 5)) == (layout.NHWC, (0, 1))


def test_plan_flatten_of_spatial_map_goes_to_onnx_order():
    in_layout, _ = _check_plan((2, 5, 3, 4), layout.NHWC, (2, 60))
    assert in_layout == (0, 1, 2, 3)


def test_plan_channel_split_stays_channels_last():
    assert _check_plan((2, 6, 3, 4), layout.NHWC, (2, 2, 3, 3, 4)) == (layout.NHWC, (0, 3, 4, 1, 2))
    # and merging back with the group dims swapped needs one local transpose
    in_layout, out_layout = _check_plan((2, 3, 2, 3, 4), (0, 3, 4, 2, 1), (2, 6, 3, 4), [layout.NHWC])
    assert in_layout == (0, 3, 4, 1, 2) and out_layout == layout.NHWC


def test_plan_unsqueeze_prefers_channels_last():
    assert _check_plan((2, 5), (0, 1), (2, 5, 1, 1), [layout.NHWC])[1] == layout.NHWC


def test_plan_dynamic_batch():
    assert layout.plan_reshape((None, 5, 1, 1), layout.NHWC, (None, 5)) == (layout.NHWC, (0, 1))
    assert layout.plan_reshape((None, 5, 3, 1), layout.NHWC, (-1,)) == ((0, 1, 2, 3), (0,))


@pytest.mark.parametrize("size,k,s,d,expected", [(7, 3, 1, 1, (1, 1)), (8, 3, 2, 1, (0, 1)), (7, 3, 2, 1, (1, 1)),
                                                 (9, 3, 1, 2, (2, 2)), (5, 4, 1, 1, (1, 2))])
def test_same_pads(size, k, s, d, expected):
    assert same_pads(size, k, s, d) == expected
    assert same_pads(size, k, s, d, lower=True) == expected[::-1]


def test_window_pads_trims_unused_end_padding():
    pads = window_pads(_attrs(pads=[1, 1, 1, 1]), (8, 8), (3, 3), (2, 2), (1, 1))
    assert pads.begin == (1, 1) and pads.end == (0, 0) and pads.out == (4, 4) and pads.declared_end == (1, 1)
    assert pads.tf_padding((8, 8), (3, 3), (2, 2), (1, 1)) is None  # (1, 0) is not TF SAME (0, 1)
    pads = window_pads(_attrs(pads=[1, 1, 1, 1]), (7, 9), (3, 3), (1, 1), (1, 1))
    assert pads.tf_padding((7, 9), (3, 3), (1, 1), (1, 1)) == "SAME"


def test_window_pads_ceil_mode():
    pads = window_pads(_attrs(), (7, 10), (3, 3), (2, 2), (1, 1), ceil_mode=True)
    assert pads.out == (3, 5) and pads.end == (0, 1)
    pads = window_pads(_attrs(pads=[1, 1, 0, 0]), (4, 4), (2, 2), (2, 2), (1, 1), ceil_mode=True)
    assert pads.out == (3, 3)  # the last window starts inside the input
