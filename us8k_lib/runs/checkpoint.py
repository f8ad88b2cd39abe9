"""The checkpoint format: what a checkpoint holds, saving one (atomically) and loading one back.

A checkpoint (``checkpoint.pt`` after every epoch, ``best.pt`` for the epoch validation selected)
holds the model's weights and config, the run's config, history and dataset identity, and, in
``checkpoint.pt``, what training needs to continue as if never stopped: the optimizer's and the
schedule's states, the augmenter's generators and the random-number-generator states
(:func:`training_state`, put back by :func:`restore_training_state`). Loading uses
``weights_only=True``, so a checkpoint from elsewhere cannot run code, and checks the format
marker and version. Used by ``fit``, :mod:`us8k_lib.runs.results`, ``predict`` and ``crossval``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from us8k_lib.errors import CheckpointError
from us8k_lib.metadata import CLASSES
from us8k_lib.model import ModelConfig, build_model, upgrade_state_dict
from us8k_lib.runs import files
from us8k_lib.runs.identity import DatasetIdentity

#: Written into every checkpoint so ``predict`` can tell a checkpoint from any other file.
CHECKPOINT_FORMAT = "us8k-checkpoint"
#: The marker of versions 1 and 2, from when M5 was the only model: recognised, to say which version.
_OLD_FORMAT = "us8k-m5-checkpoint"
#: 3: records the run's dataset (``dataset``, see :class:`us8k_lib.runs.identity.DatasetIdentity`) and
#: calls the width ``width`` in the training config too; ``best.pt`` records the epoch it holds.
#: 2: ``model_config`` is a :class:`us8k_lib.model.ModelConfig` (any model of the family).
#: Older checkpoints are refused by version, with the reason.
CHECKPOINT_VERSION = 3
#: The checkpoint of the last finished epoch: what a run continues from.
CHECKPOINT_NAME = "checkpoint.pt"
#: With a validation fold: the weights of the epoch validation selected.
BEST_NAME = "best.pt"


#: The last checkpoint read, by its file's identity (path, inode, size, modification time): a command
#: that asks for one checkpoint several times (``train --resume`` reads its settings, then the run
#: folder's rule and the resume itself read it) reads the file once. A rewritten file is read anew.
_LAST_READ: dict[tuple[str, int, int, int], dict[str, Any]] = {}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint written by ``fit``; return its contents (a new dict each call,
    whose values are shared with the last read of the same unchanged file: do not change them in place).

    Loading uses ``weights_only=True``: a checkpoint from elsewhere cannot run code.

    Raises:
        CheckpointError: naming the file, when it is missing, not a checkpoint, or damaged.

    Used by every module that reads a run folder (``predict``, ``crossval``, resuming).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file (expected a checkpoint written by train)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _LAST_READ:
        ckpt = _read_checkpoint(path)
        _LAST_READ.clear()
        _LAST_READ[key] = ckpt
    return dict(_LAST_READ[key])


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check the checkpoint file ``path`` (see :func:`load_checkpoint`)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        # torch's own message for a foreign pickle suggests weights_only=False, which would let
        # the file run code: not advice to pass on, so only its type is shown.
        if _is_torch_archive(path):
            raise CheckpointError(f"{path}: damaged or incomplete checkpoint (a torch file that cannot be read "
                                  f"to its end, e.g. a copy or download cut short: {type(exc).__name__}); "
                                  "copy it again or train again") from exc
        raise CheckpointError(
            f"{path}: not a checkpoint written by train (torch.load cannot read it: {type(exc).__name__})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (CHECKPOINT_FORMAT, _OLD_FORMAT):
        raise CheckpointError(f"{path}: not a checkpoint written by train (no '{CHECKPOINT_FORMAT}' marker)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')}, this code reads {CHECKPOINT_VERSION} "
                              "(written by an older us8k_lib: train the model again)")
    missing = [k for k in ("model", "model_config", "config", "epoch", "history", "classes") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {missing}")
    name = str(ckpt["model_config"].get("name", ""))
    ckpt["model"] = upgrade_state_dict(name, ckpt["model"])  # M5's layers were once named after the family's
    if isinstance(ckpt.get("best"), dict) and "model" in ckpt["best"]:
        ckpt["best"]["model"] = upgrade_state_dict(name, ckpt["best"]["model"])
    return ckpt


def _is_torch_archive(path: Path) -> bool:
    """True for a file that starts as torch.save writes (a zip archive): damaged rather than foreign."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_model(checkpoint: str | Path | dict[str, Any], *, path: str | Path | None = None) -> nn.Module:
    """Return the network stored in a checkpoint (any model of the family), on CPU, in eval mode.

    ``checkpoint`` is a checkpoint file or one already loaded (then ``path`` names its file in errors).

    Raises:
        CheckpointError: naming the file, when it cannot be read (see :func:`load_checkpoint`)
            or its model config or weights do not fit this code.

    Used by :meth:`us8k_lib.crossval.CrossValResult.fold_model` (notebook 8), the upload widget (notebook 5) and
    ``predict``.
    """
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    where = str(path if path is not None else "checkpoint") if isinstance(checkpoint, dict) else str(checkpoint)
    try:
        model = build_model(ModelConfig(**ckpt["model_config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: its model config {ckpt['model_config']} does not fit this code: "
                              f"{exc}") from exc
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:  # torch lists every missing, unexpected and misshaped tensor
        first = str(exc).splitlines()[1:2] or [""]
        raise CheckpointError(f"{where}: its weights do not fit the {model.title} its config describes "
                              f"({first[0].strip()})") from exc
    return model.eval()


def rng_states() -> dict[str, Any]:
    """Return the global random-number-generator states (torch, CUDA, numpy, Python) for a checkpoint.

    The training order and the augmentation draw from generators seeded per epoch, so these only
    matter for code that uses the global generators; they are restored so that it too continues
    as if never stopped.
    """
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        # plain Python types, so the checkpoint loads with weights_only=True
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save a checkpoint dict atomically. Used by training runs and their tests.

    Raises:
        OSError: naming ``path``, when it cannot be written (see :func:`us8k_lib.runs.files.write_atomic`).
    """
    def write(f: Any) -> None:
        # Serialized in memory first: torch.save turns a failed write to a file (a full disk) into a
        # RuntimeError about zip offsets, and the OSError naming the cause would be lost.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        f.write(buffer.getbuffer())

    files.write_atomic(Path(path), write)


def inference_state(net: Any, config: Any, history: list[dict[str, Any]], epoch: int, *, sr: int, length: int,
                    dataset: DatasetIdentity) -> dict[str, Any]:
    """What every checkpoint holds: enough to rebuild the model and classify with it."""
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


def training_state(optimizer: torch.optim.Optimizer, scheduler: Any, augmenter: Any, processes: int) -> dict[str, Any]:
    """Return what ``checkpoint.pt`` adds to the weights so that training continues as if never
    stopped: the optimizer's and the schedule's states, the random-number-generator states, the
    augmenter's generators (when it augments) and the number of processes that trained it."""
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states(),
            "processes": processes, **({"augment": augmenter.state_dict()} if augmenter is not None else {})}


def restore_training_state(ckpt: Mapping[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any, augmenter: Any) -> None:
    """Put back the weights and what :func:`training_state` saved into a run's parts."""
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng_states(ckpt["rng"])
    if augmenter is not None and "augment" in ckpt:
        augmenter.load_state_dict(ckpt["augment"])
