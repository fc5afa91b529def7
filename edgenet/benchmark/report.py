"""The benchmark result for people: a terminal table, Markdown, and an optional PNG (matplotlib).

The JSON form is ``BenchResult.to_dict()`` (schema in SCHEMA.md); writers here go through
``edgenet.io`` so a report file is never half-written.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from edgenet._deps import require
from edgenet.benchmark.result import BenchResult, ModelReport
from edgenet.io import atomic_write_bytes, atomic_write_text


def fmt_ms(value: float | None) -> str:
    """Milliseconds with about three significant digits."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    if value >= 1:
        return f"{value:.2f} ms"
    return f"{value:.3g} ms"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _latency_rows(models: tuple[ModelReport, ...]) -> list[tuple[str, list[str]]]:
    def each(fn):
        return [fn(m) for m in models]

    return [
        ("file", each(lambda m: Path(m.path).name)),
        ("size", each(lambda m: fmt_bytes(m.size_bytes))),
        ("input", each(lambda m: f"{m.input.dtype} {'x'.join(str(d) for d in m.input.shape)}")),
        ("load / init", each(lambda m: f"{fmt_ms(m.load_ms)} / {fmt_ms(m.init_ms)}")),
        ("first inference", each(lambda m: fmt_ms(m.first_inference_ms))),
        ("warm-up", each(lambda m: f"{len(m.warmup_ms)} runs, {sum(m.warmup_ms) / 1000:.2f} s")),
        ("measured runs", each(lambda m: str(m.latency.runs))),
        ("p50", each(lambda m: fmt_ms(m.latency.p50_ms))),
        ("mean ± std", each(lambda m: f"{fmt_ms(m.latency.mean_ms)[:-3]} ± {fmt_ms(m.latency.std_ms)}")),
        ("min", each(lambda m: fmt_ms(m.latency.min_ms))),
        ("p90", each(lambda m: fmt_ms(m.latency.p90_ms))),
        ("p99", each(lambda m: fmt_ms(m.latency.p99_ms))),
        ("max", each(lambda m: fmt_ms(m.latency.max_ms))),
        ("throughput", each(lambda m: f"{m.latency.throughput_per_s:.1f} /s")),
    ]


def _accuracy_rows(result: BenchResult) -> list[tuple[str, list[str]]]:
    acc = result.accuracy
    if acc is None:
        return []
    roles = [m.role for m in result.models]
    rows = []
    if acc.labelled:
        rows.append(("top-1", [_pct(acc.models[r].top1) for r in roles]))
        if any(acc.models[r].top5 is not None for r in roles):
            rows.append(("top-5", [_pct(acc.models[r].top5) for r in roles]))
    return rows


def _summary_lines(result: BenchResult) -> list[str]:
    lines = []
    s = result.speedup
    if s is not None:
        f_model, q_model = result.model("float"), result.model("int8")
        lines.append(f"{q_model.precision} speedup over {f_model.precision}: {s.p50:.2f}x (p50), {s.mean:.2f}x (mean); "
                     f"paired windows {s.window_min:.2f}x to {s.window_max:.2f}x ({s.window_pairs} pairs)")
    acc = result.accuracy
    if acc is not None:
        what = f"accuracy on {acc.data} ({acc.samples} samples, {'labelled' if acc.labelled else 'no labels'})"
        parts = []
        f, q = acc.models.get("float"), acc.models.get("int8")
        if acc.labelled and f and q and f.top1 is not None and q.top1 is not None:
            parts.append(f"top-1 change {100 * (q.top1 - f.top1):+.1f} points")
        quality = acc.quality
        kind = None if quality is None else quality.get("kind", "generic")
        # the argmax of every example: a classifier's figure (its verdict's own counts decided examples
        # only, so this one says it is over all); an embedding's, a regression's or a sequence's argmax
        # is nothing the app reads
        decided = None if quality is None else quality.get("top1_agreement")
        if acc.agreement is not None and (kind is None or (kind == "classifier" and (
                decided is None or abs(decided - acc.agreement) > 1e-9))):
            parts.append(f"{result.model('int8').precision}/{result.model('float').precision} top-1 agreement "
                         f"{_pct(acc.agreement)}" + (" over all examples" if kind else ""))
        if quality is not None:
            centered = quality.get("sqnr_centered_db")
            if quality.get("kind", "generic") != "generic":      # judged on its task: that figure
                from edgenet.verdicts import level_text

                text = level_text(quality)
            else:
                text = "outputs identical" if centered is None else f"SQNR {centered:.1f} dB (input-dependent part)"
            if acc.outputs:
                text = f"worst of {len(acc.outputs)} outputs {quality.get('name')!r}: " + text
            if quality.get("worst_channel") is not None and quality.get("worst_channel_sqnr_db") is not None:
                text += (f", worst {quality.get('axis_name', 'channel')} {quality['worst_channel']} at "
                         f"{quality['worst_channel_sqnr_db']:.1f} dB")
            if acc.untrained:   # seeded random weights: measured, not judged (as convert says)
                text += "; verdict not judged (untrained weights)"
            elif quality.get("passed") and quality.get("not_judged"):
                # said once, as convert says it (level_text above already gives the reason)
                text += "; verdict not judged" if text.startswith("not judged") else \
                    f"; verdict not judged ({quality['not_judged']})"
            else:
                text += "; verdict " + ("pass" if quality.get("passed") else
                                        "FAIL: " + "; ".join(quality.get("failures") or []))
            parts.append(text)
        elif acc.sqnr_db is not None:
            parts.append("outputs identical" if acc.sqnr_db == math.inf else f"SQNR {acc.sqnr_db:.1f} dB")
        lines.append(what + (": " + ", ".join(parts) if parts else ""))
    return lines


