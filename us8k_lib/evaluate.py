"""Honest evaluation: accuracy, loss, per-class accuracy, confusion matrix and per-clip predictions.

:func:`compute_logits` is the evaluation loop (``model.eval()``, no gradients, every batch);
:func:`evaluate` turns its logits into an :class:`EvalResult`. Used by notebook 5 and every
training run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset
from tqdm.auto import tqdm

from us8k_lib.devices import autocast
from us8k_lib.engine.batches import DeviceBatches, make_loader
from us8k_lib.engine.distributed import all_gather_objects, shard
from us8k_lib.engine.distributed import is_active as dist_is_active
from us8k_lib.metadata import CLASSES


@dataclass
class EvalResult:
    """How a model did on a set of clips.

    Attributes:
        accuracy: share of clips whose top class is right.
        loss: mean cross-entropy.
        per_class: one row per class (index: class name): ``clips``, ``correct``, ``accuracy``
            (NaN for a class without clips).
        confusion: ``[n_classes, n_classes]`` counts; row = true class, column = predicted.
        predictions: one row per clip: ``file``, ``fold``, ``true``, ``predicted`` (class
            names), ``probability`` (softmax probability of the predicted class), ``correct``.
    """

    accuracy: float
    loss: float
    per_class: pd.DataFrame
    confusion: np.ndarray
    predictions: pd.DataFrame

    @property
    def n_clips(self) -> int:
        """Number of clips evaluated."""
        return len(self.predictions)

    def to_dict(self) -> dict[str, Any]:
        """Return the numbers as JSON-friendly values (what metrics.json holds)."""
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "n_clips": self.n_clips,
            "per_class_accuracy": {c: (None if math.isnan(a) else a) for c, a in self.per_class["accuracy"].items()},
            "confusion": self.confusion.tolist(),
            "classes": list(self.per_class.index),
        }


@torch.no_grad()
def compute_logits(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                   device: torch.device, amp: bool = False,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over every batch; return its logits ``[N, n_classes]`` (float32) and the labels
    ``[N]``, on the CPU.

    The model is put in evaluation mode (``model.eval()``: BatchNorm uses the running statistics it
    learned instead of each batch's) and no gradient is recorded (``torch.no_grad``): nothing is
    learned from the clips evaluated. Used by notebook 5 and :func:`evaluate`.
    """
    model.eval()
    logits, labels = [], []
    for x, y in tqdm(batches, desc="evaluate", leave=False, disable=not progress):
        with autocast(device, amp):
            out = model(x.to(device, non_blocking=device.type == "cuda"))
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    if not logits:
        return torch.zeros((0, 0)), torch.zeros(0, dtype=torch.int64)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: torch.nn.Module, data: Dataset | DataLoader, *, device: torch.device | str | None = None,
             batch_size: int = 64, amp: bool = False, progress: bool = False,
             classes: Sequence[str] = CLASSES, distributed: bool = False, data_path: str = "loader") -> EvalResult:
    """Evaluate ``model`` on a dataset (or an unshuffled DataLoader over one); return an :class:`EvalResult`.

    The logits come from :func:`compute_logits`; a clip's prediction is its class of highest logit
    (``argmax``), and the loss is the mean cross-entropy.

    Args:
        model: returns logits ``[batch, n_classes]``; it is put in eval mode and left there.
        data: a :class:`us8k_lib.dataset.US8KDataset` (its ``.table`` names the clips) or any
            dataset of ``(waveform, classID)`` items, or a DataLoader without shuffling.
        device: where to run; default the model's device.
        batch_size: clips per forward pass (only used when ``data`` is a dataset).
        amp: bf16 autocast (see :func:`us8k_lib.devices.decide_amp`).
        progress: show a tqdm progress bar.
        distributed: under torchrun, each rank evaluates every ``world_size``-th clip and the
            ranks exchange their predictions, so every rank returns the same result over all
            clips, each counted exactly once (needs a dataset, not a DataLoader).
        classes: class names, index = classID.
        data_path: ``"loader"`` (a DataLoader over the dataset) or ``"device"`` (batches gathered
            from a copy of its cache in device memory, :class:`us8k_lib.engine.batches.DeviceBatches`):
            the same batches, so the same result.

    Used by notebook 5 and every training run.
    """
    if isinstance(data, DataLoader):
        if not isinstance(data.sampler, SequentialSampler):
            raise ValueError("evaluate() needs a DataLoader without shuffling "
                             "(its rows must match the dataset's table)")
        if distributed and dist_is_active():
            raise ValueError("evaluate(distributed=True) needs a dataset, not a DataLoader")
        loader, dataset = data, data.dataset
    else:
        dataset = data
    device = torch.device(device) if device is not None else next(model.parameters()).device
    mine = shard(len(dataset)) if distributed else range(len(dataset))
    if not isinstance(data, DataLoader):
        if data_path == "device":
            loader = DeviceBatches(dataset, batch_size, device=device, indices=mine)
        else:
            part = dataset if len(mine) == len(dataset) else Subset(dataset, list(mine))
            loader = make_loader(part, batch_size, device=device, workers=0)
    logits, labels = compute_logits(model, loader, device=device, amp=amp, progress=progress)
    loss_sum = float(F.cross_entropy(logits, labels, reduction="sum")) if len(labels) else 0.0
    top_p, top = logits.softmax(dim=1).max(dim=1) if len(labels) else (torch.zeros(0), labels)
    y_true, y_pred, p_pred = labels.numpy(), top.numpy(), top_p.numpy()
    if len(mine) != len(dataset):
        y_true, y_pred, p_pred, loss_sum = _gather_shards(np.asarray(mine), y_true, y_pred, p_pred, loss_sum)
    return _result(y_true, y_pred, p_pred, loss_sum, classes, getattr(dataset, "table", None))


