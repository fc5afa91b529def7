"""``edgenet.bench``: int8 vs float latency and accuracy of .tflite models, on the device itself.

Steps: find the models (a `convert` folder or .tflite files) -> open each with the chosen runtime,
threads and delegate (load, init and first inference timed apart) -> warm up -> measure in
interleaved windows -> statistics and speedup -> accuracy on the data, if given -> environment.
Runs with the base install only (numpy + a TFLite runtime).
"""
from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgenet import limits
from edgenet.benchmark import environment
from edgenet.benchmark.accuracy import (compare, convert_record, recorded_joins, recorded_output_names,
                                        recorded_verdict_settings)
from edgenet.benchmark.data import (align_labels, check_data_budget, check_finite_samples, default_preprocess,
                                    load_bench_data)
from edgenet.benchmark.models import (FLOAT, INT8, LoadedModel, check_compatible, check_samples, output_order,
                                      read_labels,
                                      resolve_target)
from edgenet.benchmark.options import BenchSettings, Delegate, DelegateKind
from edgenet.benchmark.result import BenchResult, ModelReport
from edgenet.benchmark.stats import LatencyStats, noise_reasons, speedup
from edgenet.benchmark.timing import measure_interleaved, split_windows, warm_up
from edgenet.data.preprocess import Preprocess
from edgenet.errors import DataError, ModelError, UsageError
from edgenet.config import Precision
from edgenet.runtime import find_runtime

Progress = Callable[[str], None]


def bench(target: str | Path, *, float_model: str | Path | None = None, data: Any = None,
          limit: int | None = None, threads: int | None = None, warmup: int = 10,
          warmup_seconds: float = 1.0, runs: int = 50, min_seconds: float = 3.0, window: int = 1000,
          window_seconds: float = 0.5, delegate: str | Delegate = "xnnpack", ssh: str | None = None,
          precision: str | None = None,
          remote_python: str = "python3", ssh_options: Iterable[str] = (),
          progress: Progress | None = None) -> BenchResult:
    """Benchmark TARGET (a `convert` output folder or a .tflite file; ``float_model`` adds the float twin).

    ``data``: "digits", "shapes", a folder of images (class subfolders give labels), or arrays of
    preprocessed samples (x, or (x, labels)); None: the held-out set `convert` wrote into the folder
    (eval_set.npz), if any. ``precision``: which model of a `convert` folder is compared with
    model_float.tflite (float16, dynamic, int8, int16x8; default int8, or the only one there). ``ssh="user@host[:port]"`` runs it all on that device
    with its own Python (``remote_python``) and brings the result back.
    """
    if limit is not None:
        limit = limits.check_int("--limit", limit, 1, limits.MAX_SAMPLES)
    if threads is not None:
        threads = limits.check_int("--threads", threads, 1, limits.MAX_THREADS)
    settings = BenchSettings(threads=threads or 0, delegate=Delegate.parse(delegate), warmup=warmup,
                             warmup_seconds=warmup_seconds, runs=runs, min_seconds=min_seconds,
                             window=window, window_seconds=window_seconds)
    say = progress or (lambda message: None)
    if ssh:
        from edgenet.benchmark.remote import bench_remote

        return bench_remote(ssh, target, float_model=float_model, data=data, limit=limit, settings=settings,
                            remote_python=remote_python, ssh_options=tuple(ssh_options), progress=say,
                            precision=precision)
    return _bench_here(target, float_model, data, limit, settings, say, precision)


