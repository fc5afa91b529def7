"""JSON from outside edgenet (an option's value, a file in a folder the user gives) read with limits.

Python's ``json`` accepts what edgenet cannot use and fails in ways that are not one line: nesting
200,000 deep ends in RecursionError, ``1e999`` becomes ``inf``, ``NaN``/``Infinity`` are accepted,
a 5,000-digit integer raises a ValueError about Python's int-to-str limit (or, below it, becomes a
number no array holds). :func:`loads` and :func:`load_file` are the one place edgenet reads such
JSON; every failure is one error of the caller's class (DataError by default) naming ``what``:

* at most ``max_bytes`` of text (default 16 MiB), UTF-8;
* at most ``max_depth`` nested arrays/objects (default 64);
* numbers finite (no NaN, Infinity, or a float that overflows to infinity);
* integers within a signed 64-bit range (what numpy and TFLite hold).

Nothing here imports numpy, torch or TensorFlow (``edgenet bench`` reads folders with it).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from edgenet.errors import DataError, EdgenetError

MAX_BYTES = 16 << 20
MAX_DEPTH = 64
INT_LIMIT = 1 << 63
_INT_DIGITS = 20      # more digits than any int64 (with a sign) has: refused before int() is called


class _Refused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most 64-bit integers)")
    value = int(text)
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise _Refused(f"the integer {text} is out of the 64-bit range")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {text[:40]} is too large (it overflows to infinity)")
    return value


def _parse_constant(text: str):
    raise _Refused(f"{text} is not a number JSON allows (NaN and Infinity are refused)")


def _depth(obj: Any, limit: int) -> int:
    """The nesting depth of ``obj`` (0 for a scalar), walked without recursion; stops past ``limit``."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads(text: str | bytes, what: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
          error: type[EdgenetError] = DataError) -> Any:
    """Parse ``text`` (str, or UTF-8 bytes) as JSON within the limits of this module.

    ``what`` names the source in the message (``--preprocess``, ``/path/preprocess.json``).
    Raises ``error`` (one line) for anything refused or not JSON."""
    if len(text) > max_bytes:
        raise error(f"{what}: {len(text)} bytes of JSON (at most {max_bytes} are read)")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what}: not UTF-8 text (byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except _Refused as exc:
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: JSON nested too deep (at most {max_depth} levels)") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:     # anything else int()/float() refuse
        raise error(f"{what}: not valid JSON ({str(exc).splitlines()[0] if str(exc) else 'bad value'})") from None
    if _depth(obj, max_depth) > max_depth:
        raise error(f"{what}: JSON nested too deep (at most {max_depth} levels)")
    return obj


def load_file(path: str | os.PathLike, what: str | None = None, *, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH, error: type[EdgenetError] = DataError) -> Any:
    """:func:`loads` of the file at ``path``, reading at most ``max_bytes + 1`` bytes of it.
    Raises ``error`` for a file that cannot be read, too large or refused; FileNotFoundError passes
    through (a caller often treats a missing file differently)."""
    what = what or os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{what}: cannot be read ({exc.strerror or exc})") from None
    return loads(data, what, max_bytes=max_bytes, max_depth=max_depth, error=error)
