"""The sweep's answer: per target, the cells no other cell beats (a Pareto front), as
DIR/pareto.md and DIR/pareto.png.

Three objectives per target, each read from results.jsonl:
- quality, higher is better: held-out top-1 of the cell's model when every converted cell of the
  target has it (the images' labels are the model's classes), else SQNR against the float32 model
  (a float32 cell is that model: infinite SQNR);
- size of the deployed model in bytes, lower is better;
- cost, lower is better: the first of vela's estimated time (ethos-u55), the TFLite Micro arena
  (cortex-m), latency measured on the worker's host (``--bench``: the device's own for rpi and
  android only when the sweep runs there), or mult-adds (zoo models) that every converted cell of
  the target has; none when no column is complete.

A cell is on the front when no other cell is at least as good in all three and better in one
(the usual dominance; Deb, Multi-Objective Optimization using Evolutionary Algorithms, 2001, 2.4).
Cells that do not fit the target are on the front like the others but marked; cells that failed,
or that convert but exceed the target (no figures), are listed apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgenet.sweep.results import read_results

COSTS = (("estimated_ms", "vela estimate (ms)"), ("arena_bytes", "TFLM arena (KiB)"),
         ("latency_ms", "latency p50 here (ms)"), ("mult_adds", "mult-adds (M)"))


@dataclass(frozen=True)
class Front:
    """One target's cells: the front first (by size), then the beaten ones."""

    target: str
    quality: str                 # "top1" or "sqnr_db"
    cost: str | None             # a record key from COSTS, or None
    front: tuple[dict, ...]
    beaten: tuple[tuple[dict, dict], ...]   # (cell, a cell on the front that beats it)
    other: tuple[dict, ...]      # failed or over budget: no figures to compare


def _quality(record: dict, key: str) -> float:
    if key == "sqnr_db" and record.get("precision") == "float32":
        return math.inf
    return float(record[key])


def _beats(a: dict, b: dict, quality: str, cost: str | None) -> bool:
    qa, qb = _quality(a, quality), _quality(b, quality)
    pairs = [(-qa, -qb), (a["size_bytes"], b["size_bytes"])]
    if cost:
        pairs.append((a[cost], b[cost]))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def fronts(records: list[dict]) -> list[Front]:
    """Per target (in first-seen order), the Pareto front of the cells with figures."""
    by_target: dict[str, list[dict]] = {}
    for r in records:
        by_target.setdefault(r.get("target", "?"), []).append(r)
    out = []
    for target, rows in by_target.items():
        ok = [r for r in rows if r.get("status") == "ok" and r.get("size_bytes") is not None]
        other = tuple(r for r in rows if r not in ok)
        quality = "top1" if ok and all(r.get("top1") is not None for r in ok) else "sqnr_db"
        ok = [r for r in ok if r.get(quality) is not None or (quality == "sqnr_db" and r.get("precision") == "float32")]
        other += tuple(r for r in rows if r.get("status") == "ok" and r not in ok and r not in other)
        cost = next((key for key, _ in COSTS if ok and all(r.get(key) is not None for r in ok)), None)
        front = [r for r in ok if not any(_beats(o, r, quality, cost) for o in ok if o is not r)]
        # dominance is transitive: a beaten cell is beaten by a cell on the front
        beaten = [(r, next(f for f in front if _beats(f, r, quality, cost))) for r in ok if r not in front]
        key = lambda r: (r["size_bytes"], r["label"])  # noqa: E731
        out.append(Front(target, quality, cost, tuple(sorted(front, key=key)),
                         tuple(sorted(beaten, key=lambda p: key(p[0]))), other))
    return out


def _fmt_quality(r: dict, quality: str) -> str:
    if quality == "top1":
        return f"{100 * r['top1']:.1f}%"
    return "ref (float32)" if r.get("precision") == "float32" else f"{r['sqnr_db']:.1f} dB"


def _fmt_cost(r: dict, cost: str | None) -> str:
    if cost is None or r.get(cost) is None:
        return ""
    v = r[cost]
    if cost == "arena_bytes":
        return f"{v / 1024:.1f}"
    if cost == "mult_adds":
        return f"{v / 1e6:.1f}"
    return f"{v:.3g}"


def _fits(r: dict) -> str:
    return {True: "yes", False: "**no**"}.get(r.get("fits"), "?")


SYNTHETIC = ("shapes",)      # built-in calibration sets of generated images


def _warnings(all_fronts: list[Front]) -> list[str]:
    """What the reader must know before ranking: untrained weights, synthetic images."""
    from edgenet.sweep.summary import untrained

    rows = [r for f in all_fronts for r in (*f.front, *(b for b, _ in f.beaten))]
    lines = []
    n = sum(untrained(r) for r in rows)
    if n:
        lines.append(f"> **Untrained weights:** {n} of {len(rows)} ranked cell(s) are models without trained "
                     "weights (zoo models, no checkpoint). Their SQNR and verdicts compare a quantized model with "
                     "its float twin and are not judged; they say nothing of a trained model's accuracy.")
    synthetic = sorted({r.get("calib") for r in rows if r.get("calib") in SYNTHETIC})
    if synthetic:
        lines.append(f"> **Synthetic data:** calibrated and evaluated on the built-in generated images "
                     f"({', '.join(synthetic)}), not on the task's images.")
    return lines + [""] if lines else []


