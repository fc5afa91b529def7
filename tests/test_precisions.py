"""Every deployable precision: float16 and dynamic by the LiteRT Quantizer from the writer's float32
model (weight types op by op, error against the float32 model); int8 and int16x8 as the LiteRT Quantizer
writes them from edgenet's ranges (the ranges are the scales, reruns are byte-identical, per-op int16 /
float recipes), and where int16x8 runs (TFLite Micro, vela). The small float32 models these start from
are made with TensorFlow's converter here, in the test (edgenet's ONNX path has no TensorFlow)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import _tiny_tf_cnn
from edgenet.converters.calibration import RangeCalibrator
from edgenet.converters.op_precision import model_precision, op_precisions, ops_not_in
from edgenet.converters.quantize import keep_float, quantize, quantize_calibrated, requantize
from edgenet.converters.float_weights import weight_model
from edgenet.converters.tflite import with_signature
from edgenet.config import CalibMethod, IOType, OpPrecision, Precision
from edgenet.errors import ConversionError
from edgenet.inference import TFLiteModel
from edgenet.targets.tflite_graph import read_tflite


def to_float_tflite(fn) -> bytes:
    """The float32 .tflite of a tf.function (TensorFlow's converter, builtin ops, our signature)."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    conv.experimental_lower_to_saved_model = False
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return with_signature(bytes(conv.convert()))


def _wide_tf_cnn():
    """A CNN whose conv and dense weights hold over 1,024 values each: TF's dynamic-range quantizer
    leaves smaller weights in float (so the tiny CNN's dynamic model is its float32 model)."""
    rng = np.random.default_rng(3)
    w1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 16)).astype(np.float32))
    w2 = tf.constant(rng.normal(0, 0.1, (3, 3, 16, 32)).astype(np.float32))
    wf = tf.constant(rng.normal(0, 0.2, (32, 40)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def model(x):
        y = tf.nn.relu(tf.nn.conv2d(x, w1, 2, "SAME"))
        y = tf.nn.relu(tf.nn.conv2d(y, w2, 1, "SAME"))
        return tf.matmul(tf.reduce_mean(y, axis=[1, 2]), wf)

    return model


@pytest.fixture(scope="module")
def tiny():
    fn = _tiny_tf_cnn(tf)
    data = np.random.default_rng(0).uniform(-1, 1, (40, 32, 32, 3)).astype(np.float32)
    return fn, data, to_float_tflite(fn)


@pytest.fixture(scope="module")
def wide():
    fn = _wide_tf_cnn()
    return fn, np.random.default_rng(1).uniform(-1, 1, (24, 16, 16, 3)).astype(np.float32)


def _sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((ref.astype(np.float64) - test) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(noise, 1e-30)))


def test_full_integer_precision_is_refused_by_the_float_route():
    from edgenet.converters.tflite_writer.side import NativeSide

    side = NativeSide()
    side.onnx_to_tflite(_conv_onnx())
    with pytest.raises(ValueError, match="needs calibration"):
        side.float_tflite(Precision.INT16X8)


# -- int8 / int16x8: the ranges handed over are the scales ------------------------------------------
def _activations(model: bytes) -> dict:
    """{tensor name: (dtype, scale, zero point)} of the model's per-tensor quantized activations."""
    return {t.name: (t.dtype, t.scales[0], t.zero_points[0]) for t in read_tflite(model).tensors
            if not t.is_constant and t.scales and len(t.scales) == 1}


@pytest.mark.parametrize("precision", [Precision.INT8, Precision.INT16X8])
def test_each_range_handed_over_is_the_scale_in_the_model(tiny, precision):
    """The quantizer does not calibrate: every activation's scale and zero point are what edgenet's
    range implies (int8: asymmetric over the range widened to hold 0; int16: symmetric)."""
    _, data, float_model = tiny
    bits = 16 if precision is Precision.INT16X8 else 8
    ranges = RangeCalibrator([data], activation_bits=bits).ranges(float_model)
    model = quantize(float_model, ranges, precision=precision)
    found = _activations(model)
    assert set(ranges) <= set(found)                          # inputs, every op output, the output
    for name, (lo, hi) in ranges.items():
        dtype, scale, zero = found[name]
        if bits == 8:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            want_scale = (hi - lo) / 255
            assert (dtype, zero) == ("int8", int(np.rint(-128 - lo / want_scale))), name
        else:
            want_scale = max(-lo, hi) / 32767
            assert (dtype, zero) == ("int16", 0), name
        assert scale == pytest.approx(want_scale, rel=1e-6), name


def test_a_changed_range_changes_exactly_that_tensors_scale(tiny):
    _, data, float_model = tiny
    ranges = RangeCalibrator([data]).ranges(float_model)
    name = "Relu6_1;depthwise"
    wider = {**ranges, name: (0.0, 2 * ranges[name][1])}
    before, after = _activations(quantize(float_model, ranges, precision=Precision.INT8)), \
        _activations(quantize(float_model, wider, precision=Precision.INT8))
    assert after[name][1] == pytest.approx(2 * before[name][1], rel=1e-6)
    assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}