def _bench_here(target, float_model, data, limit, settings: BenchSettings, say: Progress,
                precision: str | None = None) -> BenchResult:
    settings = replace(settings, threads=settings.effective_threads)   # 0 = all CPUs of this device
    resolved = resolve_target(target, float_model, precision)
    runtime = find_runtime()
    temperature_start, load_start = environment.cpu_temperature_c(), environment.load_average()
    notes: list[str] = []

    models: list[LoadedModel] = []
    for named_role, path in resolved.models:
        model = LoadedModel(path, named_role, settings, runtime)
        say(f"loaded {path.name} ({model.precision.value}): load {1e3 * model.load_s:.1f} ms, "
            f"init {1e3 * model.init_s:.1f} ms")
        if model.named_role is not None and model.named_role != model.role:
            article = "an" if model.named_role == INT8 else "a"
            notes.append(f"{path.name} holds a {model.precision.value} model, not {article} {model.named_role} one: "
                         f"it is benchmarked and labelled as {model.precision.value}")
        models.append(model)
    if len(models) == 2:
        _check_pair(*models)
    outputs = len(models[0]._runner.outputs)
    # a record that does not fit these models (files replaced since convert) joins nothing
    record = convert_record(resolved.models[0][1].parent)     # what convert recorded beside the models
    joined = tuple(j for j in recorded_joins(record) if j.first + j.count <= outputs)
    for j in joined:
        notes.append(f"outputs {j.first}..{j.first + j.count - 1} are the parts edgenet convert wrote output "
                     f"{j.name!r} as: joined back (axis {j.axis}) and judged as that one output")
        outputs -= j.count - 1
    if outputs > 1:
        notes.append(f"the models have {outputs} outputs: each gets a verdict (the worst is shown); top-1, "
                     "agreement and the plain SQNR are of the first")
    models.sort(key=lambda m: m.role != FLOAT)  # float first
    first = models[0]

    labels = read_labels(resolved.labels)
    bench_data, preprocess_source = None, None
    if data is None and resolved.eval_set is not None:
        data = held_out_set(resolved.eval_set, labels, notes)
        say(f"loading data: {resolved.eval_set.name} (held out by edgenet convert)")
    elif data is None:
        notes.append("no --data and no eval_set.npz beside the models: latency only (no agreement or SQNR)")
    if data is not None:
        say(f"loading data: {data if isinstance(data, (str, Path)) else 'samples given as arrays'}")
        bench_data, preprocess_source = _load_data(data, resolved.preprocess, first, limit, notes)
        for model in models:
            check_samples(bench_data.x, model.input.shape, model.path.name)
        check_finite_samples(bench_data.x, bench_data.source)
        num_classes = int(np.prod(first.output.shape[1:]))
        if labels and len(labels) != num_classes:
            notes.append(f"labels.txt has {len(labels)} names but the model has {num_classes} outputs; "
                         "labels ignored")
            labels = None
        try:
            bench_data = align_labels(bench_data, labels, num_classes)
        except DataError as exc:   # labels of other classes: top-1 would mean nothing
            notes.append(f"top-1/top-5 skipped: {exc}; agreement and SQNR only")
            bench_data = replace(bench_data, labels=None)
        if bench_data.skipped:
            notes.append(f"{bench_data.skipped} image(s) in {bench_data.source} were skipped: "
                         f"{bench_data.skipped_detail or 'they could not be decoded'}")

    batch = first.input.shape[0] if len(first.input.shape) >= 2 else 1   # one invocation's examples
    if bench_data is not None and len(bench_data.x) < batch:
        raise DataError(f"{bench_data.source}: {len(bench_data.x)} example(s) do not fill the model's batch of {batch}")
    sample = (bench_data.x[:batch] if bench_data is not None
              else np.random.default_rng(0).uniform(-1, 1, (batch, *first.input.shape[1:])).astype(np.float32))
    for model in models:
        model.prepare(sample)

    warmups = {}
    for model in models:
        say(f"warming up {model.role}: >= {settings.warmup} runs and >= {settings.warmup_seconds:g} s")
        warmups[model.role] = warm_up(model.invoke, settings.warmup, settings.warmup_seconds)
    estimates = {m.role: (float(np.median(warmups[m.role])) / 1e9 if len(warmups[m.role])
                          else m.first_inference_s or 0.0) for m in models}

    say(f"measuring {' and '.join(m.role for m in models)} in interleaved windows: >= {settings.runs} runs "
        f"and >= {settings.min_seconds:g} s each")
    t0 = time.perf_counter()
    try:
        times_ns, windows = measure_interleaved({m.role: m.invoke for m in models}, estimates, settings)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"inference failed while measuring ({exc})") from exc
    say(f"measured {len(windows)} windows in {time.perf_counter() - t0:.1f} s")

    reports = tuple(_model_report(m, warmups[m.role], times_ns[m.role]) for m in models)
    by_role = {r.role: r for r in reports}
    gain = None
    if FLOAT in by_role and INT8 in by_role:
        gain = speedup(by_role[FLOAT].latency, by_role[INT8].latency,
                       [w / 1e6 for w in split_windows(times_ns[FLOAT], windows, FLOAT)],
                       [w / 1e6 for w in split_windows(times_ns[INT8], windows, INT8)])

    accuracy = None
    if bench_data is not None:
        t0 = time.perf_counter()
        outputs = {m.role: _outputs_with_progress(m, bench_data.x, say) for m in models}
        if len(models) == 2:   # the int8 model's outputs in the float model's order
            outputs[models[1].role] = [outputs[models[1].role][j] for j in output_order(first, models[1])]
        kinds, thresholds, untrained = recorded_verdict_settings(record)   # convert's
        accuracy = compare(outputs, bench_data.labels, bench_data.source, time.perf_counter() - t0,
                           indices=first.index_outputs, kinds=kinds, thresholds=thresholds, untrained=untrained,
                           joins=joined, names=recorded_output_names(record))

    env = environment.collect(runtime.name, runtime.version, temperature_start, load_start)
    notes += _environment_notes(env, settings, models)
    noise = noise_reasons(reports, gain, env.load_average_1m, env.load_average_1m_end, env.cpus_usable,
                          settings.effective_threads)
    int8 = next((m for m in models if m.role == INT8), None)
    if gain is not None and gain.p50 < 1.1 and env.cpu_features and int8.precision is Precision.INT8 and \
            not set(env.cpu_features) & set(environment.INT8_DOT_PRODUCT):
        notes.append("int8 is not much faster here: this CPU has no int8 dot-product instructions "
                     "(x86 VNNI, ARM dotprod/i8mm), so int8 mainly saves memory and bandwidth")
    return BenchResult(
        edgenet_version=env.edgenet, created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=env, settings=settings, models=reports, windows=windows, speedup=gain,
        accuracy=accuracy, notes=tuple(notes), preprocess=preprocess_source, noise=tuple(noise),
        labels=str(resolved.labels) if bench_data is not None and labels else None,
    )


