"""What a training run is made of, set up before its first epoch: the dataset (opened once), the
folds' datasets and how their batches are served, and the model, optimizer, schedule and augmenter.

:func:`us8k_lib.engine.fit.fit` builds these (with :mod:`us8k_lib.train`'s functions, as notebook 5
does on its page) and then only loops over epochs; ``crossval`` opens the dataset once
(:class:`DataSource`) and hands it to every fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from us8k_lib.engine.batches import DataPath, DeviceBatches, EpochSampler, choose_data_path
from us8k_lib.engine.distributed import barrier, is_main
from us8k_lib.errors import US8KError
from us8k_lib.metadata import CLASSES
from us8k_lib.recipe import TrainConfig
from us8k_lib.runs.identity import DatasetIdentity, dataset_identity
from us8k_lib.train import PER_BATCH_SCHEDULERS, make_batches, make_optimizer, make_scheduler

#: The torch.compile backend of ``TrainConfig(compile=True)``. Inductor generates fused kernels
#: (C++ on a CPU, Triton on a GPU); the tests use "aot_eager", which traces the same graphs
#: without generating code (inductor's CPU compile of M5 takes minutes on a 2-core machine).
COMPILE_BACKEND = "inductor"


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class DataSource:
    """A dataset opened once: its resolved folder, its metadata and its formatting-cache key.

    Pass one as ``root`` to :func:`us8k_lib.engine.fit.fit` to spare it opening the dataset again
    (``crossval`` does, for every fold).
    """

    root: Path
    metadata: pd.DataFrame
    cache_key: str
    _identities: dict[tuple[int, ...], DatasetIdentity] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root: str | Path | None, *, verbose: bool = True) -> DataSource:
        """Resolve ``root`` (None: :func:`us8k_lib.paths.resolve_root`), load its metadata and key its cache."""
        from us8k_lib.engine.cache import cache_key
        from us8k_lib.metadata import load_metadata
        from us8k_lib.paths import normalize_root, resolve_root

        root = resolve_root(verbose=verbose) if root is None else normalize_root(root)
        metadata = load_metadata(root)
        return cls(root, metadata, cache_key(root, metadata))

    @property
    def folds(self) -> list[int]:
        """The folds the dataset has."""
        return sorted(int(f) for f in self.metadata["fold"].unique())

    def identity(self, folds: Sequence[int | None]) -> DatasetIdentity:
        """Return the :class:`DatasetIdentity` of a run on ``folds`` (None entries are ignored),
        computed once per set of folds (every fold of a cross-validation uses them all)."""
        key = tuple(sorted({int(f) for f in folds if f is not None} & set(self.folds)))
        if key not in self._identities:
            used = self.metadata[self.metadata["fold"].isin(key)]
            self._identities[key] = dataset_identity(self.root, used, self.cache_key)
        return self._identities[key]


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
class RunData:
    """The datasets of one run and how their batches are served."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    skipped: list[tuple[str, str]]
    identity: DatasetIdentity
    path: DataPath
    sr: int
    length: int


def _require_clips(root: Path, config: TrainConfig, n_train: int, n_val: int, n_test: int) -> None:
    """Raise :class:`US8KError` naming ``root`` and the fold when a role of ``config`` has no clips."""
    if n_train == 0:
        raise US8KError(f"{root}: no training clips in folds {list(config.folds_to_train)}")
    if config.val_fold is not None and n_val == 0:
        raise US8KError(f"{root}: no validation clips in fold {config.val_fold}")
    if n_test == 0:
        raise US8KError(f"{root}: no test clips in fold {config.test_fold}")


