"""Parsing and validating a target profile (TOML) into a frozen dataclass."""
from __future__ import annotations

import re

import difflib
import sys
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Iterable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgenet.config import IOType, Precision
from edgenet.errors import TargetError, UsageError
from edgenet.limits import MAX_BUDGET_BYTES, MAX_THREADS
from edgenet.verdicts.base import Thresholds

_TH = Thresholds()   # the verdict thresholds' defaults

PROFILE_DIR = Path(__file__).resolve().parent


class Runtime(str, Enum):
    """The inference engine on the device."""

    LITERT = "litert"      # LiteRT (TFLite) interpreter on a CPU, optionally with a delegate
    TFLM = "tflm"          # TensorFlow Lite Micro on a microcontroller
    EDGETPU = "edgetpu"    # LiteRT + the Edge TPU delegate (libedgetpu)
    ETHOS_U = "ethos-u"    # TFLM + the Ethos-U NPU driver, model compiled by vela


class Delegate(str, Enum):
    XNNPACK = "xnnpack"
    NONE = "none"
    GPU = "gpu"
    NNAPI = "nnapi"
    EDGETPU = "edgetpu"
    ETHOS_U = "ethos-u"


class Check(str, Enum):
    """Checks a profile can ask for (run by ``edgenet.targets.checks.run_target``)."""

    IO_TYPES = "io_types"  # model input/output types against the profile's
    LITERT = "litert"      # load and run the model once in LiteRT with the profile's threads
    TFLM = "tflm"          # run in the real TFLite Micro interpreter, measure the arena, check budgets
    VELA = "vela"          # compile with Arm vela for the profile's Ethos-U configuration
    EDGETPU = "edgetpu"    # Edge TPU operator check (+ edgetpu_compiler when on PATH)


class Packager(str, Enum):
    """Artifacts a profile can ask for, written into the output folder."""

    LABELS = "labels"            # labels.txt, one class name a line (when class names are known)
    PREPROCESS = "preprocess"    # preprocess.json (written by the convert pipeline; listed here)
    C_ARRAY = "c_array"          # model_data.cc / model_data.h (16-byte aligned C array)
    OP_RESOLVER = "op_resolver"  # model_op_resolver.h: MicroMutableOpResolver<N> with the model's ops
    VELA_MODEL = "vela_model"    # model_int8_vela.tflite (+ vela_summary.csv)


# -- mixed precision repair (converters/repair): the order of the promotions a failing int8 model may
# get, and how long the search may take, as a multiple of the plain int8 stage's time
class RepairStep(str, Enum):
    INT16 = "int16"    # an op gets int16 activations (a16w8) where the runtime has its int16 kernel
    FLOAT = "float"    # an op computes in float (only where the runtime runs float ops)
    SPLIT = "split"    # a head concatenating outputs of different ranges is written as separate outputs


def default_repair(runtime: "Runtime") -> tuple[RepairStep, ...]:
    """int16 first (it keeps the model integer), float where the runtime may run it, the split last."""
    if runtime is Runtime.LITERT:
        return (RepairStep.INT16, RepairStep.FLOAT, RepairStep.SPLIT)
    return (RepairStep.INT16, RepairStep.SPLIT)


UNFUSABLE = ("HARD_SWISH",)   # ops edgenet's writer makes out of arithmetic (converters/tflite_writer/fuse.py)
_FLOAT_RUNTIMES_FOR_REPAIR = ("litert",)   # full-integer runtimes (tflm, edgetpu, ethos-u) never get float ops


# vela's --accelerator-config choices (ethos-u-vela 5.x)
VELA_ACCELERATORS = (
    "ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
    "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048",
)
ALL_PRECISIONS = tuple(Precision)

