"""Run folders: what a training run writes, which dataset and settings it belongs to, and whether
it may be resumed or skipped.

A run folder (``train --out``, or one ``foldNN/`` per test fold of ``crossval``) holds:

``checkpoint.pt``
    everything needed to continue after the last finished epoch (see :mod:`us8k_lib.checkpoint`).
``best.pt``
    with a validation fold only: the weights of the epoch validation chose, with that epoch and
    its validation accuracy. It is what the reported test accuracy and ``predictions.csv`` come
    from, and what ``predict RUN_FOLDER`` uses.
``history.json``, ``metrics.json``, ``predictions.csv``
    the learning curves, the numbers, and the reported epoch's per-clip predictions.

Every checkpoint and ``metrics.json`` records the run's config **and its dataset**
(:class:`DatasetIdentity`: the resolved folder, a hash of the metadata rows it used and the key of
the formatting cache, which covers every clip file and the formatting code). A run is continued
(``train --resume``) or skipped as finished (``crossval``) only when both match: a folder that
holds another dataset's run stops the command with an error naming both datasets
(:class:`us8k_lib.errors.RunMismatchError`), so one dataset's numbers are never reported as
another's. A fold of ``crossval`` with other *settings* is started over, as asked.

Used by notebooks 5 and 6 (through ``train`` and ``crossval``) and ``predict``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from us8k_lib.checkpoint import CHECKPOINT_NAME, load_checkpoint, write_atomic, write_json
from us8k_lib.errors import CheckpointError, RunMismatchError
from us8k_lib.recipe import TrainConfig

BEST_NAME = "best.pt"
HISTORY_NAME = "history.json"
METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.csv"
#: TrainConfig fields that do not change a run's numbers (each checked bit for bit by a test on
#: the CPU), so a resumed run may change them and a finished one still counts as finished.
RESUMABLE_CHANGES = ("workers", "data")
_METADATA_COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]


# ---------------------------------------------------------------------------------------------
# Whose run is it


@dataclass(frozen=True)
class DatasetIdentity:
    """Which dataset a run trained and was tested on.

    Attributes:
        name: a short name (:func:`us8k_lib.paths.dataset_name`), for people.
        root: the resolved ``UrbanSound8K`` folder.
        n_clips: metadata rows the run used.
        metadata_sha256: hash of those rows (file name, fsID, start, end, salience, fold, class).
        cache_key: the formatting cache's key (:func:`us8k_lib.dataset.cache_key`): every clip's
            size and modification time and the formatting recipe.
    """

    name: str
    root: str
    n_clips: int
    metadata_sha256: str
    cache_key: str

    def describe(self) -> str:
        """Return the identity in words, e.g. ``mini-tiny at /data/A/UrbanSound8K (110 clips, ...)``."""
        return (f"{self.name} at {self.root} ({self.n_clips} clips, metadata {self.metadata_sha256[:10]}, "
                f"formatted audio {self.cache_key[:10]})")

    def differences(self, other: DatasetIdentity) -> list[str]:
        """Return what differs from ``other``, in words (empty when they are the same dataset)."""
        what = {"root": "folder", "metadata_sha256": "metadata rows", "cache_key": "clip files or formatting"}
        return [words for field, words in what.items() if getattr(self, field) != getattr(other, field)]

    def to_dict(self) -> dict[str, Any]:
        """Return the identity as JSON-friendly values (stored in checkpoints and metrics.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetIdentity:
        """Rebuild an identity saved by :meth:`to_dict`."""
        return cls(**{k: d[k] for k in ("name", "root", "n_clips", "metadata_sha256", "cache_key")})


def metadata_hash(rows: pd.DataFrame) -> str:
    """Return the sha256 of metadata rows, independent of their order and of extra columns."""
    cols = [c for c in _METADATA_COLUMNS if c in rows.columns]
    table = rows[cols].sort_values(["fold", "slice_file_name"], kind="stable")
    return hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()


def dataset_identity(root: str | Path, rows: pd.DataFrame, cache_key: str) -> DatasetIdentity:
    """Return the :class:`DatasetIdentity` of a run on ``rows`` (metadata) of the dataset at ``root``.

    Used by ``train.fit`` and ``crossval``.
    """
    from us8k_lib.paths import dataset_name

    root = Path(root).resolve()
    return DatasetIdentity(name=dataset_name(root), root=str(root), n_clips=len(rows),
                           metadata_sha256=metadata_hash(rows), cache_key=cache_key)


# ---------------------------------------------------------------------------------------------
# May it be continued or skipped


def config_differences(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Return ``field=new (saved: old)`` for every setting that differs, except :data:`RESUMABLE_CHANGES`."""
    keys = [k for k in {**saved, **config} if k not in RESUMABLE_CHANGES]
    return [f"{k}={config.get(k)!r} (saved: {saved.get(k)!r})" for k in keys if saved.get(k) != config.get(k)]


def _mismatch(path: Path, saved: DatasetIdentity, dataset: DatasetIdentity, remedy: str) -> RunMismatchError:
    return RunMismatchError(
        f"{path}: holds a run on another dataset ({', '.join(saved.differences(dataset))} differ): "
        f"it was trained on {saved.describe()}; this run uses {dataset.describe()}. {remedy}")


def check_resumable(path: str | Path, saved: Mapping[str, Any], config: Mapping[str, Any],
                    dataset: DatasetIdentity) -> None:
    """Raise unless the checkpoint ``saved`` (from ``path``) can be continued with ``config`` on ``dataset``.

    The one check behind ``train --resume`` and ``crossval``'s resume of an unfinished fold.

    Raises:
        RunMismatchError: the checkpoint is of another dataset (both are named).
        CheckpointError: the settings differ (each difference is listed).
    """
    path = Path(path)
    recorded = saved.get("dataset")
    if recorded is None:
        raise CheckpointError(f"{path}: records no dataset, so it cannot be continued safely; start the run over")
    saved_dataset = DatasetIdentity.from_dict(recorded)
    if saved_dataset.differences(dataset):
        raise _mismatch(path, saved_dataset, dataset, "Use another --out, or start over without --resume.")
    diff = config_differences(saved["config"], config)
    if diff:
        raise CheckpointError(f"{path}: cannot resume with a different config: " + ", ".join(diff))


def run_status(run: str | Path, config: Mapping[str, Any], dataset: DatasetIdentity) -> str:
    """Return what ``run`` holds for a run of ``config`` on ``dataset``.

    ``"finished"`` (every epoch done, the same settings: skip it), ``"resumable"`` (an unfinished
    run of the same settings), ``"other settings"`` (start it over) or ``"empty"``. Used by
    ``crossval``.

    Raises:
        RunMismatchError: ``run`` holds a run (finished or not) on another dataset.
    """
    run = Path(run)
    remedy = f"Pass another --out, or delete {run} to run this fold again."
    try:
        metrics = json.loads((run / METRICS_NAME).read_text())
    except (OSError, ValueError):
        metrics = None
    if isinstance(metrics, dict) and isinstance(metrics.get("dataset"), dict):
        saved = DatasetIdentity.from_dict(metrics["dataset"])
        if saved.differences(dataset):
            raise _mismatch(run, saved, dataset, remedy)
        if (metrics.get("epoch") == config.get("epochs") and metrics.get("selected") is not None
                and not config_differences(metrics.get("config", {}), config)):
            return "finished"
    try:
        ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    except CheckpointError:
        return "empty"
    try:  # the same check as train --resume
        check_resumable(run / CHECKPOINT_NAME, ckpt, config, dataset)
    except RunMismatchError:
        raise _mismatch(run, DatasetIdentity.from_dict(ckpt["dataset"]), dataset, remedy) from None
    except CheckpointError:  # other settings (or no dataset recorded): start over, as asked
        return "other settings"
    return "resumable" if int(ckpt["epoch"]) < int(config["epochs"]) else "other settings"


# ---------------------------------------------------------------------------------------------
# The epoch validation chose


def selected_epoch(history: Sequence[Mapping[str, Any]]) -> int | None:
    """Return the epoch with the best validation accuracy (the earliest on a tie); None without validation."""
    scored = [(row["val_acc"], -row["epoch"]) for row in history if row.get("val_acc") is not None]
    return -max(scored)[1] if scored else None


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
    recorded = best.get("dataset")
    if recorded is None or DatasetIdentity.from_dict(recorded).differences(dataset):
        raise CheckpointError(f"{path}: is not of this run's dataset ({dataset.describe()}); start the run over")
    return best


def remove_stale_best(out: str | Path) -> bool:
    """Delete ``out/best.pt`` left by an earlier run in the same folder; return True if there was one.

    A run that starts over has chosen no epoch yet, so any best.pt there is not its own.
    """
    path = Path(out) / BEST_NAME
    if path.exists():
        path.unlink()
        return True
    return False


def weights_file(path: str | Path) -> tuple[Path, str]:
    """Return the checkpoint to classify with, given a checkpoint file or a run folder, and why.

    A run folder gives its ``best.pt`` (the epoch validation chose, whose numbers the run
    reported) when it has one, else its ``checkpoint.pt`` (the last epoch). Used by ``predict``
    and notebook 5.

    Raises:
        CheckpointError: a folder with neither file.
    """
    path = Path(path)
    if not path.is_dir():
        return path, "the checkpoint given"
    if (path / BEST_NAME).is_file():
        return path / BEST_NAME, "the epoch validation selected (best.pt)"
    if (path / CHECKPOINT_NAME).is_file():
        return path / CHECKPOINT_NAME, "the last epoch (checkpoint.pt; the run had no validation fold)"
    raise CheckpointError(f"{path}: a folder without {BEST_NAME} or {CHECKPOINT_NAME} (not a run folder of train)")


# ---------------------------------------------------------------------------------------------
# The run files


def write_run_files(out: Path, *, config: TrainConfig, history: list[dict[str, Any]], test: Any,
                    selected: Any, device: str, amp: bool, skipped: list[tuple[str, str]],
                    dataset: DatasetIdentity, data_path: str) -> None:
    """Write history.json, metrics.json and predictions.csv (atomically) for the epochs so far.

    ``test`` is the last epoch's test-fold evaluation, ``selected`` the validation-selected
    epoch's (None without a validation fold, or before the end): predictions.csv holds the
    reported one's. Used by ``train.fit``.
    """
    write_json(out / HISTORY_NAME, history)
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
        "reported": {"weights": BEST_NAME if selected is not None else CHECKPOINT_NAME,
                     "epoch": chosen if selected is not None else history[-1]["epoch"]},
        "device": device, "amp": amp, "data": data_path, "dataset": dataset.to_dict(),
        "root": dataset.root, "skipped": [{"file": f, "problem": p} for f, p in skipped], "config": config.to_dict(),
    }
    write_json(out / METRICS_NAME, metrics)
    csv = (selected or test).predictions.to_csv(index=False)
    write_atomic(out / PREDICTIONS_NAME, lambda f: f.write(csv), mode="w")


def default_run_dir(command: str, model: str, root: str | Path, test_fold: int | None = None) -> Path:
    """Return the run folder a command uses when ``--out`` is not given: named after the model and
    the dataset, so runs on two datasets never share a folder by default.

    ``train``: ``runs/MODEL-DATASET-foldF``; ``crossval``: ``runs/crossval-MODEL-DATASET``.
    Used by the ``train`` and ``crossval`` commands and notebooks 6-8.
    """
    from us8k_lib.paths import dataset_name

    name = dataset_name(root)
    if command == "train":
        return Path("runs") / f"{model}-{name}-fold{test_fold}"
    return Path("runs") / f"{command}-{model}-{name}"
