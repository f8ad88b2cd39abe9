"""Train a model on some folds, test it on a held-out fold, and save and resume runs.

The recipe is a :class:`TrainConfig` (:mod:`us8k_lib.recipe`: its defaults are meant for the real
UrbanSound8K). Each clip is scaled to unit RMS inside the model; AdamW (decoupled weight decay, none
on biases and BatchNorm) follows a one-cycle learning-rate schedule stepped after every batch; one
line per epoch gives the training loss and accuracy (measured on the fly, in training mode) and the
validation and test accuracy. The original tutorial stepped its scheduler *before* each epoch and
decoded every WAV on every access; here the clips come from the preprocessing cache
(:mod:`us8k_lib.dataset`), in an order that depends on (seed, epoch) alone
(:mod:`us8k_lib.batches`), and the schedule follows the optimizer.

:func:`fit` reads as the run it performs: prepare the data (:func:`_prepare_data`: formatted once,
on one rank under torchrun), check a checkpoint is this run's (:func:`us8k_lib.runs.check_resumable`),
build the model, optimizer, schedule and augmenter (:func:`_build_parts`), restore the checkpoint
(:func:`_restore`), then per epoch train and evaluate (:func:`_run_epoch`), remember the epoch
validation prefers and save (:func:`_save_epoch`), and at the end report the selected epoch
(:func:`_select`). A run folder (:mod:`us8k_lib.runs`) is rewritten atomically after each epoch,
so an interrupted run resumes and finishes with the same weights as one that never stopped (bit
for bit on CPU, whatever the number of loader workers).

Used by notebook 5 and by ``python -m us8k_lib train``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from us8k_lib.allocator import reuse_freed_memory
from us8k_lib.batches import DataPath, DeviceBatches, EpochSampler, choose_data_path, training_batches
from us8k_lib.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from us8k_lib.devices import autocast, choose_device, decide_amp
from us8k_lib.distributed import barrier, broadcast_buffers
from us8k_lib.distributed import is_active as dist_is_active
from us8k_lib.distributed import is_main as dist_is_main
from us8k_lib.distributed import rank as dist_rank
from us8k_lib.distributed import world_size as dist_world_size
from us8k_lib.errors import CheckpointError, US8KError
from us8k_lib.evaluate import EvalResult, evaluate
from us8k_lib.metadata import CLASSES
from us8k_lib.recipe import SCHEDULERS, TrainConfig, recipe_line  # noqa: F401 - TrainConfig lives on here too
from us8k_lib.runs import (
    BEST_NAME,
    HISTORY_NAME,
    METRICS_NAME,
    PREDICTIONS_NAME,
    DatasetIdentity,
    check_resumable,
    dataset_identity,
    default_run_dir,
    load_best,
    remove_stale_best,
    selected_epoch,
    write_run_files,
)

#: The torch.compile backend of ``TrainConfig(compile=True)``. Inductor generates fused kernels
#: (C++ on a CPU, Triton on a GPU); the tests use "aot_eager", which traces the same graphs
#: without generating code (inductor's CPU compile of M5 takes minutes on a 2-core machine).
COMPILE_BACKEND = "inductor"

__all__ = ["BEST_NAME", "HISTORY_NAME", "METRICS_NAME", "PREDICTIONS_NAME", "FitResult", "TrainConfig", "fit",
           "make_optimizer", "train_command", "train_one_epoch"]


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
        data_path: how batches were served: ``"loader"`` or ``"device"`` (:mod:`us8k_lib.batches`).
        dataset: the :class:`us8k_lib.runs.DatasetIdentity` of the data it trained and was tested on.
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
    dataset: DatasetIdentity
    data_path: str = "loader"
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

    @property
    def reported_weights(self) -> Path | None:
        """The file holding the weights whose numbers the run reports: ``best.pt`` with a
        validation fold, else ``checkpoint.pt`` (None when nothing was written)."""
        if self.out is None:
            return None
        return self.out / (BEST_NAME if self.selected is not None else CHECKPOINT_NAME)


# ---------------------------------------------------------------------------------------------
# Data


class _PermutedLabels(Dataset):
    """A dataset whose labels are replaced (the permuted-labels sanity check)."""

    def __init__(self, base: Dataset, labels: np.ndarray) -> None:
        self.base, self.labels = base, np.asarray(labels, dtype=np.int64)
        self.cache, self.rows = base.cache, base.rows  # served like the base, from the same cache rows
        self.table = base.table.assign(classID=self.labels, **{"class": [CLASSES[i] for i in self.labels]})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.base[i][0], int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.base.__getitems__(indices)
        return batch.waveforms, torch.from_numpy(self.labels[np.asarray(indices, dtype=np.int64)])


@dataclass
class _Data:
    """The datasets of one run and how their batches are served."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    skipped: list[tuple[str, str]]
    identity: DatasetIdentity
    path: DataPath
    sr: int
    length: int


