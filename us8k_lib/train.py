"""Train M5 on some folds, test it on a held-out fold, and save and resume runs.

The recipe (see :class:`TrainConfig`): each clip scaled to unit RMS inside the model, Adam with
weight decay 1e-4 and a one-cycle learning-rate schedule stepped after every batch; one line per
epoch with the training loss, training accuracy (measured on the fly, in training mode) and
test-fold accuracy. The original tutorial stepped its scheduler *before* each epoch and decoded
every WAV on every access; here the clips come from the preprocessing cache
(:mod:`us8k_lib.dataset`) and the schedule follows the optimizer.

A run folder holds ``checkpoint.pt`` (everything needed to continue: model, optimizer, scheduler,
epoch, history, config and every random-number-generator state), ``history.json``,
``metrics.json`` and ``predictions.csv``. All are rewritten atomically after each epoch, so an
interrupted run can be resumed and finishes with the same weights as one that never stopped
(bit for bit on CPU).

Used by notebook 5 and by ``python -m us8k_lib train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from us8k_lib.allocator import reuse_freed_memory
from us8k_lib.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    write_atomic,
    write_json,
)
from us8k_lib.dataset import make_loader
from us8k_lib.devices import autocast, choose_device, decide_amp
from us8k_lib.distributed import barrier, broadcast_buffers
from us8k_lib.distributed import is_active as dist_is_active
from us8k_lib.distributed import is_main as dist_is_main
from us8k_lib.distributed import rank as dist_rank
from us8k_lib.distributed import world_size as dist_world_size
from us8k_lib.errors import CheckpointError, US8KError
from us8k_lib.evaluate import EvalResult, evaluate
from us8k_lib.metadata import CLASSES

HISTORY_NAME = "history.json"
METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.csv"
#: The weights of the epoch validation chose (runs with a validation fold).
BEST_NAME = "best.pt"
SCHEDULERS = ("onecycle", "step", "cosine", "constant")
#: Config fields that do not change the numbers a run produces, so a resume may change them.
_RESUMABLE_CHANGES = ("workers",)


@dataclass
class TrainConfig:
    """Everything that decides a training run's result.

    The defaults train M5 on the mini dataset to 0.92-0.96 test accuracy on fold 10 (seeds 0-2),
    about 13 s per epoch on an idle 2-core CPU. Measured alternatives on mini (8 epochs, mean of
    seeds 0-2): one-cycle 0.94, step schedule (lr 3e-3, x0.1 after epoch 6) 0.93, constant lr
    0.86 (seed 0, swinging between epochs); 10 epochs at batch size 32: 0.93-0.94, 20% slower.

    Attributes:
        model: which network of Dai et al. (2017): ``"m3"``, ``"m5"``, ``"m11"``, ``"m18"`` or
            ``"m34res"`` (see :mod:`us8k_lib.model`).
        epochs: passes over the training folds.
        batch_size: clips per optimizer step (under torchrun DDP: over all ranks together).
            Small batches mean more steps per epoch, which matters more than throughput on a few
            hundred clips.
        lr: peak learning rate (``onecycle``/``cosine``) or starting learning rate (``step``,
            ``constant``).
        weight_decay: Adam's L2 penalty (the tutorial's 1e-4).
        scheduler: ``"onecycle"`` (warm up then cosine decay, stepped every batch),
            ``"cosine"`` (cosine decay, every batch), ``"step"`` (multiply by ``gamma`` every
            ``step_size`` epochs, stepped after each epoch, like the tutorial meant to), ``"constant"``.
        step_size, gamma: the ``step`` schedule's period (epochs) and factor.
        seed: seeds the weights, the shuffling and everything else random.
        amp: use bf16 mixed precision where the hardware runs it natively (CUDA with bf16, CPUs
            with AVX512-BF16/AMX or ARM BF16); elsewhere it would be slower, so it stays off.
        workers: DataLoader worker processes; None picks 0 on CPU (the cache is a memory map, a
            batch is a memory copy) and up to 4 on a GPU.
        test_fold: the held-out fold (1-10), never used to choose anything.
        val_fold: a fold taken out of the training folds to choose the epoch: the run keeps the
            weights of the epoch with the best validation accuracy and reports the test fold
            at that epoch (and at the last). None: no selection, the last epoch is reported.
        train_folds: folds to train on; None means every fold except ``test_fold`` and ``val_fold``.
        n_channels: channels of the model's first stage; None is the paper's (small values are
            for quick tests).
        normalize: scale each clip to unit RMS inside the model (see :class:`us8k_lib.model.ModelConfig`).
        permute_labels: shuffle the training labels among the clips (a sanity check: the model
            can then only memorise, so test accuracy stays near chance).
        device: ``"auto"`` (CUDA, else MPS, else CPU) or a torch device string.
        aug_shift, aug_speed, aug_mask, aug_noise, aug_mixup: waveform augmentation of training
            batches on the device, all off (0) by default; see :mod:`us8k_lib.augment`.
    """

    model: str = "m5"
    epochs: int = 8
    batch_size: int = 16
    lr: float = 5e-3
    weight_decay: float = 1e-4
    scheduler: str = "onecycle"
    step_size: int = 5
    gamma: float = 0.1
    seed: int = 0
    amp: bool = True
    workers: int | None = None
    test_fold: int = 10
    val_fold: int | None = None
    train_folds: tuple[int, ...] | None = None
    n_channels: int | None = None
    normalize: bool = True
    permute_labels: bool = False
    device: str = "auto"
    aug_shift: float = 0.0
    aug_speed: float = 0.0
    aug_mask: float = 0.0
    aug_noise: float = 0.0
    aug_mixup: float = 0.0

    def __post_init__(self) -> None:
        from us8k_lib.augment import validate_augment_fields
        from us8k_lib.model import parse_model_name

        if self.train_folds is not None:
            self.train_folds = tuple(sorted(int(f) for f in self.train_folds))
        problems = []
        try:
            self.model = parse_model_name(self.model)  # "M34-res" and "m34res" name the same model
        except ValueError as exc:
            problems.append(str(exc))
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if not 1 <= self.test_fold <= 10:
            problems.append(f"test_fold must be 1-10, got {self.test_fold}")
        if self.val_fold is not None:
            if not 1 <= self.val_fold <= 10:
                problems.append(f"val_fold must be 1-10, got {self.val_fold}")
            if self.val_fold == self.test_fold:
                problems.append(f"val_fold {self.val_fold} is the test fold (the test fold must not choose anything)")
        if self.train_folds is not None:
            if not self.train_folds or any(not 1 <= f <= 10 for f in self.train_folds):
                problems.append(f"train_folds must be folds 1-10, got {self.train_folds}")
            if self.test_fold in self.train_folds:
                problems.append(f"test_fold {self.test_fold} is also a training fold (that would leak)")
            if self.val_fold is not None and self.val_fold in self.train_folds:
                problems.append(f"val_fold {self.val_fold} is also a training fold")
        if self.workers is not None and self.workers < 0:
            problems.append(f"workers must be >= 0, got {self.workers}")
        if self.n_channels is not None and self.n_channels < 1:
            problems.append(f"n_channels must be >= 1, got {self.n_channels}")
        problems += validate_augment_fields(self)
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    @property
    def folds_to_train(self) -> tuple[int, ...]:
        """The training folds: ``train_folds``, or every fold but ``test_fold`` and ``val_fold``."""
        return self.train_folds or tuple(f for f in range(1, 11) if f not in (self.test_fold, self.val_fold))

    @property
    def augments(self) -> bool:
        """True if any waveform augmentation is on."""
        from us8k_lib.augment import AUGMENT_FIELDS

        return any(getattr(self, name) for name in AUGMENT_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-friendly dict (saved in checkpoints and metrics.json)."""
        d = dataclasses.asdict(self)
        if d["train_folds"] is not None:
            d["train_folds"] = list(d["train_folds"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild a config saved by :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Data


class _PermutedLabels(Dataset):
    """A dataset whose labels are replaced (the permuted-labels sanity check)."""

    def __init__(self, base: Dataset, labels: np.ndarray) -> None:
        self.base, self.labels = base, np.asarray(labels, dtype=np.int64)
        self.table = base.table.assign(classID=self.labels, **{"class": [CLASSES[i] for i in self.labels]})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.base[i][0], int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([self.base[int(i)][0] for i in indices])
        return x, torch.from_numpy(self.labels[np.asarray(indices, dtype=np.int64)])


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (eval mode), after the last epoch.
        history: one row per epoch: ``epoch``, ``lr`` (at the epoch's start), ``train_loss``,
            ``train_acc``, ``val_loss``, ``val_acc`` (NaN without a validation fold),
            ``test_loss``, ``test_acc``, ``seconds``.
        evaluation: the last epoch's test-fold :class:`EvalResult`.
        selected: the test-fold :class:`EvalResult` of the epoch with the best validation
            accuracy (None without a validation fold).
        selected_epoch: that epoch (None without a validation fold).
        config: the run's :class:`TrainConfig`.
        out: the run folder (None if nothing was written).
        device: where it trained, e.g. ``"cpu"``.
        amp: whether bf16 autocast was on.
        skipped: ``(file, problem)`` of clips skipped as bad (only with ``skip_bad=True``).
        seconds: wall time of this call, including the cache build.
    """

    model: torch.nn.Module
    history: pd.DataFrame
    evaluation: EvalResult
    config: TrainConfig
    out: Path | None
    device: str
    amp: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    selected: EvalResult | None = None
    selected_epoch: int | None = None

    @property
    def test_accuracy(self) -> float:
        """Test-fold accuracy of the reported model: the selected epoch's, else the last epoch's."""
        return (self.selected or self.evaluation).accuracy

    @property
    def reported(self) -> EvalResult:
        """The test-fold evaluation the run reports: the selected epoch's, else the last epoch's."""
        return self.selected or self.evaluation


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """Return (scheduler, stepped per batch?)."""
    total = config.epochs * steps_per_epoch
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=0.25), True
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), True
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), False


def _check_resumable(path: Path, saved: TrainConfig, config: TrainConfig) -> None:
    a, b = saved.to_dict(), config.to_dict()
    diff = [f"{k}={b[k]!r} (checkpoint: {a[k]!r})" for k in a if k not in _RESUMABLE_CHANGES and a[k] != b[k]]
    if diff:
        raise CheckpointError(f"{path}: cannot resume with a different config: " + ", ".join(diff))


def _build_datasets(config: TrainConfig, root: Path, cache_dir: str | Path | None, skip_bad: bool,
                    progress: bool) -> tuple[Dataset, Dataset | None, Dataset, list[tuple[str, str]]]:
    """Return (train, validation or None, test) datasets and the skipped clips."""
    from us8k_lib.dataset import US8KDataset
    from us8k_lib.metadata import load_metadata

    metadata = load_metadata(root)
    present = set(metadata["fold"].astype(int))
    kwargs = dict(metadata=metadata, cache_dir=cache_dir, skip_bad=skip_bad, progress=progress)
    train_folds = [f for f in config.folds_to_train if f in present]
    train_ds = US8KDataset(root, train_folds, **kwargs)
    val_ds = US8KDataset(root, [config.val_fold], **kwargs) if config.val_fold is not None else None
    test_ds = US8KDataset(root, [config.test_fold], **kwargs)
    if len(train_ds) == 0:
        raise US8KError(f"{root}: no training clips in folds {list(config.folds_to_train)}")
    if val_ds is not None and len(val_ds) == 0:
        raise US8KError(f"{root}: no validation clips in fold {config.val_fold}")
    if len(test_ds) == 0:
        raise US8KError(f"{root}: no test clips in fold {config.test_fold}")
    skipped = [s for ds in (train_ds, val_ds, test_ds) if ds is not None for s in ds.skipped]
    if config.permute_labels:
        labels = train_ds.table["classID"].to_numpy()
        perm = np.random.default_rng(config.seed).permutation(len(labels))
        train_ds = _PermutedLabels(train_ds, labels[perm])
    return train_ds, val_ds, test_ds, skipped


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    batch_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
                    device: torch.device, amp: bool = False, progress: bool = True,
                    desc: str = "train", augment: Callable[[torch.Tensor, torch.Tensor],
                                                           tuple[torch.Tensor, torch.Tensor]] | None = None,
                    distributed: bool = False) -> tuple[float, float]:
    """Run one pass over ``loader``, one optimizer step per batch.

    ``batch_scheduler`` (if given) is stepped after every optimizer step. ``augment`` (an
    :class:`us8k_lib.augment.Augmenter`) transforms each batch after it reaches the device and
    may turn the labels into class probabilities (mixing). With ``distributed`` (DDP under
    torchrun) the loss and accuracy are summed over all ranks. Returns the mean loss and the
    accuracy over the epoch, both measured on the fly in training mode (so they lag the model at
    the epoch's end a little; with mixing, accuracy counts the clip's own label). Used by
    notebook 5 and the GPU benchmark.
    """
    model.train()
    non_blocking = device.type == "cuda"
    # Sums stay on the device: reading them every batch would make a GPU wait for each step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = torch.zeros((), device=device, dtype=torch.int64)
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch")
    for i, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=non_blocking)
        y = y.to(device, non_blocking=non_blocking)
        target = y
        if augment is not None:
            x, target = augment(x, y)
        with autocast(device, amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(dim=1) == y).sum()
        seen += len(y)
        if progress and i % 5 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen.item():.3f}", acc=f"{correct.item() / seen.item():.3f}")
    bar.close()
    if distributed and dist_is_active():
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype), seen.to(loss_sum.dtype)])
        torch.distributed.all_reduce(totals)
        loss_sum, correct, seen = totals[0], totals[1], totals[2]
    if seen.item() == 0:
        raise ValueError("train_one_epoch: the loader yielded no batches")
    return loss_sum.item() / seen.item(), correct.item() / seen.item()


def _format_epoch(row: dict[str, Any], epochs: int) -> str:
    width = len(str(epochs))
    val = f"val acc {row['val_acc']:.3f}  " if row.get("val_acc") is not None else ""
    return (f"epoch {row['epoch']:>{width}}/{epochs}  loss {row['train_loss']:.3f}  "
            f"train acc {row['train_acc']:.3f}  {val}test acc {row['test_acc']:.3f}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f} s")


def _selected_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch with the best validation accuracy (the earliest on a tie); None without validation."""
    scored = [(row["val_acc"], -row["epoch"]) for row in history if row.get("val_acc") is not None]
    return -max(scored)[1] if scored else None


def fit(config: TrainConfig | None = None, root: str | Path | None = None, out: str | Path | None = None,
        resume: bool = False, *, cache_dir: str | Path | None = None, skip_bad: bool = False,
        progress: bool = True, verbose: bool = True, ddp: bool | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None) -> FitResult:
    """Train ``config.model`` on the training folds, evaluating after every epoch.

    After each epoch the model is evaluated on the validation fold (if ``config.val_fold``) and
    on the test fold. With a validation fold the run keeps the weights of the epoch with the best
    validation accuracy (``best.pt``) and reports the test fold at that epoch; the test fold's
    per-epoch numbers are recorded, never used to choose.

    Args:
        config: the run's settings; default ``TrainConfig()``. With ``resume`` and no config,
            the checkpoint's config is used.
        root: UrbanSound8K folder (or parent); default :func:`us8k_lib.paths.resolve_root`.
        out: run folder for checkpoint.pt, best.pt, history.json, metrics.json, predictions.csv
            (all rewritten atomically after every epoch); None writes nothing (and cannot resume).
        resume: continue from ``out/checkpoint.pt``; the result is the same as a run that was
            never interrupted (bit for bit on CPU).
        cache_dir: preprocessing cache folder (default: the dataset module's).
        skip_bad: skip clips that cannot be decoded (listed in the result and printed) instead
            of stopping with an error naming the clip.
        progress: tqdm progress bars (per epoch, and for the first cache build).
        verbose: print one line per epoch.
        ddp: train one model over all torchrun ranks with DistributedDataParallel. None: do so
            when a process group of several ranks is active (``train`` under torchrun);
            ``crossval`` passes False, its ranks train different folds.
        callback: called with each epoch's history row after its checkpoint is written.

    Returns:
        A :class:`FitResult` (model, history DataFrame for learning curves, evaluations).

    Used by notebook 5 and ``python -m us8k_lib train`` / ``crossval``.
    """
    from us8k_lib.model import ModelConfig, build_model
    from us8k_lib.paths import normalize_root, resolve_root

    started = time.perf_counter()
    ddp = dist_is_active() if ddp is None else ddp and dist_is_active()
    main = dist_is_main() or not ddp
    verbose, progress = verbose and main, progress and main
    out_dir = Path(out) if out is not None else None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    ckpt = None
    if resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs the run folder (out=...) holding the checkpoint")
        ckpt = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(ckpt["config"])
        if config is None:
            config = saved
        _check_resumable(ckpt_path, saved, config)
    config = config or TrainConfig()
    rank, world = (dist_rank(), dist_world_size()) if ddp else (0, 1)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} ranks "
                         "(the global batch size is kept: pick a multiple of the number of ranks)")
    root = resolve_root(verbose=verbose) if root is None else normalize_root(root)
    device = choose_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every batch has the same shape: tune once
    amp = decide_amp(device, config.amp)

    # On a CPU, keeping freed activations in the heap saves re-faulting them in every step
    # (see us8k_lib.allocator: 30 -> 47-49 clips/s at batch 16 on a 2-core machine).
    # No torch.use_deterministic_algorithms: a seeded run on a CPU is already repeatable bit for
    # bit (the resume tests compare two runs' weights), and turning it on imports torch._inductor
    # (3 s per process) and fills every new tensor (14 % slower steps for M5 at width 16).
    with reuse_freed_memory(device.type == "cpu"):
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)
        train_ds, val_ds, test_ds, skipped = _build_datasets(config, root, cache_dir, skip_bad, progress)
        if verbose:
            for name, problem in skipped:
                print(f"skipped bad clip {name}: {problem}")
        sr = int(test_ds.cache.sr) if hasattr(test_ds, "cache") else 8000
        length = int(test_ds.cache.length) if hasattr(test_ds, "cache") else 32000

        net = build_model(ModelConfig(name=config.model, n_classes=len(CLASSES), width=config.n_channels,
                                      normalize=config.normalize)).to(device)
        model = net
        if ddp:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        sampler = None
        if ddp:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
        train_loader = make_loader(train_ds, config.batch_size // world, shuffle=sampler is None, device=device,
                                   workers=config.workers, generator=generator, sampler=sampler)
        scheduler, per_batch = _make_scheduler(config, optimizer, len(train_loader))
        augmenter = None
        if config.augments:
            from us8k_lib.augment import Augmenter, augment_seed

            augmenter = Augmenter.from_config(config, sr=sr, n_classes=len(CLASSES), device=device, rank=rank)
        history: list[dict[str, Any]] = []
        start_epoch = 0
        best_state: dict[str, torch.Tensor] | None = None
        if ckpt is not None:
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            history = list(ckpt["history"])
            start_epoch = int(ckpt["epoch"])
            restore_rng_states(ckpt["rng"], generator)
            if augmenter is not None and "augment" in ckpt:
                augmenter.load_state_dict(ckpt["augment"])
            if config.val_fold is not None and _selected_epoch(history) is not None:
                best_state = load_checkpoint(out_dir / BEST_NAME)["model"]
            if verbose:
                print(f"Resuming {ckpt_path} after epoch {start_epoch}/{config.epochs}.")
        if out_dir is not None and main:
            if ckpt is None and ckpt_path.exists() and verbose:
                print(f"{out_dir} holds an earlier run; starting over replaces it "
                      "(resume=True / --resume continues it).")
            out_dir.mkdir(parents=True, exist_ok=True)
        if verbose and start_epoch < config.epochs:
            val = f", validating on {len(val_ds)} (fold {config.val_fold})" if val_ds is not None else ""
            where = f"{world} ranks ({device.type}, DDP)" if ddp else f"device {device.type}"
            print(f"Training {net.title} on {len(train_ds)} clips (folds "
                  f"{','.join(map(str, sorted(set(train_ds.table['fold']))))}){val}, testing on "
                  f"{len(test_ds)} (fold {config.test_fold}); {where}, {'bf16 autocast' if amp else 'fp32'}"
                  + (f"; augmenting: {augmenter.describe()}." if augmenter is not None else "."))
            for row in history:
                print(_format_epoch(row, config.epochs))

        def run_evaluation(ds: Dataset) -> EvalResult:
            return evaluate(net, ds, device=device, amp=amp, distributed=ddp)

        evaluation = None
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            if sampler is not None:
                sampler.set_epoch(epoch)
            if augmenter is not None:
                augmenter.manual_seed(augment_seed(config.seed, epoch, rank))
            train_loss, train_acc = train_one_epoch(
                model, train_loader, optimizer, scheduler if per_batch else None, device=device, amp=amp,
                progress=progress, desc=f"epoch {epoch}/{config.epochs}", augment=augmenter, distributed=ddp)
            if not per_batch:
                scheduler.step()  # after the epoch's optimizer steps (the tutorial did it before)
            if ddp:
                broadcast_buffers(net)
            validation = run_evaluation(val_ds) if val_ds is not None else None
            evaluation = run_evaluation(test_ds)
            row = {
                "epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": validation.loss if validation else None,
                "val_acc": validation.accuracy if validation else None,
                "test_loss": evaluation.loss, "test_acc": evaluation.accuracy,
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            is_best = validation is not None and _selected_epoch(history) == epoch
            if is_best:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            if verbose:
                print(_format_epoch(row, config.epochs), flush=True)
            if out_dir is not None and main:
                state = {
                    "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                    "model": net.state_dict(), "model_config": dataclasses.asdict(net.config),
                    "epoch": epoch, "history": history, "config": config.to_dict(),
                    "classes": list(CLASSES), "sr": sr, "length": length,
                }
                if is_best:  # what predict and crossval use: the weights validation chose
                    save_checkpoint(out_dir / BEST_NAME, state)
                save_checkpoint(ckpt_path, {
                    **state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_states(generator),
                    **({"augment": augmenter.state_dict()} if augmenter is not None else {}),
                })
                _write_run_files(out_dir, config, history, evaluation, None, device, amp, skipped, root)
            if callback is not None:
                callback(row)
        if evaluation is None:  # resumed a finished run: evaluate what it ended with
            evaluation = run_evaluation(test_ds)
        selected, selected_epoch = None, _selected_epoch(history)
        if selected_epoch is not None and best_state is not None:
            last_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(best_state)
            selected = run_evaluation(test_ds)
            net.load_state_dict(last_state)
            if out_dir is not None and main:
                _write_run_files(out_dir, config, history, evaluation, selected, device, amp, skipped, root)
        if ddp:
            barrier()  # rank 0 may still be writing the run files the others would read
    net.eval()
    return FitResult(model=net, history=pd.DataFrame(history, columns=_HISTORY_COLUMNS),
                     evaluation=evaluation, config=config, out=out_dir, device=device.type, amp=amp,
                     skipped=skipped, seconds=time.perf_counter() - started,
                     selected=selected, selected_epoch=selected_epoch if selected is not None else None)


_HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                    "seconds"]


