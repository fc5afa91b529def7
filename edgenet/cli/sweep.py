"""`edgenet sweep`: many conversions (models x widths x resolutions x targets x precisions) at once."""
from __future__ import annotations

import json
import sys

import click

from edgenet._deps import install_hint

from edgenet.cli._common import debug_option, print_json


def _list(text: str, kind, option: str) -> tuple:
    try:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list", param_hint=option) from None
    if not values:
        raise click.BadParameter("needs at least one value", param_hint=option)
    return tuple(dict.fromkeys(values))


def _precisions(text: str) -> tuple:
    from edgenet.config import Precision

    known = [p.value for p in Precision]
    values = _list(text, str, "--precision")
    bad = [v for v in values if v not in known]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not a precision (choose from {', '.join(known)})",
                                 param_hint="--precision")
    return tuple(Precision(v) for v in values)


@click.command("sweep")
@click.argument("models", nargs=-1, metavar="[MODEL ...]")
@click.option("--alpha", "alphas", default="1.0", show_default=True, metavar="LIST",
              help="Width multipliers (zoo models), comma-separated.")
@click.option("--resolution", "resolutions", default="224", show_default=True, metavar="LIST",
              help="Input sizes (zoo models), comma-separated multiples of 32.")
@click.option("--target", "targets", default="rpi", show_default=True, metavar="LIST",
              help="Target profiles (names or .toml paths), comma-separated.")
@click.option("--precision", "precisions", default="int8", show_default=True, metavar="LIST",
              help="Precisions of the deployed model, comma-separated (float32, int8 ...).")
@click.option("--num-classes", type=int, default=1000, show_default=True, help="Classifier outputs (zoo models).")
@click.option("--calib", default="shapes", show_default=True,
              help="Calibration images: a folder or a built-in dataset (shapes, digits).")
@click.option("--calib-samples", type=int, default=200, show_default=True)
@click.option("--eval-samples", type=int, default=64, show_default=True, help="Held-out images for validation.")
@click.option("--bench", is_flag=True, help="Also time each cell's model here with edgenet bench (short windows).")
@click.option("--out", type=click.Path(), default=None, help="Sweep folder: results.jsonl, cells/, pareto.md/.png.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: one Ray task per cell.")
@click.option("--workers", type=int, default=None,
              help="Cells at once (local), or the CPUs of the local Ray instance / --cpus-per-cell "
                   "(default: one per core).")
@click.option("--cpus-per-cell", type=int, default=1, show_default=True,
              help="CPUs a cell declares (Ray's num_cpus; threads of a local worker).")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="A running Ray cluster (e.g. HEAD_IP:6379, or 'auto'); default: start a local instance.")
@click.option("--retry-failed", is_flag=True, help="Run failed cells again (finished cells are always skipped).")
@click.option("--report", "report_dir", type=click.Path(), default=None, metavar="DIR",
              help="Only re-render DIR/pareto.md and pareto.png from DIR/results.jsonl.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the cells' results as JSON on stdout.")
