"""Run a whole training: :func:`fit` trains a model on some folds and tests it on a held-out fold,
writing, resuming and reporting its run folder.

Notebook 5 writes the training loop itself, from :mod:`us8k_lib.train`'s step and epoch functions;
``fit`` runs the same functions in the same order (a test checks that notebook 5's loop and
``python -m us8k_lib train`` give the same numbers bit for bit), with what a real run needs
around them: the run folder (:func:`us8k_lib.runs.folder.open_run`: its lock, and whether this
is a new run, a continued one or a finished one), the data and parts of the run
(:mod:`us8k_lib.engine.parts`), a validation fold that selects the epoch, torchrun's processes,
and a checkpoint after every epoch, so that an interrupted run resumes and finishes with the same
weights as one that never stopped (bit for bit on CPU, whatever the number of loader workers).

Used by ``crossval`` (notebooks 6-8) and ``python -m us8k_lib train``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from us8k_lib.devices import Placement, place
from us8k_lib.engine.allocator import reuse_freed_memory
from us8k_lib.engine.distributed import barrier, broadcast_buffers
from us8k_lib.engine.distributed import is_active as dist_is_active
from us8k_lib.engine.distributed import is_main as dist_is_main
from us8k_lib.engine.distributed import rank as dist_rank
from us8k_lib.engine.distributed import world_size as dist_world_size
from us8k_lib.engine.parts import DataSource, Parts, RunData, build_parts, describe, prepare_data
from us8k_lib.errors import SettingsError, US8KError, setting
from us8k_lib.evaluate import EvalResult, evaluate
from us8k_lib.recipe import TrainConfig, recipe_line
from us8k_lib.runs.checkpoint import inference_state, restore_training_state, save_epoch, training_state
from us8k_lib.runs.folder import check_processes, open_run
from us8k_lib.runs.identity import DatasetIdentity
from us8k_lib.runs.results import (
    repair_best,
    reported,
    reported_name,
    run_files_current,
    selected_epoch,
    write_run_files,
)
from us8k_lib.train import HISTORY_COLUMNS, format_epoch, train_one_epoch


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (eval mode), after the last epoch.
        history: one row per epoch: ``epoch``, ``lr`` (at the epoch's start), ``train_loss``,
            ``train_acc``, ``val_loss``, ``val_acc`` (None without a validation fold),
            ``test_loss``, ``test_acc``, ``seconds``.
        evaluation: the last epoch's test-fold :class:`EvalResult`.
        selected: the test-fold :class:`EvalResult` of the epoch with the best validation
            accuracy (None without a validation fold).
        selected_epoch: that epoch (None without a validation fold).
        config: the run's :class:`TrainConfig`.
        out: the run folder (None if nothing was written).
        device: where it trained, e.g. ``"cpu"``.
        amp: whether bf16 autocast was on.
        data_path: how batches were served: ``"loader"`` or ``"device"`` (:mod:`us8k_lib.engine.batches`).
        dataset: the :class:`us8k_lib.runs.identity.DatasetIdentity` of the data it trained and was tested on.
        skipped: ``(file, problem)`` of clips skipped as bad (only with ``skip_bad=True``).
        seconds: wall time of this call, including the cache build.
        finished_before: True when the run folder already held this run, finished (nothing trained).
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
    finished_before: bool = False

    @property
    def reported(self) -> EvalResult:
        """The test-fold evaluation the run reports: the selected epoch's, else the last epoch's
        (:func:`us8k_lib.runs.folder.reported`)."""
        return reported(self.selected, self.evaluation)

    @property
    def test_accuracy(self) -> float:
        """Test-fold accuracy of the reported model (:attr:`reported`)."""
        return self.reported.accuracy

    @property
    def reported_weights(self) -> Path | None:
        """The file holding the reported weights (:func:`us8k_lib.runs.folder.reported_name`; None
        when nothing was written)."""
        return None if self.out is None else self.out / reported_name(self.selected is not None)


def _run_epoch(epoch: int, config: TrainConfig, parts: Parts, data: RunData,
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
    if not math.isfinite(train_loss):  # before anything of this epoch is saved: NaN weights help nobody
        raise US8KError(f"epoch {epoch}: the training loss is {train_loss} (the run diverged); nothing of this "
                        f"epoch was saved. {_divergence_advice(config)}")
    if not parts.per_batch:
        parts.scheduler.step()  # after the epoch's optimizer steps, as train_one_epoch steps a per-batch one
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


def fit(config: TrainConfig | None = None, root: str | Path | DataSource | None = None, out: str | Path | None = None,
        resume: bool = False, *, overwrite: bool = False, cache_dir: str | Path | None = None,
        skip_bad: bool = False, progress: bool = True, verbose: bool = True, ddp: bool | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None, sources: Mapping[str, str] | None = None,
        show_recipe: bool = True, placement: Placement | None = None) -> FitResult:
    """Train ``config.model`` on the training folds, evaluating the validation fold (if any) and
    the test fold after every epoch; with validation, report the test fold at the epoch validation
    chose (its weights in ``best.pt``). Returns a :class:`FitResult`.

    ``config``: default ``TrainConfig()``, or with ``resume`` the checkpoint's. ``root``: the dataset
    folder or a :class:`~us8k_lib.engine.parts.DataSource`. ``out``: the run folder, locked and
    rewritten atomically after every epoch (None writes nothing); a folder holding a run already
    follows :func:`us8k_lib.runs.folder.decide` (finished: returned as it is; else refused unless
    ``resume`` or ``overwrite``). ``ddp``: one model over the torchrun ranks (None: when several
    are active). ``callback``: each epoch's history row, once saved. ``sources``: where each
    setting came from, for the recipe line. ``placement``: from :func:`us8k_lib.devices.place`.
    Used by ``python -m us8k_lib train`` and :func:`us8k_lib.crossval.crossval` (notebooks 6-8).
    """
    started = time.perf_counter()
    ddp = dist_is_active() if ddp is None else ddp and dist_is_active()
    main = dist_is_main() or not ddp
    verbose, progress = verbose and main, progress and main
    rank, world = (dist_rank(), dist_world_size()) if ddp else (0, 1)
    with open_run(out, resume=resume, overwrite=overwrite, writer=main, ddp=ddp) as run:
        config = _check_config(config or run.saved_config() or TrainConfig(), world)
        device, amp = placement or place(config.device, config.amp)
        if verbose and show_recipe:
            print(recipe_line(config, sources, amp=amp))
        source = root if isinstance(root, DataSource) else DataSource.open(root, verbose=verbose)
        identity = source.identity([*config.folds_to_train, config.test_fold, config.val_fold])
        action = run.decide(config.to_dict(), identity)
        # Freed activations stay in the heap on a CPU (us8k_lib.engine.allocator). No deterministic-algorithms
        # switch: a seeded CPU run is repeatable bit for bit already, and it costs 14 % per step.
        with reuse_freed_memory(device.type == "cpu"):
            _seed(config.seed)
            data = prepare_data(config, source, identity, cache_dir=cache_dir, skip_bad=skip_bad,
                                progress=progress, ddp=ddp, device=device)
            parts = build_parts(config, data, device, ddp=ddp, rank=rank, world=world)
            history, best = _start(run, parts, data, config, verbose, describe(config, data, parts, device, ddp, world))
            save = _saver(run.path if main else None, parts, config, data, device.type, amp)

            evaluate_on = partial(evaluate, parts.net, device=device, amp=amp, distributed=ddp,  # at the training batch
                                  data_path=data.path.kind, batch_size=config.batch_size)

            evaluation = None
            for epoch in range(len(history) + 1, config.epochs + 1):
                row, validation, evaluation = _run_epoch(epoch, config, parts, data, evaluate_on, device=device,
                                                         amp=amp, rank=rank, ddp=ddp, progress=progress)
                history.append(row)
                is_best = validation is not None and selected_epoch(history) == epoch
                if is_best:
                    best = {"epoch": epoch, "val_acc": validation.accuracy, "val_fold": config.val_fold,
                            "model": {k: v.detach().to("cpu", copy=True) for k, v in parts.net.state_dict().items()}}
                if verbose:
                    print(format_epoch(row, config.epochs), flush=True)
                save(history, evaluation, best=best, is_best=is_best)
                if callback is not None:
                    callback(row)
            evaluation = evaluation or evaluate_on(data.test)  # a finished run: evaluate what it ended with
            selected = _select(parts, best, lambda: evaluate_on(data.test))
            _finish(run, save, history, evaluation, selected, verbose)
            if ddp:
                barrier()  # rank 0 may still be writing the run files the others would read
    return FitResult(model=parts.net.eval(), history=pd.DataFrame(history, columns=HISTORY_COLUMNS),
                     evaluation=evaluation, config=config, out=run.path, device=device.type, amp=amp,
                     dataset=identity, data_path=data.path.kind, skipped=data.skipped,
                     seconds=time.perf_counter() - started, selected=selected,
                     selected_epoch=best["epoch"] if selected is not None else None,
                     finished_before=action == "finished")


def _divergence_advice(config: TrainConfig) -> str:
    """What to change after a run diverged: the learning rate, and the weight decay when it is large
    enough to be the cause (decoupled decay shrinks every weight by ``lr * weight_decay`` a step)."""
    advice = f"Train with a lower learning rate ({setting('lr')}) than {config.lr:g}, e.g. {config.lr / 10:g}"
    if config.weight_decay > 0.1:
        advice += (f", or a lower weight decay ({setting('weight_decay')}) than {config.weight_decay:g} (the recipe's "
                   f"is {TrainConfig.weight_decay:g})")
    return advice


def _check_config(config: TrainConfig | dict[str, Any], world: int) -> TrainConfig:
    """Return the run's config (a resumed checkpoint's comes as a dict), checked against the ranks."""
    config = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    if config.batch_size % world:
        raise SettingsError(f"batch_size {config.batch_size} does not split evenly over {world} ranks "
                            "(the global batch size is kept: pick a multiple of the number of ranks)")
    return config


def _saver(out: Path | None, parts: Parts, config: TrainConfig, data: RunData, device: str,
           amp: bool) -> Callable[..., None]:
    """Return what saves the run after an epoch (the checkpoints, then the run files) and, with
    ``epoch_end=False``, the run files alone (at the end, with the selected epoch's test results);
    a no-op without a run folder (or off rank 0)."""

    def save(history: list[dict[str, Any]], evaluation: EvalResult, *, best: dict[str, Any] | None = None,
             is_best: bool = False, selected: EvalResult | None = None, epoch_end: bool = True) -> None:
        if out is None:
            return
        if epoch_end:
            state = inference_state(parts.net, config, history, history[-1]["epoch"], sr=data.sr,
                                    length=data.length, dataset=data.identity)
            resumable = training_state(parts.optimizer, parts.scheduler, parts.augmenter, parts.processes)
            save_epoch(out, {**state, **resumable, "best": best}, is_best=is_best)
        write_run_files(out, config=config, history=history, test=evaluation, selected=selected, device=device,
                        amp=amp, skipped=data.skipped, dataset=data.identity, data_path=data.path.kind,
                        threads=torch.get_num_threads())

    return save


def _finish(run: Any, save: Callable[..., None], history: list[dict[str, Any]], evaluation: EvalResult,
            selected: EvalResult | None, verbose: bool) -> None:
    """Write the run files once more at the end: after training, with the selected epoch's test
    results (with validation); for a run found finished, only to repair files that are not its
    checkpoint's (a run stopped while writing them). A finished run's files are otherwise left as
    they are."""
    if run.action != "finished":
        if selected is not None:
            save(history, evaluation, selected=selected, epoch_end=False)
        return
    if run.writer and not run_files_current(run.path, run.checkpoint):
        save(history, evaluation, selected=selected, epoch_end=False)
        if verbose:
            print(f"{run.path}: its history, metrics or predictions were not those of its last checkpoint (a run "
                  "stopped while writing them, or edited since); rewrote them from the checkpoint.")


def _seed(seed: int) -> None:
    """Seed the global generators (the training order and augmentation have their own, per epoch)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _start(run: Any, parts: Parts, data: RunData, config: TrainConfig, verbose: bool,
           description: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Put back the checkpoint a continued (or finished) run starts from, and say what starts;
    return (history so far, the selected weights so far)."""
    ckpt = run.checkpoint
    if ckpt is not None and run.action == "resume":
        check_processes(run.path, ckpt, parts.processes)
    if ckpt is not None:
        restore_training_state(ckpt, parts.net, parts.optimizer, parts.scheduler, parts.augmenter)
        repaired = repair_best(run.path, ckpt, data.identity) if run.writer else None
        if verbose and repaired:
            print(repaired)
    history, best = (list(ckpt["history"]), ckpt.get("best")) if ckpt is not None else ([], None)
    if verbose:
        for name, problem in data.skipped:
            print(f"skipped bad clip {name}: {problem}")
        if run.action == "finished":
            print(f"{run.path} holds this run, finished ({config.epochs} epochs, the same settings and dataset): "
                  "nothing to train; its result follows.")
        else:
            if run.action == "resume":
                print(f"Resuming {run.path} after epoch {len(history)}/{config.epochs}.")
            print(description)
        for row in history:
            print(format_epoch(row, config.epochs))
    return history, best


def _select(parts: Parts, best: dict[str, Any] | None, evaluate_test: Callable[[], EvalResult]) -> EvalResult | None:
    """Evaluate the test fold with the weights validation selected (None without validation)."""
    if best is None:
        return None
    last = {k: v.detach().clone() for k, v in parts.net.state_dict().items()}
    parts.net.load_state_dict(best["model"])
    selected = evaluate_test()
    parts.net.load_state_dict(last)
    return selected

