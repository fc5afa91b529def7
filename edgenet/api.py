"""`edgenet.convert`: the whole pipeline, one stage after another, each timed and reported.

    model (zoo name | .onnx | checkpoint .pt) -> ONNX -> cleanup -> BN folding -> channels-last TF
    -> TFLite float32 (+ int8, calibrated) -> validation -> target checks -> out/

The files appear in ``out`` all at once, only after every stage has succeeded (:mod:`edgenet.outdir`).
"""
from __future__ import annotations

import difflib
import math
import threading
from dataclasses import fields, replace
from enum import Enum
from pathlib import Path
from typing import Callable

from edgenet.config import (Activation, CalibMethod, ChannelOrder, ConvertOptions, InputShape, IOType, ModelSpec,
                            Precision, PreprocessOptions, ResizeMode)
from edgenet.errors import UsageError
from edgenet.report import ConvertReport, ConvertResult  # noqa: F401 - ConvertResult is part of the API


def _check_out(out: Path, force: bool) -> None:
    from edgenet.outdir import check_out

    check_out(out, force)


_SPEC_KEYS = ("alpha", "resolution", "num_classes", "in_channels", "activation", "weights", "labels", "input_shape",
              "input_shapes", "keep_layout")
_PREPROCESS_KEYS = {"mean": "mean", "std": "std", "channel_order": "channel_order", "resize": "resize",
                    "preprocess": "file"}


def _options(model, kwargs) -> ConvertOptions:
    """Build ConvertOptions from the friendly keyword form of :func:`convert`; UsageError naming the
    argument for an unknown keyword or a value of the wrong kind."""
    if isinstance(model, ConvertOptions):
        try:
            return replace(model, **kwargs) if kwargs else model
        except TypeError as exc:
            raise UsageError(f"edgenet.convert: {exc}") from None
    known = {f.name for f in fields(ConvertOptions)} | {"int8"} | set(_SPEC_KEYS) | set(_PREPROCESS_KEYS)
    unknown = sorted(set(kwargs) - known - {"model"})
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        raise UsageError(f"edgenet.convert: unknown argument {unknown[0]!r}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    spec_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _SPEC_KEYS and kwargs[k] is not None}
    given = frozenset(k for k in spec_kw if k not in ("input_shape", "input_shapes", "keep_layout"))
    shapes = _input_shapes(spec_kw.pop("input_shape", None), spec_kw.pop("input_shapes", None))
    if "keep_layout" in spec_kw:
        spec_kw["keep_layout"] = _names(spec_kw["keep_layout"], "keep_layout")
    for key, kind in (("alpha", float), ("resolution", int), ("num_classes", int), ("in_channels", int)):
        if key in spec_kw:
            spec_kw[key] = _number(spec_kw[key], kind, key)
    if "activation" in spec_kw:
        spec_kw["activation"] = _enum(Activation, spec_kw["activation"], "activation")
    if "weights" in spec_kw:
        spec_kw["weights"] = _path(spec_kw["weights"], "weights")
    if "labels" in spec_kw:
        spec_kw["labels"] = _path(spec_kw["labels"], "labels")
    spec = ModelSpec(source=_source_name(model), module=_module_or_none(model), input_shapes=shapes,
                     given=given, **spec_kw)
    pre_kw = {field: kwargs.pop(key) for key, field in _PREPROCESS_KEYS.items() if kwargs.get(key) is not None}
    for key in _PREPROCESS_KEYS:
        kwargs.pop(key, None)
    preprocess = _preprocess_options(pre_kw)
    for key in ("int8", "force", "allow_mismatch", "allow_degraded", "strict_int8", "equalize", "fit", "layer_report",
                "per_tensor", "normalize_in_model"):
        if kwargs.get(key) is not None and not isinstance(kwargs[key], bool):
            raise UsageError(f"edgenet.convert: {key} must be True or False, not {kwargs[key]!r}")
    given = frozenset(k for k, v in kwargs.items() if v is not None and v is not False)
    int8 = kwargs.pop("int8", None)
    if int8 is not None and kwargs.get("precisions") is not None:
        raise UsageError("edgenet.convert: give precisions or int8, not both")
    if kwargs.get("precisions") is not None and not _sequence(kwargs["precisions"], "precisions"):
        raise UsageError("edgenet.convert: precisions must name at least one precision")
    if kwargs.get("precisions") is not None and "profile_variants" not in kwargs:
        kwargs["profile_variants"] = False      # an explicit list is taken as it is
    if int8 is not None and kwargs.get("precisions") is None:
        kwargs["precisions"] = (Precision.FLOAT32, Precision.INT8) if int8 else (Precision.FLOAT32,)
    if kwargs.get("precisions") is not None:
        kwargs["precisions"] = tuple(_enum(Precision, p, "precisions") for p in _sequence(kwargs["precisions"],
                                                                                          "precisions"))
    for key, cls in (("io_type", IOType), ("calib_method", CalibMethod)):
        if kwargs.get(key) is not None:
            kwargs[key] = _enum(cls, kwargs[key], key)
    if "out" in kwargs and kwargs["out"] is not None:
        kwargs["out"] = _path(kwargs["out"], "out")
    if kwargs.get("calib") is not None:
        if not isinstance(kwargs["calib"], (str, Path)):
            raise UsageError(f"edgenet.convert: calib must be a dataset name or a path, not {type(kwargs['calib']).__name__}")
        kwargs["calib"] = str(kwargs["calib"])
    if kwargs.get("output_kinds") is not None:
        from edgenet.verdicts.kinds import KindError, output_kinds

        try:
            kwargs["output_kinds"] = output_kinds(kwargs["output_kinds"])
        except KindError as exc:
            raise UsageError(f"edgenet.convert: {exc}") from None
    for key in ("calib_samples", "eval_samples", "seed", "opset"):
        if kwargs.get(key) is not None:
            kwargs[key] = _number(kwargs[key], int, key)
    kwargs.pop("model", None)
    return ConvertOptions(model=spec, preprocess=preprocess, given=given,
                          **{k: v for k, v in kwargs.items() if v is not None})


def _source_name(model) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    if _module_or_none(model) is not None:
        return f"<{type(model).__name__}>"
    if any(type(model).__module__.startswith(m) or any(c.__module__.startswith(m) for c in type(model).__mro__)
           for m in ("keras", "tf_keras", "tensorflow")):
        raise UsageError(f"edgenet.convert: a Keras model is converted from its file: save it with "
                         f"model.save('model.keras') (or model.export('saved_model_dir')) and pass the path")
    raise UsageError(f"edgenet.convert: model must be a zoo name, a path or a torch.nn.Module, "
                     f"not {type(model).__name__}")


def _module_or_none(model):
    import sys

    torch = sys.modules.get("torch")   # an nn.Module can only exist once torch is imported
    return model if torch is not None and isinstance(model, torch.nn.Module) else None


def _input_shapes(single, several) -> tuple[InputShape, ...]:
    from edgenet.converters.model_inputs import parse_input_shape

    out: list[InputShape] = []
    if single is not None:
        if isinstance(single, dict):
            several = {**single, **(several or {})}
        else:
            out.append(parse_input_shape(",".join(str(_number(d, int, "input_shape")) for d in
                                                  _sequence(single, "input_shape"))))
    if several is not None:
        items = several.items() if isinstance(several, dict) else [(None, s) for s in _sequence(several, "input_shapes")]
        for name, dims in items:
            if isinstance(dims, str):
                out.append(parse_input_shape(dims if name is None else f"{name}:{dims}"))
            else:
                text = ",".join(str(_number(d, int, "input_shapes")) for d in _sequence(dims, "input_shapes"))
                out.append(parse_input_shape(text if name is None else f"{name}:{text}"))
    return tuple(out)


def _preprocess_options(kw: dict) -> PreprocessOptions:
    out: dict = {}
    for key in ("mean", "std"):
        if key in kw:
            values = kw[key]
            if isinstance(values, str):
                values = values.split(",")
            elif isinstance(values, (int, float)) and not isinstance(values, bool):
                values = (values,)          # one value for every channel, as --mean 0 says
            out[key] = tuple(_number(v, float, key) for v in _sequence(values, key))
    if "channel_order" in kw:
        out["channel_order"] = _enum(ChannelOrder, str(kw["channel_order"]).lower(), "channel_order")
    if "resize" in kw:
        value = kw["resize"]
        if isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, str) and value.isdigit()):
            out["resize_short"] = _number(value, int, "resize")
            if not 1 <= out["resize_short"] <= 8192:
                raise UsageError(f"resize must be stretch, crop or a shorter-side size in 1..8192, got {value!r}")
        elif value not in [m.value for m in ResizeMode]:
            raise UsageError(f"resize must be stretch, crop or a shorter-side size in 1..8192, got {value!r}")
        else:
            out["resize"] = ResizeMode(value)
    if "file" in kw:
        out["file"] = _path(kw["file"], "preprocess")
    return PreprocessOptions(**out)