# what each runtime can run at all, and why not the rest: a profile's `precisions` must stay within
# it (TFLite Micro and vela were checked on int16x8 models: tests/test_precisions.py)
_RUNTIME_PRECISIONS: dict[Runtime, tuple[tuple[Precision, ...], str]] = {
    Runtime.LITERT: (ALL_PRECISIONS, ""),
    Runtime.EDGETPU: ((Precision.INT8,), "the Edge TPU runs int8 models only"),
    Runtime.TFLM: ((Precision.INT8, Precision.INT16X8),
                   "TensorFlow Lite Micro targets run full-integer models (int8, int16x8): TFLM has no "
                   "float16 or dynamic-range kernels, and float32 needs 4x the flash and RAM of int8"),
    Runtime.ETHOS_U: ((Precision.INT8, Precision.INT16X8),
                      "the Ethos-U NPU runs int8 and int16x8 models only (vela leaves float ops to the CPU)"),
}


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    device: str                                   # e.g. "Raspberry Pi 4/5 (aarch64)"
    runtime: Runtime = Runtime.LITERT
    precision: Precision = Precision.INT8         # default precision of `edgenet convert --target`
    input_type: IOType = IOType.INT8
    output_type: IOType = IOType.INT8
    num_threads: int = 4
    delegate: Delegate = Delegate.XNNPACK
    per_channel: bool = True                      # per-channel weight quantization
    static_shapes: bool = True
    probabilities: bool = False                   # a classifier ending in logits gets a Softmax (apps show scores as-is)
    variants: tuple[Precision, ...] = ()          # extra artifacts, e.g. float16 for a GPU delegate
    precisions: tuple[Precision, ...] = ALL_PRECISIONS   # what the target can run (precision and variants in it)
    ram_bytes: int | None = None                  # device RAM for the tensor arena and the app (MCUs)
    flash_bytes: int | None = None                # device flash for the model and the firmware (MCUs)
    ram_reserved_bytes: int = 0                   # RAM kept for stack, heap, app (not for the arena)
    flash_reserved_bytes: int = 0                 # flash kept for the firmware code (TFLM kernels, app)
    accelerator: str | None = None                # vela's --accelerator-config, e.g. "ethos-u55-128"
    vela_system_config: str | None = None         # vela's --system-config (section of Arm/vela.ini)
    vela_memory_mode: str | None = None           # vela's --memory-mode
    allow_cpu_ops: bool = True                    # False: ops falling back to the CPU fail the check
    float_tolerance: float = 1e-3                 # float TFLite vs ONNX: max |diff| / max |ONNX output|
    min_sqnr_db: float = 20.0                     # a quantized output must keep this SQNR (input-dependent part)
    min_channel_sqnr_db: float = 10.0             # ... and its worst channel this much
    # the task verdicts' thresholds (edgenet.verdicts.Thresholds has the defaults and how they were chosen)
    min_index_agreement: float = _TH.min_index_agreement        # ArgMax outputs: share of equal indices
    min_top1_agreement: float = _TH.min_top1_agreement          # classifier: share with float's top-1 (decisive)
    min_decisive_margin: float = _TH.min_decisive_margin        # classifier: top-1 - top-2 probability of a decision
    min_embedding_cosine: float = _TH.min_embedding_cosine      # embedding: mean cosine with float's vectors
    min_step_agreement: float = _TH.min_step_agreement          # sequence: share of steps with float's argmax
    min_sequence_agreement: float = _TH.min_sequence_agreement  # sequence: share decoding to float's sequence
    min_map_iou: float = _TH.min_map_iou                        # dense map: IoU of the binarized maps
    min_map_sqnr_db: float = _TH.min_map_sqnr_db                # dense map: SQNR floor
    map_threshold: float = _TH.map_threshold                    # a [0, 1] map is binarized here
    min_detection_f1: float = _TH.min_detection_f1              # detection: F1 against float's detections
    min_box_sqnr_db: float = _TH.min_box_sqnr_db                # detection: SQNR of the detected boxes
    min_box_iou: float = _TH.min_box_iou                        # end-to-end detection: mean IoU of matched boxes
    min_score_sqnr_db: float = _TH.min_score_sqnr_db            # detection: SQNR of scores above score_floor
    score_threshold: float = _TH.score_threshold                # detection: a detection's least score
    score_floor: float = _TH.score_floor                        # detection: scores below are not judged
    score_band: float = _TH.score_band                          # detection: borderline within this of the threshold
    match_iou: float = _TH.match_iou                            # detection: IoU of a match
    nms_iou: float = _TH.nms_iou                                # detection: NMS IoU
    packagers: tuple[Packager, ...] = ()          # artifacts to emit
    checks: tuple[Check, ...] = ()                # checks to run
    repair: tuple[RepairStep, ...] = ()           # mixed precision's promotion order (empty: the runtime's default)
    int8_float_ops: tuple[str, ...] = ()          # TFLite ops an int8 model computes in float between its int8
                                                  # tensors (the delegate has no int8 kernel for them; see rpi.toml)
    unfused_ops: tuple[str, ...] = ()             # TFLite ops the runtime lacks that the writer would fuse
                                                  # (HARD_SWISH): written as their arithmetic (see coral.toml)
    repair_rounds: int = 24                       # the repair search's budget: quantize-and-judge rounds (counted,
                                                  # not timed: the same repaired model on any machine)
    source: str = ""                              # file the profile was read from

    @property
    def repair_order(self) -> tuple[RepairStep, ...]:
        return self.repair or default_repair(self.runtime)

    @property
    def thresholds(self):
        """What a quantized model's outputs must keep (edgenet.quality.Thresholds)."""
        return Thresholds(**{f.name: getattr(self, f.name) for f in fields(Thresholds) if hasattr(self, f.name)})

    @property
    def ram_budget(self) -> int | None:
        """Bytes of RAM the tensor arena may use (device RAM minus the reserved part)."""
        return None if self.ram_bytes is None else self.ram_bytes - self.ram_reserved_bytes

    @property
    def flash_budget(self) -> int | None:
        """Bytes of flash the model may use (device flash minus the firmware)."""
        return None if self.flash_bytes is None else self.flash_bytes - self.flash_reserved_bytes

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [x.value if hasattr(x, "value") else x for x in v]
            elif hasattr(v, "value"):
                v = v.value
            out[f.name] = v
        return out