@pytest.mark.parametrize("precision, io_type, ops", [
    (Precision.INT8, None, {}), (Precision.INT8, IOType.UINT8, {}), (Precision.INT8, IOType.FLOAT32, {}),
    (Precision.INT16X8, None, {}), (Precision.INT8, IOType.UINT8,
                                    {"Relu6_1;depthwise": OpPrecision.FLOAT, "Relu6_2;Conv2D_1": OpPrecision.INT16}),
])
def test_reruns_are_byte_identical(tiny, precision, io_type, ops):
    _, data, float_model = tiny
    first = quantize_calibrated(float_model, [data], precision=precision, io_type=io_type, op_precision=ops)
    again = quantize_calibrated(float_model, [data], precision=precision, io_type=io_type, op_precision=ops)
    assert first.model == again.model
    assert requantize(first, dict(ops)) == first.model       # from the kept ranges: the same model


def test_a_kept_quantizer_gives_what_a_new_one_gives(tiny):
    """One LiteRT Quantizer object serves every requantization of a float model (a repair's rounds):
    after other recipes (int16, float, a float output) each model is the one a new quantizer makes,
    and a trial model (buffers not inlined) inlined is the written one."""
    from edgenet.converters import quantize as q
    from edgenet.converters.quant_io import inline_buffers

    _, data, float_model = tiny
    base = quantize_calibrated(float_model, [data])
    last = [e.output for e in op_precisions(float_model)][-1]
    recipes = [{}, {"Relu6_1;depthwise": OpPrecision.INT16, "Relu6_2;Conv2D_1": OpPrecision.FLOAT},
               {last: OpPrecision.FLOAT}, {"Relu6_1;depthwise": OpPrecision.FLOAT}]
    kept = [requantize(base, r, (0,) if last in r else ()) for r in recipes]
    trials = [requantize(base, r, (0,) if last in r else (), trial=True) for r in recipes]
    fresh = []
    for r in recipes:
        q._engine.cache_clear()
        fresh.append(requantize(base, r, (0,) if last in r else ()))
    assert kept == fresh and kept[0] == base.model and len(set(kept)) == len(kept)
    assert [inline_buffers(t) for t in trials] == kept


def test_one_regex_per_op_type_and_promotion_matches_each_op_alone():
    """The recipe's scope regexes: one alternation per (op type, promotion), matching exactly the
    scopes of its ops (names with regex characters escaped, a scope that prefixes another kept apart)."""
    import re

    from edgenet.converters.quantize import _recipe_regexes

    scopes = {"a": ("conv/a;", "CONV_2D"), "a.b": ("conv/a.b;", "CONV_2D"), "c": ("c(1)+;", "ADD"),
              "d": ("d;", "CONV_2D"), "u": ("u;", None)}
    wanted = {"a": OpPrecision.FLOAT, "a.b": OpPrecision.FLOAT, "c": OpPrecision.FLOAT, "d": OpPrecision.INT16,
              "u": OpPrecision.FLOAT}
    found = dict(_recipe_regexes(wanted, scopes))
    assert set(found) == {("CONV_2D", OpPrecision.FLOAT), ("ADD", OpPrecision.FLOAT), ("CONV_2D", OpPrecision.INT16)}
    every = [s for s, _ in scopes.values()] + ["conv/axb;", "conv/a;x", "c1+;", "d;;"]
    for (op, promotion), regex in found.items():
        own = {s for n, (s, t) in scopes.items() if t == op and wanted[n] is promotion}
        assert {s for s in every if re.search(regex, s)} == own


