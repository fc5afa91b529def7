"""Target profiles: one TOML file per device, validated into a frozen :class:`TargetProfile`.

``load_target("rpi")`` reads ``targets/rpi.toml``; ``load_target("path/to/board.toml")`` reads a
user's own profile. Per-target checks and packagers live beside the profiles in this package.
"""
from __future__ import annotations

from edgenet.targets.profile import TargetProfile, available_targets, load_target

__all__ = ["TargetProfile", "available_targets", "load_target"]
