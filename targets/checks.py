"""Run a target profile's checks and packagers on converted models: :func:`run_target`.

Checks answer "does it run where it should, and does it fit?" (TFLite Micro arena and budgets,
vela's NPU placement, the Edge TPU operator check, LiteRT loading, I/O types). Packagers write the
files a developer embeds (labels.txt, <c_name>_model_data.cc/.h, the op resolver, the vela model)
into the output folder, atomically. The :class:`TargetReport` goes into report.json (``to_dict()``)
and report.md (``summary_line()``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenet.config import IOType
from edgenet.errors import DataError, EdgenetError, TargetError, UsageError
from edgenet.io import atomic_write_text
from edgenet.data.preprocess import Preprocess
from edgenet.targets.c_array import (ArenaEstimate, c_name_from, check_c_name, op_registrations, write_model_data,
                             write_op_resolver)
from edgenet.targets.edgetpu import EdgeTpuAnalysis, analyze_edgetpu
from edgenet.targets.edgetpu_compiler import CompilerResult, compiler_command, find_compiler, run_compiler
from edgenet.targets.metadata import read_metadata
from edgenet.targets.profile import Check, Packager, Runtime, TargetProfile
from edgenet.targets.tflite_graph import read_tflite
from edgenet.targets.tflm import TflmCheck, check_tflm, kib
from edgenet.targets.vela import VelaOutput, VelaReport, run_vela, save_vela_output

_INT8_ONLY = (Runtime.TFLM, Runtime.EDGETPU, Runtime.ETHOS_U)


@dataclass(frozen=True)
class IOTypesCheck:
    """The int8 model's input/output types against the profile's."""

    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    expected_input: str
    expected_output: str
    strict: bool  # the device needs integer I/O (MCU/NPU runtimes); otherwise a mismatch is a note

    @property
    def matches(self) -> bool:
        return (all(t == self.expected_input for t in self.input_types)
                and all(t == self.expected_output for t in self.output_types))

    def message(self) -> str | None:
        if self.matches:
            return None
        return (f"model I/O is {'/'.join(self.input_types)} -> {'/'.join(self.output_types)}, "
                f"profile expects {self.expected_input} -> {self.expected_output}")

    def failure(self) -> str | None:
        floats = "float32" in self.input_types + self.output_types
        if self.strict and floats and IOType.FLOAT32.value not in (self.expected_input, self.expected_output):
            return f"{self.message()}; this device needs integer input and output"
        return None

    def to_dict(self) -> dict:
        return {"input_types": list(self.input_types), "output_types": list(self.output_types),
                "expected_input": self.expected_input, "expected_output": self.expected_output,
                "matches": self.matches}


@dataclass(frozen=True)
class LiteRTCheck:
    model: str
    runs: bool
    runtime: str | None
    num_threads: int
    error: str | None = None

    def to_dict(self) -> dict:
        return {"model": self.model, "runs": self.runs, "runtime": self.runtime,
                "num_threads": self.num_threads, "error": self.error}


@dataclass(frozen=True)
class TargetReport:
    target: str
    device: str
    runtime: str
    model: str | None                          # file name of the model the checks ran on
    model_bytes: int | None
    io_types: IOTypesCheck | None = None
    litert: tuple[LiteRTCheck, ...] = ()
    tflm: TflmCheck | None = None
    vela: VelaReport | None = None
    edgetpu: EdgeTpuAnalysis | None = None
    edgetpu_compiler: CompilerResult | None = None
    edgetpu_command: str | None = None         # what to run where the compiler exists
    ram_budget: int | None = None
    flash_budget: int | None = None
    artifacts: tuple[str, ...] = ()            # files written into the output folder
    notes: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def arena_bytes(self) -> int | None:
        return self.tflm.arena_bytes if self.tflm else None

    @property
    def ram_bytes(self) -> int | None:
        """RAM the model needs on the device: TFLM's arena, or vela's SRAM."""
        if self.vela is not None:
            return self.vela.sram_bytes
        return self.arena_bytes

    @property
    def flash_bytes(self) -> int | None:
        """Flash the model takes on the device (the vela-optimised model for Ethos-U)."""
        if self.vela is not None:
            return self.vela.model_bytes
        return self.model_bytes if self.flash_budget is not None else None

    def summary_line(self) -> str:
        head = self.target
        if self.failures:
            return f"{head}: does NOT fit or run: {'; '.join(self.failures)}"
        if self.vela is not None:
            v = self.vela
            placed = (f"all {v.model_ops} TFLite ops on the NPU" if not v.cpu_ops
                      else f"{v.cpu_ops} CPU op(s) allowed")
            return (f"{head}: fits: {placed} (as vela's {v.npu_ops + v.cpu_ops} finer operators: {v.npu_ops} NPU / "
                    f"{v.cpu_ops} CPU), SRAM {kib(v.sram_bytes)} of "
                    f"{kib(self.ram_budget)}, flash {kib(v.model_bytes)} of {kib(self.flash_budget)}, "
                    f"~{v.estimated_ms:.3f} ms per inference (vela estimate)")
        if self.tflm is not None:
            t = self.tflm
            return (f"{head}: fits: runs in TFLite Micro, arena {kib(t.arena_bytes)} of {kib(self.ram_budget)} "
                    f"RAM, model {kib(t.model_bytes)} of {kib(self.flash_budget)} flash")
        if self.edgetpu is not None:
            line = f"{head}: {self.edgetpu.summary()}"
            if self.edgetpu_compiler is not None:
                c = self.edgetpu_compiler
                return f"{line}; edgetpu_compiler: {c.mapped_ops} mapped, {c.cpu_ops} on the CPU"
            return f"{line}; confirm with: {self.edgetpu_command}"
        if self.litert:
            runtimes = ", ".join(dict.fromkeys(c.runtime or "?" for c in self.litert))
            return f"{head}: runs in LiteRT ({runtimes}), {self.litert[0].num_threads} thread(s)"
        return f"{head}: no checks run"

    def to_dict(self) -> dict:
        return {
            "name": self.target, "device": self.device, "runtime": self.runtime, "ok": self.ok,
            "summary": self.summary_line(), "model": self.model, "model_bytes": self.model_bytes,
            "arena_bytes": self.arena_bytes, "ram_bytes": self.ram_bytes, "ram_budget": self.ram_budget,
            "flash_bytes": self.flash_bytes, "flash_budget": self.flash_budget,
            "npu_ops": self.vela.npu_ops if self.vela else None,
            "cpu_ops": self.vela.cpu_ops if self.vela else None,
            "edgetpu_mappable_ops": self.edgetpu.mappable_ops if self.edgetpu else None,
            "edgetpu_cpu_ops": self.edgetpu.cpu_ops if self.edgetpu else None,
            "estimated_ms": self.vela.estimated_ms if self.vela else None,
            "edgetpu_command": self.edgetpu_command,
            "artifacts": list(self.artifacts), "notes": list(self.notes), "failures": list(self.failures),
            "checks": {
                "io_types": self.io_types.to_dict() if self.io_types else None,
                "litert": [c.to_dict() for c in self.litert],
                "tflm": self.tflm.to_dict() if self.tflm else None,
                "vela": self.vela.to_dict() if self.vela else None,
                "edgetpu": self.edgetpu.to_dict() if self.edgetpu else None,
                "edgetpu_compiler": self.edgetpu_compiler.to_dict() if self.edgetpu_compiler else None,
            },
        }


def _check_io_types(profile: TargetProfile, model: Path) -> IOTypesCheck:
    graph = read_tflite(model)
    return IOTypesCheck(tuple(t.dtype for t in graph.input_tensors), tuple(t.dtype for t in graph.output_tensors),
                        profile.input_type.value, profile.output_type.value, profile.runtime in _INT8_ONLY)


def _check_litert(profile: TargetProfile, model: Path) -> LiteRTCheck:
    from edgenet.runtime import find_runtime, make_interpreter

    try:
        rt = find_runtime()
        interp = make_interpreter(model, num_threads=profile.num_threads,
                                  use_xnnpack=profile.delegate.value == "xnnpack", runtime=rt)
        details = interp.get_input_details()
        for d in details:
            interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        try:
            interp.invoke()
        except RuntimeError:
            from edgenet.benchmark.data import held_out_inputs

            # zeros need not be an input the model can compute on (an integer divisor taken from the
            # input: "Division by 0"): run it on the first held-out example convert wrote beside it
            example = held_out_inputs(model.parent, details)
            if example is None:
                raise
            for d, x in zip(details, example):
                interp.set_tensor(d["index"], x)
            interp.invoke()
    except EdgenetError as exc:
        return LiteRTCheck(model.name, False, None, profile.num_threads, str(exc))
    except (RuntimeError, ValueError) as exc:
        from edgenet.inference import runtime_message

        return LiteRTCheck(model.name, False, f"{rt.name} {rt.version}", profile.num_threads, runtime_message(exc))
    return LiteRTCheck(model.name, True, f"{rt.name} {rt.version}", profile.num_threads)


def _display_path(model: Path, out_dir: Path) -> str:
    try:
        return str(model.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return str(model.resolve())


class _Collector:
    """Mutable scratchpad while the checks run; frozen into a TargetReport at the end."""

    def __init__(self):
        self.fields: dict = {}
        self.artifacts: list[str] = []
        self.notes: list[str] = []
        self.failures: list[str] = []

    def wrote(self, *paths: Path) -> None:
        self.artifacts.extend(p.name for p in paths)

    def fail(self, message: str | None) -> None:
        if message:
            self.failures.append(message)


def _select_model(profile: TargetProfile, int8_path: Path | None, float_path: Path | None) -> Path:
    if profile.runtime in _INT8_ONLY or any(c in profile.checks for c in (Check.TFLM, Check.VELA, Check.EDGETPU)):
        if int8_path is None:
            raise UsageError(f"target {profile.name!r} needs the int8 model (convert with int8 precision)")
        return int8_path
    model = int8_path or float_path
    if model is None:
        raise UsageError(f"target {profile.name!r}: no model to check (neither int8 nor float given)")
    return model


def _run_checks(profile: TargetProfile, out_dir: Path, model: Path, int8_path: Path | None,
                float_path: Path | None, c: _Collector) -> VelaOutput | None:
    vela_out = None
    if Check.IO_TYPES in profile.checks and int8_path is not None:
        io = c.fields["io_types"] = _check_io_types(profile, int8_path)
        c.fail(io.failure())
        if io.message() and not io.failure():
            c.notes.append(io.message())
    if Check.LITERT in profile.checks:
        results = tuple(_check_litert(profile, p) for p in (int8_path, float_path) if p is not None)
        c.fields["litert"] = results
        for r in results:
            c.fail(None if r.runs else f"LiteRT cannot run {r.model}: {r.error}")
    if Check.TFLM in profile.checks:
        tflm = c.fields["tflm"] = check_tflm(model, profile.ram_budget, profile.flash_budget)
        c.fail(tflm.failure())
        if tflm.runs and tflm.litert_top1_agreement is not None and tflm.litert_top1_agreement < 1.0:
            c.notes.append(f"TFLite Micro and LiteRT disagree on top-1 for "
                           f"{1 - tflm.litert_top1_agreement:.0%} of {tflm.samples} random inputs")
    if Check.VELA in profile.checks:
        vela_out = run_vela(model, profile.accelerator, system_config=profile.vela_system_config,
                            memory_mode=profile.vela_memory_mode)
        r = vela_out.report
        c.fields["vela"] = VelaReport(**{**r.__dict__, "ram_budget": profile.ram_budget,
                                         "flash_budget": profile.flash_budget,
                                         "allow_cpu_ops": profile.allow_cpu_ops})
        c.fail(c.fields["vela"].failure())
    if Check.EDGETPU in profile.checks:
        analysis = c.fields["edgetpu"] = analyze_edgetpu(model)
        if analysis.cpu_ops and not profile.allow_cpu_ops:
            c.fail(analysis.summary())
        c.fields["edgetpu_command"] = compiler_command(_display_path(model, out_dir), ".")
        if find_compiler():
            result = c.fields["edgetpu_compiler"] = run_compiler(model, out_dir)
            c.artifacts.extend(result.files)
        else:
            c.notes.append(f"edgetpu_compiler is not on PATH (x86-64 Linux only); in the output folder run: "
                           f"{c.fields['edgetpu_command']}")
    return vela_out


def _preprocess(out_dir: Path) -> Preprocess | None:
    """The pipeline's preprocess.json in ``out_dir``, or None (absent or not a preprocessing spec)."""
    try:
        return Preprocess.load(out_dir / "preprocess.json")
    except DataError:
        return None