def test_uint8_io_is_the_int8_model_shifted_by_128_exactly(tiny):
    """uint8 I/O: same scales, zero points + 128, and outputs exactly the int8 model's + 128."""
    _, data, float_model = tiny
    int8 = quantize_calibrated(float_model, [data]).model
    uint8 = quantize_calibrated(float_model, [data], io_type=IOType.UINT8).model
    g8, gu = read_tflite(int8), read_tflite(uint8)
    for a, b in ((g8.input_tensors[0], gu.input_tensors[0]), (g8.output_tensors[0], gu.output_tensors[0])):
        assert (a.dtype, b.dtype) == ("int8", "uint8")
        assert a.scales == b.scales and b.zero_points[0] == a.zero_points[0] + 128
    assert gu.input_tensors[0].name == "x"
    from edgenet.runtime import make_interpreter

    def run(model, x):
        interp = make_interpreter(model, 1)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])

    q = np.random.default_rng(2).integers(-128, 128, (1, 32, 32, 3)).astype(np.int8)
    out8 = run(int8, q)
    outu = run(uint8, (q.astype(np.int16) + 128).astype(np.uint8))
    assert np.array_equal(out8.astype(np.int16) + 128, outu.astype(np.int16))


def test_int16x8_model_types_runs_and_beats_int8(tiny):
    fn, data, float_model = tiny
    native = quantize_calibrated(float_model, [data], precision=Precision.INT16X8).model
    floatio = quantize_calibrated(float_model, [data], precision=Precision.INT16X8, io_type=IOType.FLOAT32).model
    int8 = quantize_calibrated(float_model, [data]).model
    graph = read_tflite(native)
    assert graph.input_tensors[0].dtype == graph.output_tensors[0].dtype == "int16"
    assert graph.input_tensors[0].zero_points == (0,)                 # int16 is symmetric
    biases = {graph.tensors[op.inputs[2]].dtype for op in graph.operators if op.name == "CONV_2D"}
    assert biases == {"int64"}
    assert read_tflite(floatio).input_tensors[0].dtype == "float32"
    assert model_precision(native) is model_precision(floatio) is Precision.INT16X8
    assert ops_not_in(native, Precision.INT16X8) == ops_not_in(floatio, Precision.INT16X8) == []
    ref = TFLiteModel(float_model).predict(data)
    sqnr16 = _sqnr_db(ref, TFLiteModel(floatio).predict(data))
    sqnr8 = _sqnr_db(ref, TFLiteModel(int8).predict(data))
    assert sqnr16 > sqnr8 + 1, (sqnr16, sqnr8)      # measured 43.8 vs 41.3 dB: int8 weights limit both


def test_int16x8_error_is_the_int8_weights(wide):
    """With 16-bit activations what is left is the weights' int8 rounding: about the error of the
    dynamic model (int8 weights, float activations), less than the int8 model's."""
    fn, data = wide
    float_model = to_float_tflite(fn)
    ref = TFLiteModel(float_model).predict(data)
    sqnr = {p: _sqnr_db(ref, TFLiteModel(m).predict(data)) for p, m in (
        (Precision.DYNAMIC, weight_model(float_model, Precision.DYNAMIC)),
        (Precision.INT8, quantize_calibrated(float_model, [data], io_type=IOType.FLOAT32).model),
        (Precision.INT16X8, quantize_calibrated(float_model, [data], precision=Precision.INT16X8,
                                                io_type=IOType.FLOAT32).model))}
    assert sqnr[Precision.INT16X8] > sqnr[Precision.DYNAMIC] - 1.5 and sqnr[Precision.INT8] < sqnr[Precision.DYNAMIC], sqnr


@pytest.mark.parametrize("precision, io_type, message", [
    (Precision.INT16X8, IOType.INT8, "a int16x8 model takes int16 or float32 input and output, not int8"),
    (Precision.INT16X8, IOType.UINT8, "not uint8"),
    (Precision.INT8, "int16", "a int8 model takes int8 or uint8 or float32 input and output, not int16"),
])
def test_io_types_a_precision_cannot_have_are_refused(tiny, precision, io_type, message):
    _, data, float_model = tiny
    with pytest.raises(ConversionError, match=message):
        quantize_calibrated(float_model, [data], precision=precision, io_type=io_type)


