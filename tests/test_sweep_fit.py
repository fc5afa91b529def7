"""`--fit` on the sweep's machinery: batches of candidates give the same answer as one at a time,
each candidate is reported as it is decided, and sweep records map to fit candidates."""
from __future__ import annotations

import pytest

import _tiny_tflite as tiny
from edgenet.targets.fit import FitStatus, fit_model

pytestmark = pytest.mark.mcu
pytest.importorskip("tflite_micro")

from test_targets_fit import ALPHAS, RESOLUTIONS, _mult_adds, _profile, _width  # noqa: E402,F401 - one definition


@pytest.mark.slow
@pytest.mark.parametrize("batch", [2, 3])
def test_batches_pick_what_one_at_a_time_picks_and_report_every_candidate(tmp_path, batch):
    from edgenet.targets.fit import _measure

    profile = _profile(tmp_path, ram=25_000, flash=6_000)
    candidates = [(a, r) for a in ALPHAS for r in RESOLUTIONS]
    build = lambda a, r: tiny.mobilenet_like(_width(a), r)  # noqa: E731
    one = fit_model(profile, candidates, build, _mult_adds)
    groups, told = [], []

    def measure(group):
        groups.append([(a, r) for a, r, _ in group])
        return [_measure(profile, a, r, m, build) for a, r, m in group]

    many = fit_model(profile, candidates, None, _mult_adds, measure=measure, batch=batch, progress=told.append)
    assert (many.chosen.alpha, many.chosen.resolution) == (one.chosen.alpha, one.chosen.resolution) == (0.5, 48)
    assert all(len(g) <= batch for g in groups) and max(len(g) for g in groups) == batch
    assert many.builds == sum(len(g) for g in groups) >= one.builds
    # every candidate measured or skipped is told once, in the order it is decided
    assert [(c.alpha, c.resolution) for c in told if c.status is not FitStatus.DOMINATED] == \
           [ar for g in groups for ar in g]
    statuses = {(c.alpha, c.resolution): c.status for c in many.candidates}
    assert statuses[(1.0, 48)] in (FitStatus.DOMINATED, FitStatus.TOO_BIG)
    text = "\n".join(many.report_lines())
    assert text.count("picked") == 1 and "picked   alpha 0.5 @ 48 px" in text


def test_sweep_records_become_fit_candidates(tmp_path):
    from edgenet.sweep.fitting import to_candidate

    profile = _profile(tmp_path, ram=1000, flash=5000)
    ok = to_candidate({"status": "ok", "arena_bytes": 900, "flash_bytes": 4000, "seconds": 1.5}, 0.5, 64, 10, profile)
    assert (ok.status, ok.arena_bytes, ok.model_bytes) == (FitStatus.FITS, 900, 4000)
    big = to_candidate({"status": "does_not_fit", "arena_bytes": 2000, "flash_bytes": 4000,
                        "error": "over RAM"}, 1.0, 64, 20, profile)
    assert big.status is FitStatus.TOO_BIG and big.over_ram and not big.over_flash and "> RAM budget" in big.reason
    runs_not = to_candidate({"status": "does_not_fit", "arena_bytes": None, "flash_bytes": 100,
                             "error": "no TFLite Micro kernel for ATAN2"}, 1.0, 32, 5, profile)
    assert runs_not.status is FitStatus.DOES_NOT_RUN and "kernel" in runs_not.reason
    failed = to_candidate({"status": "failed", "error": "export failed"}, 1.0, 32, 5, profile)
    assert failed.status is FitStatus.BUILD_FAILED and failed.reason == "build failed: export failed"
