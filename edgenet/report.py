"""The conversion report: a typed record of what `edgenet convert` did, as report.json and report.md."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgenet.io import json_safe
from edgenet.quality import level_text, worst_output


@dataclass(frozen=True)
class StageTime:
    name: str
    seconds: float


@dataclass(frozen=True)
class Validation:
    """Over all outputs: the largest float errors and the lowest int8 SQNR; top-1 agreement on the
    first output. ``outputs`` has the figures of each output, in the model's order."""
    float_max_abs_err: float
    float_rel_err: float
    int8_top1_agreement: float | None
    int8_sqnr_db: float | None
    n_samples: int
    outputs: tuple[Any, ...] = ()     # converters.validate.OutputCheck per output
    float_verdict: dict[str, Any] | None = None   # converters.validate.FloatVerdict.to_dict()
    quantized: tuple[dict[str, Any], ...] = ()     # edgenet.quality.Verdict.to_dict() per quantized model


@dataclass(frozen=True)
class Sizes:
    onnx_bytes: int
    float_bytes: int
    int8_bytes: int | None


@dataclass(frozen=True)
class ConvertReport:
    model: dict[str, Any]
    target: dict[str, Any]
    bn_folded: int
    bn_to_mul_add: int
    bn_fold_max_abs_diff: float | None
    cleanup: dict[str, int]
    export_max_abs_err: float | None
    calibration: dict[str, Any] | None
    validation: Validation
    accuracy: dict[str, Any] | None
    sizes: Sizes
    ops: dict[str, int]               # op type -> count in the int8 model (the float one with --float)
    ops_float: dict[str, int]
    stages: tuple[StageTime, ...]
    files: tuple[str, ...]
    versions: dict[str, str]
    notes: tuple[str, ...] = field(default_factory=tuple)
    fit: dict[str, Any] | None = None
    layers: list[dict[str, Any]] | None = None   # [{name, op, sqnr_db}] in graph order
    data: dict[str, Any] | None = None           # the examples used: dataset, kind, synthetic, counts
    precisions: tuple[dict[str, Any], ...] = ()  # per model written: precision, file, bytes, verdict, ops in float
    mixed_precision: dict[str, Any] | None = None   # the int8 repair: ops kept in float, why, cost
    split_outputs: dict[str, Any] | None = None     # an output written as parts (its own scale each)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        d["total_seconds"] = round(sum(s.seconds for s in self.stages), 3)
        return json_safe(d)

    def to_markdown(self) -> str:
        m, v, s = self.model, self.validation, self.sizes
        lines = [f"# edgenet conversion report: {m.get('name', 'model')}", ""]
        if self.target.get("summary"):
            lines += [f"**Target {self.target.get('name')}:** {self.target['summary']}", ""]
        lines += ["| | |", "|---|---|", f"| model | {m.get('name')} ({m.get('source')}) |"]
        for spec in m.get("inputs") or [{"name": "input", "shape": m.get("input_shape"),
                                          "tflite_shape": m.get("tflite_input_shape")}]:
            label = "input" if spec["name"] in ("input", None) else f"input {spec['name']}"
            lines.append(f"| {label} | {spec['shape']} (TFLite: {spec['tflite_shape']}) |")
        if m.get("batch_fixed"):
            lines.append(f"| dynamic batch | set to 1 for {', '.join(m['batch_fixed'])} |")
        if self.data:
            d = self.data
            kind = {"images": "images", "arrays": "arrays", "random": "seeded random examples"}.get(d.get("kind"), "")
            synthetic = " (synthetic)" if d.get("synthetic") and d.get("kind") == "images" else ""
            lines.append(f"| data | {d.get('dataset')}{synthetic}: {kind}, {d.get('samples')} calibration, "
                         f"{d.get('eval_samples')} held-out |")
        verdict = v.float_verdict or {}
        decided = "" if not verdict else (" -- **pass**" if verdict.get("passed") else " -- **FAIL**") + \
            f" (tolerance {verdict.get('tolerance'):g})"
        # a Keras model or SavedModel: no ONNX graph, TensorFlow's converter folds BN itself
        against = {"keras": "Keras", "saved_model": "SavedModel"}.get(verdict.get("reference"))
        lines += [] if against else [f"| BN folded | {self.bn_folded} (+{self.bn_to_mul_add} as multiply-add) |"]
        lines += [f"| float vs {against or 'ONNX'} | max abs err {v.float_max_abs_err:.3g}, "
                  f"rel {v.float_rel_err:.3g}{decided} |"]
        div = verdict.get("first_divergence") if verdict else None
        if div:
            where = (f"node {div['node']} ({div['op']}), relative error {div['rel_err']:.3g}" if div.get("node")
                     else div.get("reason", ""))
            if div.get("node") and div.get("unseen"):
                where += f"; or fused into it (not kept apart): {', '.join(div['unseen'])}"
            lines.append(f"| first divergence | {where} |")
        for q in v.quantized:
            worst = worst_output(q["outputs"])
            agree = q["outputs"][0]["top1_agreement"]
            which = f", worst output {worst['name']}" if len(q["outputs"]) > 1 else ""
            if worst.get("kind", "generic") != "generic":
                level = level_text(worst) + which
            else:
                level = f"SQNR {_db(worst['sqnr_centered_db'])} (input-dependent part{which})"
            status = "FAIL" if not q["passed"] else \
                "not judged" if q["outputs"] and all(o.get("status") == "not judged" for o in q["outputs"]) else "pass"
            text = f"| {q['precision']} vs {q.get('reference', 'float')} | **{status}**: {level}"
            if worst["worst_channel"] is not None:
                text += (f", worst {worst.get('axis_name', 'channel')} {worst['worst_channel']} at "
                         f"{_db(worst['worst_channel_sqnr_db'])}")
            if agree is not None and q["outputs"][0].get("kind") == "classifier" and worst is not q["outputs"][0]:
                text += f", top-1 agreement {100 * agree:.1f}%"
            if q.get("not_judged"):
                text += "; not judged: " + ", ".join(f"{k} ({v})" for k, v in q["not_judged"].items())
            lines.append(text + f" ({q['samples']} samples) |")
        sizes = f"| sizes | float {s.float_bytes:,} B"
        sizes += f", int8 {s.int8_bytes:,} B ({s.float_bytes / s.int8_bytes:.2f}x smaller) |" if s.int8_bytes else " |"
        lines.append(sizes)
        if self.accuracy:
            a = self.accuracy
            int8 = "" if a.get("int8_top1") is None else f", int8 {100 * a['int8_top1']:.2f}%"
            lines.append(f"| top-1 ({a['n_eval']} held-out) | float {100 * a['float_top1']:.2f}%{int8} |")
        if self.precisions:
            lines += ["", "## Precisions", "",
                      "| precision | file | size | SQNR vs float32 | worst channel | top-1 agreement | verdict | "
                      "ops in another precision |", "|---|---|---:|---:|---:|---:|---|---:|"]
            for row in self.precisions:
                q = row.get("verdict")
                if q is None:
                    lines.append(f"| {row['precision']} | {row['file']} | {row['bytes']:,} B | reference | | | | |")
                    continue
                worst = worst_output(q["outputs"])
                channel = "" if worst["worst_channel"] is None else \
                    f"{worst['worst_channel']}: {_db(worst['worst_channel_sqnr_db'])}"
                agree = q["outputs"][0]["top1_agreement"]
                level = level_text(worst) if worst.get("kind", "generic") != "generic" else _db(worst["sqnr_centered_db"])
                lines.append(f"| {row['precision']} | {row['file']} | {row['bytes']:,} B | {level} "
                             f"| {channel} | {'' if agree is None else f'{100 * agree:.1f}%'} | "
                             f"{'pass' if q['passed'] else '**FAIL**'} | {len(row.get('ops_in_other_precision') or [])} |")
        if self.mixed_precision:
            lines += ["", "## Mixed precision", "", *_mixed_precision_lines(self.mixed_precision)]
        if self.split_outputs:
            sp = self.split_outputs
            lines += ["", "## Split output", "",
                      f"Output `{sp['output']}` is written as {len(sp['parts'])} outputs "
                      f"({', '.join(f'`{p}`' for p in sp['parts'])}, sizes {sp['sizes']} along axis {sp['axis']}), "
                      "each with its own int8 scale: one scale could not hold all of its values. Concatenate them "
                      "in the app to get the original tensor."]
        failing = [o for q in v.quantized for o in q["outputs"] if not o["passed"]]
        if failing:
            lines += ["", "## Damaged outputs", ""]
            lines += [f"- {o['name']}: {'; '.join(o['failures'])}" for o in failing]
        judged = [(q["precision"], o) for q in v.quantized for o in q["outputs"]]
        if judged:
            lines += ["", "## Outputs judged", "", "Each output by the metric of its kind (`--output-kind NAME=KIND` "
                      "overrides it); SQNR of the input-dependent part, cosine, L2 relative error, RMSE and MAE "
                      "against the reference (the float model; for a quantized ONNX input, the QDQ model in "
                      "onnxruntime).", "",
                      "| precision | output | kind | verdict | task figure | SQNR | cosine | L2 rel | RMSE | MAE |",
                      "|---|---|---|---|---|---:|---:|---:|---:|---:|"]
            for precision, o in judged:
                status = {"fail": "**FAIL**", "not judged": "not judged"}.get(o.get("status"), "pass")
                lines.append(f"| {precision} | {o['name']} | {o.get('kind', 'generic')} | {status} | {_task(o)} | "
                             f"{_db(o.get('sqnr_centered_db'))} | {_num(o.get('cosine'), '.4f')} | "
                             f"{_num(o.get('l2_rel_err'), '.3g')} | {_num(o.get('rmse'), '.3g')} | "
                             f"{_num(o.get('mae'), '.3g')} |")
        if len(v.outputs) > 1:
            lines += ["", "## Outputs", "", "| output | float vs ONNX max abs err | int8 vs float plain SQNR dB |",
                      "|---|---:|---:|"]
            lines += [f"| {o.name} | {o.float_max_abs_err:.3g} | "
                      f"{'' if o.int8_sqnr_db is None else f'{o.int8_sqnr_db:.1f}'} |" for o in v.outputs]
        lines += ["", "## Stages", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {st.name} | {st.seconds:.2f} |" for st in self.stages]
        lines += [f"| **total** | **{sum(st.seconds for st in self.stages):.2f}** |", "",
                  "## Ops in the deployed model", "", "| op | count |", "|---|---:|"]
        lines += [f"| {k} | {n} |" for k, n in self.ops.items()]
        if self.layers:
            worst = sorted((x for x in self.layers if x.get("sqnr_db") is not None), key=lambda x: x["sqnr_db"])[:5]
            lines += ["", "## Layers that lose the most precision (int8 vs float, SQNR)", "",
                      "| layer | ONNX node | op | SQNR dB |", "|---|---|---|---:|"]
            lines += [f"| {x.get('module') or x.get('onnx_node') or x['name']} | {x.get('onnx_node') or ''} | {x['op']} | {x['sqnr_db']:.1f} |"
                      for x in worst]
        if self.fit:
            lines += ["", "## Fit search", ""] + [f"    {ln}" for ln in self.fit.get("lines", [])]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _db(value) -> str:
    return "identical" if value is None else f"{value:.1f} dB"


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _task(o: dict) -> str:
    """The task figures of one judged output (its kind's metrics), short."""
    m = o.get("metrics") or {}
    if o.get("not_judged"):
        return o["not_judged"]
    parts = {"classifier": [("top-1", o.get("top1_agreement"), "%"), ("top-5", m.get("top5_agreement"), "%"),
                            ("undecided examples", m.get("undecided_examples") or None, "d")],
             "embedding": [("cosine", m.get("cosine_mean"), ".3f"), ("worst", m.get("cosine_worst"), ".3f"),
                           ("pairs", m.get("similarity_correlation"), ".2f")],
             "sequence": [("steps", m.get("step_agreement"), "%"), ("sequences", m.get("sequence_agreement"), "%")],
             "class_map": [("top-class", m.get("position_agreement"), "%")],
             "map": [("IoU", m.get("map_iou"), ".3f")],
             "detection": [("F1", m.get("detection_f1"), ".3f"), ("boxes", m.get("box_sqnr_db"), "dB"),
                           ("scores", m.get("score_sqnr_db"), "dB"), ("borderline", m.get("borderline") or None, "d")],
             "index": [("agreement", o.get("index_agreement"), "%")],
             "topk": [("set", m.get("set_agreement"), "%"), ("order", m.get("order_agreement"), "%")]}.get(o.get("kind"), [])
    out = []
    for label, value, fmt in parts:
        if value is None:
            continue
        out.append(f"{label} {100 * value:.1f}%" if fmt == "%" else
                   f"{label} {value:.1f} dB" if fmt == "dB" else f"{label} {value:{fmt}}")
    return ", ".join(out)


@dataclass(frozen=True)
class ConvertResult:
    """What ``edgenet.convert`` returns: the output folder, the files published there, the report."""

    out: Path
    files: tuple[Path, ...]
    report: ConvertReport

    def path(self, precision) -> Path | None:
        """The model file of ``precision`` (an edgenet.config.Precision), None when it was not written."""
        p = self.out / precision.file_name
        return p if p in self.files else None

    @property
    def int8_path(self) -> Path | None:
        p = self.out / "model_int8.tflite"
        return p if p in self.files else None

    @property
    def float_path(self) -> Path:
        return self.out / "model_float.tflite"


def _mixed_precision_lines(mp: dict) -> list[str]:
    """report.md's account of the int8 repair (converters.repair): what was promoted, to what, why,
    the cost, the verdict before and after, and why the search stopped."""
    promoted = mp.get("promoted", mp.get("kept_float", []))
    cost = (f"{mp['rounds']} of {mp.get('budget_rounds', '?')} round(s), {mp['seconds']:.2f} s; "
            f"stopped: {mp.get('stopped', '')}")
    if not mp["passed"] and not promoted:
        return [f"The int8 verdict failed, and no op was promoted ({cost}): the int8 model written is the plain one."]
    if not mp["passed"]:
        return [f"The int8 verdict failed, and no promotion of up to {len(promoted)} op(s) made it pass ({cost}): "
                "the int8 model written is the plain one."]
    lines = [f"The int8 verdict failed on {', '.join(mp.get('verdict_before', {}).get('failing', [])) or 'an output'}; "
             f"{len(promoted)} op(s) are promoted in the model written and the verdict passes ({cost}). Size "
             f"{mp['size_before']:,} -> {mp['size_after']:,} bytes."]
    lat = mp.get("latency_ms") or {}
    if "int8" in lat and "repaired" in lat:
        line = f"Latency on this host (LiteRT): int8 {lat['int8']:.3f} ms, repaired {lat['repaired']:.3f} ms"
        line += f", float32 {lat['float32']:.3f} ms." if "float32" in lat else "."
        if "same_ops_float" in lat:
            line += f" The same ops promoted to float instead also pass: {lat['same_ops_float']:.3f} ms."
        if "same_ops_float" in lat and lat["repaired"] > lat["same_ops_float"]:   # float allowed here
            line += (" int16 ops run on slower kernels than int8 and float here (XNNPACK has no 16x8 operators): "
                     "on a CPU target float may be preferable (the profile's `repair` order).")
        lines += ["", line]
    lines += ["", "| op | ONNX node | to | gain alone | why |", "|---|---|---|---:|---|"]
    for p in promoted:
        gain = "" if p.get("gain_db") is None else f"{p['gain_db']:+.1f} dB"
        lines.append(f"| {p['op']} | {p.get('onnx_node') or p['tensor']} | {p.get('precision', 'float')} | {gain} | "
                     f"{p['reason']} |")
    return lines