def _number(value, kind, name: str):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) and not hasattr(value, "__index__") \
            and not hasattr(value, "__float__"):
        raise UsageError(f"{name} must be a number, not {value!r}")
    try:
        number = kind(float(value)) if kind is int and isinstance(value, (float, str)) else kind(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None
    if kind is int and float(value) != number:
        raise UsageError(f"{name} must be a whole number, not {value!r}")
    if kind is float and not math.isfinite(number):
        raise UsageError(f"{name} must be a finite number, not {value!r}")
    return number


def _enum(cls, value, name: str):
    try:
        return cls(value.value if isinstance(value, Enum) else value)
    except ValueError:
        raise UsageError(f"{name} must be one of {', '.join(m.value for m in cls)}, not {value!r}") from None


def _sequence(value, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if hasattr(value, "tolist"):   # numpy arrays
        return tuple(value.tolist())
    raise UsageError(f"{name} must be a list or tuple, not {type(value).__name__}")


def _names(value, name: str) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else _sequence(value, name)
    if not all(isinstance(v, str) and v for v in values):
        raise UsageError(f"{name} must be input names (strings)")
    return tuple(values)


def _path(value, name: str) -> Path:
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise UsageError(f"{name} must be a path, not {value!r}")
    return Path(value)


def convert(model: str | ConvertOptions = "mobilenet_v1", *, progress: Callable | None = None,
            **kwargs) -> ConvertResult:
    """Convert a model for a target; see ``edgenet convert --help`` for the options.

    ``progress(event, index, total, name, detail)`` is called as stages run: ``"start"`` (stage
    ``index`` of ``total`` begins; ``detail`` says on what), ``"done"`` (``detail``: its seconds as
    text) and ``"plan"`` (stages added after a failing verdict: ``total`` grew by ``int(detail)``,
    ``name`` says why).

    >>> edgenet.convert("mobilenet_v1", target="rpi", int8=True, alpha=0.25, resolution=96, out="out")  # doctest: +SKIP
    """
    from edgenet.converters import pipeline

    from edgenet.outdir import OutputFolder

    opts = _options(model, dict(kwargs))
    # one conversion at a time in a process: torch's exporter and TensorFlow's converter keep global
    # state (a second thread's export fails inside torch), and the TF worker serves one caller
    with _ONE_AT_A_TIME:
        with OutputFolder(opts.out, opts.force) as output:   # checked, locked and probed before the work
            return pipeline.run(opts, progress=progress, output=output)


_ONE_AT_A_TIME = threading.RLock()
