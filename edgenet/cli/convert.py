"""`edgenet convert`: PyTorch / ONNX -> TFLite float32 and int8 for a target device."""
from __future__ import annotations

import click

from edgenet.cli._common import StderrProgress, debug_option, print_json


def _numbers(text: str, kind, option: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None
    if not values:
        raise click.BadParameter("needs at least one value", param_hint=option)
    return values


@click.command("convert")
@click.argument("model", default="mobilenet_v1", metavar="[MODEL]")
@click.option("--target", default="rpi", show_default=True,
              help="Target profile name (see `edgenet targets`) or a path to a .toml profile.")
@click.option("--int8/--float", "int8", default=None,
              help="Also produce the full-integer int8 model (default: what the target profile says).")
@click.option("--out", type=click.Path(), default="out", show_default=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output folder.")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width multiplier (zoo models), in (0, 1].")
@click.option("--resolution", type=int, default=224, show_default=True, help="Input size (zoo models), a multiple of 32.")
@click.option("--num-classes", type=int, default=1000, show_default=True, help="Classifier outputs (zoo models).")
@click.option("--in-channels", type=click.Choice(["1", "3"]), default="3", show_default=True,
              help="Input channels (zoo models).")
@click.option("--activation", type=click.Choice(["relu6", "relu"]), default="relu6", show_default=True)
@click.option("--weights", type=click.Path(), default=None, help="state_dict (.pt) for a zoo model.")
@click.option("--calib", default="shapes", show_default=True,
              help="Calibration images: a folder (class subfolders or flat) or a built-in dataset: shapes, digits.")
@click.option("--calib-samples", type=int, default=200, show_default=True, help="Calibration images to use.")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "mse"]), default="minmax",
              show_default=True, help="How activation ranges are chosen from the calibration data: minmax "
              "(TFLite's), percentile (0.01/99.99), mse (the clipping range with the least int8 error).")
@click.option("--per-tensor", is_flag=True, default=None,
              help="Per-tensor weight quantization (some accelerators need it; default: per-channel).")
@click.option("--equalize", is_flag=True,
              help="Cross-layer equalization + bias correction before quantizing (helps --per-tensor).")
@click.option("--equalize-clip", type=click.Choice(["relu", "per_channel", "skip"]), default="relu",
              show_default=True, help="ReLU6 between equalized layers: replace by ReLU (as the paper), keep it "
              "exactly (ReLU + per-channel minimum: more ops), or do not equalize across it.")
@click.option("--input-shape", default=None, metavar="N,C,H,W",
              help="Input shape for a `package.module:function` model, e.g. 1,3,224,224.")
@click.option("--io-type", type=click.Choice(["int8", "uint8", "float32"]), default=None,
              help="Input/output type of the int8 model (default: the target's).")
@click.option("--eval-samples", type=int, default=64, show_default=True,
              help="Held-out images for validation (never used for calibration).")
@click.option("--fit", is_flag=True,
              help="Search MobileNetV1 width x resolution for the largest model that fits the target's RAM "
                   "and flash (measured in TFLite Micro), then convert it.")
@click.option("--fit-alphas", default="1,0.75,0.5,0.35,0.25", show_default=True, metavar="LIST",
              help="Width multipliers --fit tries (comma-separated).")
@click.option("--fit-resolutions", default="224,192,160,128,96,64", show_default=True, metavar="LIST",
              help="Input sizes --fit tries (comma-separated).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout when done.")
