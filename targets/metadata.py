"""TFLite model metadata in every .tflite edgenet writes, for the apps that read it: MediaPipe Tasks'
ImageClassifier, the LiteRT support library and Android Studio's model binding.

What is written (:func:`describe`): the model's name, description, version (the first 16 hex digits
of the sha256 of the model without metadata) and author "edgenet"; for the image input its color
space (RGB / GRAYSCALE), size, NormalizationOptions (mean and std on the 0..255 pixel scale:
edgenet's Preprocess has them on the 0..1 scale, so ``255 * mean``, ``255 * std``) and the range of
its values; for each output FeatureProperties (no score calibration), its value range where known
(after SOFTMAX/LOGISTIC), and on the first output (the signature's ``output_0``) ``labels.txt`` as a
TENSOR_AXIS_LABELS file.

Where it lives (:func:`with_metadata`): the model's ``metadata`` list gets an entry
``TFLITE_METADATA`` whose buffer holds the M001 flatbuffer (:mod:`edgenet.targets.metadata_schema`), and the
associated files are appended to the .tflite file as an uncompressed zip archive. A .tflite is read
from its start and a zip from its end, so the file is both; that is the layout tflite-support's
MetadataPopulator writes and where MediaPipe looks for labels.txt. The operators, tensors and
weights are untouched (``tests/test_metadata.py`` checks that outputs are identical).

Why in ``targets/``: metadata is packaging for a device's apps, like labels.txt and the C arrays, and
it needs no TensorFlow: ai-edge-litert's flatbuffer schema (the base install) and ``flatbuffers``,
so the pipeline writes it without TensorFlow.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from functools import lru_cache
from importlib import import_module
from typing import Mapping, Sequence

import numpy as np

from edgenet.data.preprocess import ColorMode, Preprocess
from edgenet.errors import ModelError
from edgenet.targets.metadata_schema import (AssociatedFile, AssociatedFileType, ColorSpace, FeatureTensor, ImageTensor,
                                     ModelMetadata, Stats)
from edgenet.targets.tflite_graph import TfliteGraph, read_tflite

METADATA_NAME = b"TFLITE_METADATA"
LABELS_FILE = "labels.txt"
AUTHOR = "edgenet"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)          # fixed: the same model gives the same bytes
_BOUNDED = ("SOFTMAX", "LOGISTIC")          # outputs in [0, 1]
_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE")


@lru_cache(maxsize=1)
def _flatbuffer_utils():
    """(flatbuffer_utils, schema) from ai-edge-litert (the base install)."""
    try:
        return (import_module("ai_edge_litert.tools.flatbuffer_utils"),
                import_module("ai_edge_litert.schema_py_generated"))
    except ImportError:
        pass
    from edgenet.errors import MissingDependencyError

    raise MissingDependencyError("writing TFLite metadata needs ai-edge-litert: pip install ai-edge-litert")


def _signature_outputs(model: bytes) -> list[int] | None:
    """Tensor indices of the ``serving_default``-style signature's outputs, as ``output_0, output_1 ...``."""
    _, s = _flatbuffer_utils()
    m = s.Model.GetRootAs(model, 0)
    if m.SignatureDefsLength() != 1:
        return None
    sig = m.SignatureDefs(0)
    named = {sig.Outputs(i).Name().decode(): sig.Outputs(i).TensorIndex() for i in range(sig.OutputsLength())}
    keys = sorted((k for k in named if k.startswith("output_") and k[7:].isdigit()), key=lambda k: int(k[7:]))
    return [named[k] for k in keys] if len(keys) == len(named) else None


def model_version(model: bytes) -> str:
    """The first 16 hex digits of the sha256 of the model without its metadata."""
    return hashlib.sha256(without_metadata(model)).hexdigest()[:16]


def _quantize(values: Sequence[float], tensor) -> tuple[float, ...]:
    """Real values -> the tensor's own value domain (integers for quantized tensors)."""
    if tensor.dtype not in ("int8", "uint8", "int16") or not tensor.scales:
        return tuple(float(v) for v in values)
    info = np.iinfo(tensor.dtype)
    q = np.round(np.asarray(values, np.float64) / tensor.scales[0] + tensor.zero_points[0])
    return tuple(float(v) for v in np.clip(q, info.min, info.max))