def held_out_set(path: Path, labels: tuple[str, ...] | None, notes: list[str]):
    """The examples `edgenet convert` held out and wrote beside the models (eval_set.npz): already
    preprocessed, with labels when they are the model's classes. numpy only."""
    from edgenet.benchmark.data import BenchData

    import zipfile

    from edgenet.converters.model_data import check_declared_size

    try:
        check_declared_size(path, path, limits.MAX_DATA_BYTES)
        with np.load(path, allow_pickle=False) as npz:
            arrays = [k for k in npz.files if k.startswith(("input:", "pixels:"))]
            if len(arrays) != 1:
                raise DataError(f"{path}: holds {len(arrays)} input arrays; the benchmark runs one-input models")
            x = npz[arrays[0]]
            # numbers only: numpy would parse numeric strings and drop imaginary parts without a word
            for name, dtype in ((arrays[0], x.dtype), *((k, npz[k].dtype) for k in ("mean", "std") if k in npz.files)):
                if dtype.kind not in "fiu":
                    raise DataError(f"{path}: its array {name!r} holds {dtype} values, not real numbers: "
                                    "write it again with edgenet convert")
            if arrays[0].startswith("pixels:"):     # stored as the pixels they were normalized from
                mean, std = npz["mean"].astype(np.float32), npz["std"].astype(np.float32)
                if x.dtype != np.uint8 or x.ndim != 4 or mean.shape != (x.shape[-1],) or std.shape != mean.shape \
                        or not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                    raise DataError(f"{path}: its pixels, mean and std do not belong together "
                                    f"(pixels {x.dtype} {tuple(x.shape)}, mean {tuple(mean.shape)}, std {tuple(std.shape)}; "
                                    "std must be > 0): write it again with edgenet convert")
                x = (x.astype(np.float32) / 255.0 - mean) / std
            y = npz["labels"] if "labels" in npz.files else None
            if y is not None and (y.dtype.kind not in "iu" or y.shape != (len(x),)):
                raise DataError(f"{path}: labels must be {len(x)} integers, got {y.dtype} {tuple(y.shape)}")
            source = str(npz["source"])[:200] if "source" in npz.files else ""
            synthetic = bool(npz["synthetic"]) if "synthetic" in npz.files else False
    except DataError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable held-out set ({str(exc).splitlines()[0][:120]})") from exc
    what = f"{len(x)} held-out examples from {source or 'the conversion'}"
    notes.append(f"accuracy on {what} (eval_set.npz, written by edgenet convert)"
                 + ("; the images are synthetic" if synthetic else "")
                 + ("" if y is not None else "; no labels: agreement and SQNR only"))
    return BenchData(np.asarray(x, dtype=np.float32), None if y is None else np.asarray(y, dtype=np.int64),
                     labels if y is not None else None, f"{path.name} ({source})" if source else path.name)