def test_mse_calibration_for_int16_clips_less_than_for_int8(tiny):
    """int16's grid is 256x finer: the squared-error optimum keeps (nearly) the whole range."""
    _, data, float_model = tiny
    spiky = data.copy()
    spiky[0, 0, 0, :] = 40.0
    r8 = quantize_calibrated(float_model, [spiky], method=CalibMethod.MSE, io_type=IOType.FLOAT32).model
    r16 = quantize_calibrated(float_model, [spiky], precision=Precision.INT16X8, method=CalibMethod.MSE,
                              io_type=IOType.FLOAT32).model
    def input_scale(model):       # of the QUANTIZE that reads the float input
        graph = read_tflite(model)
        op = next(op for op in graph.operators if graph.inputs[0] in op.inputs)
        assert op.name == "QUANTIZE"
        return graph.tensors[op.outputs[0]].scales[0]

    s8, s16 = input_scale(r8), input_scale(r16)
    assert s8 * 127 < 20.0            # int8 clips the outlier pixel
    assert s16 * 32767 > 39.0         # int16 keeps it


# -- keep_float: selective quantization ------------------------------------------------------------
def test_keep_float_leaves_exactly_those_ops_in_float(tiny):
    fn, data, float_model = tiny
    names = [e.output for e in op_precisions(float_model)]
    middle, last = "Relu6_1;depthwise", names[-1]          # a depthwise conv, and the FC giving the output
    assert middle in names
    plain = quantize_calibrated(float_model, [data])
    kept = quantize_calibrated(float_model, [data], op_precision=keep_float([middle, last]))
    assert set(kept.keep_float) == {middle, last} and plain.keep_float == ()
    assert ops_not_in(plain.model, Precision.INT8) == []
    floats = ops_not_in(kept.model, Precision.INT8)
    assert [(e.op, e.precision) for e in floats] == [("DEPTHWISE_CONV_2D", Precision.FLOAT32),
                                                     ("FULLY_CONNECTED", Precision.FLOAT32)]
    assert floats[0].output == middle
    # every other op int8; QUANTIZE/DEQUANTIZE around each kept op
    ops = op_precisions(kept.model)
    assert {e.precision for e in ops if e.op not in ("DEPTHWISE_CONV_2D", "FULLY_CONNECTED")} == {Precision.INT8}
    assert [e.op for e in ops].count("DEQUANTIZE") == 2 and [e.op for e in ops].count("QUANTIZE") == 2
    assert model_precision(kept.model) is Precision.INT8
    # a kept op that gives the model's output: a QUANTIZE after it keeps the output int8; the float
    # op's output keeps the float model's name (by which layers are compared)
    graph = read_tflite(kept.model)
    assert graph.input_tensors[0].dtype == graph.output_tensors[0].dtype == "int8"
    producer = next(op for op in graph.operators if graph.outputs[0] in op.outputs)
    assert producer.name == "QUANTIZE" and floats[1].output == last
    # it runs, and is at least as close to the float model as the all-int8 one
    ref = TFLiteModel(float_model).predict(data)
    assert _sqnr_db(ref, TFLiteModel(kept.model).predict(data)) >= _sqnr_db(ref, TFLiteModel(plain.model).predict(data))


@pytest.mark.parametrize("io_type", [IOType.UINT8, IOType.FLOAT32])
def test_keep_float_of_the_output_op_keeps_the_io_type(tiny, io_type):
    _, data, float_model = tiny
    last = op_precisions(float_model)[-1].output
    model = quantize_calibrated(float_model, [data], io_type=io_type, op_precision=keep_float([last])).model
    graph = read_tflite(model)
    assert graph.input_tensors[0].dtype == graph.output_tensors[0].dtype == io_type.value
    assert [e.op for e in ops_not_in(model, Precision.INT8)] == ["FULLY_CONNECTED"]
    TFLiteModel(model).predict(data[:2])


def test_op_precision_refuses_an_unknown_op(tiny):
    _, data, float_model = tiny
    with pytest.raises(ConversionError, match=r"no op of the float model outputs 'Relu6_1;depthwize'; did you mean 'Relu6_1;depthwise'"):
        quantize_calibrated(float_model, [data], op_precision=keep_float(["Relu6_1;depthwize"]))


