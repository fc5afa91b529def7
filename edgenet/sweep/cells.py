"""What a sweep is made of: the grid (:class:`SweepSpec`), its cells (:class:`Cell`) and their ids.

A cell is one full ``edgenet convert`` of one model at one width and resolution, for one target,
at one precision. Its id is a hash of everything that decides its result: the model (a zoo name,
or the sha256 of a model file's bytes), its hyper-parameters, the target profile's TOML text, the
precision, the calibration data (a built-in name or the sha256 of a folder's files), the sample
counts, the seed, whether it is benchmarked, and the edgenet version. The same command gives the
same ids, so a re-run finds the cells it has already done; a changed argument gives new ids.

Nothing here imports torch or TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgenet.config import Precision
from edgenet.errors import UsageError

ID_LENGTH = 16          # hex digits of the sha256 kept as a cell id
SWEEP_KINDS = ("zoo", "onnx", "checkpoint", "exported_program")


@dataclass(frozen=True)
class SweepSpec:
    """The grid: models x alphas x resolutions x targets x precisions, and the convert options
    every cell shares. ``alphas``/``resolutions`` apply to zoo models only (a model file has its
    own width and input size: one cell per model x target x precision)."""

    models: tuple[str, ...] = ("mobilenet_v1",)
    alphas: tuple[float, ...] = (1.0,)
    resolutions: tuple[int, ...] = (224,)
    targets: tuple[str, ...] = ("rpi",)
    precisions: tuple[Precision, ...] = (Precision.INT8,)
    num_classes: int = 1000
    calib: str = "shapes"
    calib_samples: int = 200
    eval_samples: int = 64
    seed: int = 0
    bench: bool = False


@dataclass(frozen=True)
class Cell:
    """One conversion of the sweep. ``alpha``/``resolution``/``num_classes`` are None for model files."""

    model: str
    kind: str                       # converters.sources.SourceKind value
    alpha: float | None
    resolution: int | None
    num_classes: int | None
    target: str
    precision: Precision
    calib: str
    calib_samples: int
    eval_samples: int
    seed: int
    bench: bool
    # content hashes: what makes the id change when a file changes under the same name
    model_sha256: str | None = None
    target_sha256: str = ""
    calib_sha256: str | None = None
    version: str = ""
    options: tuple[tuple[str, object], ...] = ()   # more edgenet.convert keywords (JSON values), e.g. ("io_type", "uint8")
    id: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", cell_id(self))

    @property
    def label(self) -> str:
        """``mobilenet_v1 0.25/64 cortex-m int8``: the cell in a few words."""
        name = self.model if self.kind == "zoo" else Path(self.model).name
        size = f" {self.alpha:g}/{self.resolution}" if self.kind == "zoo" else ""
        return f"{name}{size} {self.target} {self.precision.value}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precision"] = self.precision.value
        d["options"] = [list(kv) for kv in self.options]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        d = dict(d)
        d["precision"] = Precision(d["precision"])
        d["options"] = tuple(tuple(kv) for kv in d.get("options", ()))
        return cls(**d)


def estimated_work(cell: Cell) -> float:
    """A rough relative cost of converting ``cell``, to start the longest cells first (longest
    processing time first: with N workers, the last cell to finish is then a short one and no
    worker idles long at the end). Zoo cells scale with MobileNet's multiply-adds (alpha^2 x
    resolution^2, Howard et al. 2017, Table 6-7); a model file's cost is unknown and ranked first."""
    if cell.kind != "zoo" or cell.alpha is None or cell.resolution is None:
        return float("inf")
    return cell.alpha ** 2 * cell.resolution ** 2 * (2 if cell.bench else 1)


def cell_id(cell: Cell) -> str:
    """sha256 (first 16 hex digits) of the cell's defining fields, as canonical JSON."""
    d = cell.to_dict()
    d.pop("id")
    if cell.kind != "zoo":      # a file's identity is its content, not where it lies
        d.pop("model")
    if cell.calib_sha256:       # likewise a calibration folder
        d.pop("calib")
    if _is_profile_path(cell.target):   # and a profile file's (its text is target_sha256)
        d.pop("target")
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:ID_LENGTH]


# -- precisions: how a cell asks convert for one, and where its numbers are in report.json ------
def convert_precisions(precision: Precision) -> tuple[Precision, ...]:
    """The ``precisions=`` a cell passes to ``edgenet.convert`` for ``precision``: float32 is always
    built (it is the reference every other precision is validated against)."""
    return (Precision.FLOAT32,) if precision is Precision.FLOAT32 else (Precision.FLOAT32, precision)


def precision_numbers(report: dict, precision: Precision) -> dict:
    """The cell's model file and figures for ``precision`` from a convert report.json:
    ``{file, size_bytes, sqnr_db, top1_agreement, top1, verdict}`` (SQNR of the input-dependent part
    and top-1 agreement against the float32 model, from the precision's verdict; ``top1`` on the
    held-out images when their labels are the model's classes, known for float32 and int8).

    Raises ConversionError when the report has no row for ``precision``.
    """
    from edgenet.errors import ConversionError

    rows = {row["precision"]: row for row in report.get("precisions") or ()}
    row = rows.get(precision.value)
    if row is None:
        raise ConversionError(f"convert wrote no {precision.value} model")
    acc = report.get("accuracy") or {}
    top1 = {Precision.FLOAT32: acc.get("float_top1"), Precision.INT8: acc.get("int8_top1")}.get(precision)
    verdict = row.get("verdict")
    if verdict is None:        # float32: the reference itself
        return {"file": row["file"], "size_bytes": row["bytes"], "sqnr_db": None, "top1_agreement": None,
                "top1": top1, "verdict": None}
    worst = min(verdict["outputs"], key=lambda o: o["sqnr_centered_db"] if o["sqnr_centered_db"] is not None
                else float("inf"))
    return {"file": row["file"], "size_bytes": row["bytes"], "sqnr_db": worst["sqnr_centered_db"],
            "top1_agreement": verdict["outputs"][0]["top1_agreement"], "top1": top1,
            "verdict": "pass" if verdict["passed"] else "fail"}


