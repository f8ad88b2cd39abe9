"""The training flags ``train`` and ``crossval`` share, and the config they build.

Each flag sets one :class:`us8k_lib.recipe.TrainConfig` field (or, ``--augment``, the five
augmentation fields at once); :func:`config_from_args` lays the flags over the preset over the
defaults and says where each value came from. Nothing here imports torch (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from us8k_lib.augment_settings import (
    AUGMENT_FIELDS,
    AUGMENT_LIMITS,
    AUGMENT_PRESETS,
    NOISE_SNR_DB,
    SPEED_STEPS,
    augment_problems,
)
from us8k_lib.cli import flags
from us8k_lib.errors import SettingsError
from us8k_lib.recipe import DATA_PATHS, LIMITS, OPTIMIZERS, SCHEDULERS, TrainConfig
from us8k_lib.settings import CHOICES, PRESETS, choose

#: ``--FLAG`` -> TrainConfig field, for the flags that set one field each.
_FLAGS = {"model": "model", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer",
          "weight_decay": "weight_decay", "scheduler": "scheduler", "seed": "seed", "workers": "workers",
          "width": "width", "val_fold": "val_fold", "device": "device", "amp": "amp", "data": "data",
          "compile": "compile"}


def _limited(name: str) -> Callable[[str], float]:
    """Return the argparse type of the flag of setting ``name``: a number within :data:`LIMITS`."""
    low, high = LIMITS[name]
    if isinstance(low, int):
        return flags.integer(low, int(high))
    return flags.number(low=low, high=high, low_open=name == "lr")


def add_training_arguments(p: argparse.ArgumentParser, *, several_models: bool = False) -> None:
    """Add the flags ``train`` and ``crossval`` share (each maps to a TrainConfig field), and ``--preset``.

    ``several_models``: ``--model`` may list models separated by commas (``crossval`` compares
    them). Used by ``us8k_lib.cli.parser``.
    """
    d = TrainConfig.__dataclass_fields__
    small = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in PRESETS["small"].items())
    p.add_argument("--preset", choices=CHOICES, default="auto",
                   help=f"sizes to start from: 'full' (the defaults, the recipe for the real data), 'small' (for the "
                        f"generated datasets: {small}), 'quick' (one epoch of small), or 'auto' (default: small on a "
                        "generated mini dataset or the bundled sample, full otherwise); flags win over it")
    p.add_argument("--model", type=flags.models(several=several_models), default=None,
                   help="m3, m5 (default), m11, m18, m34res (Dai et al. 2017, raw waveform) or logmel (log-mel CNN)"
                        + ("; several separated by commas (m5,logmel) are cross-validated over the same folds and "
                           "compared" if several_models else ""))
    p.add_argument("--epochs", type=_limited("epochs"), default=None, help=f"number of epochs (default "
                                                                           f"{d['epochs'].default})")
    p.add_argument("--batch-size", type=_limited("batch_size"), default=None,
                   help=f"batch size (default {d['batch_size'].default}); "
                        "under torchrun the global batch over all ranks")
    p.add_argument("--lr", type=_limited("lr"), default=None, help=f"peak learning rate (default {d['lr'].default:g})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="adamw (default: decoupled weight decay, none on biases and BatchNorm) or adam (the "
                        "tutorial's: L2 on every parameter)")
    p.add_argument("--weight-decay", type=_limited("weight_decay"), default=None,
                   help=f"weight decay (default {d['weight_decay'].default:g})")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="learning-rate schedule (default onecycle)")
    p.add_argument("--width", type=_limited("width"), default=None,
                   help="channels of the model's first stage (default: the paper's; small values for quick tests)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast where the hardware has it (default: off, fp32 with TF32 convolutions on CUDA)")
    p.add_argument("--data", choices=DATA_PATHS, default=None,
                   help="serve batches through a DataLoader ('loader') or from a copy of the cache in device "
                        "memory ('device'); 'auto' (default) keeps it on a GPU where it fits. Same results")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="train a torch.compile-d model (default: off; results change by float rounding only)")
    p.add_argument("--seed", type=_limited("seed"), default=None, help="random seed (default 0)")
    p.add_argument("--workers", type=_limited("workers"), default=None,
                   help="DataLoader workers (default: 0 on a CPU, up to 4 on a GPU); same results")
    p.add_argument("--device", type=flags.device, default=None,
                   help="'auto' (default: CUDA, else MPS, else CPU) or e.g. 'cpu'")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip clips that cannot be decoded, listing each one (default: stop with an error)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out that holds other settings or another dataset (default: "
                        "stop and say so; a finished run of the same settings is reported, not trained again)")
    add_augment_arguments(p)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """Return the :class:`TrainConfig` fields the parsed flags set (a flag left out is absent)."""
    values = {field: getattr(args, flag) for flag, field in _FLAGS.items() if getattr(args, flag, None) is not None}
    values.update(augment_overrides(args))
    return values


def config_from_args(args: argparse.Namespace, root: str | Path, *, base: TrainConfig | None = None,
                     **fixed: Any) -> tuple[TrainConfig, dict[str, str], str]:
    """Return ``(config, sources, note)`` for ``train``/``crossval``: flags over the preset over the defaults.

    With ``base`` (a resumed run's checkpoint config) the preset is not used: the flags must
    match it, and everything else continues as it was. ``fixed`` fields (e.g. ``test_fold``) are
    set as flags. ``note`` says which preset was used and why, for the run's log.

    Raises:
        SettingsError: the flags do not fit together, or (``base``) do not fit the checkpoint's
            settings (e.g. ``--val-fold`` one of its training folds): one line naming them.
    """
    given = {**flag_values(args), **fixed}
    if base is not None:
        sources = {**{f: "checkpoint" for f in base.to_dict()}, **{f: "flag" for f in given}}
        try:
            return dataclasses.replace(base, **given), sources, "resumed: the checkpoint's recipe"
        except ValueError as exc:
            raise SettingsError(
                f"--resume continues the checkpoint's settings (test fold {base.test_fold}, validation fold "
                f"{base.val_fold}, training folds {list(base.folds_to_train)}), and the flags given do not fit them: "
                f"{_problems(exc)}. Leave those flags out to continue the run as it was, or start a new run in "
                "another --out") from None
    chosen = choose(args.preset, root)  # the same table and rule as the notebooks' settings cells
    preset, why = chosen.name, chosen.why
    values = {**PRESETS[preset], **given}
    sources = {**{f: f"preset {preset}" for f in PRESETS[preset]}, **{f: "flag" for f in given}}
    note = f"preset {preset}: {why}" + ("" if preset != "full" else "; --preset small for small datasets")
    try:
        return TrainConfig(**values), sources, note
    except ValueError as exc:
        raise SettingsError(f"the flags given do not fit together: {_problems(exc)}") from None


def _problems(exc: ValueError) -> str:
    """TrainConfig's list of problems, without its ``invalid TrainConfig:`` lead."""
    return str(exc).removeprefix("invalid TrainConfig: ")


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


def _field_type(name: str) -> Callable[[str], float]:
    """Return the argparse type of ``--aug-*`` flag ``name``: a number in the field's range."""
    in_range = flags.number(high=AUGMENT_LIMITS[name])

    def parse(text: str) -> float:
        value = in_range(text)
        problems = augment_problems({name: value})
        if problems:  # aug_speed's gap between 0 and the first factor step
            raise argparse.ArgumentTypeError("expected " + problems[0].removeprefix(f"{name} must be "))
        return value

    parse.__name__ = "number"
    return parse


def add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--augment PRESET`` and one ``--aug-*`` flag per augmentation to a train/crossval parser.

    All default to off (0). A preset sets all five; an explicit ``--aug-*`` flag wins over it.
    Used by ``us8k_lib.cli.parser``.
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
