"""`edgenet bench`: int8 vs float latency and accuracy on the device (or on one reached by ssh)."""
from __future__ import annotations

import click

from edgenet import limits
from edgenet.cli._common import debug_option, write_stdout


@click.command("bench")
@click.argument("target", type=click.Path(path_type=str))
@click.option("--float", "float_model", metavar="F.tflite", help="The float model to compare against "
              "(default: model_float.tflite in the TARGET folder).")
@click.option("--precision", metavar="P", help="The model of a convert folder to compare with model_float.tflite: "
              "float16, dynamic, int8 or int16x8 [default: int8, or the only other one there].")
@click.option("--data", metavar="DIR|digits|shapes", help="Evaluation images (class subfolders give labels) "
              "or a built-in set; adds top-1/top-5, agreement and SQNR [default: the held-out examples "
              "convert wrote into the folder, eval_set.npz].")
@click.option("--limit", type=int, help=f"Use at most this many samples of --data (1 to {limits.MAX_SAMPLES:,}).")
@click.option("--threads", type=int,
              help=f"Interpreter threads, 1 to {limits.MAX_THREADS} [default: all CPUs].")
@click.option("--warmup", type=int, default=10, show_default=True,
              help=f"Warm-up runs per model (at least; 0 to {limits.MAX_WARMUP:,}).")
@click.option("--warmup-seconds", type=float, default=1.0,
              show_default=True, help=f"Warm-up seconds per model (at least; 0 to {limits.MAX_WARMUP_SECONDS:g}).")
@click.option("--runs", type=int, default=50, show_default=True,
              help=f"Measured runs per model (at least; 1 to {limits.MAX_RUNS:,}).")
@click.option("--min-seconds", type=float, default=3.0, show_default=True,
              help=f"Measured seconds per model (at least; 0 to {limits.MAX_SECONDS:g}).")
@click.option("--window", type=int, default=1000, show_default=True,
              help=f"At most this many runs per interleaved window (1 to {limits.MAX_WINDOW:,}).")
@click.option("--window-seconds", type=float, default=0.5,
              show_default=True, help=f"Target seconds of an interleaved window (0 to {limits.MAX_WINDOW_SECONDS:g}).")
@click.option("--delegate", default="xnnpack", show_default=True, metavar="xnnpack|none|edgetpu|PATH.so",
              help="xnnpack (LiteRT's CPU default), none (reference kernels), edgetpu (Coral), or a delegate .so.")
@click.option("--json", "json_out", metavar="FILE", help="Write the result as JSON ('-': to stdout instead of "
              "the table).")
@click.option("--raw-times", is_flag=True, help="Keep every measured run in the JSON (times_ms); by default each "
              "model's runs are summarized as 21 quantiles (times_summary), a file of a few kB.")
@click.option("--md", "md_out", metavar="FILE", help="Write the result as Markdown ('-': to stdout instead of "
              "the table).")
@click.option("--plot", "plot_out", metavar="FILE.png", help="Latency distributions as a PNG ('-': to stdout; "
              "needs the [plot] extra: matplotlib).")
@click.option("--ssh", metavar="USER@HOST[:PORT]", help="Run on this device: copy the models (and data) "
              "there and run its own edgenet.")
@click.option("--remote-python", default="python3", show_default=True,
              help="The device's Python that has edgenet installed (with --ssh).")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="An ssh -o option, e.g. IdentityFile=~/.ssh/pi (repeatable; with --ssh). Only options that "
                   "cannot run code are accepted: keys, known_hosts, port, user, timeouts, algorithms.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@debug_option
def command(target, float_model, precision, data, limit, threads, warmup, warmup_seconds, runs, min_seconds, window,
            window_seconds, delegate, json_out, raw_times, md_out, plot_out, ssh, remote_python, ssh_options, quiet, debug):
    """Measure how much faster the int8 model is than the float one, and what it costs in accuracy.

    TARGET is a `convert` output folder (model_int8.tflite, model_float.tflite, preprocess.json,
    labels.txt and the held-out examples eval_set.npz are taken from it) or a .tflite file.
    Without --data the held-out examples give agreement, SQNR and, with labels, top-1/top-5 on a
    base install (numpy and LiteRT only).

    \b
    Examples:
      edgenet bench out/
      edgenet bench out/ --precision int16x8
      edgenet bench out/ --data shapes --threads 4 --json bench.json --md bench.md
      edgenet bench model_int8.tflite --float model_float.tflite --runs 200 --min-seconds 10
      edgenet bench out/ --ssh pi@raspberrypi.local --remote-python /home/pi/venv/bin/python
    """
    from edgenet.benchmark import bench
    from edgenet.benchmark import report
    from edgenet.errors import UsageError

    outputs = {"--json": json_out, "--md": md_out, "--plot": plot_out}
    to_stdout = [name for name, value in outputs.items() if value == "-"]
    if len(to_stdout) > 1:
        raise UsageError(f"{' and '.join(to_stdout)} both ask for stdout ('-'): give all but one a file name")
    for name, value in outputs.items():
        if value is not None and value != "-" and not value.strip():
            raise UsageError(f"{name} needs a file name (or '-' for stdout)")
    if plot_out:  # fail before a long run, not after it
        from edgenet._deps import require

        require("matplotlib", "plot", purpose="--plot")

    def progress(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    result = bench(target, float_model=float_model, data=data, limit=limit, threads=threads, warmup=warmup,
                   warmup_seconds=warmup_seconds, runs=runs, min_seconds=min_seconds, window=window,
                   window_seconds=window_seconds,
                   delegate=delegate, ssh=ssh, precision=precision, remote_python=remote_python, ssh_options=ssh_options,
                   progress=progress)
    render = {"--json": lambda: report.to_json(result, raw_times), "--md": lambda: report.to_markdown(result),
              "--plot": lambda: report.plot_png(result)}
    if to_stdout:
        write_stdout(render[to_stdout[0]]())
    else:
        write_stdout(report.format_table(result))
    if json_out and json_out != "-":
        progress(f"wrote {report.write_json(result, json_out, raw_times)}")
    if md_out and md_out != "-":
        progress(f"wrote {report.write_markdown(result, md_out)}")
    if plot_out and plot_out != "-":
        progress(f"wrote {report.write_plot(result, plot_out)}")
    if to_stdout:          # the table (which lists them) was not printed: say it on the console anyway
        for reason in result.noise:
            click.echo(f"edgenet: NOISY: {reason}", err=True)
