"""The preprocessing of a model's image input: what the model records, else edgenet's default
``(x - 0.5) / 0.5``, changed by ``--preprocess FILE`` and ``--mean/--std/--channel-order/--resize``
(every source but checkpoints, which record theirs; :mod:`edgenet.converters.sources`)."""
from __future__ import annotations

from edgenet.config import PreprocessOptions, ResizeMode
from edgenet.converters.model_inputs import ModelInput
from edgenet.data.preprocess import ColorMode, Preprocess
from edgenet.errors import DataError, UsageError


def image_preprocess(image: ModelInput | None, options: PreprocessOptions, base: Preprocess | None = None
                     ) -> tuple[Preprocess | None, tuple[str, ...]]:
    """The Preprocess of ``image`` (None when the model has no image input), from ``base`` (what the
    model records; None: edgenet's default ``(x - 0.5) / 0.5``), then ``--preprocess FILE``, then
    ``--mean/--std/--channel-order/--resize``. Returns it and notes for the user.

    Height and width are always the model input's. Raises DataError for values that do not fit the
    input (a mean per channel, 1, 3 or 4 channels for images).
    """
    notes: list[str] = []
    if image is None:
        if options.given:
            raise UsageError(f"{', '.join(options.given)}: the model has no image input (a single rank-4 input "
                             "with 1, 3 or 4 channels) to preprocess")
        return None, ()
    _, channels, height, width = image.shape
    if channels not in (1, 3, 4):
        if options.given:
            raise UsageError(f"{', '.join(options.given)}: input {image.name!r} has {channels} channels; images have "
                             "1, 3 or 4 (pass its data with --calib FILE.npz)")
        return None, ()
    color = ColorMode.for_channels(channels)
    pre = base or Preprocess.default(height, channels, width)
    if base is None and not ({"--mean", "--std", "--preprocess"} & set(options.given)):
        notes.append("no --mean/--std given: images are normalized as (x - 0.5) / 0.5 (inputs in [-1, 1]); "
                     "pass the model's own, e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 for ImageNet "
                     "or --mean 0 --std 1 for inputs in [0, 1]")
    if options.file is not None:
        loaded = Preprocess.load(options.file)
        if loaded.channels != channels:
            raise DataError(f"--preprocess {options.file}: it is for {loaded.channels}-channel images; input "
                            f"{image.name!r} has {channels}")
        if (loaded.height, loaded.width) != (height, width):
            notes.append(f"--preprocess {options.file}: its size {loaded.height}x{loaded.width} is replaced by the "
                         f"model input's {height}x{width}")
        pre = loaded
    if (options.mean is None) != (options.std is None):
        given, other = ("--mean", "std") if options.std is None else ("--std", "mean")
        kept = pre.std if options.std is None else pre.mean
        origin = f"from --preprocess {options.file}" if options.file is not None else \
            ("the model's own" if base is not None else "edgenet's default")
        notes.append(f"{given} given without --{other}: {other} stays {list(kept)} ({origin}); give both if the model "
                     "was trained otherwise")
    mean = pre.mean if options.mean is None else _per_channel(options.mean, channels, "--mean")
    std = pre.std if options.std is None else _per_channel(options.std, channels, "--std")
    order = pre.channel_order if options.channel_order is None else options.channel_order.value.upper()
    resize = 0 if pre.resize == 0 or (pre.height, pre.width) != (height, width) else pre.resize
    if options.resize is ResizeMode.STRETCH:
        resize = 0
    elif options.resize is ResizeMode.CROP:
        resize = max(height, width)
    if options.resize_short is not None:
        resize = options.resize_short
    if order == "BGR" and channels != 3:
        raise UsageError(f"--channel-order bgr needs a 3-channel image input; {image.name!r} has {channels}")
    try:
        pre = Preprocess(height=height, width=width, color=color, resize=resize, mean=mean, std=std,
                         channel_order=order)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    return pre, tuple(notes)


def _per_channel(values: tuple[float, ...], channels: int, flag: str) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise UsageError(f"{flag} has {len(values)} values; give 1 or one per channel ({channels})")
    return tuple(values)
