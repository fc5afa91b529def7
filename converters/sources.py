"""First stage of the pipeline: where the model comes from.

A source is one of (see :func:`source_kind`):

* a zoo name (``mobilenet_v1``, ``shufflenet_v2_x1_0`` ...), built with the --alpha/--resolution options;
* an ``.onnx`` file: any number of float32 inputs of rank 1 to 5, dynamic dims fixed by
  ``--input-shape`` (see :mod:`edgenet.converters.model_inputs`);
* an ``edgenet train`` checkpoint (``.pt``/``.pth``/``.ckpt``);
* ``package.module:function``: a callable returning a ``torch.nn.Module``, imported from the working
  directory or the installed packages, exported at ``--input-shape N,C,H,W``;
* a ``.pt2`` file written by ``torch.export.save``: its ``ExportedProgram.module()`` is exported with
  the TorchScript exporter (no onnxscript needed); the input shape is the one it was exported with;
* a Keras model (``.keras``, ``.h5``) or a SavedModel folder (holding ``saved_model.pb``): read and
  converted to a float .tflite by TensorFlow (:mod:`edgenet.converters.keras_source`, the ``keras``
  extra), then quantized, judged and packaged as every other source
  (:mod:`edgenet.converters.keras_pipeline`); no ONNX on that road, ``--input-shape`` is N,H,W,C.

(``module:function`` and ``.pt2`` are loaded by :mod:`edgenet.converters.user_models`)

Each becomes a :class:`SourceModel`: an ONNX graph with static input shapes plus what is known about
the model (its inputs, the preprocessing of its image input, class names). Preprocessing is what the
model records (zoo: ``(x - 0.5) / 0.5``; checkpoints: what they were trained with), else edgenet's
default, changed by ``--preprocess FILE`` and ``--mean/--std/--channel-order/--resize``
(:func:`image_preprocess`). :func:`check_source` runs the cheap checks before any slow stage,
refusing options that do not apply to the kind of model.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edgenet.converters.model_inputs import ModelInput, check_finite_weights, check_input_types, fix_input_shapes
from edgenet.converters.class_names import read_class_names
from edgenet.converters.image_preprocess import image_preprocess
from edgenet.converters.keras_source import KERAS_SUFFIXES, is_saved_model
from edgenet.converters.user_models import CALLABLE_PATTERN, find_module, load_callable, load_program
from edgenet.config import ConvertOptions
from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError, ModelError, UsageError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
UNTRAINED_KEY = "edgenet.weights"
"""``model.onnx`` metadata key edgenet writes for seeded random (untrained) zoo weights, so that
converting that file again still knows its figures say nothing (:func:`mark_untrained`)."""
UNTRAINED_VALUE = "untrained (seeded random)"
EXPORTED_PROGRAM_SUFFIX = ".pt2"


class SourceKind(str, Enum):
    ZOO = "zoo"
    ONNX = "onnx"
    CHECKPOINT = "checkpoint"
    CALLABLE = "callable"                 # package.module:function
    MODULE = "module"                     # a torch.nn.Module given to edgenet.convert directly
    EXPORTED_PROGRAM = "exported_program"  # torch.export .pt2
    KERAS = "keras"                       # .keras / .h5 (TensorFlow's converter, converters/keras_source.py)
    SAVED_MODEL = "saved_model"           # a SavedModel folder (saved_model.pb inside)


@dataclass(frozen=True)
class SourceModel:
    """What the first stage produces: an ONNX graph with static input shapes plus what we know
    about the model (its inputs, the preprocessing of its image input, class names)."""
    onnx: object                         # onnx.ModelProto
    name: str
    inputs: tuple[ModelInput, ...]
    preprocess: Preprocess | None        # of the image input; None when the model has none
    class_names: tuple[str, ...] | None
    export_max_abs_err: float | None
    info: dict
    notes: tuple[str, ...] = ()
    qdq: object = None                   # converters.qdq.QDQSource: a QDQ graph's ranges and the graph itself

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's ONNX shape (NCHW for images)."""
        return self.inputs[0].shape

    @property
    def image_input(self) -> ModelInput | None:
        """The input images feed: the model's only input when it is an image, else None."""
        return self.inputs[0] if len(self.inputs) == 1 and self.inputs[0].image else None


