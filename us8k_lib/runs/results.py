"""What a run folder reports: its result files, the epoch validation selected, and which weights
the reported numbers come from.

Besides the checkpoints (:mod:`us8k_lib.runs.checkpoint`), a run folder holds ``history.json`` (one
row per epoch), ``metrics.json`` (the numbers, written last, naming the checkpoint's epoch) and
``predictions.csv`` (the reported epoch's per-clip predictions). With a validation fold the run
reports the test fold at the epoch of best validation accuracy (``best.pt``), else at the last
epoch (``checkpoint.pt``): :func:`reported` is the one place that says so. Used by ``fit``,
``crossval`` and ``predict``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from us8k_lib.errors import CheckpointError
from us8k_lib.runs import files
from us8k_lib.runs.checkpoint import BEST_NAME, CHECKPOINT_NAME, best_state, load_checkpoint, save_checkpoint
from us8k_lib.runs.identity import DatasetIdentity

HISTORY_NAME = "history.json"

METRICS_NAME = "metrics.json"

PREDICTIONS_NAME = "predictions.csv"

#: Every file a run writes, in the order a run folder lists them.
RUN_FILES = (BEST_NAME, CHECKPOINT_NAME, HISTORY_NAME, METRICS_NAME, PREDICTIONS_NAME)


def selected_epoch(history: Sequence[Mapping[str, Any]]) -> int | None:
    """Return the epoch with the best validation accuracy (the earliest on a tie); None without validation."""
    scored = [(row["val_acc"], -row["epoch"]) for row in history if row.get("val_acc") is not None]
    return -max(scored)[1] if scored else None


def reported(selected: Any, last: Any) -> Any:
    """What a run reports: the epoch validation ``selected`` (None without validation), else the
    ``last`` epoch; for evaluations, epochs and weight files alike. The one place that says so."""
    return last if selected is None else selected


def reported_name(selected: bool) -> str:
    """The file holding the weights a run reports (:func:`reported`): ``best.pt`` with an epoch
    ``selected`` on validation, else ``checkpoint.pt``."""
    return reported(BEST_NAME if selected else None, CHECKPOINT_NAME)


def load_best(out: str | Path, history: Sequence[Mapping[str, Any]], dataset: DatasetIdentity) -> dict[str, Any]:
    """Return the weights in ``out/best.pt`` after checking they are the epoch ``history`` selects.

    Raises:
        CheckpointError: naming the file, when it is missing, damaged, of another epoch or
            validation accuracy than the history's choice, or of another dataset.
    """
    path = Path(out) / BEST_NAME
    best = load_checkpoint(path)
    chosen = selected_epoch(history)
    record = best.get("selected") or {}
    if chosen is None or record.get("epoch") != chosen:
        raise CheckpointError(f"{path}: holds epoch {record.get('epoch')}, but the run's history selects "
                              f"epoch {chosen}; it is not this run's best.pt (start the run over)")
    if record.get("val_acc") != history[chosen - 1]["val_acc"]:
        raise CheckpointError(f"{path}: its validation accuracy {record.get('val_acc')} is not the history's "
                              f"{history[chosen - 1]['val_acc']} for epoch {chosen} (start the run over)")
    if "history" in best and list(best["history"]) != list(history[:chosen]):  # epoch and accuracy can coincide
        raise CheckpointError(f"{path}: its training history is not this run's up to epoch {chosen}; it is not this "
                              "run's best.pt (start the run over)")
    recorded = best.get("dataset")
    if recorded is None or DatasetIdentity.from_dict(recorded, path).differences(dataset):
        raise CheckpointError(f"{path}: is not of this run's dataset ({dataset.describe()}); start the run over")
    return best


def weights_file(path: str | Path) -> tuple[Path, str]:
    """Return the checkpoint to classify with, given a checkpoint file or a run folder, and why.

    A run folder gives the weights whose numbers it reported: its ``best.pt`` when it has one
    (the epoch validation chose), checked against the folder's ``checkpoint.pt`` (its history's
    choice and its dataset: a ``best.pt`` copied in from another run is refused), else its
    ``checkpoint.pt`` (the last epoch). The reason says when the run is unfinished, so that the
    weights are not its final ones. Used by ``predict`` and
    :meth:`us8k_lib.crossval.CrossValResult.fold_model`.

    Raises:
        CheckpointError: a folder with neither file, or a ``best.pt`` that is not its run's.
    """
    path = Path(path)
    if not path.is_dir():
        return path, "the checkpoint given"
    best, last = path / BEST_NAME, path / CHECKPOINT_NAME
    ckpt = load_checkpoint(last) if last.is_file() else None
    if best.is_file():
        if ckpt is None:
            return best, (f"the epoch validation selected ({BEST_NAME}; "
                          f"no {CHECKPOINT_NAME} beside it to check it against)")
        load_best(path, ckpt["history"], DatasetIdentity.from_dict(ckpt.get("dataset") or {}, last))
        return best, f"the epoch validation selected ({BEST_NAME})" + _unfinished(ckpt)
    if ckpt is not None:
        return last, f"the last epoch ({CHECKPOINT_NAME}; the run had no validation fold)" + _unfinished(ckpt)
    raise CheckpointError(f"{path}: a folder without {BEST_NAME} or {CHECKPOINT_NAME} (not a run folder of train)")


def _unfinished(ckpt: Mapping[str, Any]) -> str:
    """``""`` for a finished run's checkpoint, else words saying how far it got."""
    epochs = (ckpt.get("config") or {}).get("epochs")
    if epochs is None or ckpt["epoch"] >= epochs:
        return ""
    return f"; the run is unfinished (epoch {ckpt['epoch']} of {epochs}), so these are not its final weights"


