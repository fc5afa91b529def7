"""--fit: the largest zoo model (alpha x resolution) that fits a target's budgets, found before the
conversion proper."""
from __future__ import annotations

from edgenet.config import ConvertOptions
from edgenet.errors import UsageError


def fit_to_target(opts: ConvertOptions, profile) -> tuple[ConvertOptions, object]:
    """Search the zoo model's alpha x resolution grid for the largest model that fits ``profile``
    (TFLite Micro arena against RAM, model size against flash); return the options to convert it.

    Each candidate is an ``edgenet sweep`` cell (converted and checked for the target as a sweep
    does), one at a time in this process or EDGENET_FIT_WORKERS at once on the sweep's process
    pool; each is logged to the ``edgenet.fit`` logger as it is decided."""
    from dataclasses import replace

    from edgenet.sweep.fitting import CellMeasure, log_candidate
    from edgenet.zoo import info, validate_hparams
    from edgenet.targets.fit import fit_model

    from edgenet.converters.sources import SourceKind, source_kind

    if source_kind(opts.model.source) is not SourceKind.ZOO:
        raise UsageError("--fit searches a zoo model's width and resolution; it cannot resize a given model")

    def mult_adds(alpha: float, resolution: int) -> int:
        return info(opts.model.source, alpha=alpha, resolution=resolution, num_classes=opts.model.num_classes,
                    in_channels=opts.model.in_channels).mult_adds

    for a in opts.fit_alphas:
        for r in opts.fit_resolutions:
            validate_hparams(a, r, opts.model.num_classes, opts.model.in_channels)
    grid = [(a, r) for a in opts.fit_alphas for r in opts.fit_resolutions]
    measure = CellMeasure(opts, profile)
    try:
        result = fit_model(profile, grid, None, mult_adds, measure=measure, batch=measure.workers,
                           progress=log_candidate)
    finally:
        measure.close()
    chosen = result.chosen
    spec = replace(opts.model, alpha=chosen.alpha, resolution=chosen.resolution)
    return replace(opts, model=spec, fit=False), result
