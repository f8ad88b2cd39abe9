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

import hashlib
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from us8k_lib.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint
from us8k_lib.errors import CheckpointError, RunMismatchError, US8KError

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
HISTORY_NAME = "history.json"
METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.csv"
#: Held (an OS lock) for the life of a run; names the holder. Removed when the run ends.
LOCK_NAME = ".lock"
#: Every file a run writes, in the order a run folder lists them.
RUN_FILES = (BEST_NAME, CHECKPOINT_NAME, HISTORY_NAME, METRICS_NAME, PREDICTIONS_NAME)
#: TrainConfig fields that do not change a run's numbers (each checked bit for bit by a test on
#: the CPU), so a resumed run may change them and a finished one still counts as finished.
RESUMABLE_CHANGES = ("workers", "data")
_METADATA_COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
_TMP_MARK = ".tmp-"


class RunInUseError(US8KError):
    """Another process holds the run folder's lock (the message names the folder and the holder)."""


class RunExistsError(CheckpointError):
    """The folder holds a run this one must not replace unasked (the message names the choices)."""


# ---------------------------------------------------------------------------------------------
# Atomic writes


def write_atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` via a temporary file in the same folder, then rename it into place.

    A crash at any point leaves either the old file or the new one, never a partial file; a
    temporary left by a killed process is removed by :func:`sweep_temporaries`.

    Raises:
        OSError: naming ``path``, when it cannot be written (a full disk, a file size limit, no
            permission): the error of a ``write`` names no file, and the temporary's name is not the
            one to report.
    """
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN is an error, not invalid JSON)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    write_atomic(Path(path), lambda f: f.write(text), mode="w")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save a checkpoint dict atomically. Used by training runs and their tests.

    Raises:
        OSError: naming ``path``, when it cannot be written (see :func:`write_atomic`).
    """
    import io

    import torch

    def write(f: Any) -> None:
        # Serialized in memory first: torch.save turns a failed write to a file (a full disk) into a
        # RuntimeError about zip offsets, and the OSError naming the cause would be lost.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        f.write(buffer.getbuffer())

    write_atomic(Path(path), write)


def sweep_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries of :func:`write_atomic` in ``folder``; return them.

    Called with the folder's lock held, so no live writer owns one: each was left by a killed process.
    """
    swept = [p for p in Path(folder).glob(f".*{_TMP_MARK}*") if p.is_file()]
    for p in swept:
        p.unlink(missing_ok=True)
    return swept


# ---------------------------------------------------------------------------------------------
# The lock


class RunLock:
    """An OS lock on ``folder/.lock`` for the life of a run: released by the OS when its process
    dies, so a killed run never blocks the next one (``fcntl.flock`` on Linux and macOS,
    ``msvcrt.locking`` on Windows). The file names its holder (pid and host) for the message a
    second run gets. A folder the lock made is removed again on release if the run wrote nothing
    there (a run refused before its first write leaves no empty folder behind)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made_folder = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunInUseError` at once naming the folder and the holder."""
        self._made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            # O_BINARY on Windows: the holder's line is written as bytes, never as translated text
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
            try:
                _lock(fd)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunInUseError(f"{self.folder}: in use by another run ({holder}); wait for it to finish, "
                                    "or pass another --out") from None
            try:  # the holder may have removed the file between our open and our lock: retry on the new one
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            _unlock(fd)
            os.close(fd)
        os.lseek(fd, 0, os.SEEK_SET)  # Windows locked a byte far out, leaving the file position there
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if sys.platform != "win32":  # unlinked while still held: nobody can lock the old file after us
            self.path.unlink(missing_ok=True)
        _unlock(fd)
        os.close(fd)
        if sys.platform == "win32":  # an open file cannot be removed there; another run may have it open
            try:
                self.path.unlink(missing_ok=True)
            except PermissionError:
                pass
        if self._made_folder:
            try:
                self.folder.rmdir()  # only if empty: anything the run wrote stays
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: Windows locks byte ranges; the lock byte lies beyond the holder's line so the line stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 20


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode(errors="replace").strip()
    return text or "a process that is just starting"


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
    def from_dict(cls, d: Mapping[str, Any], where: str | Path = "run file") -> DatasetIdentity:
        """Rebuild an identity saved by :meth:`to_dict` into ``where`` (the file, named in errors).

        Raises:
            CheckpointError: naming ``where``, when ``d`` lacks a field (an older or foreign file).
        """
        names = ("name", "root", "n_clips", "metadata_sha256", "cache_key")
        missing = [k for k in names if k not in d] if isinstance(d, Mapping) else list(names)
        if missing:
            raise CheckpointError(f"{where}: damaged, or not written by this version of train: its dataset record "
                                  f"lacks {', '.join(missing)}, so the run it belongs to cannot be checked. "
                                  f"{_CHOICES} (or move the file away)")
        return cls(**{k: d[k] for k in names})


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


def config_differences(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Return ``field=new (saved: old)`` for every setting that differs, except :data:`RESUMABLE_CHANGES`."""
    keys = [k for k in {**saved, **config} if k not in RESUMABLE_CHANGES]
    return [f"{k}={config.get(k)!r} (saved: {saved.get(k)!r})" for k in keys if saved.get(k) != config.get(k)]


