"""How batches reach the model: an epoch order that depends on (seed, epoch) alone, served from the
cache file through a DataLoader, or from a copy of the cache kept in the training device's memory.

**The order.** :class:`EpochSampler` shuffles the training clips with a generator seeded from
``(run seed, epoch)`` and nothing else (as ``DistributedSampler`` does with ``set_epoch``), so
an epoch's batches are the same whatever the number of workers, however often the run was
resumed, and however they are served. A DataLoader's own ``shuffle=True`` would not give that: it
draws from one generator that carries over from epoch to epoch *and* seeds its worker processes
from it when they start, so its order depends on the workers and on where a run resumed.

**Two ways to serve them**, one order:

* ``"loader"``: a ``torch.utils.data.DataLoader`` reading rows of the cache file (pinned memory and
  worker processes on CUDA). The cache stays a file the OS keeps in its page cache, so a CPU
  training process stays small (1.1 GB of real data never becomes part of it).
* ``"device"``: :class:`DeviceBatches` copies the whole formatted cache to the device once (1.1 GB
  for the full dataset: a small part of a modern GPU) and gathers each batch there with one
  ``index_select``: no worker processes, no pinned host copies, no host-to-device copy per batch.

:func:`choose_data_path` picks one: on CUDA the device copy when the cache takes at most
:data:`DEVICE_FRACTION` of the free device memory, else the loader (and it says why); on a CPU the
loader. Both give the same batches bit for bit (tested on the CPU, where ``data="device"`` can be
forced).

Used by notebook 5 (through :func:`us8k_lib.train.make_batches`), every training run and ``evaluate``.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from us8k_lib.dataset import collate_clips
from us8k_lib.recipe import DATA_PATHS

#: "auto" keeps the cache on a GPU when it takes at most this share of the free memory: the
#: model, its activations, the optimizer and cuDNN's workspaces get the rest.
DEVICE_FRACTION = 0.25


def epoch_seed(seed: int, epoch: int) -> int:
    """Return the shuffling seed of ``epoch`` of a run seeded ``seed`` (distinct for every pair).

    Used by :class:`EpochSampler`.
    """
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 0x5A3]).generate_state(2)
    return (int(words[0]) << 31) ^ int(words[1])


class EpochSampler(Sampler[int]):
    """The clips of one epoch in a shuffled order that depends only on (seed, epoch).

    Call :meth:`set_epoch` before each epoch. With ``world > 1`` (DDP under torchrun) rank ``r``
    gets every ``world``-th clip of the epoch's order, starting at ``r``, the order padded by
    repeating its first clips so every rank takes the same number of steps (as
    ``DistributedSampler`` does).

    Args:
        n: number of clips.
        seed: the run's seed.
        rank, world: this process's rank and the number of ranks.
        shuffle: False serves ``0 .. n-1`` in order (padded the same way).

    Used by ``engine.fit.fit`` and :class:`DeviceBatches`.
    """

    def __init__(self, n: int, seed: int, *, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one item, got {n}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.n, self.seed, self.rank, self.world, self.shuffle = n, int(seed), rank, world, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`order` and iteration return."""
        self.epoch = int(epoch)

    def order(self) -> torch.Tensor:
        """Return this rank's clip indices for the current epoch (int64, CPU)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        total = math.ceil(self.n / self.world) * self.world
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        return order[self.rank : total : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


def _collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, tuple):  # already stacked (train's permuted-labels dataset)
        return batch
    return collate_clips(batch)


def _seed_worker(worker_id: int) -> None:
    # Loading a batch draws no random numbers; seeding numpy and random from the worker's torch
    # seed keeps it that way for any dataset that would.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_workers(device: torch.device) -> int:
    """Return how many DataLoader workers a run uses when it is not told: 0 on a CPU (a batch is a
    memory copy from the cache file), up to 4 on a GPU (the copies then overlap the steps)."""
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def make_loader(dataset: Dataset, batch_size: int, *, device: torch.device, workers: int | None = None,
                sampler: Sampler | None = None, shuffle: bool = False,
                generator: torch.Generator | None = None) -> DataLoader:
    """Return a DataLoader suited to ``device``: pinned memory on CUDA, worker processes seeded.

    Training passes an :class:`EpochSampler`; evaluation passes neither sampler nor ``shuffle``
    (the clips in dataset order). ``shuffle``/``generator`` are for other uses (a DataLoader
    that shuffles by itself; training does not, see the module docstring). The worker processes'
    seeds come from a private generator, so starting them never advances the global random state.
    Used by :func:`us8k_lib.train.make_batches` and :func:`us8k_lib.evaluate.evaluate` (notebook 5, every training run).
    """
    if workers is None:
        workers = default_workers(device)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        generator=generator, num_workers=workers, persistent_workers=workers > 0, worker_init_fn=_seed_worker,
        pin_memory=device.type == "cuda", collate_fn=_collate,
    )


# ---------------------------------------------------------------------------------------------
# The cache in device memory


_RESIDENT: dict[tuple[str, str, str], torch.Tensor] = {}


def resident_waveforms(cache: Any, device: torch.device) -> torch.Tensor:
    """Return every row of a :class:`us8k_lib.engine.cache.FormattedCache` as one ``[N, 1, length]``
    float32 tensor on ``device``, copied once per process and device (and reused after that).

    Rows are copied in chunks of about 64 MB through one pinned buffer, so the host never holds a
    second full copy. Used by :class:`DeviceBatches`.
    """
    key = (str(cache.path), cache.key, str(device))
    if key in _RESIDENT:
        return _RESIDENT[key]
    _RESIDENT.clear()  # one dataset's cache at a time: a crossval or notebook shares it
    n, length = len(cache), cache.length
    out = torch.empty((n, 1, length), dtype=torch.float32, device=device)
    rows_per_chunk = max(1, (64 << 20) // (4 * length))
    staging = torch.empty((min(n, rows_per_chunk), length), dtype=torch.float32,
                          pin_memory=device.type == "cuda")
    for start in range(0, n, rows_per_chunk):
        rows = np.arange(start, min(n, start + rows_per_chunk))
        chunk = staging[: len(rows)]
        cache.read_rows(rows, out=chunk)
        out[start : start + len(rows), 0].copy_(chunk)  # synchronous: the buffer is reused next
    _RESIDENT[key] = out
    return out


def dataset_rows(dataset: Dataset) -> tuple[Any, np.ndarray, np.ndarray]:
    """Return ``(cache, cache rows, labels)`` of a cache-backed dataset (``US8KDataset`` or a
    wrapper with the same ``cache``/``rows``/``labels``), in dataset order."""
    try:
        return dataset.cache, np.asarray(dataset.rows), np.asarray(dataset.labels)
    except AttributeError:
        raise TypeError(f"{type(dataset).__name__} is not served from a formatting cache "
                        "(data='device' needs a US8KDataset)") from None


class DeviceBatches:
    """Batches gathered from a copy of the cache in device memory, in a DataLoader's batching.

    Iterating yields ``(waveforms [B, 1, length], labels [B])`` on the device: consecutive chunks
    of ``batch_size`` clips (the last one shorter) of ``sampler``'s order, or of the dataset's own
    order (``indices`` or ``0 .. n-1``) when there is no sampler, exactly as a DataLoader batches.

    Args:
        dataset: a cache-backed dataset (see :func:`dataset_rows`).
        batch_size: clips per batch.
        device: where the cache copy and the batches live.
        sampler: an :class:`EpochSampler` (training) or None (evaluation, in order).
        indices: the dataset items to serve, in this order, when there is no sampler.

    Used by ``engine.fit.fit`` and ``evaluate``.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, device: torch.device,
                 sampler: EpochSampler | None = None, indices: Sequence[int] | None = None) -> None:
        cache, rows, labels = dataset_rows(dataset)
        self.dataset, self.batch_size, self.device, self.sampler = dataset, int(batch_size), device, sampler
        self.waveforms = resident_waveforms(cache, device)
        self.rows = torch.as_tensor(rows, dtype=torch.int64, device=device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64, device=device)
        self.indices = None if indices is None else torch.as_tensor(list(indices), dtype=torch.int64)

    def _order(self) -> torch.Tensor:
        if self.sampler is not None:
            return self.sampler.order()
        return self.indices if self.indices is not None else torch.arange(len(self.rows))

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self._order())
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order().to(self.device)
        for idx in order.split(self.batch_size):
            yield self.waveforms.index_select(0, self.rows[idx]), self.labels[idx]