def default_c_name(model: Path) -> str:
    """The C symbol prefix for ``model``: its metadata's model name made a C identifier, else "model"."""
    try:
        md = read_metadata(model.read_bytes())
    except (ValueError, IndexError):
        md = None
    return c_name_from(md.name) if md is not None and md.name else "model"


def _input_note(model: Path, pre: Preprocess | None) -> str | None:
    """Per-channel normalization cannot be one integer input scale: say what an app must do."""
    graph = read_tflite(model)
    if pre is None or len(graph.inputs) != 1 or (len(set(pre.mean)) == 1 and len(set(pre.std)) == 1):
        return None
    t = graph.input_tensors[0]
    if t.dtype not in ("uint8", "int8") or not t.scales:
        return None
    return (f"{model.name}: {t.dtype} input with per-channel mean/std: pixels are not input values; an app "
            f"normalizes each channel and quantizes, q = round(((pixel / 255 - mean) / std) / {t.scales[0]:.6g} "
            f"+ {t.zero_points[0]}), e.g. with the LiteRT interpreter; MediaPipe's ImageClassifier cannot run "
            "this model (it feeds pixels unchanged to an 8-bit input and refuses per-channel normalization "
            "for a float one): convert with --normalize-in-model for it (the model then takes 0..1 pixels)")