# -- the grid ------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    from edgenet.io import file_sha256

    return file_sha256(path)


def _sha256_folder(folder: Path) -> str:
    """Names and bytes of every file under ``folder`` (sorted), hashed together."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + _sha256_file(path).encode())
    return h.hexdigest()


def _is_profile_path(target: str) -> bool:
    return target.endswith(".toml") or "/" in target or "\\" in target


def target_sha256(target: str) -> str:
    from edgenet.targets import load_target
    from edgenet.targets.profile import PROFILE_DIR

    load_target(target)  # a typo'd name or a bad profile: one line, before anything runs
    path = Path(target) if _is_profile_path(target) else PROFILE_DIR / f"{target}.toml"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def int8_only(target: str) -> bool:
    """Whether the target's checks take only the int8 model (TFLite Micro, vela, Edge TPU, or an
    int8-only runtime): a float cell for it would fail, so the grid leaves it out."""
    from edgenet.targets import load_target
    from edgenet.targets.checks import _INT8_ONLY
    from edgenet.targets.profile import Check

    profile = load_target(target)
    return profile.runtime in _INT8_ONLY or any(c in profile.checks for c in (Check.TFLM, Check.VELA, Check.EDGETPU))


def edgenet_version() -> str:
    import edgenet

    return edgenet.__version__


def expand(spec: SweepSpec) -> tuple[list[Cell], list[str]]:
    """The cells of ``spec`` (each distinct cell once, in command-line order) and notes for the user
    (options that do not apply to some models). Raises UsageError for anything that cannot work:
    an unknown model, target or precision, a missing file or calibration folder, a bad alpha."""
    from edgenet.converters.sources import source_kind
    from edgenet.zoo import check_model_args, has_width_multiplier

    if not spec.models:
        raise UsageError("name at least one MODEL (a zoo name, a checkpoint or an .onnx file)")
    for name, values in (("--alpha", spec.alphas), ("--resolution", spec.resolutions), ("--target", spec.targets),
                         ("--precision", spec.precisions)):
        if not values:
            raise UsageError(f"{name} needs at least one value")
    if spec.calib_samples < 1 or spec.eval_samples < 1:
        raise UsageError("--calib-samples and --eval-samples must be at least 1")
    version = edgenet_version()
    targets = {t: target_sha256(t) for t in dict.fromkeys(spec.targets)}
    calib_sha = None
    if spec.calib not in ("digits", "shapes"):
        folder = Path(spec.calib)
        if not folder.is_dir():
            raise UsageError(f"--calib {spec.calib}: not a built-in dataset (digits, shapes) and no such folder")
        calib_sha = _sha256_folder(folder)
    notes: list[str] = []
    cells: dict[str, Cell] = {}
    for model in spec.models:
        kind = source_kind(model).value
        if kind not in SWEEP_KINDS:
            raise UsageError(f"{model}: a sweep takes zoo names, checkpoints (edgenet train), .onnx and .pt2 files")
        if kind == "zoo":
            sizes = []
            widths = spec.alphas if has_width_multiplier(model) else (1.0,)
            if widths != spec.alphas and spec.alphas != (1.0,):
                notes.append(f"{model} has no width multiplier: --alpha does not apply (alpha 1)")
            for alpha in widths:
                for res in spec.resolutions:
                    check_model_args(model, alpha=alpha, resolution=res, num_classes=spec.num_classes)
                    sizes.append((float(alpha), int(res), spec.num_classes))
            model_sha = None
        else:
            path = Path(model)
            if not path.is_file():
                raise UsageError(f"{model}: no such file")
            if len(spec.alphas) > 1 or len(spec.resolutions) > 1 or spec.alphas != (1.0,):
                notes.append(f"{path.name} is a model file: --alpha, --resolution and --num-classes do not apply "
                             "(one cell per target and precision)")
            sizes, model_sha = [(None, None, None)], _sha256_file(path)
        for alpha, res, classes in sizes:
            for target, target_sha in targets.items():
                for precision in spec.precisions:
                    if Precision(precision) is not Precision.INT8 and int8_only(target):
                        notes.append(f"{target} takes int8 models only: its {Precision(precision).value} cells "
                                     "are left out")
                        continue
                    cell = Cell(model=model, kind=kind, alpha=alpha, resolution=res, num_classes=classes,
                                target=target, precision=Precision(precision), calib=spec.calib,
                                calib_samples=spec.calib_samples, eval_samples=spec.eval_samples, seed=spec.seed,
                                bench=spec.bench, model_sha256=model_sha, target_sha256=target_sha,
                                calib_sha256=calib_sha, version=version)
                    cells.setdefault(cell.id, cell)
    if not cells:
        raise UsageError("no cell to run: " + "; ".join(dict.fromkeys(notes)))
    return list(cells.values()), list(dict.fromkeys(notes))