def test_int16_ops_get_int16_activations_exactly_there_and_run(tiny):
    """a16w8 on named ops of an int8 model: those ops' outputs (and the QUANTIZE feeding them) are
    int16, every other activation int8; int64 biases beside int16; it runs in LiteRT."""
    _, data, float_model = tiny
    base = quantize_calibrated(float_model, [data])
    promoted = {"Relu6_1;depthwise", "Mean"}
    model = requantize(base, {n: OpPrecision.INT16 for n in promoted})
    graph = read_tflite(model)
    by_output = {graph.tensors[op.outputs[0]].name: op for op in graph.operators}
    for name, op in by_output.items():
        if op.name == "QUANTIZE":
            continue
        want = "int16" if name in promoted else "int8"
        assert graph.tensors[op.outputs[0]].dtype == want, name
        if len(op.inputs) > 2 and op.inputs[2] >= 0 and name != "Mean":
            assert graph.tensors[op.inputs[2]].dtype == ("int64" if name in promoted else "int32"), name
    assert ops_not_in(model, Precision.INT8) != [] and model_precision(model) is Precision.INT8
    ref = TFLiteModel(float_model).predict(data)
    out = TFLiteModel(model).predict(data)
    assert _sqnr_db(ref, out) > 20
    # keep float and int16 together, the int16x8 model with one op in float
    both = requantize(base, {"Relu6_1;depthwise": OpPrecision.INT16, "Mean": OpPrecision.FLOAT})
    assert [e.op for e in ops_not_in(both, Precision.INT8) if e.precision is Precision.FLOAT32] == ["MEAN"]
    i16 = quantize_calibrated(float_model, [data], precision=Precision.INT16X8, op_precision=keep_float(["Mean"]))
    assert [(e.op, e.precision) for e in ops_not_in(i16.model, Precision.INT16X8)] == [("MEAN", Precision.FLOAT32)]
    TFLiteModel(i16.model).predict(data[:2])


# -- where int16x8 runs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int16x8_file(tiny, tmp_path_factory):
    _, data, float_model = tiny
    path = tmp_path_factory.mktemp("int16x8") / "model_int16x8.tflite"
    path.write_bytes(quantize_calibrated(float_model, [data], precision=Precision.INT16X8).model)
    return path


@pytest.mark.mcu
def test_int16x8_runs_in_tflite_micro_like_in_litert(int16x8_file):
    pytest.importorskip("tflite_micro")
    from edgenet.targets.tflm import litert_outputs, run_tflm

    run = run_tflm(int16x8_file, samples=3)
    assert run.ok, run.error
    assert run.outputs[0].dtype == np.int16 and run.arena_bytes > 0
    litert = litert_outputs(int16x8_file, run.inputs)
    # TFLM's and LiteRT's int16 reference kernels may round one step apart
    assert np.max(np.abs(run.outputs[0].astype(np.int32) - litert[0].astype(np.int32))) <= 2


@pytest.mark.mcu
def test_vela_maps_every_int16x8_op_to_the_npu(int16x8_file):
    pytest.importorskip("ethosu.vela")
    from edgenet.targets.vela import run_vela

    out = run_vela(int16x8_file, "ethos-u55-128", system_config="Ethos_U55_High_End_Embedded",
                   memory_mode="Shared_Sram")
    assert out.report.cpu_ops == 0 and out.report.npu_ops > 0, out.report.cpu_fallbacks


