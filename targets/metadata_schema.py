"""The TFLite model metadata flatbuffer ("M001"): typed tables, writer and reader.

Follows TFLite's published ``metadata_schema.fbs`` (schema 1.5.0, file identifier ``M001``; the
same schema ships with tflite-support and MediaPipe as ``metadata_schema.fbs``). Only the tables an
image classifier needs are modelled: ModelMetadata -> SubGraphMetadata -> TensorMetadata with
Content (ImageProperties or FeatureProperties), ProcessUnit (NormalizationOptions), Stats and
AssociatedFile. Every one of them exists since schema 1.0.0, so ``min_parser_version`` is "1.0.0".

Why our own code: tflite-support 0.4.4 (its last release, 2023) needs protobuf <= 3.20 while
TensorFlow 2.21 needs protobuf >= 5 (and it wants the system's libusb); the metadata writers in
mediapipe 1.2.2 import a native module (``mediapipe.tasks.cc.metadata.python``) its wheel does not
ship, and importing mediapipe takes ~8 s and loads TensorFlow. So the tables are built here with
the ``flatbuffers`` package (a dependency of ai-edge-litert) and their field slots are the field
order of the .fbs; a union field takes two slots (``<name>_type`` then ``<name>``).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers.table import Table

FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"   # the newest schema version among the fields written here


class ColorSpace(IntEnum):
    """ColorSpaceType in the schema."""

    UNKNOWN = 0
    RGB = 1
    GRAYSCALE = 2


class AssociatedFileType(IntEnum):
    UNKNOWN = 0
    DESCRIPTIONS = 1
    TENSOR_AXIS_LABELS = 2      # one label per line, line k names element k of the tensor's last axis
    TENSOR_VALUE_LABELS = 3


class _Content(IntEnum):        # ContentProperties union
    NONE = 0
    FEATURE = 1                 # FeatureProperties
    IMAGE = 2                   # ImageProperties


_NORMALIZATION = 1              # ProcessUnitOptions union: NormalizationOptions


@dataclass(frozen=True)
class Stats:
    """Per-channel (or one-element) min and max of the tensor's values, in the tensor's own type."""

    min: tuple[float, ...]
    max: tuple[float, ...]


@dataclass(frozen=True)
class AssociatedFile:
    name: str
    description: str
    type: AssociatedFileType


@dataclass(frozen=True)
class ImageTensor:
    """An image input: ``float input = (pixel - mean) / std`` per channel, pixels 0..255."""

    name: str
    description: str
    color_space: ColorSpace
    width: int
    height: int
    mean: tuple[float, ...]           # NormalizationOptions, in the 0..255 pixel scale
    std: tuple[float, ...]
    stats: Stats | None = None


@dataclass(frozen=True)
class FeatureTensor:
    """An output read as features/scores (no score calibration)."""

    name: str
    description: str
    stats: Stats | None = None
    associated_files: tuple[AssociatedFile, ...] = ()


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    description: str
    version: str
    author: str
    inputs: tuple[ImageTensor, ...]        # in the subgraph's input order
    outputs: tuple[FeatureTensor, ...]     # in the subgraph's output order
    license: str | None = None
    min_parser_version: str = MIN_PARSER_VERSION

    def to_flatbuffer(self) -> bytes:
        """The serialized ``M001`` flatbuffer."""
        return _write(self)

    @classmethod
    def from_flatbuffer(cls, data: bytes) -> "ModelMetadata":
        """Parse what :meth:`to_flatbuffer` (or any writer of the schema) produced; raises ValueError."""
        return _read(bytes(data))

    @property
    def associated_files(self) -> tuple[AssociatedFile, ...]:
        return tuple(f for t in self.outputs for f in t.associated_files)


# -- writer ------------------------------------------------------------------------------------
def _table(b: flatbuffers.Builder, slots: list[tuple[str, int, object]]) -> int:
    """A table from (kind, slot, value) triples; kind: off | u8 | i8 | u32. None values are left out."""
    b.StartObject(max(s for _, s, _ in slots) + 1)
    for kind, slot, value in slots:
        if value is None:
            continue
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "u8":
            b.PrependUint8Slot(slot, value, 0)
        elif kind == "i8":
            b.PrependInt8Slot(slot, value, 0)
        elif kind == "u32":
            b.PrependUint32Slot(slot, value, 0)
    return b.EndObject()


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int | None:
    if not offsets:
        return None
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _string(b: flatbuffers.Builder, text: str | None) -> int | None:
    return None if text is None else b.CreateString(text)


def _file(b, f: AssociatedFile) -> int:
    name, desc = _string(b, f.name), _string(b, f.description)
    return _table(b, [("off", 0, name), ("off", 1, desc), ("i8", 2, int(f.type))])


def _stats(b, s: Stats | None) -> int | None:
    if s is None:
        return None
    hi, lo = _floats(b, s.max), _floats(b, s.min)
    return _table(b, [("off", 0, hi), ("off", 1, lo)])          # Stats: max is field 0, min field 1


def _tensor(b, t) -> int:
    name, desc = _string(b, t.name), _string(b, t.description)
    stats = _stats(b, t.stats)
    units = files = None
    if isinstance(t, ImageTensor):
        size = _table(b, [("u32", 0, t.width), ("u32", 1, t.height)])
        props = _table(b, [("i8", 0, int(t.color_space)), ("off", 1, size)])
        content = _table(b, [("u8", 0, int(_Content.IMAGE)), ("off", 1, props)])
        mean, std = _floats(b, t.mean), _floats(b, t.std)
        norm = _table(b, [("off", 0, mean), ("off", 1, std)])
        units = _offsets(b, [_table(b, [("u8", 0, _NORMALIZATION), ("off", 1, norm)])])
    else:
        b.StartObject(0)                                           # FeatureProperties: no fields
        props = b.EndObject()
        content = _table(b, [("u8", 0, int(_Content.FEATURE)), ("off", 1, props)])
        files = _offsets(b, [_file(b, f) for f in t.associated_files])
    # TensorMetadata: name, description, dimension_names, content, process_units, stats, associated_files
    return _table(b, [("off", 0, name), ("off", 1, desc), ("off", 3, content), ("off", 4, units),
                      ("off", 5, stats), ("off", 6, files)])


def _write(md: ModelMetadata) -> bytes:
    b = flatbuffers.Builder(1024)
    inputs = _offsets(b, [_tensor(b, t) for t in md.inputs])
    outputs = _offsets(b, [_tensor(b, t) for t in md.outputs])
    sub_name = _string(b, md.name)
    subgraph = _table(b, [("off", 0, sub_name), ("off", 2, inputs), ("off", 3, outputs)])
    subgraphs = _offsets(b, [subgraph])
    fields = [_string(b, v) for v in (md.name, md.description, md.version, md.author, md.license,
                                      md.min_parser_version)]
    name, desc, version, author, license_, parser = fields
    root = _table(b, [("off", 0, name), ("off", 1, desc), ("off", 2, version), ("off", 3, subgraphs),
                      ("off", 4, author), ("off", 5, license_), ("off", 7, parser)])
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


# -- reader ------------------------------------------------------------------------------------
class _T:
    """A table in a flatbuffer, read field by field (slot numbers as in the writer)."""

    def __init__(self, buf: bytes, pos: int):
        self.t = Table(buf, pos)

    def _off(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str | None:
        o = self._off(slot)
        return self.t.String(o + self.t.Pos).decode("utf-8") if o else None

    def scalar(self, slot: int, flags) -> int:
        o = self._off(slot)
        return self.t.Get(flags, o + self.t.Pos) if o else 0

    def table(self, slot: int) -> "_T | None":
        o = self._off(slot)
        return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, slot: int) -> list["_T"]:
        o = self._off(slot)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [_T(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def floats(self, slot: int) -> tuple[float, ...]:
        o = self._off(slot)
        if not o:
            return ()
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return tuple(self.t.Get(N.Float32Flags, start + 4 * i) for i in range(n))


def _read_stats(t: _T | None) -> Stats | None:
    return None if t is None else Stats(min=t.floats(1), max=t.floats(0))


def _read_tensor(t: _T):
    content = t.table(3)
    kind = content.scalar(0, N.Uint8Flags) if content else 0
    name, desc, stats = t.string(0) or "", t.string(1) or "", _read_stats(t.table(5))
    if kind == _Content.IMAGE:
        props = content.table(1)
        size = props.table(1) if props else None
        mean = std = ()
        for unit in t.tables(4):
            if unit.scalar(0, N.Uint8Flags) == _NORMALIZATION:
                norm = unit.table(1)
                mean, std = norm.floats(0), norm.floats(1)
        return ImageTensor(name, desc, ColorSpace(props.scalar(0, N.Int8Flags) if props else 0),
                           size.scalar(0, N.Uint32Flags) if size else 0,
                           size.scalar(1, N.Uint32Flags) if size else 0, mean, std, stats)
    files = tuple(AssociatedFile(f.string(0) or "", f.string(1) or "", AssociatedFileType(f.scalar(2, N.Int8Flags)))
                  for f in t.tables(6))
    return FeatureTensor(name, desc, stats, files)


def _read(buf: bytes) -> ModelMetadata:
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TFLite metadata flatbuffer (no M001 identifier)")
    root = _T(buf, flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, buf, 0))
    subgraphs = root.tables(3)
    inputs = tuple(_read_tensor(t) for t in subgraphs[0].tables(2)) if subgraphs else ()
    outputs = tuple(_read_tensor(t) for t in subgraphs[0].tables(3)) if subgraphs else ()
    return ModelMetadata(root.string(0) or "", root.string(1) or "", root.string(2) or "", root.string(4) or "",
                         inputs, outputs, root.string(5), root.string(7) or "")
