"""`--fit`: the largest candidate (by mult-adds) whose measured TFLM arena and model size fit."""
from __future__ import annotations

import pytest

import _tiny_tflite as tiny
from edgenet.errors import TargetError
from edgenet.targets import load_target
from edgenet.targets.fit import FitStatus, fit_model

pytestmark = pytest.mark.mcu
pytest.importorskip("tflite_micro")

ALPHAS, RESOLUTIONS = (0.25, 0.5, 1.0), (32, 48, 64)


def _width(alpha: float) -> int:
    return int(16 * alpha)


def _mult_adds(alpha: float, res: int) -> int:
    """Mult-adds of the tiny MobileNet-like model: conv 3x3 s2, depthwise 3x3, 1x1 to 2w, fc to 10."""
    w, hw = _width(alpha), (res // 2) ** 2
    return hw * (27 * w + 9 * w + 2 * w * w) + 2 * w * 10


def _profile(tmp_path, ram: int, flash: int):
    path = tmp_path / "small_board.toml"
    path.write_text('name = "small-board"\ndescription = "tiny budgets"\ndevice = "MCU"\nruntime = "tflm"\n'
                    f'ram_bytes = {ram}\nflash_bytes = {flash}\nchecks = ["tflm"]\n')
    return load_target(path)


def test_fit_picks_the_largest_candidate_that_fits_and_skips_dominated_ones(tmp_path):
    built = []

    def build(alpha, res):
        built.append((alpha, res))
        return tiny.mobilenet_like(_width(alpha), res)

    # budgets from measurements of these models: alpha 1.0 (width 16) is 6.5 KB > 6000 B flash;
    # arenas: (0.5, 64) ~35 KB > 25 KB, (0.5, 48) ~21 KB fits.
    profile = _profile(tmp_path, ram=25_000, flash=6_000)
    candidates = [(a, r) for a in ALPHAS for r in RESOLUTIONS]
    result = fit_model(profile, candidates, build, _mult_adds)
    assert (result.chosen.alpha, result.chosen.resolution) == (0.5, 48)
    assert result.chosen.arena_bytes <= profile.ram_budget and result.chosen.model_bytes <= profile.flash_budget
    assert built == [(1.0, 64), (0.5, 64), (0.5, 48)] and result.builds == 3
    by_key = {(c.alpha, c.resolution): c for c in result.candidates}
    assert by_key[(1.0, 64)].status is FitStatus.TOO_BIG and by_key[(1.0, 64)].over_flash
    assert by_key[(0.5, 64)].over_ram and not by_key[(0.5, 64)].over_flash
    assert by_key[(1.0, 48)].status is FitStatus.DOMINATED and "exceeded flash" in by_key[(1.0, 48)].reason
    assert by_key[(0.25, 32)].status is FitStatus.NOT_NEEDED
    macs = [c.mult_adds for c in result.candidates]
    assert macs == sorted(macs, reverse=True)
    text = "\n".join(result.report_lines())
    assert "picked   alpha 0.5 @ 48 px" in text and "rejected alpha 0.5 @ 64 px" in text and "> RAM budget" in text
    assert result.to_dict()["chosen"]["status"] == "fits"


def test_nothing_fits_raises_target_error_with_the_result(tmp_path):
    profile = _profile(tmp_path, ram=5_000, flash=100_000)
    with pytest.raises(TargetError) as info:
        fit_model(profile, [(0.25, 32), (0.25, 48)], lambda a, r: tiny.mobilenet_like(_width(a), r), _mult_adds)
    message = str(info.value)
    assert message.startswith("no candidate fits small-board: the smallest tried, alpha 0.25 @ 32 px, arena")
    assert info.value.result.chosen is None and info.value.result.builds == 2