def source_kind(source: str) -> SourceKind:
    """What kind of source a MODEL argument names (by suffix, then the ``module:function`` form)."""
    low = source.lower()
    if low.endswith(".onnx"):
        return SourceKind.ONNX
    if low.endswith(CHECKPOINT_SUFFIXES):
        return SourceKind.CHECKPOINT
    if low.endswith(EXPORTED_PROGRAM_SUFFIX):
        return SourceKind.EXPORTED_PROGRAM
    if low.endswith(KERAS_SUFFIXES):
        return SourceKind.KERAS
    if is_saved_model(source):
        return SourceKind.SAVED_MODEL
    if CALLABLE_PATTERN.fullmatch(source):
        return SourceKind.CALLABLE
    return SourceKind.ZOO


# -- cheap checks ------------------------------------------------------------------------------
ZOO_OPTIONS = {"alpha": "--alpha", "resolution": "--resolution", "num_classes": "--num-classes",
               "in_channels": "--in-channels", "activation": "--activation", "weights": "--weights"}
_KIND_NAME = {SourceKind.ONNX: "an .onnx model", SourceKind.CHECKPOINT: "a checkpoint",
              SourceKind.CALLABLE: "a `module:function` model", SourceKind.EXPORTED_PROGRAM: "a .pt2 program",
              SourceKind.MODULE: "an nn.Module", SourceKind.KERAS: "a Keras model",
              SourceKind.SAVED_MODEL: "a SavedModel",
              SourceKind.ZOO: "a zoo model"}


ACCEPTED = ("a zoo name (edgenet models), an .onnx file, a checkpoint (.pt/.pth/.ckpt), a torch.export "
            "program (.pt2), module:function, a Keras model (.keras/.h5) or a SavedModel folder")


def _refuse_non_model(source: str) -> None:
    """UsageError for a MODEL argument that names a file or folder edgenet cannot convert (it would
    otherwise be looked up in the zoo and called an unknown model)."""
    path = Path(source)
    if source.lower().endswith(".tflite"):
        raise UsageError(f"{source}: already a TFLite model; edgenet converts {ACCEPTED} (to measure a "
                         "converted folder: edgenet bench FOLDER)")
    if path.is_dir():
        raise UsageError(f"{source}: a folder; edgenet converts {ACCEPTED}")
    if path.exists() or path.suffix:
        raise UsageError(f"{source}: not a model edgenet converts ({ACCEPTED})")


def check_source(opts: ConvertOptions) -> SourceKind:
    """Cheap checks of the model the user named (files exist, zoo hyper-parameters, the
    ``module:function`` form and its --input-shape, options that do not apply to this kind of
    model), before any slow stage starts."""
    spec = opts.model
    kind = SourceKind.MODULE if spec.module is not None else source_kind(spec.source)
    _refuse_options(opts, kind)
    if kind in (SourceKind.ONNX, SourceKind.CHECKPOINT, SourceKind.EXPORTED_PROGRAM, SourceKind.KERAS):
        path = Path(spec.source)
        if not path.is_file():
            what = {SourceKind.ONNX: "ONNX model", SourceKind.CHECKPOINT: "checkpoint",
                    SourceKind.EXPORTED_PROGRAM: "torch.export program (.pt2)",
                    SourceKind.KERAS: "Keras model"}[kind]
            raise ModelError(f"{path}: no such {what} file" if not path.exists() else f"{path}: not a regular file")
        if kind is SourceKind.KERAS:   # a damaged file is found now, not after TensorFlow's import
            from edgenet.converters.keras_files import check_container

            check_container(path)
    elif kind is SourceKind.SAVED_MODEL:
        pass   # found by its saved_model.pb
    elif kind in (SourceKind.CALLABLE, SourceKind.MODULE):
        if spec.input_shape is None:
            what = "a `module:function` model needs --input-shape N,C,H,W (e.g. --input-shape 1,3,224,224)" \
                if kind is SourceKind.CALLABLE else "an nn.Module needs input_shape=(N, C, H, W)"
            raise UsageError(f"{spec.source}: {what}")
        if kind is SourceKind.CALLABLE:
            find_module(spec.source)
    else:
        _refuse_non_model(spec.source)
        from edgenet.zoo import check_model_args

        check_model_args(spec.source, alpha=spec.alpha, resolution=spec.resolution, num_classes=spec.num_classes,
                         in_channels=spec.in_channels, activation=spec.activation.value)
        if spec.weights is not None and not Path(spec.weights).is_file():
            raise ModelError(f"{spec.weights}: no such weights file")
    if opts.preprocess.file is not None:
        Preprocess.load(opts.preprocess.file)   # a bad file is found now, not after the export
    if spec.labels is not None:
        read_class_names(spec.labels)
    return kind