def _image_input(graph: TfliteGraph, index: int, pre: Preprocess) -> ImageTensor:
    t = graph.tensor(index)
    if len(t.shape) != 4 or t.shape[-1] != pre.channels:
        raise ModelError(f"input '{t.name}' has shape {list(t.shape)}; the preprocessing describes a "
                         f"{pre.height}x{pre.width}x{pre.channels} image")
    mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
    lo, hi = -mean / std, (1.0 - mean) / std        # pixels 0 and 255 after normalization
    gray = pre.color is ColorMode.GRAY
    how = ("q = pixel value" if _pixels_exact(t, pre) else
           "normalize, then quantize with the tensor's scale and zero point") if t.scales else "normalized"
    return ImageTensor(
        name="image", description=f"{'Grayscale' if gray else 'RGB'} image, {pre.width}x{pre.height}, "
        f"pixels 0..255 as (pixel - mean) / std ({t.dtype} input: {how})",
        color_space=ColorSpace.GRAYSCALE if gray else ColorSpace.RGB, width=pre.width, height=pre.height,
        mean=tuple(float(255.0 * m) for m in pre.mean), std=tuple(float(255.0 * s) for s in pre.std),
        stats=Stats(_quantize(lo, t), _quantize(hi, t)))


def _pixels_exact(tensor, pre: Preprocess) -> bool:
    """A uint8 input whose scale and zero point map each pixel value to itself."""
    if tensor.dtype != "uint8" or not tensor.scales or len(set(pre.mean)) != 1 or len(set(pre.std)) != 1:
        return False
    return (abs(tensor.scales[0] * 255.0 * pre.std[0] - 1.0) < 1e-5
            and tensor.zero_points[0] == int(np.floor(255.0 * pre.mean[0] + 0.5)))


def _producer(graph: TfliteGraph, index: int) -> str | None:
    """The op that makes tensor ``index``, looking through (de)quantize and reshapes."""
    for _ in range(8):
        op = next((o for o in graph.operators if index in o.outputs), None)
        if op is None or op.name not in _PASS_THROUGH or not op.inputs:
            return None if op is None else op.name
        index = op.inputs[0]
    return None


def _output(graph: TfliteGraph, index: int, position: int, labels: Sequence[str] | None) -> FeatureTensor:
    t = graph.tensor(index)
    classes = t.shape[-1] if t.shape else 1
    files = ()
    if labels is not None and len(labels) == classes:      # labels of another output are not attached
        files = (AssociatedFile(LABELS_FILE, "Class names, one per line: line k names score k.",
                                AssociatedFileType.TENSOR_AXIS_LABELS),)
    bounded = _producer(graph, index) in _BOUNDED
    if bounded:
        stats = Stats(_quantize([0.0], t), _quantize([1.0], t))
    elif t.dtype in ("int8", "uint8", "int16"):
        info = np.iinfo(t.dtype)
        stats = Stats((float(info.min),), (float(info.max),))
    else:
        stats = None                                     # float logits: no bound known
    what = "probabilities" if bounded else "scores (logits)"
    quant = f"; real value = (q - {t.zero_points[0]}) * {t.scales[0]:.9g}" if t.scales else ""
    name = "scores" if position == 0 else f"output_{position}"
    return FeatureTensor(name, f"{classes} class {what}, {t.dtype}{quant}", stats, files)


def _kind(graph: TfliteGraph) -> str:
    weights = {t.dtype for t in graph.tensors if t.is_constant and len(t.shape) >= 2}
    io = "/".join(dict.fromkeys(t.dtype for t in (*graph.input_tensors, *graph.output_tensors)))
    precision = ("int8 (full-integer)" if "int8" in weights else
                 "float16 weights" if "float16" in weights else "float32")
    return f"{precision}, {io} input/output"


def describe(model: bytes, preprocess: Preprocess, labels: Sequence[str] | None, *, name: str,
             description: str = "") -> ModelMetadata:
    """The metadata of an image model: input from ``preprocess``, ``labels`` on the first output
    (when their count is its last dimension). Raises ModelError when the model's input is not the
    image ``preprocess`` describes."""
    graph = read_tflite(model)
    inputs = tuple(_image_input(graph, i, preprocess) for i in graph.inputs)
    order = _signature_outputs(model) or list(graph.outputs)
    outputs = tuple(_output(graph, i, order.index(i) if i in order else len(order) + k,
                            labels if order and i == order[0] else None)
                    for k, i in enumerate(graph.outputs))
    return ModelMetadata(name=name, description=description or f"{name} converted by edgenet: {_kind(graph)}",
                         version=model_version(model), author=AUTHOR, inputs=inputs, outputs=outputs)