@dataclass
class DataPath:
    """How a run serves its batches, and why (see :func:`choose_data_path`).

    Attributes:
        kind: ``"loader"`` or ``"device"``.
        reason: one line for the run's log, e.g. "the 1.12 GB cache fits on cuda:0".
    """

    kind: str
    reason: str


def choose_data_path(requested: str, device: torch.device, nbytes: int) -> DataPath:
    """Decide how a run serves its batches: ``requested`` (``"loader"``, ``"device"`` or ``"auto"``).

    ``"auto"``: on CUDA, the device copy when ``nbytes`` (the whole cache) is at most
    :data:`DEVICE_FRACTION` of the device's free memory, else the loader; on a CPU (or MPS,
    not measured) the loader. Used by ``engine.fit.fit`` and :func:`us8k_lib.train.make_batches` (notebook 5).
    """
    if requested not in DATA_PATHS:
        raise ValueError(f"data must be one of {DATA_PATHS}, got {requested!r}")
    size = f"{nbytes / 1e9:.2f} GB"
    if requested != "auto":
        return DataPath(requested, f"as asked (data={requested!r}; the {size} cache)")
    if device.type != "cuda":
        return DataPath("loader", f"on {device.type} the {size} cache stays a file the OS caches, so the "
                                  "process stays small")
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes <= DEVICE_FRACTION * free:
        return DataPath("device", f"the {size} cache fits in {device}'s free {free / 1e9:.0f} GB")
    return DataPath("loader", f"the {size} cache is more than {DEVICE_FRACTION:.0%} of {device}'s free "
                              f"{free / 1e9:.1f} GB")


def training_batches(dataset: Dataset, batch_size: int, *, path: DataPath, device: torch.device,
                     sampler: EpochSampler, workers: int | None = None) -> DataLoader | DeviceBatches:
    """Return what ``engine.fit.fit`` iterates each epoch: the same batches either way (see the module)."""
    if path.kind == "device":
        return DeviceBatches(dataset, batch_size, device=device, sampler=sampler)
    return make_loader(dataset, batch_size, device=device, workers=workers, sampler=sampler)
