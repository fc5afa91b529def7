"""`edgenet info`: a zoo model's layers (parameters, mult-adds), an .onnx file, a checkpoint or a .tflite file."""
from __future__ import annotations

import click

from edgenet import limits
from edgenet.cli._common import debug_option, echo_out, json_option, print_json


@click.command("info")
@click.argument("model", default="mobilenet_v1")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width multiplier, in (0, 1].")
@click.option("--resolution", type=int, default=224, show_default=True,
              help=f"Input size (multiple of 32, at most {limits.MAX_RESOLUTION}).")
@click.option("--num-classes", type=int, default=1000, show_default=True,
              help=f"1 to {limits.MAX_NUM_CLASSES:,}.")
@click.option("--in-channels", type=click.Choice(["1", "3"]), default="3", show_default=True)
@click.option("--ops", "list_ops", is_flag=True, help="List the ONNX op types `edgenet convert` converts, and exit.")
@json_option
@debug_option
def command(model, alpha, resolution, num_classes, in_channels, list_ops, as_json, debug):
    """Show a zoo model's layers (parameters, mult-adds), what an .onnx file holds before a conversion, or a .tflite.

    For an .onnx file: inputs and outputs with their dynamic dims, the opset, the ops and which ones edgenet
    has no handler for.

    \b
    Examples:
      edgenet info model.onnx                 # inputs, outputs, opset, ops, unsupported ops
      edgenet info out/model_int8.tflite      # inputs/outputs with their quantization, ops by precision
      edgenet info model.onnx --json
      edgenet info mobilenet_v1
      edgenet info mobilenet_v1 --alpha 0.25 --resolution 96 --num-classes 2
      edgenet info mobilenet_v1 --alpha 0.5 --json | jq .mult_adds
      edgenet info digits.pt                  # a checkpoint of edgenet train (--qat: its learned ranges)
      edgenet info --ops                      # the ONNX op types the converter handles
    """
    if list_ops:
        from edgenet.errors import UsageError
        from edgenet.converters.onnx_to_tf import supported_ops

        given = _zoo_options_given()
        if click.get_current_context().get_parameter_source("model") is click.core.ParameterSource.COMMANDLINE:
            given.insert(0, repr(model))
        if given:
            raise UsageError(f"--ops lists the converter's ONNX op types: {', '.join(given)} cannot go with it")

        ops = list(supported_ops())
        if as_json:
            print_json(ops)
        else:
            echo_out("\n".join(ops))
        return
    if model.lower().endswith(".onnx"):
        _onnx_file(model, as_json)
        return
    if model.lower().endswith(".tflite"):
        _tflite_file(model, as_json)
        return
    if model.lower().endswith((".pt", ".pth", ".ckpt")):
        _checkpoint(model, as_json)
        return
    _refuse_keras(model)
    from edgenet.zoo import check_model_args, info

    check_model_args(model, alpha=alpha, resolution=resolution, num_classes=num_classes,
                     in_channels=int(in_channels))          # bounds first: before torch loads
    summary = info(model, alpha=alpha, resolution=resolution, num_classes=num_classes,
                   in_channels=int(in_channels))
    if as_json:
        print_json(summary.to_dict())
    else:
        echo_out(summary.to_table())


def _refuse_keras(model: str) -> None:
    """UsageError for a Keras model or SavedModel (which only TensorFlow reads: convert reads it)."""
    from edgenet.converters.keras_source import KERAS_SUFFIXES, is_saved_model
    from edgenet.errors import UsageError

    if model.lower().endswith(KERAS_SUFFIXES) or is_saved_model(model):
        raise UsageError(f"{model}: a Keras model or SavedModel; edgenet info reads zoo models and .onnx files "
                         f"(edgenet convert {model} --float converts it and lists its ops in report.md)")


def _onnx_file(path: str, as_json: bool) -> None:
    from edgenet.converters.onnx_summary import summarize

    _file_summary(summarize, path, "an .onnx file", as_json)


def _tflite_file(path: str, as_json: bool) -> None:
    """A converted model: its inputs and outputs (quantization included), precision and ops."""
    from edgenet.tflite_summary import summarize_tflite

    _file_summary(summarize_tflite, path, "a .tflite file", as_json)


def _file_summary(summarize, path: str, what: str, as_json: bool) -> None:
    """``summarize(path)`` (a summary with to_dict / to_text) printed; zoo options refused for a file."""
    from edgenet.errors import UsageError

    given = _zoo_options_given()
    if given:
        raise UsageError(f"{', '.join(given)}: options of a zoo model; {what} has its own sizes")
    summary = summarize(path)
    if as_json:
        print_json(summary.to_dict())
    else:
        echo_out(summary.to_text())


def _checkpoint(path: str, as_json: bool) -> None:
    """What a checkpoint of `edgenet train` holds: the model it describes, its classes, what it was
    trained on, and (--qat) how many learned ranges and whether the QDQ model is inside."""
    from edgenet.checkpoint import load_checkpoint
    from edgenet.errors import UsageError

    given = _zoo_options_given()
    if given:
        raise UsageError(f"{', '.join(given)}: options of a zoo model; a checkpoint has its own sizes")
    ckpt = load_checkpoint(path)
    qat = ckpt.qat or {}
    ranges = (qat.get("ranges") or {}).get("activations") or {}
    summary = {"checkpoint": str(path), "model": ckpt.model, "alpha": ckpt.alpha, "resolution": ckpt.resolution,
               "num_classes": ckpt.num_classes, "in_channels": ckpt.in_channels,
               "activation": getattr(ckpt.activation, "value", str(ckpt.activation)),
               "class_names": list(ckpt.class_names), "dataset": ckpt.dataset, "metrics": ckpt.metrics,
               "qat": bool(ckpt.qat), "qat_activation_ranges": len(ranges) if ckpt.qat else None,
               "qdq_model_bytes": len(ckpt.qdq_onnx) if ckpt.qdq_onnx else None}
    if as_json:
        print_json(summary)
        return
    names = ", ".join(ckpt.class_names[:8]) + (" ..." if len(ckpt.class_names) > 8 else "")
    lines = [f"checkpoint {path}: {ckpt.model} alpha {ckpt.alpha:g}, {ckpt.resolution}x{ckpt.resolution}, "
             f"{ckpt.in_channels} channel(s), {ckpt.num_classes} classes ({names})",
             f"trained on {ckpt.dataset}" + "".join(f"; {k} {v}" for k, v in ckpt.metrics.items()
                                                   if isinstance(v, (int, float)))]
    if ckpt.qat:
        lines.append(f"quantization-aware: {len(ranges)} learned activation ranges"
                     + (f", its QDQ model inside ({len(ckpt.qdq_onnx):,} bytes)" if ckpt.qdq_onnx else "")
                     + f"; edgenet convert {path} --int8 uses them")
    echo_out("\n".join(lines))


def _zoo_options_given() -> list[str]:
    """The zoo-model options (--alpha ...) given on the command line, as typed."""
    source = click.get_current_context().get_parameter_source
    return [f"--{p.replace('_', '-')}" for p in ("alpha", "resolution", "num_classes", "in_channels")
            if source(p) is click.core.ParameterSource.COMMANDLINE]