KERNEL_TABLE = PROFILE_DIR / "kernels.toml"   # data beside the profiles, not a profile


def available_targets() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml") if p != KERNEL_TABLE)


def _enum(cls, value, key, src):
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise TargetError(f"{src}: {key} = {value!r} is not one of: {choices}") from None


_STRING_KEYS = ("name", "description", "device", "accelerator", "vela_system_config", "vela_memory_mode")
_BOOL_KEYS = ("per_channel", "static_shapes", "allow_cpu_ops", "probabilities")
_POSITIVE_INT_KEYS = ("ram_bytes", "flash_bytes", "num_threads")
_NONNEGATIVE_INT_KEYS = ("ram_reserved_bytes", "flash_reserved_bytes")
_POSITIVE_FLOAT_KEYS = ("float_tolerance", "min_sqnr_db", "min_channel_sqnr_db", "min_map_sqnr_db", "min_box_sqnr_db",
                        "min_score_sqnr_db")
# shares and probabilities: in [0, 1]
_FRACTION_KEYS = ("min_index_agreement", "min_top1_agreement", "min_step_agreement", "min_sequence_agreement",
                  "min_map_iou", "map_threshold", "min_detection_f1", "score_threshold", "score_floor", "match_iou",
                  "nms_iou", "min_decisive_margin", "min_embedding_cosine", "score_band", "min_box_iou")
# upper bounds: a thread count far past any device's cores crashes the runtime's thread pool;
# budgets past 1 TiB are typos (see edgenet/limits.py)
_MAXIMUM = {"num_threads": MAX_THREADS, "ram_bytes": MAX_BUDGET_BYTES, "flash_bytes": MAX_BUDGET_BYTES,
            "ram_reserved_bytes": MAX_BUDGET_BYTES, "flash_reserved_bytes": MAX_BUDGET_BYTES}