def _environment_line(result: BenchResult) -> list[str]:
    e, st = result.environment, result.settings
    cpu = e.cpu_model or e.machine
    board = f" on {e.board}" if e.board else ""
    extras = [f"{e.cpu_cores} cores ({e.cpus_usable} usable)"]
    if e.cpu_features:
        extras.append("/".join(e.cpu_features))
    extras.append(f"governor {e.governor}" if e.governor else "governor n/a")
    if e.temperature_c_start is not None:
        extras.append(f"{e.temperature_c_start:.0f} -> {e.temperature_c_end:.0f} C")
    if e.load_average_1m is not None:
        end = f" -> {e.load_average_1m_end:.2f}" if e.load_average_1m_end is not None else ""
        extras.append(f"load {e.load_average_1m:.2f}{end}")
    where = f" via ssh {result.remote.destination}" if result.remote else ""
    return [f"device   {cpu}{board}, {', '.join(extras)}{where}",
            f"runtime  {e.runtime} {e.runtime_version}, delegate {st.delegate.label}, {_threads(st.threads)}, "
            f"Python {e.python}, numpy {e.numpy}, peak RSS {fmt_bytes(e.peak_rss_bytes)}"]


def _columns(result: BenchResult) -> list[str]:
    """Column headings: each model's precision as read from its tensors (float32, int8, dynamic ...)."""
    return [m.precision for m in result.models]


