"""The run folder: what a training run writes, which dataset and settings it belongs to, and the
rule that decides what a new run does with a folder that already holds one.

A run folder (``train --out``, or one ``foldNN/`` per test fold of ``crossval``) holds:

``checkpoint.pt``
    everything needed to continue after the last finished epoch.
``best.pt``
    with a validation fold only: the weights of the epoch validation chose, with that epoch and
    its validation accuracy. It is what the reported test accuracy and ``predictions.csv`` come
    from, and what ``predict RUN_FOLDER`` uses.
``history.json``, ``metrics.json``, ``predictions.csv``
    the learning curves, the numbers, and the reported epoch's per-clip predictions.

Every file is written atomically (a temporary file beside it, then a rename): a killed process
leaves the old file or the new one, never half of one. Its temporary (``.NAME.tmp-PID``) is swept
by the next run that opens the folder.

Every checkpoint and ``metrics.json`` records the run's config **and its dataset**
(:class:`DatasetIdentity`). Opening a folder for a run (:func:`open_run`) takes its lock
(:class:`RunLock`: a second run into a folder in use stops at once, naming the process that
holds it), then decides, before any training:

* nothing there: a new run;
* a finished run of the same settings and dataset: nothing to do (``train`` reports it,
  ``crossval`` skips it);
* an unfinished run of the same settings and dataset: continued when asked (``--resume``;
  ``crossval`` always continues its folds), bit for bit as if never stopped;
* anything else (other settings, another dataset, an unfinished run not asked to continue, run
  files without the ``checkpoint.pt`` they came from): refused, naming the choices (another
  ``--out``, or ``--overwrite``, which removes the old run's files first). A run is never
  silently replaced.

Used by notebooks 5-8 (through ``train.fit`` and ``crossval``), ``train``, ``crossval`` and ``predict``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from us8k_lib.errors import (
    CheckpointError,
    RunExistsError,
    RunMismatchError,
    SettingsError,
    US8KError,
    run_folder_choices,
    setting,
)
from us8k_lib.runs import files
from us8k_lib.runs.checkpoint import CHECKPOINT_NAME, load_checkpoint
from us8k_lib.runs.identity import DatasetIdentity
from us8k_lib.runs.lock import locked
from us8k_lib.runs.results import METRICS_NAME, RUN_FILES, found_run_files

#: The files a cross-validation folder holds beside its fold folders (:func:`fold_dir`).
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
CONFUSION_CSV = "confusion.csv"
SUMMARY_FILES = (SUMMARY_JSON, SUMMARY_CSV, CONFUSION_CSV)
#: TrainConfig fields that do not change a run's numbers (each checked bit for bit by a test on
#: the CPU), so a resumed run may change them and a finished one still counts as finished.
RESUMABLE_CHANGES = ("workers", "data")


# ---------------------------------------------------------------------------------------------
# Atomic writes


# ---------------------------------------------------------------------------------------------
# The lock


# ---------------------------------------------------------------------------------------------
# Whose run is it


def config_differences(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Return ``field=new (saved: old)`` for every setting that differs, except :data:`RESUMABLE_CHANGES`."""
    keys = [k for k in {**saved, **config} if k not in RESUMABLE_CHANGES]
    return [f"{k}={config.get(k)!r} (saved: {saved.get(k)!r})" for k in keys if saved.get(k) != config.get(k)]


# ---------------------------------------------------------------------------------------------
# Opening a folder: new, continue, finished, or refused

def check_resume_or_overwrite(resume: bool, overwrite: bool) -> None:
    """Raise when a run is asked both to continue the run in its folder and to replace it.

    Raises:
        SettingsError: naming both settings (used by :func:`plan` and the ``train`` command's flags).
    """
    if resume and overwrite:
        raise SettingsError(f"{setting('resume', True)} and {setting('overwrite', True)} exclude each other: continue "
                            "the run in the folder, or replace it, one of the two")


def _choices(resume: bool) -> str:
    return run_folder_choices(resume)


def _mismatch(path: Path, saved: DatasetIdentity, dataset: DatasetIdentity, resume: bool = False) -> RunMismatchError:
    how = f"To continue it, pass the dataset it was trained on ({setting('root')}). " if resume else ""
    return RunMismatchError(
        f"{path}: holds a run on another dataset ({', '.join(saved.differences(dataset))} differ): "
        f"it was trained on {saved.describe()}; this run uses {dataset.describe()}. {how}{_choices(resume)}.")