def _write_run_files(out_dir: Path, config: TrainConfig, history: list[dict[str, Any]], evaluation: EvalResult,
                     selected: EvalResult | None, device: torch.device, amp: bool,
                     skipped: list[tuple[str, str]], root: Path) -> None:
    write_json(out_dir / HISTORY_NAME, history)
    selected_epoch = _selected_epoch(history)
    metrics = {
        "model": config.model, "epoch": history[-1]["epoch"], "epochs": config.epochs,
        # which fold played which role: the test fold never chooses anything
        "folds": {"train": list(config.folds_to_train), "validation": config.val_fold, "test": config.test_fold},
        "test_fold": config.test_fold,
        "test": evaluation.to_dict(),
        "selected": None if selected is None else {
            "epoch": selected_epoch, "chosen_by": f"best validation accuracy on fold {config.val_fold}",
            "val_acc": history[selected_epoch - 1]["val_acc"], "test": selected.to_dict(),
        },
        "device": device.type, "amp": amp, "root": str(root),
        "skipped": [{"file": f, "problem": p} for f, p in skipped], "config": config.to_dict(),
    }
    write_json(out_dir / METRICS_NAME, metrics)
    csv = (selected or evaluation).predictions.to_csv(index=False)
    write_atomic(out_dir / PREDICTIONS_NAME, lambda f: f.write(csv), mode="w")