def _load_data(data, preprocess_path: Path | None, model: LoadedModel, limit, notes: list[str]):
    """The benchmark data and where its preprocessing came from (None for ready arrays).

    Before any image is decoded: the preprocessing must produce exactly the model's input (a
    preprocess.json asking for 100,000 x 100,000 pixels is refused, not allocated), and the samples
    must fit in :data:`edgenet.limits.MAX_DATA_BYTES`.
    """
    if isinstance(data, (str, Path)):
        if preprocess_path is not None:
            preprocess, source = Preprocess.load(preprocess_path), str(preprocess_path)
        else:
            preprocess, source = default_preprocess(model.input.shape), "default"
            notes.append("no preprocess.json beside the model: images scaled to [-1, 1] "
                         "((x/255 - 0.5) / 0.5); accuracy is only right if the model was trained that way")
        want = tuple(model.input.shape[1:])
        got = (preprocess.height, preprocess.width, preprocess.channels)
        if got != want:
            hint = (" (check the color mode in preprocess.json)" if got[:2] == want[:2]
                    else ": they do not belong together")
            raise DataError(f"{source}: preprocessing makes {got[0]}x{got[1]}x{got[2]} inputs but "
                            f"{model.path.name} takes {'x'.join(map(str, want))}{hint}")
        check_data_budget(data, want, limit)
        with np.errstate(all="ignore"):        # a std of 0 gives inf: check_finite_samples says so, once
            return load_bench_data(data, preprocess, limit), source
    return load_bench_data(data, None, limit), None


def _outputs_with_progress(model: LoadedModel, x: np.ndarray, say: Progress, chunk: int = 250) -> list[np.ndarray]:
    """Every output of the model on every sample, saying how far it got every ``chunk`` samples.
    ModelError if any output is NaN or infinite (agreement and SQNR would be meaningless)."""
    parts = []
    for start in range(0, len(x), chunk):
        parts.append(model.all_outputs(x[start:start + chunk]))
        say(f"accuracy, {model.precision.value}: {min(start + chunk, len(x))}/{len(x)} samples")
    outs = [np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))]
    for name, out in zip(model.output_names, outs):
        bad = int(np.count_nonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1)))
        if bad:
            where = "" if len(outs) == 1 else f" (output {name!r})"
            raise ModelError(f"{model.path.name} ({model.precision.value}) gave NaN or infinite outputs{where} on "
                             f"{bad} of {len(out)} samples: accuracy, agreement and SQNR would be meaningless")
    return outs


def _check_pair(a: LoadedModel, b: LoadedModel) -> None:
    """UsageError unless the two models are different files, one float and one quantized, of the same network."""
    if a.sha256 == b.sha256:
        raise UsageError(f"{a.path} and {b.path} are the same model (sha256 {a.sha256[:16]}...): "
                         "nothing to compare; give the int8 model as TARGET and the float one with --float")
    if a.role == b.role:
        kind = "quantized" if a.role == INT8 else "float"
        raise UsageError(f"both models are {kind} ({a.path.name}: {a.precision.value}, {b.path.name}: "
                         f"{b.precision.value}): the benchmark compares a float model with its quantized twin")
    check_compatible(*sorted((a, b), key=lambda m: m.role != FLOAT))


def _model_report(model: LoadedModel, warmup_ns: np.ndarray, times_ns: np.ndarray) -> ModelReport:
    times_ms = times_ns / 1e6
    return ModelReport(
        role=model.role, precision=model.precision.value, path=str(model.path), sha256=model.sha256,
        size_bytes=model.size_bytes,
        input=model.input, output=model.output, delegated=model.delegated,
        load_ms=1e3 * model.load_s, init_ms=1e3 * model.init_s,
        first_inference_ms=1e3 * (model.first_inference_s or 0.0),
        rss_after_load_bytes=model.rss_after_load_bytes,
        warmup_ms=tuple(float(v) for v in warmup_ns / 1e6),
        latency=LatencyStats.of(times_ms), times_ms=tuple(float(v) for v in times_ms),
    )


def _environment_notes(env, settings: BenchSettings, models: list[LoadedModel]) -> list[str]:
    notes = []
    if env.runtime != "ai-edge-litert":
        notes.append(f"runtime is {env.runtime} {env.runtime_version} (ai-edge-litert not installed)")
    if env.governor and env.governor != "performance":
        notes.append(f"CPU governor is {env.governor!r}: clocks may change during the run "
                     "('performance' gives steadier numbers)")
    if (env.temperature_c_start is not None and env.temperature_c_end is not None
            and env.temperature_c_end - env.temperature_c_start >= 10):
        notes.append(f"the CPU warmed from {env.temperature_c_start} to {env.temperature_c_end} C during "
                     "the run: check for thermal throttling")
    if settings.effective_threads > env.cpus_usable:
        notes.append(f"{settings.effective_threads} threads on {env.cpus_usable} usable CPUs")
    kind = settings.delegate.kind
    for model in models:
        if kind is DelegateKind.EDGETPU and not model.delegated:
            notes.append(f"the Edge TPU took no part of {model.path.name}: compile it with edgetpu_compiler")
        elif kind is DelegateKind.XNNPACK and not model.delegated:
            notes.append(f"XNNPACK took no part of {model.path.name}: it ran on the reference kernels")
    return notes
