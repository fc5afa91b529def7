"""`edgenet.convert`: the whole pipeline, one stage after another, each timed and reported.

    model (zoo name | .onnx | checkpoint .pt) -> ONNX -> cleanup -> BN folding -> channels-last TF
    -> TFLite float32 (+ int8, calibrated) -> validation -> target checks -> out/

The files appear in ``out`` all at once, only after every stage has succeeded (:mod:`edgenet.outdir`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from edgenet.config import Activation, CalibMethod, ConvertOptions, IOType, ModelSpec, Precision
from edgenet.report import ConvertReport


@dataclass(frozen=True)
class ConvertResult:
    out: Path
    files: tuple[Path, ...]
    report: ConvertReport

    @property
    def int8_path(self) -> Path | None:
        p = self.out / "model_int8.tflite"
        return p if p in self.files else None

    @property
    def float_path(self) -> Path:
        return self.out / "model_float.tflite"


def _check_out(out: Path, force: bool) -> None:
    from edgenet.outdir import check_out

    check_out(out, force)


def _options(model, kwargs) -> ConvertOptions:
    """Build ConvertOptions from the friendly keyword form of :func:`convert`."""
    if isinstance(model, ConvertOptions):
        return replace(model, **kwargs) if kwargs else model
    spec_keys = {"alpha", "resolution", "num_classes", "in_channels", "activation", "weights", "input_shape"}
    spec_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in spec_keys}
    if "activation" in spec_kw:
        spec_kw["activation"] = Activation(spec_kw["activation"])
    if spec_kw.get("input_shape") is not None:
        spec_kw["input_shape"] = tuple(int(d) for d in spec_kw["input_shape"])
    if spec_kw.get("weights") is not None:
        spec_kw["weights"] = Path(spec_kw["weights"])
    spec = ModelSpec(source=str(model), **spec_kw)
    int8 = kwargs.pop("int8", None)
    if int8 is not None and "precisions" not in kwargs:
        kwargs["precisions"] = (Precision.FLOAT32, Precision.INT8) if int8 else (Precision.FLOAT32,)
    for key, cls in (("io_type", IOType), ("calib_method", CalibMethod)):
        if key in kwargs and kwargs[key] is not None:
            kwargs[key] = cls(kwargs[key])
    if "out" in kwargs:
        kwargs["out"] = Path(kwargs["out"])
    return ConvertOptions(model=spec, **{k: v for k, v in kwargs.items() if v is not None})


def convert(model: str | ConvertOptions = "mobilenet_v1", *, progress: Callable | None = None,
            **kwargs) -> ConvertResult:
    """Convert a model for a target; see ``edgenet convert --help`` for the options.

    >>> edgenet.convert("mobilenet_v1", target="rpi", int8=True, alpha=0.25, resolution=96, out="out")  # doctest: +SKIP
    """
    from converters import pipeline

    from edgenet.outdir import OutputFolder

    opts = _options(model, dict(kwargs))
    with OutputFolder(opts.out, opts.force) as output:   # checked, locked and probed before the work
        return pipeline.run(opts, progress=progress, output=output)
