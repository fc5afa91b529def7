"""Resize / Upsample through TFLite against ONNX's reference implementation (the spec) and, for the
opsets it cannot run (Resize-10, Upsample), onnxruntime and ONNX's own opset-10 expectations.

Each test converts one model holding many Resize nodes side by side (one output each), so a single
TFLite conversion covers a whole grid of modes."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from test_onnx_to_tf_helpers import (from_tf_output, helper, onnx, to_tflite, rand, run_ort, run_reference,
                                     tflite_bytes, tflite_run, to_tf_input)

from edgenet.converters.onnx_to_tf.resize_math import AxisResize, ResizeMode, axis_weights, nearest_indices

X = (1, 3, 7, 9)
COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = {"up_x2": [1, 1, 2, 2], "up_frac": [1, 1, 1.5, 2.5], "down_frac": [1, 1, 0.6, 0.75],
          "down_x0.5": [1, 1, 0.5, 0.5], "mixed": [1, 1, 0.7, 1.7]}


def _grid_model(entries, opset: int, x_shape=X):
    """One model, one Resize node (and output) per entry: (name, attrs, scales or None, sizes or None)."""
    nodes, inits = [], []
    for name, attrs, scales, sizes in entries:
        ins = ["x"]
        if opset >= 11:  # at opset 11, roi and scales are required inputs (empty when unused)
            if opset == 11:
                inits.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), f"{name}_roi"))
            ins.append(f"{name}_roi" if opset == 11 else "")
            if scales is not None or opset == 11:
                inits.append(onnx.numpy_helper.from_array(np.array(scales or [], np.float32), f"{name}_s"))
                ins.append(f"{name}_s")
            if sizes is not None:
                if scales is None and opset > 11:
                    ins.append("")
                inits.append(onnx.numpy_helper.from_array(np.array(sizes, np.int64), f"{name}_z"))
                ins.append(f"{name}_z")
        else:
            inits.append(onnx.numpy_helper.from_array(np.array(scales, np.float32), f"{name}_s"))
            ins.append(f"{name}_s")
        nodes.append(helper.make_node("Resize", ins, [name], name=name, **attrs))
    graph = helper.make_graph(nodes, "grid", [helper.make_tensor_value_info("x", 1, list(x_shape))],
                              [helper.make_tensor_value_info(e[0], 1, None) for e in entries], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8 if opset < 19 else 10)


def _check_grid(model, expected_fn, x_shape=X, atol=2e-5):
    x = rand(*x_shape)
    graph = to_tflite(model)
    outs, ops = tflite_run(tflite_bytes(graph), [to_tf_input(x, graph.inputs[0].channels_last)])
    expected = expected_fn(model, {model.graph.input[0].name: x})
    bad = []
    for out, info, want in zip(outs, graph.outputs, expected):
        got = from_tf_output(out, info.channels_last)
        if got.shape != want.shape or not np.allclose(got, want, atol=atol, rtol=1e-5):
            err = "shape" if got.shape != want.shape else f"{np.abs(got - want).max():.2g}"
            bad.append(f"{info.name}: {err}")
    assert not bad, bad
    return graph, ops


@pytest.mark.parametrize("opset", [11, 13, 19])
def test_nearest_every_mode_vs_spec(opset):
    entries = [(f"{c}_{n}_{s}", dict(mode="nearest", coordinate_transformation_mode=c, nearest_mode=n), SCALES[s], None)
               for c, n, s in itertools.product(COORDS, NEAREST, SCALES)]
    _check_grid(_grid_model(entries, opset), run_reference)


def test_modes_the_reference_gets_wrong_or_lacks_vs_onnxruntime():
    """half_pixel_symmetric (opset 19): where the source coordinate lands on a pixel up to float
    rounding (7.000000000000001 when upsampling 9 -> 22), ONNX's reference picks its neighbour window
    from x + 1 = 8.0 but its weights from x, and reads pixel 6 instead of 7 (onnxruntime reads 7);
    tf_half_pixel_for_nn (opset 11) is gone from the reference. (Left out: 7 * 0.6 down, where
    onnxruntime's float32 arithmetic puts a coordinate at 0.5 exactly and the spec's float64 at
    0.5000001, so round_prefer_floor differs; the reference and this converter read pixel 1. Likewise
    for tf_half_pixel_for_nn only scales whose coordinates fall clear of rounding ties are used.)"""
    scales = [s for s in SCALES if s != "down_frac"]
    entries = [(f"{m}_{n}_{s}", dict(mode=m, coordinate_transformation_mode="half_pixel_symmetric", nearest_mode=n),
                SCALES[s], None) for m, n, s in itertools.product(["nearest", "linear"], NEAREST[:2], scales)]
    _check_grid(_grid_model(entries, 19), run_ort)
    entries = [(f"{n}_{s}", dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode=n),
                SCALES[s], None) for n, s in itertools.product(NEAREST, ["up_x2", "down_x0.5", "up_frac"])]
    _check_grid(_grid_model(entries, 11), run_ort)


@pytest.mark.parametrize("opset", [11, 13, 19])
def test_linear_and_cubic_every_coordinate_mode_vs_spec(opset):
    coords = COORDS
    entries = [(f"{m}_{c}_{s}", dict(mode=m, coordinate_transformation_mode=c), SCALES[s], None)
               for m, c, s in itertools.product(["linear", "cubic"], coords, SCALES)]
    entries += [("cubic_a05_excl", dict(mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1), SCALES["mixed"], None)]
    _check_grid(_grid_model(entries, opset), run_reference, atol=5e-5)


def test_sizes_axes_aspect_ratio_antialias_crop_vs_spec():
    entries = [
        ("sizes_down", dict(mode="linear"), None, [1, 3, 4, 5]),
        ("sizes_up_nearest", dict(mode="nearest"), None, [1, 3, 11, 20]),
        ("sizes_one", dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"), None, [1, 3, 1, 4]),
        ("axes_32", dict(mode="nearest", axes=[3, 2]), [2.0, 1.5], None),
        ("axes_sizes", dict(mode="linear", axes=[2]), None, [12]),
        ("not_larger", dict(mode="nearest", keep_aspect_ratio_policy="not_larger", axes=[2, 3]), None, [14, 12]),
        ("not_smaller", dict(mode="linear", keep_aspect_ratio_policy="not_smaller", axes=[2, 3]), None, [4, 4]),
        ("antialias_linear", dict(mode="linear", antialias=1), [1, 1, 0.4, 0.6], None),
        ("antialias_cubic", dict(mode="cubic", antialias=1), None, [1, 3, 3, 4]),
        ("channels_and_batch", dict(mode="nearest"), [1, 2, 1, 1], None),
    ]
    _check_grid(_grid_model(entries, 19), run_reference, atol=5e-5)


def test_tf_crop_and_resize_with_extrapolation_vs_spec():
    nodes, inits = [], []
    for k, (mode, roi, value) in enumerate([("linear", [0, 0, 0.2, -0.1, 1, 1, 0.9, 1.3], 0.0),
                                             ("nearest", [0, 0, -0.3, 0.4, 1, 1, 1.2, 0.8], 10.0),
                                             ("cubic", [0, 0, 0.1, 0.1, 1, 1, 0.8, 0.9], -2.0)]):
        inits += [onnx.numpy_helper.from_array(np.array(roi, np.float32), f"roi{k}"),
                  onnx.numpy_helper.from_array(np.array([1, 3, 5, 8], np.int64), f"z{k}")]
        nodes.append(helper.make_node("Resize", ["x", f"roi{k}", "", f"z{k}"], [f"y{k}"], mode=mode,
                                      coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=value))
    graph = helper.make_graph(nodes, "crop", [helper.make_tensor_value_info("x", 1, list(X))],
                              [helper.make_tensor_value_info(f"y{k}", 1, None) for k in range(3)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    _check_grid(model, run_reference, atol=5e-5)


@pytest.mark.parametrize("x_shape,scales", [((2, 3, 11), [1, 1, 1.7]), ((1, 2, 3, 4, 5), [1, 1, 2, 0.5, 1.4])])
def test_other_ranks_vs_spec(x_shape, scales):
    entries = [(f"{m}", dict(mode=m), scales, None) for m in ("nearest", "linear", "cubic")]
    _check_grid(_grid_model(entries, 13, x_shape), run_reference, x_shape, atol=5e-5)


def test_opset10_follows_onnxruntime_and_onnx_opset10_tests():
    """Opset-10 nearest: asymmetric, rounded down when upsampling, up when downsampling an axis."""
    entries = [(f"{m}_{s}", dict(mode=m), SCALES[s], None) for m in ("nearest", "linear") for s in SCALES]
    _check_grid(_grid_model(entries, 10), run_ort)
    # ONNX's opset-10 test: [[1, 2, 3, 4], [5, 6, 7, 8]] downsampled by 0.6 -> [[1, 3]]
    assert nearest_indices(AxisResize(4, 2, 0.6), ResizeMode("nearest", "asymmetric", "legacy")).tolist() == [0, 2]
    assert nearest_indices(AxisResize(2, 6, 3.0), ResizeMode("nearest", "asymmetric", "legacy")).tolist() == [
        0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_nearest_and_linear_vs_onnxruntime(opset):
    nodes, inits = [], []
    for k, (mode, scales) in enumerate([("nearest", [1.0, 1.0, 2.0, 3.0]), ("nearest", [1.0, 1.0, 1.5, 2.5]),
                                        ("linear", [1.0, 1.0, 2.0, 2.0]), ("linear", [1.0, 1.0, 1.6, 2.2])]):
        if opset < 9:
            nodes.append(helper.make_node("Upsample", ["x"], [f"y{k}"], mode=mode, scales=scales))
        else:
            inits.append(onnx.numpy_helper.from_array(np.array(scales, np.float32), f"s{k}"))
            nodes.append(helper.make_node("Upsample", ["x", f"s{k}"], [f"y{k}"], mode=mode))
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", 1, list(X))],
                              [helper.make_tensor_value_info(f"y{k}", 1, None) for k in range(4)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    _check_grid(model, run_ort)


def test_exact_tflite_kernels_are_used_when_they_match():
    entries = [("nearest_x2", dict(mode="nearest"), [1, 1, 2, 2], None),
               ("bilinear_half_pixel", dict(mode="linear"), [1, 1, 2, 2], None),
               ("bilinear_align", dict(mode="linear", coordinate_transformation_mode="align_corners"), None,
                [1, 3, 13, 17])]
    for name, attrs, scales, sizes in entries:
        _, ops = _check_grid(_grid_model([(name, attrs, scales, sizes)], 13), run_reference)
        want = "RESIZE_NEAREST_NEIGHBOR" if "nearest" in name else "RESIZE_BILINEAR"
        assert want in ops and "GATHER" not in ops and "BATCH_MATMUL" not in ops, (name, ops)
    # a fractional nearest downsample no TFLite kernel reproduces: one GATHER per axis
    _, ops = _check_grid(_grid_model([("frac", dict(mode="nearest"), [1, 1, 0.6, 0.75], None)], 13), run_reference)
    assert ops.count("GATHER") == 2


def test_case_11_resize10_nearest_down_up():
    """Silently wrong before (relative error 1.56): now as onnxruntime and ONNX's opset-10 tests."""
    model = onnx.load("/work/shared/cases/11_resize10_nearest_down_up.onnx")
    _check_grid(model, run_ort, x_shape=(1, 3, 20, 20))


