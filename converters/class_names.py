"""Class names a user gives with ``--labels``: a labels file read and checked before any slow stage."""
from __future__ import annotations

from pathlib import Path

from edgenet.errors import DataError

MAX_LABELS = 100_000


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a labels file (--labels): UTF-8 text, one name per line, trailing blank lines
    ignored. DataError for a missing, unreadable or oversized file, a blank line among the names, or
    a control character in a name (labels.txt and the model metadata must hold one name a line)."""
    from edgenet import limits

    path = limits.regular_file(path, "labels file", DataError, limits.MAX_TEXT_BYTES)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: labels are not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read labels ({exc.strerror or exc})") from None
    names = [line.strip() for line in text.split("\n")]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"{path}: no class names in the labels file")
    if len(names) > MAX_LABELS:
        raise DataError(f"{path}: {len(names):,} class names; at most {MAX_LABELS:,}")
    for k, name in enumerate(names, 1):
        if not name:
            raise DataError(f"{path}: line {k} is blank; give one class name per line")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise DataError(f"{path}: line {k} holds a control character; give one class name per line")
    return tuple(names)