def _result(y_true: np.ndarray, y_pred: np.ndarray, p_pred: np.ndarray, loss_sum: float, classes: Sequence[str],
            table: pd.DataFrame | None) -> EvalResult:
    """The :class:`EvalResult` of these per-clip labels and predictions (``table`` names the clips)."""
    n = len(classes)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    clips = confusion.sum(axis=1)
    correct = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_acc = np.where(clips > 0, correct / np.maximum(clips, 1), np.nan)
    per_class = pd.DataFrame({"clips": clips, "correct": correct, "accuracy": per_acc},
                             index=pd.Index(list(classes), name="class"))
    files = table["slice_file_name"].astype(str).to_numpy() if table is not None else np.arange(len(y_true)).astype(str)
    folds = table["fold"].to_numpy() if table is not None else np.zeros(len(y_true), dtype=np.int64)
    names = np.asarray(classes, dtype=object)
    predictions = pd.DataFrame({
        "file": files, "fold": folds, "true": names[y_true], "predicted": names[y_pred],
        "probability": p_pred.astype(np.float64), "correct": y_true == y_pred,
    })
    total = len(y_true)
    return EvalResult(
        accuracy=float(correct.sum() / total) if total else float("nan"),
        loss=loss_sum / total if total else float("nan"),
        per_class=per_class, confusion=confusion, predictions=predictions,
    )


def _gather_shards(indices: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, p_pred: np.ndarray,
                   loss_sum: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Put every rank's per-clip results back into dataset order (each clip once)."""
    parts = all_gather_objects((indices, y_true, y_pred, p_pred, loss_sum))
    order = np.concatenate([p[0] for p in parts])
    if len(np.unique(order)) != len(order):
        raise AssertionError("distributed evaluation counted a clip twice")
    at = np.argsort(order, kind="stable")
    return (np.concatenate([p[1] for p in parts])[at], np.concatenate([p[2] for p in parts])[at],
            np.concatenate([p[3] for p in parts])[at], float(sum(p[4] for p in parts)))