def test_weight_rows_sum_to_one():
    for mode in (ResizeMode("linear"), ResizeMode("cubic"), ResizeMode("cubic", antialias=True),
                 ResizeMode("linear", "align_corners", antialias=True)):
        for n, out in ((7, 3), (7, 16), (5, 5)):
            matrix, outside = axis_weights(AxisResize(n, out, out / n), mode)
            np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
            assert not outside.any()


def test_nearest_rounds_exact_coordinates_as_exact():
    """half_pixel_symmetric maps output 2 of 7 -> 5.25 pixels to exactly 3 (offset 3.5 * (1 - 5 / 5.25)
    + 2.5 / 0.75 - 0.5), which float64 computed as 3.0000000000000004: nearest_mode="ceil" took it
    to 4, silently (onnxruntime reads 3; the reference evaluator's float32 arithmetic gets 2 for floor)."""
    axis = AxisResize(7, 5, float(np.float32(0.75)))
    assert nearest_indices(axis, ResizeMode("nearest", "half_pixel_symmetric", "ceil")).tolist() == [1, 2, 3, 5, 6]
    assert nearest_indices(axis, ResizeMode("nearest", "half_pixel_symmetric", "floor")).tolist() == [0, 1, 3, 4, 5]
    entries = [(n, dict(mode="nearest", coordinate_transformation_mode="half_pixel_symmetric", nearest_mode=n),
                [1, 1, 0.75, 1], None) for n in ("ceil", "floor")]
    _check_grid(_grid_model(entries, 19, (1, 2, 7, 5)), run_ort, x_shape=(1, 2, 7, 5))


def test_empty_output_is_refused_naming_the_axis():
    """floor(1 * 0.6) = 0: an empty tensor (TFLite has none) was a ZeroDivisionError before."""
    from edgenet.errors import UnsupportedOpError

    model = _grid_model([("y", dict(mode="linear", coordinate_transformation_mode="align_corners"),
                          [1, 1, 0.6, 2.0], None)], 13, (1, 3, 1, 7))
    with pytest.raises(UnsupportedOpError, match="output size 0 along axis 2"):
        to_tflite(model)