@debug_option
def command(models, alphas, resolutions, targets, precisions, num_classes, calib, calib_samples, eval_samples,
            bench, out, executor, workers, cpus_per_cell, ray_address, retry_failed, report_dir, quiet, as_json,
            debug):
    """Convert every combination of MODEL x --alpha x --resolution x --target x --precision.

    Each cell is a full `edgenet convert` (validated, target checks run: TFLite Micro arena,
    vela estimate, Edge TPU mapping) into --out/cells/<id>/; its figures are appended to
    --out/results.jsonl as it finishes. Running the same command again skips finished cells
    (also after a crash or kill); changed arguments make new cells. --out/pareto.md lists per
    target the cells no other cell beats on accuracy (or SQNR), size and latency (or arena);
    pareto.png plots them (needs the plot extra). Exit 1 if any cell failed.

    MODEL: zoo names (default mobilenet_v1), checkpoints written by `edgenet train`, .onnx or
    .pt2 files. A model file has its own width and input size: --alpha, --resolution and
    --num-classes do not apply to it (one cell per target x precision).

    \b
    Examples:
      edgenet sweep mobilenet_v1 --alpha 0.25,0.5 --resolution 64,96 --target rpi,cortex-m \\
          --num-classes 2 --out S
      edgenet sweep mobilenet_v1 --alpha 0.25,0.5 --resolution 64,96 --target rpi,cortex-m \\
          --num-classes 2 --out S_ray --executor ray                  # the same cells on a local Ray instance
      edgenet sweep mobilenet_v1 squeezenet1_1 digits.pt model.onnx --resolution 96,128 \\
          --target cortex-m,ethos-u55,coral --out S --executor ray --ray-address HEAD_IP:6379
      edgenet sweep digits.pt --calib digits --target rpi --precision float32,int8 --bench --out S
      edgenet sweep --report S                                        # re-render S/pareto.md
    """
    from edgenet.errors import UsageError
    from edgenet.sweep import SweepSpec, render, summary_line, sweep

    def say(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)
            sys.stderr.flush()

    if report_dir is not None:
        from pathlib import Path

        from edgenet.sweep.results import RESULTS

        if not (Path(report_dir) / RESULTS).is_file():
            raise UsageError(f"{report_dir}: no {RESULTS} (not a sweep folder)")
        from edgenet.sweep.results import SweepStore, read_results_counted

        SweepStore(report_dir).check("--report")    # pareto.md/.png are written only into edgenet's sweep folder
        records, skipped = read_results_counted(report_dir)
        if not records:
            raise UsageError(f"{report_dir}: {RESULTS} holds no record of a sweep cell"
                             + (f" ({skipped} line(s) are not what edgenet writes)" if skipped else ""))
        if skipped:
            say(f"note: {skipped} line(s) of {Path(report_dir) / RESULTS} are not records of a sweep cell "
                "(torn, or not what edgenet writes): left out")
        md, png, fronts = render(report_dir)
        say(f"wrote {md}" + (f" and {png}" if png else f" (pareto.png needs: {install_hint('plot')})"))
        if as_json:
            from edgenet.sweep import read_results

            print_json(list(read_results(report_dir).values()))
        return
    if out is None:
        raise click.UsageError("--out DIR is required (the sweep folder)")
    spec = SweepSpec(models=tuple(models) or ("mobilenet_v1",), alphas=_list(alphas, float, "--alpha"),
                     resolutions=_list(resolutions, int, "--resolution"), targets=_list(targets, str, "--target"),
                     precisions=_precisions(precisions), num_classes=num_classes, calib=calib,
                     calib_samples=calib_samples, eval_samples=eval_samples, bench=bench)
    # `kill PID` stops the sweep as Ctrl-C does (edgenet.cli's handler: one line `edgenet: interrupted
    # (SIGTERM)`, exit 143): the pool or Ray is shut down, temp and unfinished cell folders removed
    result = sweep(spec, out, executor=executor, workers=workers, cpus_per_cell=cpus_per_cell,
                   ray_address=ray_address, retry_failed=retry_failed, progress=say)
    say(f"{summary_line(result.records)}; ran {result.ran}, skipped {result.skipped} already done; "
        f"{result.seconds:.1f} s")
    say(f"wrote {result.out}/results.jsonl, {result.pareto_md}"
        + (f", {result.pareto_png}" if result.pareto_png else f" (pareto.png needs: {install_hint('plot')})"))
    if as_json:
        click.echo(json.dumps(list(result.records), indent=2))
    if result.failed:
        from edgenet.errors import ConversionError

        first = next(r for r in result.records if r.get("status") == "failed")
        raise ConversionError(f"{result.failed} of {len(result.records)} cell(s) failed, e.g. {first['label']}: "
                              f"{first.get('error')} (results.jsonl has each error; --retry-failed runs them again)")