def to_markdown(all_fronts: list[Front], title: str = "Sweep: Pareto fronts") -> str:
    from edgenet.sweep.summary import verdict_text

    lines = [f"# {title}", ""]
    if not all_fronts:
        return "\n".join(lines + ["No finished cells yet.", ""])
    lines += _warnings(all_fronts)
    for f in all_fronts:
        qname = "top-1" if f.quality == "top1" else "SQNR vs float32"
        cname = dict(COSTS).get(f.cost, "")
        lines += [f"## {f.target}", "",
                  f"{len(f.front)} cell(s) on the front (quality: {qname}; size; "
                  f"{'cost: ' + cname if f.cost else 'no cost column every cell has'}). "
                  "`fits`: the target's checks pass (budgets, runtime, operators).", ""]
        head = f"| cell | {qname} | verdict | size (KiB) |" + (f" {cname} |" if f.cost else "") + " fits | id |"
        rule = "|---|---:|---|---:|" + ("---:|" if f.cost else "") + "---|---|"
        lines += [head, rule]
        for r in f.front:
            lines.append(f"| {r['label']} | {_fmt_quality(r, f.quality)} | {verdict_text(r)} | "
                         f"{r['size_bytes'] / 1024:.1f} |"
                         + (f" {_fmt_cost(r, f.cost)} |" if f.cost else "") + f" {_fits(r)} | `{r['id']}` |")
        if f.beaten:
            lines += ["", "Beaten:", ""]
            for r, by in f.beaten:
                lines.append(f"- {r['label']} ({_fmt_quality(r, f.quality)}, verdict {verdict_text(r)}, "
                             f"{r['size_bytes'] / 1024:.1f} KiB"
                             + (f", {_fmt_cost(r, f.cost)}" if f.cost else "") + f", fits: {_fits(r)}) "
                             f"by {by['label']}")
        if f.other:
            lines += ["", "Without figures:", ""]
            for r in f.other:
                lines.append(f"- {r['label']}: {r.get('status')}: {r.get('error') or ''}".rstrip(": "))
        lines.append("")
    return "\n".join(lines)


def plot(all_fronts: list[Front], path: Path) -> Path:
    """Quality against size per target; front cells joined, fitting ones filled, others hollow."""
    from edgenet._deps import require

    require("matplotlib", purpose="pareto.png")
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(all_fronts))
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, f in zip(axes[0], all_fronts):
        rows = list(f.front) + [r for r, _ in f.beaten]
        finite = [_quality(r, f.quality) for r in rows if math.isfinite(_quality(r, f.quality))]
        top = (max(finite) + 3 if finite else 1.0) if f.quality == "sqnr_db" else None

        def y(r):
            q = _quality(r, f.quality)
            return (100 * q if f.quality == "top1" else q) if math.isfinite(q) else top

        for r in rows:
            on = any(r is x for x in f.front)
            ax.scatter(r["size_bytes"] / 1024, y(r), s=60 if on else 30, marker="o",
                       facecolors=("C0" if on else "C7") if r.get("fits") else "none",
                       edgecolors="C0" if on else "C7", zorder=3)
            if on:
                cost = f" [{_fmt_cost(r, f.cost)}]" if f.cost and r.get(f.cost) is not None else ""
                ax.annotate(r["label"].replace(f" {f.target} ", " ") + cost,
                            (r["size_bytes"] / 1024, y(r)), fontsize=7, xytext=(4, 4), textcoords="offset points")
        pts = sorted((r["size_bytes"] / 1024, y(r)) for r in f.front)
        if len(pts) > 1:
            ax.plot(*zip(*pts), color="C0", lw=1, zorder=2)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("model size (KiB)")
        ax.set_ylabel("top-1 (%)" if f.quality == "top1" else "SQNR vs float32 (dB; float32 on top)")
        fit = [r.get("fits") for r in rows]
        legend = ("all fit" if all(fit) else "none fits" if not any(fit) else "filled = fits, hollow = does not")
        third = f"; [{dict(COSTS)[f.cost]}]" if f.cost else ""
        ax.set_title(f"{f.target}: front (blue); {legend}{third}", fontsize=9)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def render(folder: str | Path, png: bool = True) -> tuple[Path, Path | None, list[Front]]:
    """(Re)write DIR/pareto.md (and DIR/pareto.png when ``png`` and matplotlib is installed)
    from DIR/results.jsonl. Returns their paths (png None when not drawn) and the fronts."""
    from edgenet.errors import MissingDependencyError
    from edgenet.io import atomic_write_text

    folder = Path(folder)
    all_fronts = fronts(list(read_results(folder).values()))
    md = atomic_write_text(folder / "pareto.md", to_markdown(all_fronts))
    picture = None
    if png and all_fronts:
        try:
            picture = plot(all_fronts, folder / "pareto.png")
        except MissingDependencyError:
            picture = None
    return md, picture, all_fronts
