"""Window arithmetic shared by Conv and the pools: ONNX pads/auto_pad -> TF 'SAME'/'VALID'/explicit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class WindowPads:
    """Per spatial dim: padding actually needed before/after (unused end padding trimmed), output size."""

    begin: tuple[int, ...]
    end: tuple[int, ...]
    out: tuple[int, ...]
    declared_end: tuple[int, ...]  # end padding as ONNX declares it (before trimming)

    def tf_padding(self, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int]) -> str | None:
        """'VALID' or 'SAME' when TF's padding gives exactly these windows; None if an explicit pad is needed."""
        if not any(self.begin) and not any(self.end):
            return "VALID"
        same = [same_pads(n, k, s, d) for n, k, s, d in zip(in_sizes, kernel, strides, dilations)]
        if all((b, e) == sp for b, e, sp in zip(self.begin, self.end, same)):
            return "SAME"
        return None


def same_pads(size: int, kernel: int, stride: int, dilation: int, lower: bool = False) -> tuple[int, int]:
    """TF/ONNX SAME padding (begin, end) for one dim; ``lower`` puts the odd pixel first (SAME_LOWER)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def window_pads(attrs_get, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int], ceil_mode: bool = False) -> WindowPads:
    """Resolve ONNX ``auto_pad``/``pads`` (read through ``attrs_get(name, default)``) into the padding
    each spatial dim really needs, ONNX output sizes included (floor or ceil mode)."""
    n = len(in_sizes)
    auto_pad = attrs_get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [same_pads(s, k, st, d, lower=auto_pad == "SAME_LOWER")
                 for s, k, st, d in zip(in_sizes, kernel, strides, dilations)]
        begin, end = [p[0] for p in pairs], [p[1] for p in pairs]
    elif auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = list(attrs_get("pads", None) or [0] * (2 * n))
        begin, end = pads[:n], pads[n:]
    outs, trimmed = [], []
    for axis, (size, k, s, d, b, e) in enumerate(zip(in_sizes, kernel, strides, dilations, begin, end)):
        effective = (k - 1) * d + 1
        span = size + b + e - effective
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s)
        elif ceil_mode:
            out = -(-span // s) + 1
            if (out - 1) * s >= size + b:  # the last window must start inside the input or left pad
                out -= 1
        else:
            out = span // s + 1
        if out < 1:   # ceil mode may still fit one window that overhangs the input; floor mode may not
            raise ValueError(f"its window of {effective} along spatial axis {axis} is larger than the padded input "
                             f"({size + b + e}): the input is too small for this node (use the input size the model "
                             "was made for, or a larger --input-shape)")
        outs.append(out)
        trimmed.append(max(0, (out - 1) * s + effective - size - b))
    return WindowPads(tuple(begin), tuple(trimmed), tuple(outs), tuple(end))