@debug_option
def command(model, target, int8, out, force, alpha, resolution, num_classes, in_channels, activation, weights,
            calib, calib_samples, calib_method, per_tensor, equalize, equalize_clip, input_shape, io_type, eval_samples, fit, fit_alphas, fit_resolutions, quiet,
            as_json, debug):
    """Convert MODEL for a device: ONNX export, BN folding, channels-last TFLite float32 and int8.

    MODEL is a zoo name (default mobilenet_v1; `edgenet models` lists them), a path to an .onnx
    file, a checkpoint written by `edgenet train`, a torch.export program (.pt2), or
    `package.module:function` returning a torch.nn.Module (with --input-shape). Writes model.onnx,
    model_float.tflite, model_int8.tflite, preprocess.json, report.json and report.md to --out
    (files appear only once every stage has succeeded).

    \b
    Examples:
      edgenet convert --target rpi --int8
      edgenet convert mobilenet_v1 --alpha 0.25 --resolution 96 --num-classes 2 --out vww/
      edgenet convert model.onnx --calib images/ --calib-samples 300 --out out/ --force
      edgenet convert digits.pt --target cortex-m --json
      edgenet convert --target cortex-m --fit --num-classes 10
      edgenet convert my_pkg.models:build --input-shape 1,3,224,224 --calib images/
    """
    import edgenet
    from targets import load_target

    profile = load_target(target)
    if int8 is None:
        int8 = profile.precision.value == "int8"
    reporter = StderrProgress(quiet=quiet or as_json)

    interrupted = []   # --fit prints each candidate as it is decided (logger edgenet.fit), cutting the stage's line

    def progress(event, index, total, name, detail):
        if event == "start":
            reporter.start(index, total, name, detail)
        elif interrupted:
            interrupted.clear()
            reporter.message(f"[{index}/{total}] {name}: {float(detail):.2f} s")
        else:
            reporter.done(float(detail))

    if fit and not reporter.quiet:
        import logging

        class _FitLines(logging.Handler):
            def emit(self, record):
                if reporter.open_line:
                    click.echo("", err=True)
                    reporter.open_line = False
                interrupted.append(True)
                reporter.message("  " + record.getMessage())

        fit_log = logging.getLogger("edgenet.fit")
        fit_log.setLevel(logging.INFO)
        fit_log.addHandler(_FitLines())

    try:
        result = edgenet.convert(
            model, target=target, int8=int8, out=out, force=force, alpha=alpha, resolution=resolution,
            num_classes=num_classes, in_channels=int(in_channels), activation=activation, weights=weights,
            calib=calib, calib_samples=calib_samples, calib_method=calib_method, io_type=io_type,
            per_tensor=per_tensor, equalize=equalize, equalize_clip=equalize_clip,
            input_shape=None if input_shape is None else _numbers(input_shape, int, "--input-shape"),
            eval_samples=eval_samples, fit=fit, fit_alphas=_numbers(fit_alphas, float, "--fit-alphas"),
            fit_resolutions=_numbers(fit_resolutions, int, "--fit-resolutions"), progress=progress)
    except BaseException:
        reporter.failed()
        raise
    report = result.report
    if as_json:
        print_json(report.to_dict())
        return
    v, s = report.validation, report.sizes
    lines = list(report.fit["lines"]) if report.fit else []
    lines += [f"wrote {result.out}/: " + ", ".join(p.name for p in result.files)]
    lines.append(f"float vs ONNX: max abs err {v.float_max_abs_err:.2e}; BN folded: {report.bn_folded}")
    if v.int8_sqnr_db is not None:
        lines.append(f"int8 vs float: top-1 agreement {100 * v.int8_top1_agreement:.1f}%, SQNR {v.int8_sqnr_db:.1f} dB; "
                     f"size {s.float_bytes / 1e6:.2f} MB -> {s.int8_bytes / 1e6:.2f} MB")
    if report.accuracy:
        a = report.accuracy
        lines.append(f"top-1 on {a['n_eval']} held-out images: float {100 * a['float_top1']:.2f}%"
                     + ("" if a["int8_top1"] is None else f", int8 {100 * a['int8_top1']:.2f}%"))
    if report.target.get("summary"):
        lines.append(f"target {report.target['name']}: {report.target['summary']}")
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"total {sum(st.seconds for st in report.stages):.1f} s")
    click.echo("\n".join(lines))