def _prepare_data(config: TrainConfig, root: Path, cache_dir: str | Path | None, skip_bad: bool,
                  progress: bool, ddp: bool, device: torch.device) -> _Data:
    """Format the clips (once: on rank 0 under torchrun, while the others wait) and build the datasets."""
    from us8k_lib.dataset import US8KDataset, build_cache
    from us8k_lib.metadata import load_metadata

    metadata = load_metadata(root)
    if ddp:  # one rank formats the 8 732 clips; the others open the finished cache
        if dist_is_main():
            build_cache(root, metadata, cache_dir=cache_dir, skip_bad=skip_bad, progress=progress)
        barrier()
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
    used = metadata[metadata["fold"].isin([*train_folds, config.test_fold, config.val_fold])]
    identity = dataset_identity(root, used, test_ds.cache.key)
    if config.permute_labels:
        labels = train_ds.table["classID"].to_numpy()
        perm = np.random.default_rng(config.seed).permutation(len(labels))
        train_ds = _PermutedLabels(train_ds, labels[perm])
    path = choose_data_path(config.data, device, test_ds.cache.nbytes)
    return _Data(train_ds, val_ds, test_ds, skipped, identity, path, int(test_ds.cache.sr),
                 int(test_ds.cache.length))


# ---------------------------------------------------------------------------------------------
# Model, optimizer, schedule


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Return the run's optimizer for ``model``'s parameters.

    ``adamw``: decoupled weight decay on the weights of convolutions and linear layers (the
    parameters with two or more dimensions), none on biases and BatchNorm scales and shifts,
    whose size is not what overfitting is made of (nanoGPT's ``configure_optimizers``, timm's
    parameter groups). ``adam``: the original tutorial's, an L2 penalty on every parameter.
    Used by notebook 5 (through :func:`fit`).
    """
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


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


@dataclass
class _Parts:
    """What trains: the network (``net``; ``model`` is what the step calls: DDP-wrapped and/or
    compiled), its optimizer and schedule, the augmenter, and the epoch's batches."""

    net: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_batch: bool
    augmenter: Any
    sampler: EpochSampler
    batches: DataLoader | DeviceBatches


def _build_parts(config: TrainConfig, data: _Data, device: torch.device, ddp: bool, rank: int,
                 world: int) -> _Parts:
    from us8k_lib.model import ModelConfig, build_model

    net = build_model(ModelConfig(name=config.model, n_classes=len(CLASSES), width=config.width,
                                  normalize=config.normalize)).to(device)
    model = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        # Fuses BatchNorm, ReLU and pooling into fewer kernels; the first steps pay the compile.
        model = torch.compile(model, backend=COMPILE_BACKEND)
    optimizer = make_optimizer(config, net)
    sampler = EpochSampler(len(data.train), config.seed, rank=rank, world=world)
    batches = training_batches(data.train, config.batch_size // world, path=data.path, device=device,
                               sampler=sampler, workers=config.workers)
    scheduler, per_batch = _make_scheduler(config, optimizer, len(batches))
    augmenter = None
    if config.augments:
        from us8k_lib.augment import Augmenter

        augmenter = Augmenter.from_config(config, sr=data.sr, n_classes=len(CLASSES), device=device, rank=rank)
    return _Parts(net, model, optimizer, scheduler, per_batch, augmenter, sampler, batches)


# ---------------------------------------------------------------------------------------------
# One epoch