# ---------------------------------------------------------------------------------------------
# Opening a folder: new, continue, finished, or refused

_CHOICES = "Pass another --out (out=...), or --overwrite (overwrite=True) to replace it"
#: The same choices for a run asked to resume: the command line refuses --overwrite beside --resume.
_RESUME_CHOICES = ("Pass another --out (out=...) for a new run, or replace it: --overwrite in place of --resume "
                   "(overwrite=True, resume=False)")


def _choices(resume: bool) -> str:
    return _RESUME_CHOICES if resume else _CHOICES


def _mismatch(path: Path, saved: DatasetIdentity, dataset: DatasetIdentity, resume: bool = False) -> RunMismatchError:
    how = "To continue it, pass the dataset it was trained on (--root). " if resume else ""
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


def found_run_files(run: str | Path) -> list[str]:
    """Return the names of :data:`RUN_FILES` that ``run`` holds."""
    return [name for name in RUN_FILES if (Path(run) / name).exists()]


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
    if overwrite:
        if resume:
            raise ValueError("resume and overwrite exclude each other: continue the run, or replace it")
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
                             f"{config['epochs']}). Continue it with --resume (resume=True). {_CHOICES}.")
    diff = config_differences(ckpt["config"], config)
    if not resume and diff:
        state = "finished" if ckpt["epoch"] == ckpt["config"].get("epochs") else "unfinished"
        raise RunExistsError(f"{run}: holds a {state} run with other settings ({', '.join(diff)}); it was left as "
                             f"it is. {_CHOICES}.")
    check_resumable(run / CHECKPOINT_NAME, ckpt, config, dataset, resume=resume)  # raises, naming the differences
    raise AssertionError("run_status and check_resumable disagree")  # pragma: no cover


def decide(run: Path, config: Mapping[str, Any], dataset: DatasetIdentity, *, resume: bool,
           overwrite: bool) -> str:
    """Apply :func:`plan` (the caller holds the folder's lock): remove the old run's files to
    overwrite it; return ``"new"``, ``"resume"`` or ``"finished"``.

    Raises:
        CheckpointError: ``resume`` with no checkpoint to continue; and as :func:`plan`.
    """
    action = plan(run, config, dataset, resume=resume, overwrite=overwrite)
    if action == "new" and resume:
        raise CheckpointError(f"{run / CHECKPOINT_NAME}: no such checkpoint to resume")
    if action == "overwrite":
        # checkpoint.pt last: a removal cut short leaves a folder that still reads as the old run
        for name in sorted(RUN_FILES, key=lambda name: name == CHECKPOINT_NAME):
            (run / name).unlink(missing_ok=True)
    return "new" if action == "overwrite" else action
    return action


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
        from us8k_lib import distributed

        if self.path is None:
            if self.resume:
                raise ValueError("resume=True needs the run folder (out=...) holding the checkpoint")
            return "new"
        outcome: Any = None
        if self.writer:
            try:
                outcome = decide(self.path, config, dataset, resume=self.resume, overwrite=self.overwrite)
            except (US8KError, ValueError) as exc:
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
def locked(folder: Path | None, writer: bool = True, *, ranks_together: bool = False) -> Iterator[None]:
    """Hold ``folder``'s :class:`RunLock` (in the ``writer`` process) and sweep the temporaries of
    killed writes there; release the lock on exit. A second run stops here, naming the holder.

    ``ranks_together``: every torchrun rank calls this for the same folder (one DDP training, or
    ``crossval``'s own folder); rank 0 is the writer and every rank learns whether it got the
    lock, so all stop together. Used by :func:`open_run` and ``crossval``.
    """
    from us8k_lib import distributed

    lock = RunLock(folder) if folder is not None and writer else None
    problem = None
    if lock is not None:
        try:
            lock.acquire()
            sweep_temporaries(lock.folder)
        except (US8KError, OSError) as exc:
            problem = exc
    if ranks_together:
        problem = next((p for p in distributed.all_gather_objects(problem) if p is not None), None)
    if problem is not None:
        if lock is not None:
            lock.release()
        raise problem
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


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
    recorded = best.get("dataset")
    if recorded is None or DatasetIdentity.from_dict(recorded, path).differences(dataset):
        raise CheckpointError(f"{path}: is not of this run's dataset ({dataset.describe()}); start the run over")
    return best