def prepare_data(config: TrainConfig, source: DataSource, identity: DatasetIdentity, *,
                 cache_dir: str | Path | None, skip_bad: bool, progress: bool, ddp: bool,
                 device: torch.device) -> RunData:
    """Format the clips (once: on rank 0 under torchrun, while the others wait) and build the datasets."""
    from us8k_lib.dataset import US8KDataset
    from us8k_lib.engine.cache import build_cache

    root, metadata = source.root, source.metadata
    per_fold = metadata["fold"].value_counts()
    _require_clips(root, config, sum(int(per_fold.get(f, 0)) for f in config.folds_to_train),
                   int(per_fold.get(config.val_fold, 0)), int(per_fold.get(config.test_fold, 0)))  # before formatting
    if ddp:  # one rank formats the 8 732 clips; the others open the finished cache
        if is_main():
            build_cache(root, metadata, cache_dir=cache_dir, skip_bad=skip_bad, progress=progress)
        barrier()
    kwargs = dict(metadata=metadata, cache_dir=cache_dir, skip_bad=skip_bad, progress=progress)
    train_folds = [f for f in config.folds_to_train if f in source.folds]
    train_ds = US8KDataset(root, train_folds, **kwargs)
    val_ds = US8KDataset(root, [config.val_fold], **kwargs) if config.val_fold is not None else None
    test_ds = US8KDataset(root, [config.test_fold], **kwargs)
    _require_clips(root, config, len(train_ds), len(val_ds) if val_ds is not None else 0, len(test_ds))  # --skip-bad
    skipped = [s for ds in (train_ds, val_ds, test_ds) if ds is not None for s in ds.skipped]
    if config.permute_labels:
        labels = train_ds.table["classID"].to_numpy()
        perm = np.random.default_rng(config.seed).permutation(len(labels))
        train_ds = _PermutedLabels(train_ds, labels[perm])
    path = choose_data_path(config.data, device, test_ds.cache.nbytes)
    return RunData(train_ds, val_ds, test_ds, skipped, identity, path, int(test_ds.cache.sr),
                   int(test_ds.cache.length))


# ---------------------------------------------------------------------------------------------
# Model, optimizer, schedule


@dataclass
class Parts:
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
    #: Processes training this one model (torchrun ranks; 1 without): each takes its share of a batch.
    processes: int = 1


def build_parts(config: TrainConfig, data: RunData, device: torch.device, *, ddp: bool, rank: int,
                world: int) -> Parts:
    """Return the run's :class:`Parts` on ``device`` (DDP-wrapped under torchrun)."""
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
    optimizer = make_optimizer(net, lr=config.lr, weight_decay=config.weight_decay, kind=config.optimizer)
    batches = make_batches(data.train, config.batch_size // world, device=device, seed=config.seed,
                           data=data.path.kind, workers=config.workers, rank=rank, world=world)
    scheduler = make_scheduler(config.scheduler, optimizer, epochs=config.epochs, steps_per_epoch=len(batches),
                               step_size=config.step_size, gamma=config.gamma)
    per_batch = config.scheduler in PER_BATCH_SCHEDULERS
    augmenter = None
    if config.augments:
        from us8k_lib.augment import Augmenter

        augmenter = Augmenter.from_config(config, sr=data.sr, n_classes=len(CLASSES), device=device, rank=rank)
    return Parts(net, model, optimizer, scheduler, per_batch, augmenter, batches.sampler, batches, processes=world)


def describe(config: TrainConfig, data: RunData, parts: Parts, device: torch.device, ddp: bool, world: int) -> str:
    """Return the line a run prints before its first epoch: what trains on what, where, and how."""
    val = f", validating on {len(data.val)} (fold {config.val_fold})" if data.val is not None else ""
    where = f"{world} ranks ({device.type}, DDP)" if ddp else f"device {device.type}"
    folds = ",".join(map(str, sorted(set(data.train.table["fold"]))))
    served = ("batches gathered on the device from a copy of the cache" if data.path.kind == "device" else
              f"batches through a DataLoader ({parts.batches.num_workers} workers)")
    return (f"Training {parts.net.title} on {len(data.train)} clips (folds {folds}){val}, testing on "
            f"{len(data.test)} (fold {config.test_fold}) of {data.identity.name}; {where}; {served}: "
            f"{data.path.reason}" + (f"; augmenting: {parts.augmenter.describe()}" if parts.augmenter else "")
            + ("; torch.compile" if config.compile else "") + ".")