def _with_labels(source: SourceModel, path: Path) -> SourceModel:
    """``source`` with the class names of --labels, which must match its first output's classes."""
    from dataclasses import replace

    names = read_class_names(path)
    out = source.onnx.graph.output[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in out.type.tensor_type.shape.dim]
    classes = dims[-1] if dims else None
    if classes is None or len([d for d in dims[1:] if d != 1]) != 1:
        raise UsageError(f"--labels names classes, but the model's first output {out.name!r} has shape "
                         f"{[d if d else '?' for d in dims]}, not one score per class")
    if classes != len(names):
        raise DataError(f"{path}: {len(names)} class names, but the model's output {out.name!r} has {classes} "
                        "classes")
    return replace(source, class_names=names)


def _refuse_options(opts: ConvertOptions, kind: SourceKind) -> None:
    """UsageError for an option given for a kind of model it does not apply to (never ignored)."""
    spec = opts.model
    what = f"{_KIND_NAME[kind]} ({Path(spec.source).name if kind is not SourceKind.ZOO else spec.source})"
    if kind is not SourceKind.ZOO:
        zoo = [flag for key, flag in ZOO_OPTIONS.items() if key in spec.given]
        if zoo:
            raise UsageError(f"{', '.join(zoo)} appl{'ies' if len(zoo) == 1 else 'y'} to zoo models, not to {what}"
                             + (": the checkpoint records them" if kind is SourceKind.CHECKPOINT else ""))
    if spec.input_shapes and kind in (SourceKind.ZOO, SourceKind.CHECKPOINT):
        hint = "; zoo models take --resolution and --in-channels" if kind is SourceKind.ZOO else \
            ": the checkpoint records its input size"
        raise UsageError(f"--input-shape applies to .onnx, .pt2, `module:function` and Keras models, not to "
                         f"{what}{hint}")
    if kind in (SourceKind.CALLABLE, SourceKind.EXPORTED_PROGRAM, SourceKind.MODULE) and \
            any(s.name for s in spec.input_shapes):
        raise UsageError(f"--input-shape for {what} is N,C,H,W without an input name (it has one input)")
    if kind in (SourceKind.KERAS, SourceKind.SAVED_MODEL) and any(s.name for s in spec.input_shapes):
        raise UsageError(f"--input-shape for {what} is N,H,W,C without an input name (it has one input)")
    if len(spec.input_shapes) > 1 and kind is not SourceKind.ONNX:
        raise UsageError(f"--input-shape given {len(spec.input_shapes)} times; {what} has one input")
    if spec.keep_layout and kind is not SourceKind.ONNX:
        raise UsageError(f"--keep-layout applies to .onnx models (it names their inputs), not to {what}")
    if kind is SourceKind.CHECKPOINT and opts.preprocess.given:
        raise UsageError(f"{', '.join(opts.preprocess.given)}: {what} records the preprocessing it was trained "
                         "with, and that is used")
    if opts.fit and kind is not SourceKind.ZOO:
        raise UsageError(f"--fit searches a zoo model's width and resolution; it cannot resize {what}")
    if spec.labels is not None and kind is SourceKind.CHECKPOINT:
        raise UsageError(f"--labels: {what} records the class names it was trained with, and those are used")


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
                         "weights": str(spec.weights) if spec.weights else None,
                         "trained": spec.weights is not None})


def mark_untrained(model):
    """A copy of ``model`` (onnx.ModelProto) whose metadata says its weights are untrained
    (``UNTRAINED_KEY``): written into a zoo model's model.onnx when it has seeded random weights."""
    marked = type(model)()
    marked.CopyFrom(model)
    kept = [p for p in marked.metadata_props if p.key != UNTRAINED_KEY]
    del marked.metadata_props[:]
    marked.metadata_props.extend(kept)
    prop = marked.metadata_props.add()
    prop.key, prop.value = UNTRAINED_KEY, UNTRAINED_VALUE
    return marked


def _from_module(module, shape, opts, preprocess, class_names, info) -> SourceModel:
    from edgenet.converters.export import export_onnx, onnx_parity

    onnx_model = export_onnx(module, shape, opset=opts.opset)
    check_finite_weights(onnx_model, info.get("name", "the model"))
    err = onnx_parity(module, onnx_model, shape, seed=opts.seed)
    name = f"{info['name']}_{info['alpha']:g}_{info['resolution']}" if "alpha" in info else info["name"]
    fixed = fix_input_shapes(onnx_model, (), (), name)
    image = fixed.inputs[0] if len(fixed.inputs) == 1 and fixed.inputs[0].image else None
    pre, notes = image_preprocess(image, opts.preprocess, preprocess)
    return SourceModel(onnx_model, name, fixed.inputs, pre, class_names, err, info, notes)


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
                         "trained_on": ckpt.dataset, "trained": True, **({"qat": True} if ckpt.qat else {})})