def _run_packagers(profile: TargetProfile, out_dir: Path, model: Path, class_names, vela_out, c: _Collector,
                   c_name: str):
    if Packager.LABELS in profile.packagers:
        if class_names:
            c.wrote(atomic_write_text(out_dir / "labels.txt", "".join(f"{n}\n" for n in class_names)))
        else:
            c.notes.append("labels.txt not written: class names unknown")
    if Packager.PREPROCESS in profile.packagers and (out_dir / "preprocess.json").is_file():
        c.artifacts.append("preprocess.json")
    firmware = {Packager.VELA_MODEL, Packager.C_ARRAY, Packager.OP_RESOLVER} & set(profile.packagers)
    if firmware and c.failures:
        names = ", ".join(sorted(p.value for p in firmware))
        c.notes.append(f"firmware files ({names}) not written: the model does not fit or run on the device")
        return
    embedded = model
    if Packager.VELA_MODEL in profile.packagers and vela_out is not None:
        paths = save_vela_output(vela_out, out_dir, f"{model.stem}_vela.tflite")
        c.wrote(*paths)
        embedded = paths[0]
    if Packager.C_ARRAY in profile.packagers:
        tflm = c.fields.get("tflm")
        arena = ArenaEstimate(tflm.arena_bytes, "tflm") if tflm is not None and tflm.arena_bytes else None
        if embedded != model:
            arena = ArenaEstimate(vela_out.report.sram_bytes, "vela")
        c.wrote(*write_model_data(embedded, out_dir, c_name=c_name, arena=arena, preprocess=_preprocess(out_dir),
                                  labels=class_names))
    if Packager.OP_RESOLVER in profile.packagers:
        graph = read_tflite(embedded)
        _, unknown = op_registrations(graph)
        if unknown:
            c.notes.append(f"{c_name}_op_resolver.h: register {', '.join(unknown)} by hand")
        c.wrote(write_op_resolver(graph, embedded.name, out_dir, c_name))


