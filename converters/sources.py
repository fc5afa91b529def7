"""First stage of the pipeline: where the model comes from.

A zoo name, an .onnx file or an `edgenet train` checkpoint becomes a :class:`SourceModel`: an ONNX
graph plus what is known about the model (input shape, preprocessing, class names).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgenet.config import ConvertOptions
from edgenet.data.preprocess import Preprocess
from edgenet.errors import ModelError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


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


def _zoo_source(opts: ConvertOptions) -> SourceModel:
    from edgenet.zoo import create_model

    spec = opts.model
    module = create_model(spec.source, alpha=spec.alpha, resolution=spec.resolution,
                          num_classes=spec.num_classes, in_channels=spec.in_channels,
                          activation=spec.activation.value, weights=spec.weights, seed=opts.seed)
    shape = (1, spec.in_channels, spec.resolution, spec.resolution)
    return _from_module(module, shape, opts, Preprocess.default(spec.resolution, spec.in_channels), None,
                        {"source": "zoo", "name": spec.source, "alpha": spec.alpha, "resolution": spec.resolution,
                         "num_classes": spec.num_classes, "in_channels": spec.in_channels,
                         "activation": spec.activation.value,
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
    pre = Preprocess(height=shape[2], width=shape[3],
                     color=Preprocess.default(shape[2], shape[1]).color,
                     mean=(0.5,) * shape[1], std=(0.5,) * shape[1])
    name = Path(opts.model.source).stem
    return SourceModel(model, name, shape, pre, None, None, {"source": str(opts.model.source), "name": name})


def load_source(opts: ConvertOptions) -> SourceModel:
    src = opts.model.source
    low = src.lower()
    if low.endswith(".onnx"):
        return _onnx_source(opts)
    if low.endswith(CHECKPOINT_SUFFIXES):
        if not Path(src).is_file():
            raise ModelError(f"{src}: no such checkpoint file")
        return _checkpoint_source(opts)
    from edgenet.zoo import _entry

    _entry(src)  # unknown names fail here with suggestions
    return _zoo_source(opts)