# -- ONNX files -------------------------------------------------------------------------------
def _onnx_source(opts: ConvertOptions) -> SourceModel:
    from edgenet.converters.export import load_onnx
    from edgenet.converters.qoperator import read_qoperator

    source = opts.model.source
    model = load_onnx(source)
    model, qop = read_qoperator(model, source)
    qdq = _read_qdq(model, source, opts)
    if qdq is not None:
        model = qdq.float_model
        if qop is not None:   # the int8 verdict's reference: onnxruntime on the QOperator model as given
            from dataclasses import replace

            qdq = replace(qdq, model=qop[0])
    check_input_types(model, source)
    check_finite_weights(model, source)
    fixed = fix_input_shapes(model, opts.model.input_shapes, opts.model.keep_layout, source)
    notes = []
    if fixed.batch_fixed:
        notes.append(f"dynamic batch of input{'s' if len(fixed.batch_fixed) > 1 else ''} "
                     f"{', '.join(fixed.batch_fixed)} set to 1 (choose another with --input-shape)")
    image = fixed.inputs[0] if len(fixed.inputs) == 1 and fixed.inputs[0].image else None
    pre, pre_notes = image_preprocess(image, opts.preprocess)
    notes.extend(pre_notes)
    name = Path(source).stem
    trained = {p.key: p.value for p in model.metadata_props}.get(UNTRAINED_KEY) != UNTRAINED_VALUE
    info = {"source": str(source), "name": name, "inputs": [i.name for i in fixed.inputs],
            "batch_fixed": list(fixed.batch_fixed), "trained": trained}
    if qop is not None:
        info["qoperator"] = qop[1].to_dict()
        notes.extend(qop[1].notes())
    if qdq is not None:
        info["qdq"] = qdq.info.to_dict()
        notes.extend(qdq.notes(any(p.full_integer for p in opts.precisions or ())))
    return SourceModel(model, name, fixed.inputs, pre, None, None, info, tuple(notes), qdq)


def _read_qdq(model, source, opts: ConvertOptions):
    """A QDQ graph's float graph and ranges (converters/qdq.py); None for a float graph. Malformed
    pairs are refused (ModelError naming the node); options that would change the graph the
    producer's ranges were measured on are refused (UsageError)."""
    from edgenet.converters.qdq import QDQSource, is_qdq

    if not is_qdq(model):
        return None
    for flag, given in (("--equalize", opts.equalize), ("--normalize-in-model", opts.normalize_in_model)):
        if given:
            raise UsageError(f"{flag}: {Path(source).name} is already quantized (QDQ): its ranges are the producer's, "
                             f"measured on the graph as it is; convert it without {flag}")
    try:
        return QDQSource.read(model)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None


# -- the user's own PyTorch models ------------------------------------------------------------
def _callable_source(opts: ConvertOptions) -> SourceModel:
    spec = opts.model
    shape = spec.input_shape
    module = load_callable(spec.source)
    name = spec.source.split(":", 1)[1].split(".")[-1]
    return _from_module(module, shape, opts, None, None,
                        {"source": spec.source, "name": name, "input_shape": list(shape), "trained": True})


def _module_source(opts: ConvertOptions) -> SourceModel:
    spec = opts.model
    module = spec.module.eval()
    name = type(module).__name__
    return _from_module(module, spec.input_shape, opts, None, None,
                        {"source": f"nn.Module {name}", "name": name, "input_shape": list(spec.input_shape),
                         "trained": True})


def _exported_program_source(opts: ConvertOptions) -> SourceModel:
    path = Path(opts.model.source)
    module, shape = load_program(path, opts.model.input_shape)
    return _from_module(module, shape, opts, None, None,
                        {"source": str(path), "name": path.stem, "input_shape": list(shape),
                         "exporter": "torch.export program -> TorchScript ONNX exporter", "trained": True})


# -- dispatch ---------------------------------------------------------------------------------
def load_source(opts: ConvertOptions) -> SourceModel:
    source = _load_source(opts)
    return source if opts.model.labels is None else _with_labels(source, opts.model.labels)


def _load_source(opts: ConvertOptions) -> SourceModel:
    kind = check_source(opts)
    if kind is SourceKind.ONNX:
        return _onnx_source(opts)
    if kind is SourceKind.CHECKPOINT:
        return _checkpoint_source(opts)
    if kind is SourceKind.CALLABLE:
        return _callable_source(opts)
    if kind is SourceKind.EXPORTED_PROGRAM:
        return _exported_program_source(opts)
    if kind is SourceKind.MODULE:
        return _module_source(opts)
    return _zoo_source(opts)
