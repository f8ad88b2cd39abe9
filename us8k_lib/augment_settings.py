"""The augmentation settings: presets and limits (the ``--augment``/``--aug-*`` flags are the command line's,
:mod:`us8k_lib.cli.training_flags`).

What each augmentation does, and the code that does it on the training device, is in
:mod:`us8k_lib.augment`. This module holds only the settings and needs no torch, so that building
the command line (``python -m us8k_lib --help``) stays fast.

Used by notebook 7 (the presets), :class:`us8k_lib.recipe.TrainConfig` and the command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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

#: Largest allowed value of each augmentation field (the smallest is 0, off).
AUGMENT_LIMITS: dict[str, float] = {"aug_shift": WINDOW_SECONDS, "aug_speed": MAX_SPEED,
                                    "aug_mask": WINDOW_SECONDS / 2, "aug_noise": 1.0, "aug_mixup": 100.0}


def augment_problems(values: Mapping[str, Any]) -> list[str]:
    """Return what is wrong with the ``aug_*`` values given (a mapping of field to value; empty when valid)."""
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
    return augment_problems({name: getattr(config, name, 0.0) for name in AUGMENT_FIELDS})