# ---------------------------------------------------------------------------------------------
# Commands


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Return the :class:`TrainConfig` fields the training flags of ``train``/``crossval`` set.

    Flags left out are absent, so a resumed run keeps what its checkpoint had.
    """
    from us8k_lib.augment import augment_overrides

    flags = {"model": "model", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
             "workers": "workers", "width": "n_channels", "val_fold": "val_fold", "device": "device"}
    overrides = {field: getattr(args, flag) for flag, field in flags.items()
                 if getattr(args, flag, None) is not None}
    if getattr(args, "no_amp", False):
        overrides["amp"] = False
    overrides.update(augment_overrides(args))
    return overrides


def train_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib train``: train, write the run folder, print the test accuracy last.

    Under ``torchrun`` it trains one model over all ranks with DistributedDataParallel; rank 0
    logs and writes the run folder.
    """
    from us8k_lib.distributed import process_group
    from us8k_lib.paths import resolve_root

    overrides = config_overrides(args)
    model_name = TrainConfig(model=overrides.get("model", "m5")).model
    out = Path(args.out) if args.out else Path("runs") / f"{model_name}-fold{args.test_fold}"
    if args.resume:
        # Unspecified options continue as the checkpoint had them; specified ones must match.
        base = TrainConfig.from_dict(load_checkpoint(out / CHECKPOINT_NAME)["config"])
        overrides.setdefault("test_fold", args.test_fold)
        config = dataclasses.replace(base, **overrides)
    else:
        config = TrainConfig(test_fold=args.test_fold, **overrides)
    with process_group(choose_device(config.device)) as distributed:
        main = dist_is_main()
        root = resolve_root(args.root, verbose=main)
        try:
            result = fit(config, root=root, out=out, resume=args.resume, skip_bad=args.skip_bad, verbose=True)
        except KeyboardInterrupt:
            if main and (out / CHECKPOINT_NAME).exists():
                launcher = "torchrun ... -m us8k_lib" if distributed else "python -m us8k_lib"
                print(f"Stopped; the last finished epoch is saved. Continue with: {launcher} train "
                      f"--out {out} --resume", file=sys.stderr)
            raise
    if not main:
        return 0
    if result.skipped:
        print(f"{len(result.skipped)} bad clip(s) skipped (listed in {out / METRICS_NAME}).")
    print(f"run folder: {out} ({CHECKPOINT_NAME}, {HISTORY_NAME}, {METRICS_NAME}, {PREDICTIONS_NAME}); "
          f"total {result.seconds:.0f} s")
    last = result.evaluation
    if result.selected is None:
        print(f"test accuracy: {last.accuracy:.3f} (fold {config.test_fold}, {last.n_clips} clips)")
        return 0
    print(f"last epoch ({config.epochs}): test accuracy {last.accuracy:.3f}")
    chosen = result.selected
    print(f"test accuracy: {chosen.accuracy:.3f} (fold {config.test_fold}, {chosen.n_clips} clips; "
          f"epoch {result.selected_epoch} selected on validation fold {config.val_fold})")
    return 0
