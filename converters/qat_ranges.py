"""A ``--qat`` checkpoint's learned activation ranges, named by the tensors of its float .tflite, so the
int8 stage (:func:`edgenet.converters.quantize.quantize`) uses them instead of calibrating.

The QAT ranges are keyed by fake-quant point (``act_fq_<i>``, :mod:`edgenet.qat`); the quantizer wants
``{tflite tensor name: (min, max)}``. The tensors are matched by what they compute, not by name: one
image goes through the float .tflite (every float activation readable) and through the QAT graph
with fake quantization off (the same float function: the checkpoint holds its weights), and every
.tflite activation takes the range of the fake-quant point whose input it equals (same element
count, NHWC vs NCHW, largest difference below 1e-3 of the point's range). Tensors TFLite gives the
same scale anyway (the reshape after the average pool) match the same point; a PAD's output takes its
input's range. A .tflite activation
matching no point keeps its calibrated range and is counted (``unmatched``); a point whose tensor the
converter removed (the average pool of a 1x1 map) is ``merged``: the .tflite rounds there once, the
QAT model twice.

A learned range ``(scale s, zero point z)`` is handed over as ``[(-128 - z) s, (127 - z) s]``: from it
the quantizer computes ``s`` and ``z`` back (its formula is in :mod:`edgenet.converters.quantize`).
The model input keeps the range the pipeline fixes for it (the pixel range, so a uint8 input takes
camera pixels as they are); QAT's input fake-quant learned nearly the same one. Weights need nothing: the quantizer's symmetric per-channel scale ``max|w| / 127`` of the stored
weights is the one the QAT model ended with (:func:`edgenet.qat.refresh_weight_ranges`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenet.errors import ConversionError


_PADS = (34, 60)    # TFLite builtin operators PAD, PADV2


@dataclass(frozen=True)
class LearnedRanges:
    ranges: dict                 # {tflite tensor name: (min, max)}, every float activation tensor
    matched: int                 # tensors given a learned range
    unmatched: tuple[str, ...]   # tensors that kept the calibrated range
    merged: tuple[str, ...] = () # QAT points the converter removed (their tensor is another point's)


def _point_inputs(ckpt, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """``{act_fq_i: the float tensor it quantizes}`` for one NCHW batch, fake quantization off."""
    import torch

    from edgenet import qat

    gm = qat.prepare_qat(ckpt.build_model())
    qat.set_observers(gm, activations=False, weights=False)
    seen: dict[str, np.ndarray] = {}
    for name, fq in qat.activation_fake_quants(gm) + qat.weight_fake_quants(gm):
        fq.disable_fake_quant()
    for name, fq in qat.activation_fake_quants(gm):
        fq.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[0].detach().numpy()))
    with torch.inference_mode():
        gm.eval()(torch.from_numpy(np.ascontiguousarray(x_nchw, np.float32)))
    return seen


def _nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def learned_ranges(ckpt, float_tflite: bytes, calibrated: dict, x_nhwc: np.ndarray) -> LearnedRanges:
    """``calibrated`` (:meth:`RangeCalibrator.ranges` of ``float_tflite``) with every activation the
    QAT model quantized replaced by its learned range. ``x_nhwc``: one or a few preprocessed
    images (float32, the .tflite's input layout). ConversionError if ``ckpt`` holds no QAT ranges or
    fewer than all its fake-quant points were found in the .tflite (a model they do not describe)."""
    from edgenet.converters import _flatbuffer
    from edgenet.converters.probe import with_outputs
    from edgenet.runtime import make_interpreter

    if not ckpt.qat:
        raise ConversionError("the checkpoint holds no QAT ranges (it was not written by edgenet train --qat)")
    learned = ckpt.qat["ranges"]["activations"]
    x_nhwc = np.ascontiguousarray(x_nhwc[:1], np.float32)
    points = {name: _nhwc(v) for name, v in _point_inputs(ckpt, x_nhwc.transpose(0, 3, 1, 2)).items()}
    missing, unknown = sorted(set(points) - set(learned)), sorted(set(learned) - set(points))
    if missing or unknown:
        what = "; ".join(w for w in (f"no learned range for {', '.join(missing[:4])}" if missing else "",
                                     f"ranges for points the model does not have: {', '.join(unknown[:4])}"
                                     if unknown else "") if w)
        raise ConversionError(f"the checkpoint's QAT ranges do not fit its model ({what}): retrain with "
                              "edgenet train --qat, or convert without them")

    obj = _flatbuffer.read(float_tflite)
    graph = obj.subgraphs[0]
    by_name = {_flatbuffer.tensor_name(t): i for i, t in enumerate(graph.tensors)}
    inputs = {int(i) for i in graph.inputs}     # the input keeps its pixel range (uint8 camera input)
    names = [n for n in calibrated if n in by_name and by_name[n] not in inputs]
    probe = make_interpreter(with_outputs(float_tflite, [by_name[n] for n in names]))
    probe.set_tensor(probe.get_input_details()[0]["index"], x_nhwc)
    probe.invoke()

    out, found, unmatched = dict(calibrated), set(), []
    for name in names:
        value = probe.get_tensor(by_name[name])
        best = None
        for point, ref in points.items():
            if ref.size != value.size:
                continue
            scale = learned[point]["scale"]
            err = float(np.abs(ref.reshape(value.shape) - value).max())     # sizes are equal (above)
            if err <= max(1e-3 * 255 * scale, 1e-5) and (best is None or err < best[1]):
                best = (point, err)
        if best is None:
            unmatched.append(name)
            continue
        s, z = learned[best[0]]["scale"], learned[best[0]]["zero_point"]
        out[name] = ((-128 - z) * s, (127 - z) * s)
        found.add(best[0])
    # a PAD adds zeros (exact in any range) and TFLite gives its output its input's scale
    producers = {int(op.outputs[0]): op for op in graph.operators if len(op.outputs)}
    names_of = {i: n for n, i in by_name.items()}
    for name in list(unmatched):
        op = producers.get(by_name[name])
        code = None if op is None else obj.operatorCodes[op.opcodeIndex]
        if code is not None and max(code.builtinCode, code.deprecatedBuiltinCode) in _PADS:
            source = names_of.get(int(op.inputs[0]))
            if source in out and source not in unmatched:
                out[name] = out[source]
                unmatched.remove(name)

    # a point whose tensor the converter removed (an average pool over a 1x1 map is the identity)
    # computes what a matched point computes: it has nothing left to quantize
    merged = tuple(p for p in set(learned) - found
                   if any(points[q].size == points[p].size and np.allclose(points[q].reshape(-1), points[p].reshape(-1),
                                                                           atol=1e-5) for q in found))
    missing = sorted(set(learned) - found - set(merged) - {"act_fq_0"}, key=lambda p: int(p.rsplit("_", 1)[1]))
    if missing:
        raise ConversionError(f"QAT ranges: {len(missing)} fake-quant point(s) have no tensor in the .tflite "
                              f"({', '.join(missing[:4])}); the checkpoint's ranges do not describe this model")
    return LearnedRanges(out, len(names) - len(unmatched), tuple(unmatched), tuple(sorted(merged)))


def qat_ranges_hook(checkpoint_path, calib_x: np.ndarray, notes: list[str]):
    """For the int8 stage of ``edgenet convert ckpt.pt --int8``: None for a float checkpoint; for a
    ``--qat`` one a function ``(float .tflite, calibrated ranges) -> ranges`` giving the learned
    ranges (:func:`learned_ranges`) and saying in ``notes`` how many tensors took them. If the
    checkpoint's ranges do not fit the .tflite (ConversionError), the calibrated ranges are kept and
    the note says why."""
    from edgenet.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    if not ckpt.qat:
        return None

    def hook(float_tflite: bytes, calibrated: dict) -> dict:
        try:
            got = learned_ranges(ckpt, float_tflite, calibrated, calib_x)
        except ConversionError as exc:
            notes.append(f"int8: the QAT ranges in {checkpoint_path} were not used, the activations were "
                         f"calibrated: {exc}")
            return calibrated
        kept = len(calibrated) - got.matched
        notes.append(f"int8: {got.matched} activation tensors use the ranges learned by QAT (edgenet train --qat); "
                     f"{kept} kept the calibrated range (the input's pixel range"
                     f"{'; no QAT point computes ' + ', '.join(got.unmatched[:3]) if got.unmatched else ''})")
        return got.ranges
    return hook
