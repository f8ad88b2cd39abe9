"""The augmentation settings: presets, limits and the ``--augment``/``--aug-*`` flags.

What each augmentation does, and the code that does it on the training device, is in
:mod:`us8k_lib.augment`. This module holds only the settings and needs no torch, so that building
the command line (``python -m us8k_lib --help``) stays fast.

Used by notebook 7 (the presets), :class:`us8k_lib.recipe.TrainConfig` and the command line.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import Any

from us8k_lib.flags import number

#: The ``TrainConfig`` fields of the augmentations, in the order of their flags (the augmenter
#: applies speed first, then shift, mask, noise and mixup).
AUGMENT_FIELDS = ("aug_shift", "aug_speed", "aug_mask", "aug_noise", "aug_mixup")

#: Settings for ``--augment PRESET``. ``light`` only changes each clip itself (a shift of up to
#: 0.5 s, +-5 % speed, a mask of up to 0.1 s); ``strong`` adds background noise for half the
#: clips and mixup with b ~ Beta(0.2, 0.2) (the mixup paper's ImageNet value; Zhang et al.,
#: ICLR 2018) and widens the rest (speed +-20 %, about EnvNet-v2's random scale of 0.8-1.25).
#: Not tuned: notebook 7 and ``crossval --augment`` measure them.
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "none": {"aug_shift": 0.0, "aug_speed": 0.0, "aug_mask": 0.0, "aug_noise": 0.0, "aug_mixup": 0.0},
    "light": {"aug_shift": 0.5, "aug_speed": 0.05, "aug_mask": 0.1, "aug_noise": 0.0, "aug_mixup": 0.0},
    "strong": {"aug_shift": 2.0, "aug_speed": 0.2, "aug_mask": 0.25, "aug_noise": 0.5, "aug_mixup": 0.2},
}

#: Range (dB) of the signal-to-noise ratio a background-noise clip is mixed in at: the clip
#: stays at least 5 dB above its background, and at 20 dB the background is faint but audible.
NOISE_SNR_DB = (5.0, 20.0)

#: Number of speed factors per batch (evenly spaced over ``[1 - aug_speed, 1 + aug_speed]``):
#: one resampling call each, and a divisor of the usual batch sizes, so they are used equally.
SPEED_STEPS = 8

#: Speed factors are multiples of 1 / SPEED_RESOLUTION: a factor n/100 resamples from n to 100
#: "Hz", which keeps the resampling filter short (at most about 200 taps per output sample).
SPEED_RESOLUTION = 100

#: Largest allowed ``aug_speed``: beyond +-50 % most sounds are no longer the same class.
MAX_SPEED = 0.5

#: The window every clip is formatted to (seconds): the most a shift or a mask can span
#: (``audio.TARGET_LENGTH / audio.TARGET_SR``, written out so this module needs no torch).
WINDOW_SECONDS = 4.0

_FIELD_HELP = {
    "aug_shift": ("SECONDS", "max random time shift either way; short events move inside the 4 s window and "
                  "stay whole, full clips are rotated"),
    "aug_speed": ("S", "max relative speed change: factor from [1-S, 1+S] by resampling (duration / factor, "
                  f"pitch x factor), then pad/crop; {SPEED_STEPS} factors per batch, 0.01 steps"),
    "aug_mask": ("SECONDS", "max length of one zeroed stretch per clip (at most half its active part)"),
    "aug_noise": ("P", "probability that a clip gets another clip of the batch mixed in as background noise "
                  f"at {NOISE_SNR_DB[0]:g}-{NOISE_SNR_DB[1]:g} dB SNR (label unchanged)"),
    "aug_mixup": ("A", "mixup: mix every clip with another in ratio max(b, 1-b), b ~ Beta(A, A), labels mixed "
                  "in the same ratio (0.2 mild, 1 uniform over [0.5, 1])"),
}


#: Largest allowed value of each augmentation field (the smallest is 0, off).
AUGMENT_LIMITS: dict[str, float] = {"aug_shift": WINDOW_SECONDS, "aug_speed": MAX_SPEED,
                                    "aug_mask": WINDOW_SECONDS / 2, "aug_noise": 1.0, "aug_mixup": 100.0}


def _problems(values: Mapping[str, Any]) -> list[str]:
    limits = AUGMENT_LIMITS
    problems = []
    for name in AUGMENT_FIELDS:
        v = values.get(name, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            problems.append(f"{name} must be a number, got {v!r}")
        elif not 0 <= v <= limits[name]:
            problems.append(f"{name} must be in [0, {limits[name]:g}], got {v:g}")
    speed = values.get("aug_speed", 0.0)
    if isinstance(speed, (int, float)) and 0 < speed < 1 / SPEED_RESOLUTION:
        problems.append(f"aug_speed must be 0 or at least {1 / SPEED_RESOLUTION:g} (factors are multiples of "
                        f"{1 / SPEED_RESOLUTION:g}), got {speed:g}")
    return problems


def validate_augment_fields(config: Any) -> list[str]:
    """Return the problems with ``config``'s ``aug_*`` fields (empty when all are valid).

    Ranges: ``aug_shift`` 0-4 s (the window), ``aug_speed`` 0 or 0.01-0.5, ``aug_mask`` 0-2 s,
    ``aug_noise`` 0-1 (a probability), ``aug_mixup`` 0-100. Used by ``TrainConfig``.
    """
    return _problems({name: getattr(config, name, 0.0) for name in AUGMENT_FIELDS})


def _field_type(name: str) -> Callable[[str], float]:
    """Return the argparse type of ``--aug-*`` flag ``name``: a number in the field's range."""
    in_range = number(high=AUGMENT_LIMITS[name])

    def parse(text: str) -> float:
        value = in_range(text)
        problems = _problems({name: value})
        if problems:  # aug_speed's gap between 0 and the first factor step
            raise argparse.ArgumentTypeError("expected " + problems[0].removeprefix(f"{name} must be "))
        return value

    parse.__name__ = "number"
    return parse


def add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--augment PRESET`` and one ``--aug-*`` flag per augmentation to a train/crossval parser.

    All default to off (0). A preset sets all five; an explicit ``--aug-*`` flag wins over it.
    Used by ``us8k_lib.cli``.
    """
    group = parser.add_argument_group(
        "augmentation of training batches (on the training device; evaluation never augments; default: all off)")
    presets = "; ".join(f"{name}: " + (", ".join(f"{k.removeprefix('aug_')} {v:g}" for k, v in p.items() if v) or "off")
                        for name, p in AUGMENT_PRESETS.items())
    group.add_argument("--augment", choices=list(AUGMENT_PRESETS), default=None, metavar="PRESET",
                       help=f"set every --aug-* value from a preset ({presets})")
    for name in AUGMENT_FIELDS:
        metavar, text = _FIELD_HELP[name]
        group.add_argument("--" + name.replace("_", "-"), type=_field_type(name), default=None, metavar=metavar,
                           help=f"{text} (default 0 = off, or the preset's value)")


def augment_overrides(args: argparse.Namespace) -> dict[str, float]:
    """Return the ``TrainConfig`` fields the parsed flags set: the preset's values first, then
    each explicit ``--aug-*`` flag; empty when none was given (so a resumed run keeps its own).
    Used by ``us8k_lib.train`` and ``us8k_lib.crossval``."""
    preset = getattr(args, "augment", None)
    overrides = dict(AUGMENT_PRESETS[preset]) if preset else {}
    for name in AUGMENT_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = float(value)
    return overrides