def _conv_onnx():
    """Conv 3x3 (3 -> 16) + Relu + Conv 3x3 (16 -> 32) + Relu + global pool + Gemm (32 -> 40)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, s, shape).astype(np.float32), name) for name, shape, s in (
        ("w1", (16, 3, 3, 3), 0.3), ("w2", (32, 16, 3, 3), 0.1), ("wf", (40, 32), 0.2), ("bf", (40,), 0.1))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_large_weights_stay_inside_the_flatbuffer():
    """The quantizer appends buffers over 1 KB after the flatbuffer when they total 256 KB; the
    model written keeps them inside, so that rewriting it by the object API (metadata) keeps them."""
    from edgenet.converters import _flatbuffer

    w = tf.constant(np.random.default_rng(4).normal(0, 0.05, (640, 640)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 640], tf.float32)])
    def dense(x):
        return tf.matmul(x, w)

    float_model = to_float_tflite(dense)
    data = np.random.default_rng(5).normal(size=(8, 640)).astype(np.float32)
    model = quantize_calibrated(float_model, [data]).model
    raw = _flatbuffer.utils().convert_bytearray_to_object(model)
    assert not any(b.offset for b in raw.buffers) and len(model) > 640 * 640
    assert len(_flatbuffer.write(raw)) == len(model)
    ref = TFLiteModel(float_model).predict(data)
    assert _sqnr_db(ref, TFLiteModel(model).predict(data)) > 25


def test_an_op_the_quantizer_cannot_quantize_stays_float_and_is_named(tiny):
    """LEAKY_RELU has no int8 recipe in the LiteRT Quantizer: the int8 model keeps it in float
    between DEQUANTIZE and QUANTIZE, still runs, and ops_not_in names it (what the pipeline
    reports, and refuses on integer-only targets)."""
    w = tf.constant(np.random.default_rng(6).normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def leaky(x):
        return tf.reduce_mean(tf.nn.leaky_relu(tf.nn.conv2d(x, w, 1, "SAME"), 0.1), axis=[1, 2])

    float_model = to_float_tflite(leaky)
    data = np.random.default_rng(7).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
    model = quantize_calibrated(float_model, [data]).model
    assert [(e.op, e.precision) for e in ops_not_in(model, Precision.INT8)] == [("LEAKY_RELU", Precision.FLOAT32)]
    assert model_precision(model) is Precision.INT8
    TFLiteModel(model).predict(data[:2])


# -- float16 / dynamic: the LiteRT Quantizer's, from the writer's float32 model -------------------------- -----------------
def _weights_by_op(model: bytes) -> list[tuple[str, str]]:
    """(op, stored dtype of its weight) for every op but DEQUANTIZE, in order; "-" for no weight."""
    graph = read_tflite(model)
    made_by = {o: op for op in graph.operators for o in op.outputs}
    rows = []
    for op in graph.operators:
        if op.name == "DEQUANTIZE":
            continue
        dtype = "-"
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = op.inputs[1]
            dtype = graph.tensors[w].dtype if graph.tensors[w].is_constant else graph.tensors[made_by[w].inputs[0]].dtype
        rows.append((op.name, dtype))
    return rows


# op -> stored weight type, as TensorFlow's converter made them of _conv_onnx (before TensorFlow left the
# ONNX path): dynamic keeps the 3x3x3x16 stem (432 values, under 1,024) in float32
WEIGHTS_BY_OP = {
    Precision.FLOAT16: [("PAD", "-"), ("CONV_2D", "float16"), ("CONV_2D", "float16"), ("MEAN", "-"),
                        ("FULLY_CONNECTED", "float16")],
    Precision.DYNAMIC: [("PAD", "-"), ("CONV_2D", "float32"), ("CONV_2D", "int8"), ("MEAN", "-"),
                        ("FULLY_CONNECTED", "int8")],
}


@pytest.mark.parametrize("precision", [Precision.FLOAT16, Precision.DYNAMIC])
def test_the_quantizers_float16_and_dynamic_have_tensorflows_weight_types(precision):
    """The side's float16 / dynamic model (LiteRT Quantizer on the writer's float32 model) stores the
    weights TensorFlow's converter stored, op by op, and computes onnxruntime's values to within the
    weights' rounding (float16: over 60 dB; dynamic: over 30 dB)."""
    import onnxruntime as ort

    from edgenet.converters.tflite_writer.side import NativeSide

    model = _conv_onnx()
    _, ours = NativeSide().graph_and_floats(model, (), (Precision.FLOAT32, precision))
    assert _weights_by_op(ours[precision]) == WEIGHTS_BY_OP[precision]
    assert model_precision(ours[precision]) is precision
    data = np.random.default_rng(8).uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = np.concatenate([session.run(None, {"x": x[None].transpose(0, 3, 1, 2)})[0] for x in data])
    assert _sqnr_db(ref, TFLiteModel(ours[Precision.FLOAT32]).predict(data)) > 100
    assert _sqnr_db(ref, TFLiteModel(ours[precision]).predict(data)) > (60 if precision is Precision.FLOAT16 else 30)