def train_one_epoch(model: torch.nn.Module, loader: Any, optimizer: torch.optim.Optimizer,
                    batch_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
                    device: torch.device, amp: bool = False, progress: bool = True,
                    desc: str = "train", augment: Callable[[torch.Tensor, torch.Tensor],
                                                           tuple[torch.Tensor, torch.Tensor]] | None = None,
                    distributed: bool = False) -> tuple[float, float]:
    """Run one pass over ``loader`` (any iterable of ``(waveforms, labels)`` batches), one optimizer
    step per batch.

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


def _run_epoch(epoch: int, config: TrainConfig, parts: _Parts, data: _Data,
               evaluate_on: Callable[[Dataset], EvalResult], *, device: torch.device, amp: bool, rank: int,
               ddp: bool, progress: bool) -> tuple[dict[str, Any], EvalResult | None, EvalResult]:
    """Train one epoch (its order and augmentation seeded from (seed, epoch)), then evaluate the
    validation and test folds; return (history row, validation, test)."""
    t0 = time.perf_counter()
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.sampler.set_epoch(epoch)
    if parts.augmenter is not None:
        from us8k_lib.augment import augment_seed

        parts.augmenter.manual_seed(augment_seed(config.seed, epoch, rank))
    train_loss, train_acc = train_one_epoch(
        parts.model, parts.batches, parts.optimizer, parts.scheduler if parts.per_batch else None,
        device=device, amp=amp, progress=progress, desc=f"epoch {epoch}/{config.epochs}",
        augment=parts.augmenter, distributed=ddp)
    if not parts.per_batch:
        parts.scheduler.step()  # after the epoch's optimizer steps (the tutorial did it before)
    if ddp:
        broadcast_buffers(parts.net)
    validation = evaluate_on(data.val) if data.val is not None else None
    test = evaluate_on(data.test)
    row = {
        "epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
        "val_loss": validation.loss if validation else None,
        "val_acc": validation.accuracy if validation else None,
        "test_loss": test.loss, "test_acc": test.accuracy, "seconds": time.perf_counter() - t0,
    }
    return row, validation, test


def _format_epoch(row: dict[str, Any], epochs: int) -> str:
    width = len(str(epochs))
    val = f"val acc {row['val_acc']:.3f}  " if row.get("val_acc") is not None else ""
    return (f"epoch {row['epoch']:>{width}}/{epochs}  loss {row['train_loss']:.3f}  "
            f"train acc {row['train_acc']:.3f}  {val}test acc {row['test_acc']:.3f}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f} s")


# ---------------------------------------------------------------------------------------------
# Resume, save, select


def _restore(ckpt: dict[str, Any], parts: _Parts, out: Path, data: _Data, main: bool,
             verbose: bool) -> tuple[list[dict[str, Any]], int]:
    """Put a checkpoint's state back; return (history, last finished epoch).

    ``best.pt`` is checked against the history (its epoch and validation accuracy must be what the
    history selects); one that does not match (a crash between the two writes) is rewritten from
    the copy of the selected weights the checkpoint keeps.
    """
    parts.net.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng_states(ckpt["rng"])
    if parts.augmenter is not None and "augment" in ckpt:
        parts.augmenter.load_state_dict(ckpt["augment"])
    history, epoch = list(ckpt["history"]), int(ckpt["epoch"])
    best = ckpt.get("best")
    if selected_epoch(history) is not None and best is None:
        raise CheckpointError(f"{out / CHECKPOINT_NAME}: has a validation history but no selected weights")
    if best is not None and main:
        try:
            load_best(out, history, data.identity)
        except CheckpointError as exc:
            save_checkpoint(out / BEST_NAME, _best_state(ckpt, best))
            if verbose:
                print(f"{exc}; rewrote it from the selected weights in {CHECKPOINT_NAME}.")
    return history, epoch


def _inference_state(parts: _Parts, config: TrainConfig, data: _Data, history: list[dict[str, Any]],
                     epoch: int) -> dict[str, Any]:
    """What any checkpoint holds: enough to rebuild the model and classify with it."""
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": parts.net.state_dict(),
        "model_config": asdict(parts.net.config), "epoch": epoch, "history": history, "config": config.to_dict(),
        "classes": list(CLASSES), "sr": data.sr, "length": data.length, "dataset": data.identity.to_dict(),
    }


def _best_state(ckpt: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    """best.pt: the inference checkpoint of the selected epoch, with that epoch and its validation accuracy."""
    keep = {k: ckpt[k] for k in ("format", "version", "model_config", "history", "config", "classes", "sr",
                                  "length", "dataset")}
    selected = {k: best[k] for k in ("epoch", "val_acc", "val_fold")}
    return {**keep, "model": best["model"], "epoch": best["epoch"], "selected": selected}


def _save_epoch(out: Path, parts: _Parts, config: TrainConfig, data: _Data, history: list[dict[str, Any]],
                evaluation: EvalResult, best: dict[str, Any] | None, is_best: bool, device: torch.device,
                amp: bool) -> None:
    """Write checkpoint.pt (with the selected weights so far), then best.pt if this epoch is the
    selected one, then the run files. Each write is atomic."""
    epoch = history[-1]["epoch"]
    state = _inference_state(parts, config, data, history, epoch)
    ckpt = {**state, "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
            "rng": rng_states(), "best": best,
            **({"augment": parts.augmenter.state_dict()} if parts.augmenter is not None else {})}
    save_checkpoint(out / CHECKPOINT_NAME, ckpt)
    if is_best:  # what predict and crossval use: the weights validation chose
        save_checkpoint(out / BEST_NAME, _best_state(ckpt, best))
    write_run_files(out, config=config, history=history, test=evaluation, selected=None,
                    device=device.type, amp=amp, skipped=data.skipped, dataset=data.identity,
                    data_path=data.path.kind)


def _select(parts: _Parts, best: dict[str, Any] | None, evaluate_test: Callable[[], EvalResult]) -> EvalResult | None:
    """Evaluate the test fold with the weights validation selected (None without validation)."""
    if best is None:
        return None
    last = {k: v.detach().clone() for k, v in parts.net.state_dict().items()}
    parts.net.load_state_dict(best["model"])
    selected = evaluate_test()
    parts.net.load_state_dict(last)
    return selected


# ---------------------------------------------------------------------------------------------
# The run


def fit(config: TrainConfig | None = None, root: str | Path | None = None, out: str | Path | None = None,
        resume: bool = False, *, cache_dir: str | Path | None = None, skip_bad: bool = False,
        progress: bool = True, verbose: bool = True, ddp: bool | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None, sources: Mapping[str, str] | None = None,
        show_recipe: bool = True) -> FitResult:
    """Train ``config.model`` on the training folds, evaluating after every epoch.

    After each epoch the model is evaluated on the validation fold (if ``config.val_fold``) and
    on the test fold. With a validation fold the run keeps the weights of the epoch with the best
    validation accuracy (``best.pt``) and reports the test fold at that epoch; the test fold's
    per-epoch numbers are recorded, never used to choose.

    Args:
        config: the run's settings; default ``TrainConfig()`` (the recipe for the real data).
            With ``resume`` and no config, the checkpoint's config is used.
        root: UrbanSound8K folder (or parent); default :func:`us8k_lib.paths.resolve_root`.
        out: run folder for checkpoint.pt, best.pt, history.json, metrics.json, predictions.csv
            (all rewritten atomically after every epoch); None writes nothing (and cannot resume).
        resume: continue from ``out/checkpoint.pt``; the result is the same as a run that was
            never interrupted (bit for bit on CPU). Refused, naming both, if the checkpoint is of
            another dataset or other settings (:func:`us8k_lib.runs.check_resumable`).
        cache_dir: preprocessing cache folder (default: the dataset module's).
        skip_bad: skip clips that cannot be decoded (listed in the result and printed) instead
            of stopping with an error naming the clip.
        progress: tqdm progress bars (per epoch, and for the first cache build).
        verbose: print the recipe first, then one line per epoch.
        ddp: train one model over all torchrun ranks with DistributedDataParallel. None: do so
            when a process group of several ranks is active (``train`` under torchrun);
            ``crossval`` passes False, its ranks train different folds.
        callback: called with each epoch's history row after its checkpoint is written.
        sources: where each config value came from (``"flag"``, ``"preset mini"``...), for the
            recipe line; default: "default" where a value is the default, else "set".
        show_recipe: print the recipe line (``crossval`` prints it once for all its folds).

    Returns:
        A :class:`FitResult` (model, history DataFrame for learning curves, evaluations).

    Used by notebook 5 and ``python -m us8k_lib train`` / ``crossval``.
    """
    from us8k_lib.paths import normalize_root, resolve_root

    started = time.perf_counter()
    ddp = dist_is_active() if ddp is None else ddp and dist_is_active()
    main = dist_is_main() or not ddp
    verbose, progress = verbose and main, progress and main
    out_dir = Path(out) if out is not None else None
    ckpt = None
    if resume:
        if out_dir is None:
            raise ValueError("resume=True needs the run folder (out=...) holding the checkpoint")
        ckpt = load_checkpoint(out_dir / CHECKPOINT_NAME)
    config = config or (TrainConfig.from_dict(ckpt["config"]) if ckpt is not None else TrainConfig())
    rank, world = (dist_rank(), dist_world_size()) if ddp else (0, 1)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} ranks "
                         "(the global batch size is kept: pick a multiple of the number of ranks)")
    root = resolve_root(verbose=verbose) if root is None else normalize_root(root)
    device = choose_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every batch has the same shape: tune once
        torch.backends.cuda.matmul.allow_tf32 = True  # "fp32" on CUDA: TF32 tensor cores, as cuDNN's default
    amp = decide_amp(device, config.amp)
    if verbose and show_recipe:
        print(recipe_line(config, sources, amp=amp))

    # On a CPU, keeping freed activations in the heap saves re-faulting them in every step
    # (see us8k_lib.allocator: 30 -> 47-49 clips/s at batch 16 on a 2-core machine).
    # No torch.use_deterministic_algorithms: a seeded run on a CPU is already repeatable bit for
    # bit (the resume tests compare two runs' weights), and turning it on imports torch._inductor
    # (3 s per process) and fills every new tensor (14 % slower steps for M5 at width 16).
    with reuse_freed_memory(device.type == "cpu"):
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)
        data = _prepare_data(config, root, cache_dir, skip_bad, progress, ddp, device)
        if ckpt is not None:
            check_resumable(out_dir / CHECKPOINT_NAME, ckpt, config.to_dict(), data.identity)
        if verbose:
            for name, problem in data.skipped:
                print(f"skipped bad clip {name}: {problem}")
        parts = _build_parts(config, data, device, ddp, rank, world)
        history: list[dict[str, Any]] = []
        start_epoch, best = 0, None
        if ckpt is not None:
            history, start_epoch = _restore(ckpt, parts, out_dir, data, main, verbose)
            best = ckpt.get("best")
            if verbose:
                print(f"Resuming {out_dir / CHECKPOINT_NAME} after epoch {start_epoch}/{config.epochs}.")
        elif out_dir is not None and main:
            if (out_dir / CHECKPOINT_NAME).exists() and verbose:
                print(f"{out_dir} holds an earlier run; starting over replaces it "
                      "(resume=True / --resume continues it).")
            out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_best(out_dir)  # an earlier run's choice, not this run's
        if verbose and start_epoch < config.epochs:
            _announce(config, data, parts, device, ddp, world)
            for row in history:
                print(_format_epoch(row, config.epochs))

        def evaluate_on(ds: Dataset) -> EvalResult:
            return evaluate(parts.net, ds, device=device, amp=amp, distributed=ddp, data_path=data.path.kind)

        evaluation = None
        for epoch in range(start_epoch + 1, config.epochs + 1):
            row, validation, evaluation = _run_epoch(epoch, config, parts, data, evaluate_on, device=device, amp=amp,
                                                     rank=rank, ddp=ddp, progress=progress)
            history.append(row)
            is_best = validation is not None and selected_epoch(history) == epoch
            if is_best:
                best = {"epoch": epoch, "val_acc": validation.accuracy, "val_fold": config.val_fold,
                        "model": {k: v.detach().to("cpu", copy=True) for k, v in parts.net.state_dict().items()}}
            if verbose:
                print(_format_epoch(row, config.epochs), flush=True)
            if out_dir is not None and main:
                _save_epoch(out_dir, parts, config, data, history, evaluation, best, is_best, device, amp)
            if callback is not None:
                callback(row)
        if evaluation is None:  # resumed a finished run: evaluate what it ended with
            evaluation = evaluate_on(data.test)
        selected = _select(parts, best, lambda: evaluate_on(data.test))
        if selected is not None and out_dir is not None and main:
            write_run_files(out_dir, config=config, history=history, test=evaluation, selected=selected,
                            device=device.type, amp=amp, skipped=data.skipped, dataset=data.identity,
                            data_path=data.path.kind)
        if ddp:
            barrier()  # rank 0 may still be writing the run files the others would read
    parts.net.eval()
    return FitResult(model=parts.net, history=pd.DataFrame(history, columns=_HISTORY_COLUMNS),
                     evaluation=evaluation, config=config, out=out_dir, device=device.type, amp=amp,
                     dataset=data.identity, data_path=data.path.kind, skipped=data.skipped,
                     seconds=time.perf_counter() - started, selected=selected,
                     selected_epoch=best["epoch"] if selected is not None else None)


_HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                    "seconds"]


def _announce(config: TrainConfig, data: _Data, parts: _Parts, device: torch.device, ddp: bool,
              world: int) -> None:
    val = f", validating on {len(data.val)} (fold {config.val_fold})" if data.val is not None else ""
    where = f"{world} ranks ({device.type}, DDP)" if ddp else f"device {device.type}"
    folds = ",".join(map(str, sorted(set(data.train.table["fold"]))))
    served = ("batches gathered on the device from a copy of the cache" if data.path.kind == "device" else
              f"batches through a DataLoader ({parts.batches.num_workers} workers)")
    print(f"Training {parts.net.title} on {len(data.train)} clips (folds {folds}){val}, testing on "
          f"{len(data.test)} (fold {config.test_fold}) of {data.identity.name}; {where}; {served}: "
          f"{data.path.reason}" + (f"; augmenting: {parts.augmenter.describe()}" if parts.augmenter else "")
          + ("; torch.compile" if config.compile else "") + ".")


# ---------------------------------------------------------------------------------------------
# The command


def train_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib train``: train, write the run folder, print the test accuracy last.

    The recipe is the preset for the dataset (``--preset``, see :mod:`us8k_lib.recipe`) with the
    flags over it; ``--resume`` continues the checkpoint's recipe. Under ``torchrun`` it trains
    one model over all ranks with DistributedDataParallel; rank 0 logs and writes the run folder.
    """
    from us8k_lib.distributed import process_group
    from us8k_lib.model import parse_model_name
    from us8k_lib.paths import choose_root
    from us8k_lib.recipe import config_from_args, flag_values

    root, where = choose_root(args.root)
    model_name = parse_model_name(flag_values(args).get("model", "m5"))
    out = Path(args.out) if args.out else default_run_dir("train", model_name, root, args.test_fold)
    base = TrainConfig.from_dict(load_checkpoint(out / CHECKPOINT_NAME)["config"]) if args.resume else None
    config, sources, note = config_from_args(args, root, base=base, test_fold=args.test_fold)
    with process_group(choose_device(config.device)) as distributed:
        main = dist_is_main()
        if main:  # the recipe first, then the dataset: what the numbers below depend on
            print(f"{recipe_line(config, sources, amp=decide_amp(choose_device(config.device), config.amp))}; {note}")
            print(where)
        try:
            result = fit(config, root=root, out=out, resume=args.resume, skip_bad=args.skip_bad, verbose=True,
                         sources=sources, show_recipe=False)
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
    files = ([BEST_NAME] if result.selected is not None else []) + [CHECKPOINT_NAME, HISTORY_NAME, METRICS_NAME,
                                                                    PREDICTIONS_NAME]
    print(f"run folder: {out} ({', '.join(files)}); total {result.seconds:.0f} s")
    last = result.evaluation
    if result.selected is None:
        print(f"reported: the last epoch ({config.epochs}), weights in {result.reported_weights}")
        print(f"test accuracy: {last.accuracy:.3f} (fold {config.test_fold}, {last.n_clips} clips)")
        return 0
    print(f"last epoch ({config.epochs}, {out / CHECKPOINT_NAME}): test accuracy {last.accuracy:.3f}")
    chosen = result.selected
    print(f"test accuracy: {chosen.accuracy:.3f} (fold {config.test_fold}, {chosen.n_clips} clips; "
          f"epoch {result.selected_epoch} selected on validation fold {config.val_fold}, weights in "
          f"{result.reported_weights})")
    return 0
