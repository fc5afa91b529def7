"""`edgenet train`: train a zoo model on CPU and write a self-describing checkpoint."""
from __future__ import annotations

import os

import click

from edgenet import limits
from edgenet.cli._common import debug_option, echo_out, json_option, print_json, write_stdout


def _print_epoch(stats) -> None:
    width = len(str(stats.epochs))
    click.echo(f"epoch {stats.epoch:>{width}}/{stats.epochs}  loss {stats.loss:.4f}  "
               f"train {100 * stats.train_top1:5.1f}%  test {100 * stats.test_top1:5.1f}%  "
               f"lr {stats.lr:.2e}  {stats.seconds:.1f} s", err=True)


@click.command("train")
@click.option("--dataset", default="digits", show_default=True, metavar="digits|shapes|DIR",
              help="Built-in dataset or a folder with one subfolder of images per class.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Checkpoint file to write (e.g. digits.pt; '-': to stdout).")
@click.option("--model", default="mobilenet_v1", show_default=True, help="Zoo architecture.")
@click.option("--alpha", type=float, default=None,
              help="Width multiplier, in (0, 1] [default: 0.25; 1 for models without one].")
@click.option("--resolution", type=int, default=32, show_default=True,
              help=f"Input size (multiple of 32, at most {limits.MAX_RESOLUTION}).")
@click.option("--epochs", type=int, default=40, show_default=True, help=f"1 to {limits.MAX_EPOCHS:,}.")
@click.option("--batch-size", type=int, default=64, show_default=True, help=f"2 to {limits.MAX_BATCH_SIZE:,}.")
@click.option("--lr", type=float, default=0.02, show_default=True,
              help=f"Peak learning rate (AdamW, cosine), in (0, {limits.MAX_LR:g}].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--in-channels", type=click.Choice(["1", "3"]), default="3", show_default=True,
              help="3 = RGB input like phones feed (gray images are replicated); 1 = grayscale.")
@click.option("--activation", type=click.Choice(["relu6", "relu"]), default="relu6", show_default=True)
@click.option("--no-augment", is_flag=True, help="Train without random rotation/scale/shift.")
@click.option("--limit", type=int, default=None, help="Use at most N training images.")
@click.option("--threads", type=int, default=None,
              help=f"torch threads, 1 to {limits.MAX_THREADS} [default: all cores; 1 is faster when other jobs "
                   "load the CPU].")
@click.option("--qat", is_flag=True,
              help="Quantization-aware fine-tuning (int8, TFLite's scheme) after float training or of --from; "
                   "also writes OUT_qdq.onnx (QuantizeLinear/DequantizeLinear with the learned ranges).")
@click.option("--from", "from_checkpoint", type=click.Path(dir_okay=False), default=None, metavar="CKPT",
              help="--qat only: fine-tune this float checkpoint (its model, dataset and preprocessing) "
                   "instead of training one first.")