def format_table(result: BenchResult) -> str:
    """The result as a plain-text table for the terminal."""
    roles = _columns(result)
    rows = _latency_rows(result.models) + _accuracy_rows(result)
    label_width = max(len(r[0]) for r in rows)
    widths = [max(len(role), *(len(r[1][i]) for r in rows)) for i, role in enumerate(roles)]
    out = ["edgenet bench", *("  " + line for line in _environment_line(result)), ""]
    out.append("  " + " " * label_width + "".join(f"  {role:>{w}}" for role, w in zip(roles, widths)))
    for label, cells in rows:
        out.append(f"  {label:<{label_width}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths)))
    summary = _summary_lines(result)
    if summary:
        out += [""] + ["  " + s for s in summary]
    if result.noise:
        out += [""] + [f"  NOISY: {n}" for n in result.noise]
        out.append("  (rerun on an idle device, with the 'performance' governor, or with more --min-seconds)")
    if result.notes:
        out += [""] + [f"  note: {n}" for n in result.notes]
    return "\n".join(out) + "\n"


def to_markdown(result: BenchResult) -> str:
    """The result as Markdown: environment, a latency/accuracy table, speedup, noise, notes."""
    roles = _columns(result)
    lines = ["# edgenet bench", ""]
    lines += [f"- {line.split(None, 1)[0]}: {line.split(None, 1)[1]}" for line in _environment_line(result)]
    lines += [f"- settings: >= {result.settings.runs} runs and >= {result.settings.min_seconds:g} s per model, "
              f"interleaved windows of <= {result.settings.window} runs / {result.settings.window_seconds:g} s; "
              f"warm-up >= {result.settings.warmup} runs and >= {result.settings.warmup_seconds:g} s",
              f"- created {result.created_utc} with edgenet {result.edgenet_version}", ""]
    lines.append("| | " + " | ".join(roles) + " |")
    lines.append("|---|" + "---:|" * len(roles))
    for label, cells in _latency_rows(result.models) + _accuracy_rows(result):
        lines.append(f"| {label} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    for i, line in enumerate(_summary_lines(result)):
        lines += [f"**{line}**" if i == 0 and result.speedup else line, ""]
    if result.models:
        lines += ["| model | sha256 |", "|---|---|"]
        lines += [f"| {m.precision} | `{m.sha256}` |" for m in result.models]
    if result.noise:
        lines += ["", "## Noisy measurement", "",
                  "These latencies are not reliable; rerun on an idle device, with the 'performance' governor, "
                  "or with more --min-seconds:", ""] + [f"- {n}" for n in result.noise]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def to_json(result: BenchResult, raw_times: bool = False) -> str:
    """The result's JSON; every measured run only with ``raw_times`` (else a summary per model)."""
    return json.dumps(result.to_dict(raw_times), indent=2) + "\n"


def write_json(result: BenchResult, path: str | Path, raw_times: bool = False) -> Path:
    return atomic_write_text(path, to_json(result, raw_times))


def write_markdown(result: BenchResult, path: str | Path) -> Path:
    return atomic_write_text(path, to_markdown(result))


def _label_markers(axes, x: float, m: ModelReport, span: float) -> None:
    """Write min, p50, p90, p99 and max (with their values) beside the lines violinplot draws for them,
    nudged apart so close ones stay readable."""
    lat = m.latency
    marks = [("min", lat.min_ms), ("p50", lat.p50_ms), ("p90", lat.p90_ms), ("p99", lat.p99_ms), ("max", lat.max_ms)]
    gap = max(span, 0.05) * 0.06
    placed: list[float] = []
    for name, value in marks:
        y = float(np.log10(max(value, 1e-6)))
        at = max([y] + [p + gap for p in placed[-1:]])
        placed.append(at)
        axes.annotate(f"{name} {fmt_ms(value)}", xy=(x + 0.08, y), xytext=(x + 0.3, at), fontsize=7,
                      va="center", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#555555"})


def write_plot(result: BenchResult, path: str | Path) -> Path:
    """PNG: the latency distributions side by side, and every run over time (needs matplotlib)."""
    return atomic_write_bytes(path, plot_png(result))


def plot_png(result: BenchResult) -> bytes:
    """The plot as PNG bytes: latency distributions (min/p50/p90/p99/max labelled) and every run over
    time; a NOISY verdict is written on it as in the table."""
    plt = _pyplot()
    fig = plot_figure(result)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    matplotlib = require("matplotlib", "plot", purpose="--plot")
    matplotlib.use("Agg", force=True)
    return require("matplotlib.pyplot", "plot", purpose="--plot")


def plot_figure(result: BenchResult):
    """The matplotlib figure :func:`plot_png` renders (the caller closes it)."""
    plt = _pyplot()
    colors = {"float": "#4C72B0", "int8": "#DD8452"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
    try:
        # latencies have long right tails: both panels use a log scale (violins of log10 ms)
        data = [np.log10(np.maximum(np.asarray(m.times_ms), 1e-6)) for m in result.models]
        labels = [f"{m.precision}\np50 {fmt_ms(m.latency.p50_ms)}" for m in result.models]
        parts = left.violinplot(data, showmedians=True, showextrema=True, quantiles=[[0.9, 0.99]] * len(data))
        for body, m in zip(parts["bodies"], result.models):
            body.set_facecolor(colors.get(m.role, "#888888"))
            body.set_alpha(0.6)
        left.set_xticks(range(1, len(data) + 1), labels)
        low, high = min(float(d.min()) for d in data), max(float(d.max()) for d in data)
        ticks = np.arange(np.floor(low), np.ceil(high) + 1)
        left.set_yticks(ticks, [f"{10 ** t:g}" for t in ticks])
        left.set_ylabel("latency per inference (ms, log scale)")
        left.set_title("latency distribution, each marker labelled", fontsize=10)
        for x, m in enumerate(result.models, start=1):
            _label_markers(left, x, m, high - low)
        for m in result.models:
            times = np.asarray(m.times_ms)
            for w in (w for w in result.windows if w.role == m.role):
                chunk = times[w.first_run:w.first_run + w.runs]
                at = w.started_s + np.cumsum(chunk) / 1000.0
                right.plot(at, chunk, ".", ms=2, color=colors.get(m.role, "#888888"),
                           label=m.precision if w.first_run == 0 else None)
        right.set_xlabel("time since measurement start (s)")
        right.set_yscale("log")
        right.set_ylabel("latency (ms, log scale)")
        title = "every measured run (interleaved windows)"
        if result.speedup:
            title += f"; {result.model('int8').precision} speedup {result.speedup.p50:.2f}x"
        right.set_title(title)
        if result.noise:   # the table's NOISY verdict travels with the picture
            right.text(0.01, 0.02, "NOISY: " + "; ".join(result.noise)[:160], transform=right.transAxes,
                       fontsize=8, color="#B00020", va="bottom", wrap=True)
        right.legend(loc="upper right", markerscale=4)
        env = result.environment
        fig.suptitle(f"edgenet bench: {env.cpu_model or env.machine}, {env.runtime} {env.runtime_version}, "
                     f"{result.settings.delegate.label}, {_threads(result.settings.threads)}"
                     + (" -- NOISY latency" if result.noise else ""), fontsize=10,
                     color="#B00020" if result.noise else "black")
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig
