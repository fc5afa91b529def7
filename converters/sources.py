"""First stage of the pipeline: where the model comes from.

A source is one of (see :func:`source_kind`):

* a zoo name (``mobilenet_v1``, ``shufflenet_v2_x1_0`` ...), built with the --alpha/--resolution options;
* an ``.onnx`` file (any input name, static C/H/W, batch 1 or dynamic);
* an ``edgenet train`` checkpoint (``.pt``/``.pth``/``.ckpt``);
* ``package.module:function``: a callable returning a ``torch.nn.Module``, imported from the working
  directory or the installed packages, exported at ``--input-shape N,C,H,W``;
* a ``.pt2`` file written by ``torch.export.save``: its ``ExportedProgram.module()`` is exported with
  the TorchScript exporter (no onnxscript needed); the input shape is the one it was exported with.

(the last two are loaded by :mod:`converters.user_models`)

Each becomes a :class:`SourceModel`: an ONNX graph plus what is known about the model (input shape,
preprocessing, class names). The pipeline validates and calibrates one image input and compares one
output, so models with several inputs or outputs are refused with a one-line ModelError.
:func:`check_source` runs the cheap checks before any slow stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from converters.user_models import CALLABLE_PATTERN, find_module, load_callable, load_program
from edgenet.config import ConvertOptions
from edgenet.data.preprocess import Preprocess
from edgenet.errors import ModelError, UsageError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
EXPORTED_PROGRAM_SUFFIX = ".pt2"


class SourceKind(str, Enum):
    ZOO = "zoo"
    ONNX = "onnx"
    CHECKPOINT = "checkpoint"
    CALLABLE = "callable"                 # package.module:function
    EXPORTED_PROGRAM = "exported_program"  # torch.export .pt2


@dataclass(frozen=True)
class SourceModel:
    """What the first stage produces: an ONNX graph plus what we know about the model."""
    onnx: object                         # onnx.ModelProto
    name: str
    input_shape: tuple[int, ...]         # ONNX (NCHW)
    preprocess: Preprocess
    class_names: tuple[str, ...] | None
    export_max_abs_err: float | None
    info: dict


def source_kind(source: str) -> SourceKind:
    """What kind of source a MODEL argument names (by suffix, then the ``module:function`` form)."""
    low = source.lower()
    if low.endswith(".onnx"):
        return SourceKind.ONNX
    if low.endswith(CHECKPOINT_SUFFIXES):
        return SourceKind.CHECKPOINT
    if low.endswith(EXPORTED_PROGRAM_SUFFIX):
        return SourceKind.EXPORTED_PROGRAM
    if CALLABLE_PATTERN.fullmatch(source):
        return SourceKind.CALLABLE
    return SourceKind.ZOO


# -- cheap checks ------------------------------------------------------------------------------
def check_source(opts: ConvertOptions) -> SourceKind:
    """Cheap checks of the model the user named (files exist, zoo hyper-parameters, the
    ``module:function`` form and its --input-shape), before any slow stage starts."""
    spec = opts.model
    kind = source_kind(spec.source)
    if kind in (SourceKind.ONNX, SourceKind.CHECKPOINT, SourceKind.EXPORTED_PROGRAM):
        path = Path(spec.source)
        if not path.is_file():
            what = {SourceKind.ONNX: "ONNX model", SourceKind.CHECKPOINT: "checkpoint",
                    SourceKind.EXPORTED_PROGRAM: "torch.export program (.pt2)"}[kind]
            raise ModelError(f"{path}: no such {what} file")
        if spec.input_shape is not None and kind is not SourceKind.EXPORTED_PROGRAM:
            raise UsageError(f"--input-shape applies to `module:function` and .pt2 models, not to {path.name}")
        if spec.input_shape is not None:
            _check_input_shape(spec.input_shape, spec.source)
    elif kind is SourceKind.CALLABLE:
        if spec.input_shape is None:
            raise UsageError(f"{spec.source}: a `module:function` model needs --input-shape N,C,H,W "
                             "(e.g. --input-shape 1,3,224,224)")
        _check_input_shape(spec.input_shape, spec.source)
        find_module(spec.source)
    else:
        from edgenet.zoo import check_model_args

        check_model_args(spec.source, alpha=spec.alpha, resolution=spec.resolution, num_classes=spec.num_classes,
                         in_channels=spec.in_channels, activation=spec.activation.value)
        if spec.input_shape is not None:
            raise UsageError(f"--input-shape applies to `module:function` and .pt2 models; zoo model {spec.source} "
                             "takes --resolution and --in-channels")
        if spec.weights is not None and not Path(spec.weights).is_file():
            raise ModelError(f"{spec.weights}: no such weights file")
    return kind


def _check_input_shape(shape, source: str) -> tuple[int, int, int, int]:
    """An image input N x C x H x W with N = 1 and C = 1 or 3."""
    shape = tuple(shape)
    if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise UsageError(f"--input-shape must be 4 positive ints N,C,H,W for an image model, got "
                         f"{','.join(map(str, shape))} ({source})")
    if shape[0] != 1:
        raise UsageError(f"--input-shape batch must be 1 (the converted model runs one image at a time), got {shape[0]}")
    if shape[1] not in (1, 3):
        raise UsageError(f"--input-shape channels must be 1 or 3 (an image input), got {shape[1]}")
    return shape  # type: ignore[return-value]


def _image_preprocess(shape: tuple[int, ...]) -> Preprocess:
    """Inputs in [-1, 1] (edgenet's default), at the model's own height x width."""
    base = Preprocess.default(shape[2], shape[1])
    return Preprocess(height=shape[2], width=shape[3], color=base.color, mean=base.mean, std=base.std)


# -- zoo and checkpoints ----------------------------------------------------------------------
def _zoo_source(opts: ConvertOptions) -> SourceModel:
    from edgenet.zoo import _entry, create_model

    spec = opts.model
    module = create_model(spec.source, alpha=spec.alpha, resolution=spec.resolution,
                          num_classes=spec.num_classes, in_channels=spec.in_channels,
                          activation=spec.activation.value, weights=spec.weights, seed=opts.seed)
    entry = _entry(spec.source)
    shape = (1, spec.in_channels, spec.resolution, spec.resolution)
    return _from_module(module, shape, opts, Preprocess.default(spec.resolution, spec.in_channels), None,
                        {"source": "zoo", "name": spec.source, "alpha": spec.alpha, "resolution": spec.resolution,
                         "num_classes": spec.num_classes, "in_channels": spec.in_channels,
                         "activation": spec.activation.value if entry.activations else "paper",
                         "weights": str(spec.weights) if spec.weights else None})


def _from_module(module, shape, opts, preprocess, class_names, info) -> SourceModel:
    from converters.export import export_onnx, onnx_parity

    onnx_model = export_onnx(module, shape, opset=opts.opset)
    err = onnx_parity(module, onnx_model, shape, seed=opts.seed)
    name = f"{info['name']}_{info['alpha']:g}_{info['resolution']}" if "alpha" in info else info["name"]
    return SourceModel(onnx_model, name, shape, preprocess, class_names, err, info)


def _checkpoint_source(opts: ConvertOptions) -> SourceModel:
    from edgenet.checkpoint import load_checkpoint
    from edgenet.zoo import create_model

    ckpt = load_checkpoint(opts.model.source)
    module = create_model(ckpt.model, alpha=ckpt.alpha, resolution=ckpt.resolution,
                          num_classes=ckpt.num_classes, in_channels=ckpt.in_channels,
                          activation=ckpt.activation)
    module.load_state_dict(ckpt.state_dict)
    module.eval()
    shape = (1, ckpt.in_channels, ckpt.resolution, ckpt.resolution)
    return _from_module(module, shape, opts, ckpt.preprocess, tuple(ckpt.class_names),
                        {"source": str(opts.model.source), "name": ckpt.model, "alpha": ckpt.alpha,
                         "resolution": ckpt.resolution, "num_classes": ckpt.num_classes,
                         "in_channels": ckpt.in_channels, "activation": ckpt.activation,
                         "trained_on": ckpt.dataset})


# -- ONNX files -------------------------------------------------------------------------------
def _onnx_source(opts: ConvertOptions) -> SourceModel:
    from converters.export import load_onnx

    model = load_onnx(opts.model.source)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"{opts.model.source}: has {len(inputs)} inputs; edgenet converts single-input models")
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4 or any(d <= 0 for d in dims[1:]) or dims[1] not in (1, 3):
        raise ModelError(f"{opts.model.source}: input '{inputs[0].name}' has shape {dims}; "
                         "expected an image input N x C x H x W with static C (1 or 3), H, W")
    shape = (1, *dims[1:])
    if dims[0] not in (1, -1):
        raise ModelError(f"{opts.model.source}: batch size {dims[0]} is not supported; export with batch 1")
    if dims[0] == -1:
        inputs[0].type.tensor_type.shape.dim[0].ClearField("dim_param")
        inputs[0].type.tensor_type.shape.dim[0].dim_value = 1
    name = Path(opts.model.source).stem
    return SourceModel(model, name, shape, _image_preprocess(shape), None, None,
                       {"source": str(opts.model.source), "name": name, "input_name": inputs[0].name})


# -- the user's own PyTorch models ------------------------------------------------------------
def _callable_source(opts: ConvertOptions) -> SourceModel:
    spec = opts.model
    if spec.input_shape is None:
        raise UsageError(f"{spec.source}: a `module:function` model needs --input-shape N,C,H,W")
    shape = _check_input_shape(spec.input_shape, spec.source)
    module = load_callable(spec.source)
    name = spec.source.split(":", 1)[1].split(".")[-1]
    return _from_module(module, shape, opts, _image_preprocess(shape), None,
                        {"source": spec.source, "name": name, "input_shape": list(shape)})


def _exported_program_source(opts: ConvertOptions) -> SourceModel:
    path = Path(opts.model.source)
    module, shape = load_program(path, opts.model.input_shape)
    shape = _check_input_shape(shape, str(path))
    return _from_module(module, shape, opts, _image_preprocess(shape), None,
                        {"source": str(path), "name": path.stem, "input_shape": list(shape),
                         "exporter": "torch.export program -> TorchScript ONNX exporter"})


# -- dispatch ---------------------------------------------------------------------------------
def load_source(opts: ConvertOptions) -> SourceModel:
    kind = check_source(opts)
    if kind is SourceKind.ONNX:
        return _onnx_source(opts)
    if kind is SourceKind.CHECKPOINT:
        return _checkpoint_source(opts)
    if kind is SourceKind.CALLABLE:
        return _callable_source(opts)
    if kind is SourceKind.EXPORTED_PROGRAM:
        return _exported_program_source(opts)
    return _zoo_source(opts)
