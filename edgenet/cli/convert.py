"""`edgenet convert`: PyTorch / ONNX -> TFLite float32 and int8 for a target device."""
from __future__ import annotations

import click

from edgenet.cli._common import StderrProgress, debug_option, print_json


def _c_name(ctx, param, value):
    """Refuse a bad --c-name before any work (one line: the UsageError reaches the CLI's handler)."""
    from edgenet.targets.c_array import check_c_name

    return None if value is None else check_c_name(value)


def _numbers(text: str, kind, option: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None
    if not values:
        raise click.BadParameter("needs at least one value", param_hint=option)
    return values


def _kinds(given: tuple[str, ...]):
    """--output-kind NAME=KIND values, parsed here so that a malformed one is the option's own error."""
    if not given:
        return None
    from edgenet.errors import UsageError
    from edgenet.verdicts.kinds import KindError, output_kinds

    try:
        return output_kinds(list(given))
    except KindError as exc:
        raise UsageError(str(exc)) from None


_ZOO_DEFAULTS = "zoo models: default 1.0 / 224 / 1000 / 3 / relu6"


@click.command("convert", context_settings={"max_content_width": 100})
@click.argument("model", default="mobilenet_v1", metavar="[MODEL]")
@click.option("--target", default="rpi", show_default=True,
              help="Target profile name (see `edgenet targets`) or a path to a .toml profile.")
@click.option("--precision", "precisions", default=None, metavar="LIST",
              help="Models to write, comma-separated from float32, float16, dynamic (int8 weights, float "
                   "activations), int8, int16x8 (16-bit activations): one model_<precision>.tflite each "
                   "(float32 is model_float.tflite and always written: the reference), each validated. "
                   "Default: what the target profile says (`edgenet targets NAME`).")
@click.option("--int8/--float", "int8", default=None,
              help="Shorthands: --int8 is --precision float32,int8; --float is --precision float32.")
@click.option("--strict-int8", is_flag=True,
              help="No mixed-precision repair: a damaged int8 model fails instead of keeping ops in float "
                   "(accelerators that run only int8; implied for coral, cortex-m, ethos-u55).")
@click.option("--out", type=click.Path(), default="out", show_default=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output folder.")
@click.option("--alpha", type=float, default=None, help="Width multiplier (zoo models; default 1.0), in (0, 1].")
@click.option("--resolution", type=int, default=None,
              help="Input size (zoo models; default 224), a multiple of 32.")
@click.option("--num-classes", type=int, default=None, help="Classifier outputs (zoo models; default 1000).")
@click.option("--in-channels", type=click.Choice(["1", "3"]), default=None, help="Input channels (zoo models; default 3).")
@click.option("--activation", type=click.Choice(["relu6", "relu"]), default=None,
              help="Activation (zoo models with a choice; default relu6).")
@click.option("--weights", type=click.Path(), default=None, help="state_dict (.pt) for a zoo model.")
@click.option("--labels", type=click.Path(), default=None, metavar="FILE",
              help="Class names, one per line, for the first output (.onnx, module:function, .pt2 and zoo models): "
                   "labels.txt, the model metadata, C headers and top-1 use them.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="[NAME:]D0,D1,...",
              help="Static shape of an input: N,C,H,W (any rank) for a one-input model, NAME:dims for each "
                   "input of several (repeatable). Fixes dynamic dims of .onnx models; needed by "
                   "`module:function` models. Keras models and SavedModels: N,H,W,C.")
@click.option("--keep-layout", "keep_layout", multiple=True, metavar="NAME",
              help="A rank-4 .onnx input that is not an NCHW image: keep its layout (repeatable).")
@click.option("--mean", default=None, metavar="M[,M,M]",
              help="Image normalization mean per channel on the 0..1 scale, e.g. 0.485,0.456,0.406 (ImageNet); "
                   "0 with --std 1 for models that take 0..1.")
@click.option("--std", default=None, metavar="S[,S,S]", help="Image normalization std per channel (0..1 scale).")
@click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default=None,
              help="Channel order the model expects (bgr: OpenCV-trained models).")
@click.option("--resize", default=None, metavar="stretch|crop|N",
              help="Bring images to the input size: stretch, crop (cover, then centre crop), or N (shorter "
                   "side to N, then centre crop, e.g. 256 for a 224 model).")
@click.option("--preprocess", "preprocess_file", type=click.Path(), default=None, metavar="FILE.json",
              help="Take the preprocessing of another conversion (its preprocess.json).")
@click.option("--normalize-in-model", is_flag=True,
              help="Put the image normalization (x - mean) / std inside the model: it then takes pixels "
                   "scaled to 0..1 (mean 0, std 1), which MediaPipe and a uint8 input express exactly even "
                   "when mean/std differ per channel (ImageNet).")
@click.option("--calib", default=None,
              help="Calibration and validation data: an image folder (class subfolders or flat), a built-in "
                   "set (shapes: synthetic, digits), or FILE.npz (one array per input name) / FILE.npy, "
                   "first axis = examples, ONNX layout: float arrays preprocessed, uint8 arrays pixels (normalized with --mean/--std). Default: the checkpoint's dataset, "
                   "else shapes.")
@click.option("--calib-samples", type=int, default=200, show_default=True, help="Calibration examples to use.")
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
@click.option("--io-type", type=click.Choice(["int8", "uint8", "float32"]), default=None,
              help="Input/output type of the int8 model (default: the target's).")
@click.option("--eval-samples", type=int, default=64, show_default=True,
              help="Held-out examples for validation (never used for calibration).")
@click.option("--allow-mismatch", is_flag=True,
              help="Write the files even when the float model differs from ONNX beyond the target's tolerance "
                   "(the verdict is recorded in report.json).")
@click.option("--allow-degraded", is_flag=True,
              help="Write the files even when a quantized model fails its verdict (an output or channel that "
                   "lost its signal; thresholds in the target profile); the verdict is recorded in report.json.")
@click.option("--output-kind", "output_kinds", multiple=True, metavar="NAME=KIND",
              help="Judge output NAME by the metric of KIND: classifier (top-1 agreement where float decides), "
                   "embedding (cosine similarity per example), sequence (per-step "
                   "and decoded-sequence agreement; sequence:blank=N sets the CTC blank, default 0), class_map "
                   "(top-class agreement per anchor or pixel where float is decisive: SSD scores, "
                   "segmentation), map "
                   "(binarized-map IoU + SQNR), detection (detections' F1, box and score SQNR; detection:v5, "
                   ":v8, :detr or :e2e (an NMS-free detector's [N, K, 6] detections) sets the head's layout), index, topk (a TopK's indices: set agreement, order where "
                   "float's values are apart; found from the graph by itself), generic (SQNR per output and channel: regression "
                   "heads, landmarks, boxes). Default: "
                   "decided from each output's shape and values (repeatable).")
@click.option("--fit", is_flag=True,
              help="Search MobileNetV1 width x resolution for the largest model that fits the target's RAM "
                   "and flash (measured in TFLite Micro), then convert it.")
@click.option("--fit-alphas", default="1,0.75,0.5,0.35,0.25", show_default=True, metavar="LIST",
              help="Width multipliers --fit tries (comma-separated).")
@click.option("--fit-resolutions", default="224,192,160,128,96,64", show_default=True, metavar="LIST",
              help="Input sizes --fit tries (comma-separated).")
@click.option("--c-name", default=None, metavar="NAME", callback=_c_name,
              help="Prefix of every symbol and file name of the C++ sources for TFLite Micro (cortex-m, "
                   "ethos-u55), so that several models share one firmware: g_NAME_model_data, "
                   "kNameTensorArenaSize ... (default: the model name).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout when done.")
@debug_option
def command(model, target, precisions, int8, strict_int8, normalize_in_model, out, force, alpha, resolution, num_classes, in_channels, activation, weights,
            labels, input_shapes, keep_layout, mean, std, channel_order, resize, preprocess_file, calib, calib_samples,
            calib_method, per_tensor, equalize, equalize_clip, io_type, eval_samples, allow_mismatch, allow_degraded,
            output_kinds, fit,
            fit_alphas, fit_resolutions, c_name, quiet, as_json, debug):
    """Convert MODEL for a device: ONNX export, BN folding, channels-last TFLite float32 and int8.

    MODEL is a zoo name (default mobilenet_v1; `edgenet models` lists them), a path to an .onnx
    file, a checkpoint written by `edgenet train`, a torch.export program (.pt2),
    `package.module:function` returning a torch.nn.Module (with --input-shape), or a Keras model
    (.keras, .h5) or SavedModel folder (TensorFlow converts it to the float model; the keras extra).
    Writes model.onnx, model_float.tflite, model_int8.tflite, preprocess.json, report.json and
    report.md to --out (files appear only once every stage has succeeded). The float model must
    match ONNX (a Keras model: the Keras model itself) within the target's tolerance, or the
    conversion fails naming the first diverging ONNX node.

    \b
    Examples:
      edgenet convert --target rpi --int8
      edgenet convert mobilenet_v1 --alpha 0.25 --resolution 96 --num-classes 2 --out vww/
      edgenet convert model.onnx --input-shape 1,3,320,320 --mean 0 --std 1 --calib images/ --int8
      edgenet convert model.onnx --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --resize 256
      edgenet convert model.keras --int8 --target rpi --mean 0 --std 1 --calib images/
      edgenet convert model_qdq.onnx --int8 --calib images/   # quantized ONNX: its own scales, judged against it
      edgenet convert two_inputs.onnx --input-shape image:1,3,224,224 --input-shape meta:1,8 \\
          --calib examples.npz --int8
      edgenet convert digits.pt --target cortex-m --json
      edgenet convert --target cortex-m --fit --num-classes 10
      edgenet convert my_pkg.models:build --input-shape 1,3,224,224 --calib images/
    """
    import edgenet

    if precisions is not None and int8 is not None:
        raise click.UsageError("give --precision or --int8/--float, not both")
    context = click.get_current_context()

    def _given(name: str, value):
        """The value when the user gave the option, None at its default (so that an option that does
        not apply is refused only when it was given)."""
        return value if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT else None
    if precisions is not None:
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
        if not precisions:
            raise click.BadParameter("name at least one of float32, float16, dynamic, int8, int16x8 "
                                     "(e.g. --precision float32,int8)", param_hint="--precision")
    reporter = StderrProgress(quiet=quiet or as_json)

    interrupted = []   # --fit prints each candidate as it is decided (logger edgenet.fit), cutting the stage's line

    def progress(event, index, total, name, detail):
        if event == "plan":      # stages added mid-run: say why before the counter's total grows
            reporter.message(f"  {name} (+{detail} stage{'s' if detail != '1' else ''}: {total} in all)")
        elif event == "start":
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
        for old in [h for h in fit_log.handlers if type(h).__name__ == "_FitLines"]:
            fit_log.removeHandler(old)      # an earlier command in this process
        fit_log.addHandler(_FitLines())
        # printed once, here: not again by a handler some library put on the root logger
        fit_log.propagate = False

    from edgenet.converters.model_inputs import parse_input_shape

    from edgenet import outdir
    from edgenet.cli._common import hold_signals, release_signals

    outdir.before_commit.append(hold_signals)   # the folder's commit and what follows are not interrupted
    try:
        try:
            result = edgenet.convert(
                model, target=target, precisions=precisions, int8=int8, strict_int8=strict_int8 or None, out=out, force=force, alpha=alpha, resolution=resolution,
                num_classes=num_classes, in_channels=None if in_channels is None else int(in_channels),
                activation=activation, weights=weights, labels=labels,
                input_shapes=[str(parse_input_shape(text)) for text in input_shapes] or None,
                keep_layout=keep_layout or None,
                mean=None if mean is None else _numbers(mean, float, "--mean"),
                std=None if std is None else _numbers(std, float, "--std"),
                channel_order=channel_order, resize=resize, preprocess=preprocess_file,
                calib=calib, calib_samples=calib_samples, calib_method=_given("calib_method", calib_method),
                io_type=io_type, per_tensor=per_tensor, equalize=equalize, normalize_in_model=normalize_in_model or None,
                equalize_clip=_given("equalize_clip", equalize_clip), eval_samples=eval_samples,
                allow_mismatch=allow_mismatch, allow_degraded=allow_degraded or None, fit=fit,
                output_kinds=_kinds(output_kinds),
                fit_alphas=_given("fit_alphas", _numbers(fit_alphas, float, "--fit-alphas")),
                fit_resolutions=_given("fit_resolutions", _numbers(fit_resolutions, int, "--fit-resolutions")),
                c_name=c_name, progress=progress)
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
        verdict = v.float_verdict or {}
        decided = "" if not verdict else (" (pass)" if verdict.get("passed") else " (FAIL: files written with --allow-mismatch)")
        bn = f"BN folded: {report.bn_folded}"
        if report.bn_folded and report.bn_fold_max_abs_diff is not None:
            bn += f" (largest output change {report.bn_fold_max_abs_diff:.1e})"
        against = {"keras": "Keras", "saved_model": "SavedModel"}.get(verdict.get("reference"))
        if against:   # TensorFlow's converter folds BatchNormalization itself
            lines.append(f"float vs {against}: relative error {v.float_rel_err:.2e}{decided}")
        else:
            lines.append(f"float vs ONNX: relative error {v.float_rel_err:.2e}{decided}; {bn}")
        sizes = {row["precision"]: row["bytes"] for row in report.precisions}
        for q in v.quantized:
            lines.append(_quantized_line(q, sizes, report.model.get("trained", True)))
        if report.accuracy:
            a = report.accuracy
            lines.append(f"top-1 on {a['n_eval']} held-out images: float {100 * a['float_top1']:.2f}%"
                         + ("" if a["int8_top1"] is None else f", int8 {100 * a['int8_top1']:.2f}%"))
        if report.target.get("summary"):
            lines.append(f"target {report.target['summary']}")   # the summary starts with the target's name
        lines += [f"note: {n}" for n in report.notes]
        lines.append(f"total {sum(st.seconds for st in report.stages):.1f} s")
        click.echo("\n".join(lines))
    finally:
        outdir.before_commit.remove(hold_signals)
        release_signals()


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _quantized_line(q: dict, sizes: dict, trained: bool) -> str:
    """One line per quantized model: the worst output's SQNR and channel, agreement where it means
    something, the verdict, the sizes."""
    from edgenet.quality import level_text, worst_output

    outs = q["outputs"]
    worst = worst_output(outs)
    # untrained weights: the figure is shown (what it measured), the verdict says it judges nothing
    text = f"{q['precision']} vs {q.get('reference', 'float')}: {level_text(worst if trained else dict(worst, not_judged=None))}"
    if len(outs) > 1:
        text += f" (worst output {worst['name']})"
    if worst["worst_channel"] is not None and worst["worst_channel_sqnr_db"] is not None:
        text += (f", worst {worst.get('axis_name', 'channel')} {worst['worst_channel']} at "
                 f"{worst['worst_channel_sqnr_db']:.1f} dB")
    # a classifier's first output beside another output's worst figure (a regression's argmax is nothing)
    if outs[0]["top1_agreement"] is not None and outs[0].get("kind") == "classifier" and worst is not outs[0]:
        text += f", top-1 agreement {100 * outs[0]['top1_agreement']:.1f}%"
    if not trained:   # a verdict on seeded random weights judges nothing: said as such, pass or fail
        text += "; verdict not judged (untrained weights)"
    elif q.get("status") == "not judged":
        text += "; verdict not judged"
    else:
        text += "; verdict " + ("pass" if q["passed"] else "FAIL")
    if q.get("not_judged") and q.get("status") != "not judged":   # some outputs judged, these not
        text += " (not judged: " + ", ".join(f"{k}: {v}" for k, v in q["not_judged"].items()) + ")"
    if q["precision"] in sizes and "float32" in sizes:
        text += f"; size {_size(sizes['float32'])} -> {_size(sizes[q['precision']])}"
    return text