def _check_types(data: dict, src: str) -> None:
    for key in _STRING_KEYS:
        if key in data and not isinstance(data[key], str):
            raise TargetError(f"{src}: {key} must be a string, not {data[key]!r}")
    for key in _BOOL_KEYS:
        if key in data and not isinstance(data[key], bool):
            raise TargetError(f"{src}: {key} must be true or false, not {data[key]!r}")
    for key in _POSITIVE_INT_KEYS:
        v = data.get(key)
        if key in data and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= _MAXIMUM[key]):
            raise TargetError(f"{src}: {key} must be an integer in [1, {_MAXIMUM[key]}] (got {v!r})")
    for key in _NONNEGATIVE_INT_KEYS:
        v = data.get(key)
        if key in data and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAXIMUM[key]):
            raise TargetError(f"{src}: {key} must be an integer in [0, {_MAXIMUM[key]}] (got {v!r})")
    for key in _POSITIVE_FLOAT_KEYS:
        v = data.get(key)
        if key in data and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e3):
            raise TargetError(f"{src}: {key} must be a positive number (below 1000)")
    for key in _FRACTION_KEYS:
        v = data.get(key)
        if key in data and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            raise TargetError(f"{src}: {key} must be a number in [0, 1] (got {v!r})")
    for key in ("variants", "precisions", "packagers", "checks", "repair", "int8_float_ops", "unfused_ops"):
        if key in data and not isinstance(data[key], list):
            raise TargetError(f"{src}: {key} must be a list, e.g. {key} = [\"...\"]")
    for key in ("int8_float_ops", "unfused_ops"):
        ops = data.get(key, [])
        if not all(isinstance(o, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", o) for o in ops):
            raise TargetError(f"{src}: {key} must list TFLite builtin op names, e.g. [\"HARD_SWISH\"]")
    unknown = sorted(set(data.get("unfused_ops", [])) - set(UNFUSABLE))
    if unknown:
        raise TargetError(f"{src}: unfused_ops: {unknown[0]} is not an op edgenet's writer fuses (it fuses "
                          f"{', '.join(UNFUSABLE)})")


def _check_consistency(p: TargetProfile, src: str) -> None:
    runnable, reason = _RUNTIME_PRECISIONS[p.runtime]
    if not p.precisions:
        raise TargetError(f"{src}: precisions must list at least one precision")
    for q in p.precisions:
        if q not in runnable:
            raise TargetError(f"{src}: precisions lists {q.value!r}, but {reason}")
    listed = ", ".join(q.value for q in p.precisions)
    for key, q in [("precision =", p.precision), *(("variants lists", v) for v in p.variants)]:
        if q not in runnable:
            raise TargetError(f"{src}: {key} {q.value!r}, but {reason}")
        if q not in p.precisions:
            raise TargetError(f"{src}: {key} {q.value!r}, which is not among precisions ({listed})")
    for key, value in (("ram", p.ram_bytes), ("flash", p.flash_bytes)):
        reserved = getattr(p, f"{key}_reserved_bytes")
        if reserved and value is None:
            raise TargetError(f"{src}: {key}_reserved_bytes needs {key}_bytes")
        if value is not None and reserved >= value:
            raise TargetError(f"{src}: {key}_reserved_bytes ({reserved}) leaves nothing of {key}_bytes ({value})")
    if Check.TFLM in p.checks and p.ram_bytes is None:
        raise TargetError(f"{src}: the 'tflm' check needs ram_bytes (and usually flash_bytes)")
    if Check.VELA in p.checks:
        if p.accelerator is None:
            raise TargetError(f"{src}: the 'vela' check needs accelerator, e.g. \"ethos-u55-128\"")
        if p.accelerator not in VELA_ACCELERATORS:
            close = difflib.get_close_matches(p.accelerator, VELA_ACCELERATORS, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else f" (one of: {', '.join(VELA_ACCELERATORS)})"
            raise TargetError(f"{src}: accelerator = {p.accelerator!r} is not a vela accelerator{hint}")
    if (p.vela_system_config is None) != (p.vela_memory_mode is None):
        raise TargetError(f"{src}: give vela_system_config and vela_memory_mode together (or neither)")
    if p.int8_float_ops and p.runtime.value not in _FLOAT_RUNTIMES_FOR_REPAIR:
        raise TargetError(f"{src}: int8_float_ops lists float ops, but runtime {p.runtime.value!r} runs integer "
                          "models only")
    if RepairStep.FLOAT in p.repair and p.runtime.value not in _FLOAT_RUNTIMES_FOR_REPAIR:
        raise TargetError(f"{src}: repair lists 'float', but runtime {p.runtime.value!r} runs integer models only")
    if Packager.VELA_MODEL in p.packagers and Check.VELA not in p.checks:
        raise TargetError(f"{src}: packager 'vela_model' needs the 'vela' check")


def _parse(data: dict, src: str) -> TargetProfile:
    known = {f.name for f in fields(TargetProfile)} - {"source"}
    unknown = sorted(set(data) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise TargetError(f"{src}: unknown key(s) {', '.join(hints)}")
    for key in ("name", "description", "device"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise TargetError(f"{src}: missing required string key '{key}'")
    _check_types(data, src)
    kw = dict(data)
    for key, cls in (("precision", Precision), ("input_type", IOType), ("output_type", IOType),
                     ("runtime", Runtime), ("delegate", Delegate)):
        if key in kw:
            kw[key] = _enum(cls, kw[key], key, src)
    for key, cls in (("variants", Precision), ("precisions", Precision), ("packagers", Packager), ("checks", Check),
                     ("repair", RepairStep)):
        if key in kw:
            kw[key] = tuple(dict.fromkeys(_enum(cls, v, key, src) for v in kw[key]))
    for key in ("int8_float_ops", "unfused_ops"):
        if key in kw:
            kw[key] = tuple(dict.fromkeys(kw[key]))
    if "precisions" not in kw:   # what the runtime can run
        kw["precisions"] = _RUNTIME_PRECISIONS[kw.get("runtime", Runtime.LITERT)][0]
    kw["source"] = src
    budget = kw.get("repair_rounds", 24)
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= 1000:
        raise TargetError(f"{src}: repair_rounds must be an integer in [0, 1000] (quantize-and-judge rounds)")
    for key in _POSITIVE_FLOAT_KEYS + _FRACTION_KEYS:
        if key in kw:
            kw[key] = float(kw[key])
    profile = TargetProfile(**kw)
    _check_consistency(profile, src)
    return profile


def check_precisions(profile: TargetProfile, requested: Precision | str | Iterable[Precision | str]) -> None:
    """TargetError unless ``profile`` runs every ``requested`` precision; the message names the
    target, the refused precision and why (e.g. "coral: cannot run float16 models: the Edge TPU runs
    int8 models only"). An unknown precision name is a UsageError."""
    items = [requested] if isinstance(requested, (Precision, str)) else list(requested)
    for item in items:
        try:
            q = Precision(item)
        except ValueError:
            choices = ", ".join(m.value for m in Precision)
            raise UsageError(f"unknown precision {item!r} (one of: {choices})") from None
        if q in profile.precisions:
            continue
        runnable, reason = _RUNTIME_PRECISIONS[profile.runtime]
        if q in runnable or not reason:
            listed = ", ".join(x.value for x in profile.precisions)
            reason = f"its profile lists only {listed}"
        raise TargetError(f"{profile.name}: cannot run {q.value} models: {reason}")


def load_target(name_or_path: str | Path) -> TargetProfile:
    """A built-in profile by name, or a user's profile by path to a .toml file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"{path}: no such target profile file")
    else:
        path = PROFILE_DIR / f"{text}.toml"
        if not path.is_file() or path == KERNEL_TABLE:
            names = available_targets()
            close = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UsageError(f"unknown target {text!r}{hint} (available: {', '.join(names)})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: invalid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise TargetError(f"{path}: not a UTF-8 text file") from exc
    return _parse(data, str(path))