def check_resumable(path: str | Path, saved: Mapping[str, Any], config: Mapping[str, Any],
                    dataset: DatasetIdentity, *, resume: bool = True) -> None:
    """Raise unless the checkpoint ``saved`` (from ``path``) can be continued with ``config`` on ``dataset``.
    ``resume``: the run was asked to continue it (the message then names the choices open to such a run).

    Raises:
        RunMismatchError: the checkpoint is of another dataset (both are named).
        CheckpointError: the settings differ (each difference is listed).
    """
    path = Path(path)
    recorded = saved.get("dataset")
    if recorded is None:
        raise CheckpointError(f"{path}: records no dataset, so it cannot be continued safely. {_choices(resume)}.")
    saved_dataset = DatasetIdentity.from_dict(recorded, path)
    if saved_dataset.differences(dataset):
        raise _mismatch(path.parent, saved_dataset, dataset, resume)
    diff = config_differences(saved["config"], config)
    if diff:
        raise RunExistsError(f"{path}: cannot resume with a different config: {', '.join(diff)}. To continue it, "
                             f"leave out the settings that differ (its own are used). {_choices(resume)}.")


def run_status(run: str | Path, config: Mapping[str, Any], dataset: DatasetIdentity, *, resume: bool = False) -> str:
    """Return what ``run`` holds for a run of ``config`` on ``dataset``, without changing anything
    (``resume``: the run was asked to continue, for the wording of an error).

    ``"empty"``, ``"finished"`` (every epoch done, the same settings), ``"resumable"`` (an
    unfinished run of the same settings), ``"other settings"``, or ``"files without checkpoint"``
    (some of :data:`RUN_FILES` but no ``checkpoint.pt``: results that can be neither checked nor
    continued).

    Raises:
        RunMismatchError: ``run`` holds a run (finished or not) on another dataset.
    """
    run = Path(run)
    if not (run / CHECKPOINT_NAME).is_file():
        # Results without the checkpoint they came from still are a run's results: never taken
        # for an empty folder, which a new run would fill over them.
        return "files without checkpoint" if found_run_files(run) else "empty"
    try:  # metrics.json first: a finished run is recognised without loading its weights
        metrics = json.loads((run / METRICS_NAME).read_text())
    except (OSError, ValueError):
        metrics = None
    if isinstance(metrics, dict) and isinstance(metrics.get("dataset"), dict):
        saved = DatasetIdentity.from_dict(metrics["dataset"], run / METRICS_NAME)
        if saved.differences(dataset):
            raise _mismatch(run, saved, dataset, resume)
        if (metrics.get("epoch") == config.get("epochs") and "reported" in metrics
                and (metrics.get("selected") is not None or config.get("val_fold") is None)
                and not config_differences(metrics.get("config", {}), config)):
            return "finished"
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    try:
        check_resumable(run / CHECKPOINT_NAME, ckpt, config, dataset, resume=resume)
    except RunMismatchError:
        raise
    except CheckpointError:
        return "other settings"
    return "resumable" if int(ckpt["epoch"]) < int(config["epochs"]) else "finished"