def _drop_entries(obj) -> None:
    """Remove TFLITE_METADATA entries; trailing buffers only they used are removed too."""
    entries = [m for m in (obj.metadata or []) if m.name == METADATA_NAME]
    if not entries:
        return
    obj.metadata = [m for m in obj.metadata if m.name != METADATA_NAME] or None
    used = {t.buffer for g in obj.subgraphs for t in g.tensors} | {m.buffer for m in obj.metadata or []}
    for buffer in sorted({m.buffer for m in entries} - used, reverse=True):
        if buffer == len(obj.buffers) - 1:
            obj.buffers.pop()
        else:
            obj.buffers[buffer].data = None


def _append_zip(model: bytes, files: Mapping[str, bytes]) -> bytes:
    if not files:
        return model
    stream = io.BytesIO(model)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED     # readers (MediaPipe's too) take stored files
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return stream.getvalue()


def with_metadata(model: bytes, metadata: ModelMetadata | bytes, files: Mapping[str, bytes] | None = None) -> bytes:
    """``model`` with ``metadata`` as its TFLITE_METADATA entry (any earlier one and any appended
    files replaced) and ``files`` zipped onto its end. The graph and weights are unchanged."""
    fbu, s = _flatbuffer_utils()
    blob = metadata.to_flatbuffer() if isinstance(metadata, ModelMetadata) else bytes(metadata)
    obj = fbu.convert_bytearray_to_object(bytearray(model))
    _drop_entries(obj)
    buffer = s.BufferT()
    buffer.data = np.frombuffer(blob, dtype=np.uint8)
    obj.buffers.append(buffer)
    entry = s.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(obj.buffers) - 1
    obj.metadata = [*(obj.metadata or []), entry]
    return _append_zip(bytes(fbu.convert_object_to_bytearray(obj)), files or {})


def add_metadata(model: bytes, preprocess: Preprocess, labels: Sequence[str] | None, *, name: str,
                 description: str = "") -> bytes:
    """``model`` with :func:`describe`'s metadata and, when ``labels`` are given, labels.txt."""
    md = describe(model, preprocess, labels, name=name, description=description)
    attached = any(f.name == LABELS_FILE for f in md.associated_files)
    files = {LABELS_FILE: "".join(f"{n}\n" for n in labels).encode()} if attached else {}
    return with_metadata(model, md, files)


def metadata_bytes(model: bytes) -> bytes | None:
    """The raw TFLITE_METADATA flatbuffer of ``model``, or None."""
    _, s = _flatbuffer_utils()
    m = s.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if entry.Name() == METADATA_NAME:
            data = m.Buffers(entry.Buffer()).DataAsNumpy()
            return None if isinstance(data, int) else data.tobytes()
    return None


def associated_files(model: bytes) -> dict[str, bytes]:
    """The files zipped onto the end of ``model`` (name -> bytes); empty when there are none."""
    stream = io.BytesIO(model)
    try:
        with zipfile.ZipFile(stream) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:      # no archive (or weights that merely look like its end record)
        return {}


def read_metadata(model: bytes) -> ModelMetadata | None:
    """The parsed TFLITE_METADATA of ``model``, or None when it has none."""
    blob = metadata_bytes(model)
    return None if blob is None else ModelMetadata.from_flatbuffer(blob)


def without_metadata(model: bytes) -> bytes:
    """``model`` without TFLITE_METADATA and without appended files."""
    if metadata_bytes(model) is None and not associated_files(model):
        return model
    fbu, _ = _flatbuffer_utils()
    obj = fbu.convert_bytearray_to_object(bytearray(model))
    _drop_entries(obj)
    return bytes(fbu.convert_object_to_bytearray(obj))


def copy_metadata(source: bytes, target: bytes) -> bytes:
    """``target`` with ``source``'s metadata and associated files (for a compiled twin such as vela's
    model, whose input and output tensors are the source's). ``target`` unchanged if ``source`` has none."""
    blob = metadata_bytes(source)
    return target if blob is None else with_metadata(target, blob, associated_files(source))
