"""The recipe: what decides a training run's result, its defaults for the real UrbanSound8K, and where
each value of a run came from.

:class:`TrainConfig`'s defaults are the recipe for the user with the real data (8 732 clips, about
7 000 training clips per fold) and one GPU; docs/recipe.md gives the reason and the source of each.
The generated mini datasets (a few hundred clips) and the bundled 20-clip sample are another
regime: at batch 128 an epoch of the mini dataset is three optimizer steps. The sets of sizes for
each regime (``small``, ``full``, ``quick``) are :mod:`us8k_lib.settings`' table, which the
commands' ``--preset`` and the notebooks' settings cells read. Every run's first line says which
value came from where (:func:`recipe_line`).

Building the command line's parser imports no torch (a test checks it), so ``--help`` answers in a
fraction of a second; checking a config, and the ``--model`` and ``--device`` flags when given,
import :mod:`us8k_lib.model` or torch.

Used by notebooks 5-8 (``train.TrainConfig``) and the ``train`` and ``crossval`` commands.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from us8k_lib.augment_settings import AUGMENT_FIELDS, validate_augment_fields
from us8k_lib.errors import setting
from us8k_lib.folds import DEFAULT_TEST_FOLD, fold_problems, training_folds

SCHEDULERS = ("onecycle", "step", "cosine", "constant")
#: The range of each numeric setting (``lr`` excludes its low end): the one place they are written,
#: for :class:`TrainConfig` and the command line's flags alike. Beyond them a run cannot work: a
#: batch above 65 536 clips is over seven times the whole dataset, a learning rate or a weight decay
#: above 10 only diverges, numpy's generators take seeds below 2**32, and a width above 4 096
#: channels (32 times the paper's M5) would not fit any GPU.
LIMITS: dict[str, tuple[float, float]] = {
    "epochs": (1, 100_000), "batch_size": (1, 65_536), "lr": (0.0, 10.0), "weight_decay": (0.0, 10.0),
    "seed": (0, 2**32 - 1), "width": (1, 4096), "workers": (0, 256), "step_size": (1, 100_000),
    "gamma": (0.0, 1.0),
}
OPTIMIZERS = ("adamw", "adam")
DATA_PATHS = ("auto", "loader", "device")


def limit_problem(name: str, value: Any) -> str | None:
    """Return what is wrong with ``value`` for the numeric setting ``name`` (:data:`LIMITS`), or None
    (None is allowed for the settings whose default is None: ``width``, ``workers``). Used by
    :class:`TrainConfig` and the command line's flags."""
    low, high = LIMITS[name]
    if value is None and name in ("width", "workers"):
        return None
    integral = isinstance(low, int)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and not float(value).is_integer()):
        return f"{setting(name)} must be {'an integer' if integral else 'a number'}, got {value!r}"
    below = value <= low if name == "lr" else value < low
    if not math.isfinite(value) or below or value > high:
        def words(v: float) -> str:
            return str(v) if integral else f"{v:g}"

        return (f"{setting(name)} must be {'>' if name == 'lr' else '>='} {words(low)} and <= {words(high)}, "
                f"got {words(value)}")
    return None