def run_target(profile: TargetProfile, out_dir: Path, int8_path: Path | None, float_path: Path | None,
               class_names: tuple[str, ...] | None, *, strict: bool = True, c_name: str | None = None,
               zoo: bool = True) -> TargetReport:
    """Run ``profile``'s checks on the converted model(s) and write its artifacts into ``out_dir``.

    ``c_name`` prefixes every symbol (and file name) of the firmware sources; by default the model
    name (:func:`default_c_name`). An invalid one raises UsageError before any check runs.

    With ``strict`` (the default) a model that does not fit or run raises TargetError after the
    artifacts are written; the full report is on the exception as ``exc.report``.
    """
    out_dir = Path(out_dir)
    int8_path = Path(int8_path) if int8_path is not None else None
    float_path = Path(float_path) if float_path is not None else None
    for p in (int8_path, float_path):
        if p is not None and not p.is_file():
            raise UsageError(f"{p}: no such model file")
    model = _select_model(profile, int8_path, float_path)
    c_name = check_c_name(c_name) if c_name is not None else default_c_name(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = _Collector()
    vela_out = _run_checks(profile, out_dir, model, int8_path, float_path, c)
    _run_packagers(profile, out_dir, model, class_names, vela_out, c, c_name)
    if int8_path is not None and (note := _input_note(int8_path, _preprocess(out_dir))):
        c.notes.append(note)
    report = TargetReport(
        target=profile.name, device=profile.device, runtime=profile.runtime.value, model=model.name,
        model_bytes=model.stat().st_size, ram_budget=profile.ram_budget, flash_budget=profile.flash_budget,
        artifacts=tuple(dict.fromkeys(c.artifacts)), notes=tuple(c.notes), failures=tuple(c.failures),
        **c.fields,
    )
    if strict and not report.ok:
        from edgenet.targets.estimate import smaller_hint

        hint = f" ({smaller_hint(zoo)})" if "budget" in report.failures[0] else ""
        exc = TargetError(f"{profile.name}: {report.failures[0]}{hint}")
        exc.report = report
        raise exc
    return report