def plan(run: Path, config: Mapping[str, Any], dataset: DatasetIdentity, *, resume: bool, overwrite: bool,
         continue_unfinished: bool = False) -> str:
    """Return what a run of ``config`` on ``dataset`` will do with the folder ``run``, changing nothing:
    ``"new"``, ``"resume"`` (continue its checkpoint), ``"finished"`` (nothing left to train) or
    ``"overwrite"`` (remove the run there and start over). The rule of the module docstring;
    ``crossval`` checks every fold with it before training any, with ``continue_unfinished``
    (an unfinished run of the same settings is continued without being asked to resume).

    Raises:
        RunExistsError: the folder holds a run this one must not replace (the choices are named).
        RunMismatchError: it holds a run on another dataset (both named).
        CheckpointError: its checkpoint is damaged.
    """
    check_resume_or_overwrite(resume, overwrite)
    if overwrite:
        return "overwrite"
    status = run_status(run, config, dataset, resume=resume)
    if status == "files without checkpoint":
        raise RunExistsError(f"{run}: holds run files ({', '.join(found_run_files(run))}) but no {CHECKPOINT_NAME}, "
                             f"so they can be neither checked nor continued; they were left as they are. "
                             f"{_choices(resume)}.")
    if status in ("empty", "finished"):
        return "new" if status == "empty" else "finished"
    if status == "resumable" and (resume or continue_unfinished):
        return "resume"
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    if status == "resumable":
        raise RunExistsError(f"{run}: holds an unfinished run of these settings (epoch {ckpt['epoch']} of "
                             f"{config['epochs']}). Continue it with {setting('resume', True)}. {_choices(False)}.")
    diff = config_differences(ckpt["config"], config)
    if not resume and diff:
        state = "finished" if ckpt["epoch"] == ckpt["config"].get("epochs") else "unfinished"
        raise RunExistsError(f"{run}: holds a {state} run with other settings ({', '.join(diff)}); it was left as "
                             f"it is. {_choices(False)}.")
    check_resumable(run / CHECKPOINT_NAME, ckpt, config, dataset, resume=resume)  # raises, naming the differences
    raise AssertionError("run_status and check_resumable disagree")  # pragma: no cover


def decide(run: Path, config: Mapping[str, Any], dataset: DatasetIdentity, *, resume: bool,
           overwrite: bool) -> str:
    """Apply :func:`plan` (the caller holds the folder's lock): remove the old run's files to
    overwrite it; return ``"new"``, ``"resume"`` or ``"finished"``.

    Raises:
        CheckpointError: ``resume`` with no checkpoint to continue; and as :func:`plan`.
    """
    check_kind(run, "train")
    action = plan(run, config, dataset, resume=resume, overwrite=overwrite)
    if action == "new" and resume:
        raise CheckpointError(f"{run / CHECKPOINT_NAME}: no such checkpoint to resume")
    if action != "finished":
        files.check_writable(run)  # before any training: not an epoch later, when it saves
    if action == "overwrite":
        # checkpoint.pt last: a removal cut short leaves a folder that still reads as the old run
        for name in sorted(RUN_FILES, key=lambda name: name == CHECKPOINT_NAME):
            (run / name).unlink(missing_ok=True)
    return "new" if action == "overwrite" else action


@dataclass
class OpenRun:
    """A run folder opened for one run (see :func:`open_run`).

    Attributes:
        path: the folder (None: the run writes nothing).
        writer: whether this process writes it (rank 0 under torchrun).
        resume, overwrite: what the run was asked to do with a run already there (:func:`plan`).
        ddp: one training over every torchrun rank (they decide together).
        action: ``"new"``, ``"resume"`` or ``"finished"``, once :meth:`decide` has run.
        checkpoint: the checkpoint to continue from (``"resume"`` and ``"finished"``).
    """

    path: Path | None
    writer: bool
    resume: bool
    overwrite: bool
    ddp: bool = False
    action: str = "new"
    checkpoint: dict[str, Any] | None = None

    def saved_config(self) -> dict[str, Any] | None:
        """The config of the checkpoint to resume (None unless resuming): what ``--resume`` continues."""
        return saved_config(self.path) if self.resume and self.path is not None else None

    def decide(self, config: Mapping[str, Any], dataset: DatasetIdentity) -> str:
        """Apply the folder rule (:func:`decide`) for this run; return the action (every rank agrees)."""
        from us8k_lib.engine import distributed

        if self.path is None:
            if self.resume:
                raise ValueError("resume=True needs the run folder (out=...) holding the checkpoint")
            return "new"
        outcome: Any = None
        if self.writer:
            try:
                outcome = decide(self.path, config, dataset, resume=self.resume, overwrite=self.overwrite)
            except (US8KError, ValueError, OSError) as exc:
                outcome = exc
        if self.ddp:
            outcome = distributed.all_gather_objects(outcome)[0]  # rank 0's decision holds for all
        if isinstance(outcome, BaseException):
            raise outcome
        self.action = outcome
        if outcome != "new":
            self.checkpoint = load_checkpoint(self.path / CHECKPOINT_NAME)
        return outcome


