"""How much of each output a quantized model keeps, and the verdict: :mod:`edgenet.verdicts`.

Kept importable as ``edgenet.quality`` (callers: converters.validate, converters.verdict_stage,
converters.mixed_precision, edgenet.benchmark, edgenet.report). Numpy only.
"""
from edgenet.verdicts import *  # noqa: F401,F403
from edgenet.verdicts import __all__  # noqa: F401
from edgenet.verdicts.base import _list  # noqa: F401
from edgenet.verdicts.generic import _static  # noqa: F401