def weights_file(path: str | Path) -> tuple[Path, str]:
    """Return the checkpoint to classify with, given a checkpoint file or a run folder, and why.

    A run folder gives the weights whose numbers it reported: its ``best.pt`` when it has one
    (the epoch validation chose), else its ``checkpoint.pt`` (the last epoch). Used by
    ``predict``, :func:`us8k_lib.checkpoint.load_model` and notebooks 5 and 8.

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


def saved_config(run: str | Path) -> dict[str, Any]:
    """Return the settings of the run in ``run`` (from its checkpoint), which ``--resume`` continues.

    Raises:
        CheckpointError: naming the file, when there is no usable checkpoint.
    """
    return load_checkpoint(Path(run) / CHECKPOINT_NAME)["config"]


def has_checkpoint(run: str | Path) -> bool:
    """True when ``run`` holds a checkpoint a run could continue from (``train`` says so when stopped)."""
    return (Path(run) / CHECKPOINT_NAME).is_file()


def read_results(run: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return a finished run's ``(metrics, history)`` as written by :func:`write_run_files`. Used by ``crossval``."""
    run = Path(run)
    return json.loads((run / METRICS_NAME).read_text()), json.loads((run / HISTORY_NAME).read_text())


def run_files(run: str | Path, selected: bool) -> list[Path]:
    """Return the files a run wrote (``best.pt`` only with an epoch ``selected``), as ``train`` lists them."""
    names = [n for n in RUN_FILES if n != BEST_NAME or selected]
    return [Path(run) / n for n in names]


# ---------------------------------------------------------------------------------------------
# The checkpoint layout and the files written after every epoch


def inference_state(net: Any, config: Any, history: list[dict[str, Any]], epoch: int, *, sr: int, length: int,
                    dataset: DatasetIdentity) -> dict[str, Any]:
    """What every checkpoint holds: enough to rebuild the model and classify with it."""
    from us8k_lib.metadata import CLASSES

    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": net.state_dict(),
        "model_config": asdict(net.config), "epoch": epoch, "history": history, "config": config.to_dict(),
        "classes": list(CLASSES), "sr": sr, "length": length, "dataset": dataset.to_dict(),
    }


def best_state(ckpt: Mapping[str, Any], best: Mapping[str, Any]) -> dict[str, Any]:
    """best.pt: the inference checkpoint of the selected epoch, with that epoch and its validation accuracy."""
    keep = {k: ckpt[k] for k in ("format", "version", "model_config", "history", "config", "classes", "sr",
                                  "length", "dataset")}
    selected = {k: best[k] for k in ("epoch", "val_acc", "val_fold")}
    return {**keep, "model": best["model"], "epoch": best["epoch"], "selected": selected}


def save_epoch(out: Path, ckpt: dict[str, Any], *, is_best: bool) -> None:
    """Write checkpoint.pt (which carries the selected weights so far, ``ckpt["best"]``), then
    best.pt when this epoch is the selected one. Each write is atomic."""
    save_checkpoint(out / CHECKPOINT_NAME, ckpt)
    if is_best:  # what predict and crossval use: the weights validation chose
        save_checkpoint(out / BEST_NAME, best_state(ckpt, ckpt["best"]))


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
                             f"{launch} --resume, or start a new run in another --out.")


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
                    dataset: DatasetIdentity, data_path: str) -> None:
    """Write history.json, predictions.csv and metrics.json (atomically) for the epochs so far.

    ``test`` is the last epoch's test-fold evaluation, ``selected`` the validation-selected
    epoch's (None without a validation fold, or before the end): predictions.csv holds the
    reported one's. metrics.json comes last, so that one naming the checkpoint's epoch (and its
    selection) vouches for the other two (:func:`run_files_current`). Used by ``train.fit``.
    """
    write_json(out / HISTORY_NAME, history)
    csv = reported(selected, test).predictions.to_csv(index=False)
    write_atomic(out / PREDICTIONS_NAME, lambda f: f.write(csv), mode="w")
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
        "device": device, "amp": amp, "data": data_path, "dataset": dataset.to_dict(),
        "root": dataset.root, "skipped": [{"file": f, "problem": p} for f, p in skipped], "config": config.to_dict(),
    }
    write_json(out / METRICS_NAME, metrics)


def run_files_current(run: str | Path, ckpt: Mapping[str, Any]) -> bool:
    """True when ``run``'s history.json, metrics.json and predictions.csv are those of its finished
    checkpoint ``ckpt``: the same history, and metrics.json (written last, see
    :func:`write_run_files`) of its last epoch, with its selected epoch reported. False for a run
    stopped while writing them, which ``train.fit`` then writes again. Reads, changes nothing."""
    run = Path(run)
    try:
        metrics, history = read_results(run)
    except (OSError, ValueError):
        return False
    if not isinstance(metrics, dict) or not (run / PREDICTIONS_NAME).is_file():
        return False
    chosen, last = selected_epoch(ckpt["history"]), ckpt["epoch"]
    return (history == list(ckpt["history"]) and metrics.get("epoch") == last
            and (metrics.get("selected") or {}).get("epoch") == chosen
            and (metrics.get("reported") or {}).get("epoch") == reported(chosen, last))


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