@contextmanager
def open_run(out: str | Path | None, *, resume: bool = False, overwrite: bool = False,
             writer: bool = True, ddp: bool = False) -> Iterator[OpenRun]:
    """Open the run folder ``out`` for one run: hold its lock (:func:`locked`) while the run lasts.

    ``ddp``: the run is one training over every torchrun rank, rank 0 the ``writer``. The folder
    rule itself runs in :meth:`OpenRun.decide`, once the run's dataset is known. Used by ``train.fit``.
    """
    path = Path(out) if out is not None else None
    with locked(path, writer, ranks_together=ddp):
        yield OpenRun(path, writer, resume, overwrite, ddp)


# ---------------------------------------------------------------------------------------------
# The epoch validation chose, and the weights a run reports


def saved_config(run: str | Path) -> dict[str, Any]:
    """Return the settings of the run in ``run`` (from its checkpoint), which ``--resume`` continues.

    Raises:
        CheckpointError: naming the file, when there is no usable checkpoint.
    """
    return load_checkpoint(Path(run) / CHECKPOINT_NAME)["config"]


def has_checkpoint(run: str | Path) -> bool:
    """True when ``run`` holds a checkpoint a run could continue from (``train`` says so when stopped)."""
    return (Path(run) / CHECKPOINT_NAME).is_file()


# ---------------------------------------------------------------------------------------------
# The checkpoint layout and the files written after every epoch


def check_processes(out: Path, ckpt: Mapping[str, Any], processes: int) -> None:
    """Raise unless the checkpoint in ``out`` was trained by as many processes as continue it.

    Each torchrun rank trains on its share of every batch (its own batch-norm statistics, its own
    order of clips), so a run continued on another number of processes would not end as it would
    have without the stop. Checkpoints that record no number were written by one process.

    Raises:
        RunExistsError: naming the folder, both numbers and how to continue.
    """
    saved = int(ckpt.get("processes", 1))
    if saved != processes:
        launch = (f"torchrun --nproc-per-node={saved} -m us8k_lib train ..." if saved > 1
                  else "python -m us8k_lib train ... (without torchrun)")
        raise RunExistsError(f"{out}: was trained by {saved} process(es) and this run has {processes}; continued on "
                             f"another number it would not end as it would have without the stop. Continue it with "
                             f"{launch} --resume, or start a new run in another run folder ({setting('out')}).")


def default_run_dir(command: str, model: str, root: str | Path, test_fold: int | None = None) -> Path:
    """Return the run folder a command uses when ``--out`` is not given: named after the model and
    the dataset, so runs on two datasets never share a folder by default.

    ``train``: ``runs/MODEL-DATASET-foldF``; ``crossval``: ``runs/crossval-MODEL-DATASET``.
    Used by the ``train`` and ``crossval`` commands (notebooks 6-8 name their own folders).
    """
    from us8k_lib.paths import dataset_name

    name = dataset_name(root)
    if command == "train":
        return Path("runs") / f"{model}-{name}-fold{test_fold}"
    return Path("runs") / f"{command}-{model}-{name}"


def fold_dir(out: Path, test_fold: int) -> Path:
    """Return the run folder of one test fold inside a cross-validation folder (``fold01`` ...)."""
    return Path(out) / f"fold{test_fold:02d}"


def check_kind(folder: Path, kind: str) -> None:
    """Raise unless ``folder`` is empty of the other kind of run: a cross-validation (``kind``
    ``"crossval"``) does not go where one training run's files are, and one training run
    (``"train"``) does not go where a cross-validation's fold folders or summary are; a folder of
    both would mix two results. Called with the folder's lock held.

    Raises:
        RunExistsError: naming the folder and what it holds.
    """
    if not folder.is_dir():
        return
    if kind == "crossval":
        found = found_run_files(folder)
        what = f"the files of one training run ({', '.join(found)})" if found else ""
    else:
        found = sorted(p.name for p in folder.glob("fold[0-9][0-9]") if p.is_dir())
        found += [name for name in SUMMARY_FILES if (folder / name).exists()]
        what = f"a cross-validation ({', '.join(found)})" if found else ""
    if what:
        doing = "a cross-validation" if kind == "crossval" else "one training run"
        raise RunExistsError(f"{folder}: holds {what}, not {doing}; it was left as it is. Choose another run "
                             f"folder ({setting('out')}).")