@dataclass
class TrainConfig:
    """Everything that decides a training run's result. The defaults are the recipe for the real data.

    Attributes:
        model: which network: ``"m3"``, ``"m5"``, ``"m11"``, ``"m18"``, ``"m34res"`` (Dai et al.
            2017, raw waveform) or ``"logmel"`` (a log-mel spectrogram front end and a small 2-D
            CNN); see :func:`us8k_lib.model.build_model`.
        epochs: passes over the training folds.
        batch_size: clips per optimizer step (under torchrun DDP: over all ranks together).
        lr: peak learning rate (``onecycle``/``cosine``) or starting learning rate (``step``,
            ``constant``); docs/recipe.md says why 1e-3 and what it was measured against.
        optimizer: ``"adamw"``: Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019)
            on the convolution and linear weights only, none on biases and BatchNorm parameters
            (as nanoGPT's ``configure_optimizers`` and timm's parameter groups do); ``"adam"``:
            the original tutorial's Adam with an L2 penalty added to every parameter's gradient.
        weight_decay: AdamW's decoupled decay per step (times the learning rate), or Adam's L2
            coefficient; 0.01 is PyTorch's AdamW default (docs/recipe.md compares it).
        scheduler: ``"onecycle"`` (warm up for a quarter of the steps, then cosine decay, stepped
            every batch), ``"cosine"`` (every batch), ``"step"`` (multiply by ``gamma`` every
            ``step_size`` epochs, stepped after each epoch, as the tutorial meant to), ``"constant"``.
        step_size, gamma: the ``step`` schedule's period (epochs) and factor (the tutorial's 20, 0.1).
        seed: seeds the weights, the order of every epoch and the augmentation.
        amp: bf16 autocast where the hardware runs it natively (CUDA with bf16, CPUs with
            AVX512-BF16/AMX). Off by default: it was not faster than fp32 with TF32 convolutions
            for most of the family on a GPU (the figures are in docs/performance.md).
        workers: DataLoader worker processes; None: 0 on a CPU, up to 4 on a GPU. Does not change
            the numbers (tested).
        data: ``"auto"``, ``"loader"`` or ``"device"``: serve batches from the cache file through
            a DataLoader, or from a copy of the cache in the device's memory
            (:mod:`us8k_lib.engine.batches`); auto keeps the copy on a GPU where it fits. Does not
            change the numbers (tested).
        compile: train a ``torch.compile``-d model (fused kernels: fewer launches on a GPU). The
            numbers change by float rounding only. Off by default until measured on a GPU.
        test_fold: the held-out fold (an official fold), never used to choose anything.
        val_fold: a fold taken out of the training folds to choose the epoch: the run keeps the
            weights of the epoch with the best validation accuracy (``best.pt``) and reports the
            test fold at that epoch (and at the last). None: the last epoch is reported.
        train_folds: folds to train on; None means every fold except ``test_fold`` and ``val_fold``.
        width: channels of the model's first stage; None is the paper's (small values are for
            quick tests). The same name as ``ModelConfig.width`` and ``--width``.
        normalize: scale each clip to unit RMS inside the model (see :class:`us8k_lib.model.ModelConfig`).
        permute_labels: shuffle the training labels among the clips (a sanity check: the model
            can then only memorise, so test accuracy stays near chance).
        device: ``"auto"`` (CUDA, else MPS, else CPU) or a torch device string.
        aug_shift, aug_speed, aug_mask, aug_noise, aug_mixup: waveform augmentation of training
            batches on the device, all off (0) by default; see :mod:`us8k_lib.augment`.
    """

    model: str = "m5"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    scheduler: str = "onecycle"
    step_size: int = 20
    gamma: float = 0.1
    seed: int = 0
    amp: bool = False
    workers: int | None = None
    data: str = "auto"
    compile: bool = False
    test_fold: int = DEFAULT_TEST_FOLD
    val_fold: int | None = None
    train_folds: tuple[int, ...] | None = None
    width: int | None = None
    normalize: bool = True
    permute_labels: bool = False
    device: str = "auto"
    aug_shift: float = 0.0
    aug_speed: float = 0.0
    aug_mask: float = 0.0
    aug_noise: float = 0.0
    aug_mixup: float = 0.0

    def __post_init__(self) -> None:
        from us8k_lib.model import parse_model_name  # late: the model module needs torch

        if self.train_folds is not None:
            self.train_folds = tuple(sorted(int(f) for f in self.train_folds))
        problems = []
        try:
            self.model = parse_model_name(self.model)  # "M34-res" and "m34res" name the same model
        except ValueError as exc:
            problems.append(str(exc))
        problems += [problem for name in LIMITS if (problem := limit_problem(name, getattr(self, name)))]
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.data not in DATA_PATHS:
            problems.append(f"data must be one of {DATA_PATHS}, got {self.data!r}")
        problems += fold_problems(self.test_fold, self.val_fold, self.train_folds)
        problems += validate_augment_fields(self)
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    @property
    def folds_to_train(self) -> tuple[int, ...]:
        """The training folds: ``train_folds``, or every fold but ``test_fold`` and ``val_fold``."""
        return self.train_folds or training_folds(self.test_fold, self.val_fold)

    @property
    def augments(self) -> bool:
        """True if any waveform augmentation is on."""
        return any(getattr(self, name) for name in AUGMENT_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-friendly dict (saved in checkpoints and metrics.json)."""
        d = dataclasses.asdict(self)
        if d["train_folds"] is not None:
            d["train_folds"] = list(d["train_folds"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config saved by :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Where each value came from


def sources_of(config: TrainConfig, given: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return, for every field, where its value came from: ``given[field]`` when known (``"flag"``,
    ``"preset small"``, ``"checkpoint"``...), else ``"default"`` if it is the default, else ``"set"``."""
    defaults = TrainConfig()
    given = dict(given or {})
    return {f.name: given.get(f.name) or ("default" if getattr(config, f.name) == getattr(defaults, f.name)
                                         else "set") for f in dataclasses.fields(TrainConfig)}


def recipe_line(config: TrainConfig, given: Mapping[str, str] | None = None, *, amp: bool | None = None) -> str:
    """Return the first line a run prints: the recipe in force, each value with where it came from.

    ``amp``: whether bf16 autocast is actually on (the hardware may not run it); default
    ``config.amp``. For example ``Recipe: M5 (default), 8 epochs (preset small), batch 16 (preset
    small), AdamW (default), lr 0.005 (preset small), weight decay 0.01 (default), one-cycle schedule
    (default), fp32 (default), seed 0 (default)``. Used by ``engine.fit.fit`` and ``crossval``.
    """
    from us8k_lib.model import display_name

    src = sources_of(config, given)
    on = config.amp if amp is None else amp

    def tag(*fields: str) -> str:
        return "(" + ", ".join(sorted({src[f] for f in fields}, key=lambda k: (k == "default", k))) + ")"

    schedule = {"onecycle": "one-cycle schedule", "cosine": "cosine schedule", "constant": "constant lr",
                "step": f"step schedule (x{config.gamma:g} every {config.step_size} epochs)"}[config.scheduler]
    optimizer = {"adamw": "AdamW", "adam": "Adam with L2"}[config.optimizer]
    precision = ("bf16 autocast" if on else "fp32") if config.amp == on else "fp32 (no native bf16 here)"
    parts = [
        f"{display_name(config.model)} {tag('model')}"
        + (f" at width {config.width} {tag('width')}" if config.width else ""),
        f"{config.epochs} epoch{'s' if config.epochs != 1 else ''} {tag('epochs')}",
        f"batch {config.batch_size} {tag('batch_size')}",
        f"{optimizer} {tag('optimizer')}",
        f"lr {config.lr:g} {tag('lr')}",
        f"weight decay {config.weight_decay:g} {tag('weight_decay')}",
        f"{schedule} {tag('scheduler', 'step_size', 'gamma') if config.scheduler == 'step' else tag('scheduler')}",
        f"{precision} {tag('amp')}",
        f"seed {config.seed} {tag('seed')}",
    ]
    return "Recipe: " + ", ".join(parts)
