"""The training loop: one optimizer step, one epoch, and the optimizer, schedule and batches they use.

Notebook 5 shows :func:`training_step` and :func:`train_one_epoch` and runs them in an epoch loop
written on the page; :func:`us8k_lib.engine.fit.fit` (``python -m us8k_lib train``, ``crossval``,
torchrun) runs the very same functions, so there is one step and one epoch in the package. The
order inside a step is the one PyTorch asks for: forward, loss, ``zero_grad``, ``backward``,
``optimizer.step()``, and only then ``scheduler.step()``. The original tutorial stepped its
schedule *before* each epoch's training, so its learning rate ran one step ahead of the optimizer.

Used by notebook 5 and every training run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from us8k_lib.devices import autocast
from us8k_lib.engine.allocator import reuse_freed_memory
from us8k_lib.engine.batches import DeviceBatches, EpochSampler, choose_data_path, make_loader
from us8k_lib.engine.distributed import is_active as dist_is_active

#: The columns of a run's history: one row per epoch. ``lr`` is the learning rate at the epoch's start.
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                   "seconds"]
#: Schedules stepped after every batch (the others after every epoch).
PER_BATCH_SCHEDULERS = ("onecycle", "cosine")


# ---------------------------------------------------------------------------------------------
# What the loop uses


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float = 0.01,
                   kind: str = "adamw") -> torch.optim.Optimizer:
    """Return the optimizer of ``model``'s parameters.

    ``"adamw"``: Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019) on the weights
    of convolutions and linear layers (the parameters with two or more dimensions), none on biases
    and BatchNorm scales and shifts, whose size is not what overfitting is made of (as nanoGPT's
    ``configure_optimizers`` and timm's parameter groups do). ``"adam"``: the original tutorial's,
    an L2 penalty added to every parameter's gradient. Used by notebook 5 and every training run.
    """
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(kind: str, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                   step_size: int = 20, gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """Return the learning-rate schedule ``kind`` for a run of ``epochs`` x ``steps_per_epoch`` steps.

    ``"onecycle"``: up from ``lr / 25`` to the optimizer's ``lr`` over the first quarter of the
    steps, then down along a cosine to almost nothing (Smith & Topin 2019, "super-convergence").
    ``"cosine"``: down from ``lr`` along a cosine. Both are stepped after every batch
    (:data:`PER_BATCH_SCHEDULERS`). ``"step"``: ``lr`` times ``gamma`` every ``step_size`` epochs,
    the tutorial's schedule, stepped after every epoch; ``"constant"``: ``lr`` throughout. Used by
    notebook 5 and every training run.
    """
    total = epochs * steps_per_epoch
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"],
                                                   total_steps=total, pct_start=0.25)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if kind == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule {kind!r}: choose one of onecycle, cosine, step, constant")


def make_batches(dataset: Dataset, batch_size: int, *, device: torch.device, seed: int, data: str = "auto",
                 workers: int | None = None, rank: int = 0, world: int = 1) -> Any:
    """Return the training batches of ``dataset``: iterate it once per epoch, after
    ``batches.sampler.set_epoch(epoch)``, for ``(waveforms [B, 1, samples], labels [B])``.

    Each epoch's order is a shuffle seeded by ``(seed, epoch)`` alone
    (:class:`us8k_lib.engine.batches.EpochSampler`), so a run repeats, and resumes, batch for batch.
    ``data`` says how they are served (:func:`us8k_lib.engine.batches.choose_data_path`): a
    DataLoader over the cache file, or, on a GPU where the cache fits, gathered from a copy of it
    in the GPU's memory; the same batches either way. ``rank``/``world``: this process's share
    under torchrun. Used by notebook 5 and every training run.
    """
    sampler = EpochSampler(len(dataset), seed, rank=rank, world=world)
    path = choose_data_path(data, device, dataset.cache.nbytes)
    if path.kind == "device":
        return DeviceBatches(dataset, batch_size, device=device, sampler=sampler)
    return make_loader(dataset, batch_size, device=device, workers=workers, sampler=sampler)


# ---------------------------------------------------------------------------------------------
# One step, one epoch


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor,
                  *, device: torch.device, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; return the loss and the logits, detached.

    ``target`` is the class indices, or class probabilities (mixup). ``amp``: the forward pass in
    bf16 autocast (the loss is still computed in fp32). The one copy of the step: every training
    run calls it through :func:`train_one_epoch`. Used by notebook 5.
    """
    with autocast(device, amp):
        logits = model(x)  # [batch, n_classes]: raw scores; cross_entropy applies the softmax itself
    loss = F.cross_entropy(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)  # gradients add up in .grad: clear the last step's
    loss.backward()  # the gradient of the loss with respect to every parameter
    optimizer.step()  # move every parameter against its gradient
    return loss.detach(), logits.detach()


def train_one_epoch(model: torch.nn.Module, batches: Any, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
                    device: torch.device, amp: bool = False, progress: bool = True, desc: str = "train",
                    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                    distributed: bool = False) -> tuple[float, float]:
    """One pass over ``batches`` (any iterable of ``(waveforms, labels)``), one optimizer step per batch;
    return the epoch's mean training loss and accuracy.

    ``scheduler``, if given, is stepped after every optimizer step (a per-epoch schedule is
    stepped by the caller, after this returns). ``augment`` (an :class:`us8k_lib.augment.Augmenter`)
    changes each batch on the device and may turn its labels into class probabilities (mixup).
    With ``distributed`` (DDP under torchrun) the sums are over every rank. The loss and accuracy
    are measured on the fly, in training mode, so they lag the model at the epoch's end a little
    (with mixup, accuracy counts each clip's own label). Used by notebook 5 and every training run.
    """
    model.train()  # BatchNorm normalises with each batch's statistics (and updates its running ones)
    non_blocking = device.type == "cuda"
    # Sums stay on the device: reading them every batch would make a GPU wait for each step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = torch.zeros((), device=device, dtype=torch.int64)
    bar = tqdm(batches, desc=desc, leave=False, disable=not progress, unit="batch")
    # On a CPU, each step's freed activations are kept for the next step instead of being handed back
    # to the operating system and asked for again, which took a third of a run (us8k_lib.engine.allocator).
    with reuse_freed_memory(device.type == "cpu"):
        for i, (waveforms, labels) in enumerate(bar):
            x, y = waveforms.to(device, non_blocking=non_blocking), labels.to(device, non_blocking=non_blocking)
            x, target = augment(x, y) if augment is not None else (x, y)  # mixup makes the target probabilities
            loss, logits = training_step(model, optimizer, x, target, device=device, amp=amp)
            if scheduler is not None:
                scheduler.step()  # after optimizer.step(): the original tutorial stepped it before training
            loss_sum += loss * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
            seen += len(y)
            if progress and i % 5 == 0:
                n = seen.item()
                bar.set_postfix(loss=f"{loss_sum.item() / n:.3f}", acc=f"{correct.item() / n:.3f}")
    bar.close()
    if distributed and dist_is_active():
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype), seen.to(loss_sum.dtype)])
        torch.distributed.all_reduce(totals)
        loss_sum, correct, seen = totals[0], totals[1], totals[2]
    if seen.item() == 0:
        raise ValueError("train_one_epoch: the batches were empty")
    return loss_sum.item() / seen.item(), correct.item() / seen.item()


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    """Return the line printed after an epoch: its training loss and accuracy, validation and test
    accuracy, the learning rate at the epoch's start and its time. Used by notebook 5 and every run."""
    width = len(str(epochs))
    val = f"val acc {row['val_acc']:.3f}  " if row.get("val_acc") is not None else ""
    return (f"epoch {row['epoch']:>{width}}/{epochs}  loss {row['train_loss']:.3f}  "
            f"train acc {row['train_acc']:.3f}  {val}test acc {row['test_acc']:.3f}  "
            f"lr at start {row['lr']:.2e}  {row['seconds']:.1f} s")