def read_results(run: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return a finished run's ``(metrics, history)`` as written by :func:`write_run_files`. Used by ``crossval``."""
    run = Path(run)
    return json.loads((run / METRICS_NAME).read_text()), json.loads((run / HISTORY_NAME).read_text())


def run_files(run: str | Path, selected: bool) -> list[Path]:
    """Return the files a run wrote (``best.pt`` only with an epoch ``selected``), as ``train`` lists them."""
    names = [n for n in RUN_FILES if n != BEST_NAME or selected]
    return [Path(run) / n for n in names]


def found_run_files(run: str | Path) -> list[str]:
    """Return the names of :data:`RUN_FILES` that ``run`` holds."""
    return [name for name in RUN_FILES if (Path(run) / name).exists()]


def repair_best(out: Path, ckpt: Mapping[str, Any], dataset: DatasetIdentity) -> str | None:
    """Check best.pt against a checkpoint being continued; rewrite it from the selected weights the
    checkpoint keeps when it does not match (a crash between the two writes). Return what was
    repaired, in words (None when nothing was).

    Raises:
        CheckpointError: the checkpoint has a validation history but no selected weights.
    """
    history, best = list(ckpt["history"]), ckpt.get("best")
    if selected_epoch(history) is not None and best is None:
        raise CheckpointError(f"{out / CHECKPOINT_NAME}: has a validation history but no selected weights")
    if best is None:
        return None
    try:
        load_best(out, history, dataset)
    except CheckpointError as exc:
        save_checkpoint(out / BEST_NAME, best_state(ckpt, best))
        return f"{exc}; rewrote it from the selected weights in {CHECKPOINT_NAME}."
    return None


def write_run_files(out: Path, *, config: Any, history: list[dict[str, Any]], test: Any,
                    selected: Any, device: str, amp: bool, skipped: list[tuple[str, str]],
                    dataset: DatasetIdentity, data_path: str, threads: int | None = None) -> None:
    """Write history.json, predictions.csv and metrics.json (atomically) for the epochs so far.

    ``test`` is the last epoch's test-fold evaluation, ``selected`` the validation-selected
    epoch's (None without a validation fold, or before the end): predictions.csv holds the
    reported one's. metrics.json comes last, so that one naming the checkpoint's epoch (and its
    selection) vouches for the other two (:func:`run_files_current`). ``threads``: the CPU threads
    the run trained with (a CPU's float rounding depends on them). Used by ``fit``.
    """
    files.write_json(out / HISTORY_NAME, history)
    csv = reported(selected, test).predictions.to_csv(index=False)
    files.write_text(out / PREDICTIONS_NAME, csv)
    chosen = selected_epoch(history)
    metrics = {
        "model": config.model, "epoch": history[-1]["epoch"], "epochs": config.epochs,
        # which fold played which role: the test fold never chooses anything
        "folds": {"train": list(config.folds_to_train), "validation": config.val_fold, "test": config.test_fold},
        "test_fold": config.test_fold,
        "test": test.to_dict(),
        "selected": None if selected is None else {
            "epoch": chosen, "chosen_by": f"best validation accuracy on fold {config.val_fold}",
            "val_acc": history[chosen - 1]["val_acc"], "weights": BEST_NAME, "test": selected.to_dict(),
        },
        "reported": {"weights": reported_name(selected is not None),
                     "epoch": reported(chosen if selected is not None else None, history[-1]["epoch"])},
        "device": device, "amp": amp, "data": data_path, "cpu_threads": threads, "dataset": dataset.to_dict(),
        "root": dataset.root, "skipped": [{"file": f, "problem": p} for f, p in skipped], "config": config.to_dict(),
    }
    files.write_json(out / METRICS_NAME, metrics)


def run_files_current(run: str | Path, ckpt: Mapping[str, Any]) -> bool:
    """True when ``run``'s history.json, metrics.json and predictions.csv are those of its finished
    checkpoint ``ckpt``: the same history; metrics.json (written last, see :func:`write_run_files`)
    of its last epoch, with its selected epoch reported and the test accuracies and loss its history
    recorded for those epochs (within two clips for the selected epoch, which is evaluated again at
    the end); and predictions.csv counting as many right answers as that accuracy. False for a run
    stopped while writing them, or for files edited since, which ``fit`` then writes again from the
    checkpoint. Reads, changes nothing."""
    run = Path(run)
    try:
        metrics, history = read_results(run)
        predictions = (run / PREDICTIONS_NAME).read_text().splitlines()[1:]
    except (OSError, ValueError):
        return False
    if not isinstance(metrics, dict):
        return False
    rows = list(ckpt["history"])
    chosen, last = selected_epoch(rows), ckpt["epoch"]
    if not (history == rows and metrics.get("epoch") == last
            and (metrics.get("selected") or {}).get("epoch") == chosen
            and (metrics.get("reported") or {}).get("epoch") == reported(chosen, last)):
        return False
    try:
        test, selected = metrics["test"], metrics["selected"]
        if (test["accuracy"], test["loss"]) != (rows[-1]["test_acc"], rows[-1]["test_loss"]):
            return False
        # accuracy difference * clips counts clips: more than two apart is an edit, not rounding
        clips_apart = (abs(selected["test"]["accuracy"] - rows[chosen - 1]["test_acc"]) * len(predictions)
                       if selected is not None else 0)
        if clips_apart > 2:
            return False
        shown = (selected or {}).get("test") or test
        right = sum(line.rsplit(",", 1)[-1] == "True" for line in predictions)
        return len(predictions) == shown["n_clips"] and right == round(shown["accuracy"] * shown["n_clips"])
    except (KeyError, TypeError, IndexError):
        return False