@click.option("--qat-epochs", type=int, default=None, help="--qat only: fine-tuning epochs [default: 3].")
@click.option("--qat-lr", type=float, default=None, help="--qat only: peak fine-tuning learning rate [default: 2e-05].")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--quiet", is_flag=True, help="No per-epoch progress on stderr.")
@json_option
@debug_option
@click.pass_context
def command(ctx, dataset, out, model, alpha, resolution, epochs, batch_size, lr, seed, in_channels,
            activation, no_augment, limit, threads, qat, from_checkpoint, qat_epochs, qat_lr, force, quiet,
            as_json, debug):
    """Train a zoo model on CPU; the checkpoint records the architecture, class names and
    preprocessing, so `edgenet convert CKPT` needs no other flags.

    Built-in datasets train on their train split and report top-1 on their test split; a
    folder is split into train and a stratified 20% hold-out.

    \b
    Examples:
      edgenet train --dataset digits --alpha 0.25 --resolution 32 --epochs 40 --out digits.pt
      edgenet train --dataset shapes --resolution 64 --epochs 25 --out shapes.pt --json
      edgenet train --dataset photos/ --resolution 96 --out photos.pt
      edgenet train --qat --from digits.pt --out digits_qat.pt     # + digits_qat_qdq.onnx

    --qat fine-tunes with int8 fake quantization (BN folded; weights symmetric per channel,
    activations asymmetric per tensor) and writes the checkpoint, holding the learned ranges,
    and a QDQ ONNX model beside it; without --from it trains the float model first.
    """
    # torch's OpenMP threads spin while they wait; with another job on the CPU that made 2-thread
    # training 2x slower (measured: 21 s vs 15 s for the same epochs with passive waiting, no loss
    # on an idle machine). It only takes effect before torch loads, which is now.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from edgenet.errors import UsageError
    from edgenet.train import train

    if out == "-" and as_json:
        raise UsageError("--out - (the checkpoint to stdout) and --json both want stdout: drop one")
    if str(out).lower().endswith((".onnx", ".tflite", ".json")):
        raise UsageError(f"--out {out}: names the checkpoint train writes (a PyTorch file, e.g. model.pt); "
                         "edgenet convert makes the .onnx and .tflite models from it"
                         + (" (--qat also writes its QDQ ONNX model beside it)" if qat else ""))
    if qat:
        return _qat(ctx, dataset=dataset, out=out, model=model, alpha=alpha, resolution=resolution, epochs=epochs,
                    batch_size=batch_size, lr=lr, seed=seed, in_channels=int(in_channels), activation=activation,
                    augment=not no_augment, train_limit=limit, threads=threads, from_checkpoint=from_checkpoint,
                    qat_epochs=qat_epochs, qat_lr=qat_lr, force=force, quiet=quiet, as_json=as_json)
    for name, value in (("--from", from_checkpoint), ("--qat-epochs", qat_epochs), ("--qat-lr", qat_lr)):
        if value is not None:
            raise UsageError(f"{name} only acts with --qat")

    result = train(dataset, alpha=alpha, resolution=resolution, epochs=epochs, out=out, force=force,
                   progress=None if quiet else _print_epoch, model=model, batch_size=batch_size,
                   lr=lr, seed=seed, in_channels=int(in_channels), activation=activation,
                   augment=not no_augment, train_limit=limit, threads=threads)
    if result.skipped:
        click.echo(f"note: {result.skipped} image(s) were skipped: {result.skipped_detail}", err=True)
    if result.checkpoint is not None:
        write_stdout(result.checkpoint)
    if as_json:
        print_json(result.to_dict())
    else:
        line = (f"test top-1 {100 * result.test_top1:.1f}%  top-5 {100 * result.test_top5:.1f}%  "
                f"({result.test_samples} test images, {result.epochs} epochs, "
                f"{result.seconds:.0f} s) -> {'stdout' if result.checkpoint is not None else result.path}")
        if result.checkpoint is not None:
            click.echo(line, err=True)      # stdout holds the checkpoint
        else:
            echo_out(line)


# options that describe the float model: with --from they come from the checkpoint
_FROM_CHECKPOINT = ("dataset", "model", "alpha", "resolution", "in_channels", "activation", "epochs", "lr")


def _qat(ctx, *, from_checkpoint, qat_epochs, qat_lr, quiet, as_json, **options) -> None:
    from edgenet.errors import UsageError
    from edgenet.qat_train import QAT_EPOCHS, QAT_LR, train_qat

    if from_checkpoint is not None:
        given = [n for n in _FROM_CHECKPOINT
                 if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UsageError(f"--from {from_checkpoint} fixes the model and its data: drop {flags}")
        for name in _FROM_CHECKPOINT:
            options.pop(name)
        options["dataset"] = None
    result = train_qat(from_checkpoint=from_checkpoint, qat_epochs=QAT_EPOCHS if qat_epochs is None else qat_epochs,
                       qat_lr=QAT_LR if qat_lr is None else qat_lr,
                       progress=None if quiet else _print_epoch, float_progress=None if quiet else _print_epoch,
                       **options)
    if as_json:
        print_json(result.to_dict())
        return
    echo_out(f"held-out top-1: float {100 * result.float_top1:.2f}%, QAT int8 (QDQ ONNX in onnxruntime) "
             f"{100 * result.qdq_top1:.2f}% ({result.test_samples} images; onnxruntime vs torch QAT logits: "
             f"{100 * result.qdq_within_step:.1f}% within 1 quantization step, max {result.qdq_max_steps:.0f}) "
             f"-> {result.path}, {result.qdq_path}")
