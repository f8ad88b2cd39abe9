"""A PyTorch ``Dataset`` of UrbanSound8K clips: what a ``DataLoader`` reads batches from.

A map-style ``Dataset`` answers two questions, and that is all a ``DataLoader`` asks of it:
``len(dataset)`` (how many items) and ``dataset[i]`` (the ``i``-th item, here a ``(waveform,
label)`` pair). :class:`US8KDataset` answers them for the clips of some folds. What it adds on top
is speed: every clip is formatted once into a cache file (:mod:`us8k_lib.engine.cache`) and an
item is a copy of one row of it, and ``__getitems__`` reads a whole batch with one call. A
``Dataset`` for your own folder of sounds can be just ``__len__`` and a ``__getitem__`` that calls
:func:`us8k_lib.audio.format_clip`.

Used by notebooks 3 and 5, and every training run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from us8k_lib import audio
from us8k_lib.engine.cache import build_cache
from us8k_lib.paths import normalize_root


class ClipBatch(Sequence):
    """What :meth:`US8KDataset.__getitems__` returns: the batch already stacked, which also reads
    as a sequence of ``(waveform, label)`` samples (made on demand), so any ``collate_fn`` works.

    :func:`collate_clips` returns the stacked tensors as they are: no per-sample views and no
    second copy (making 128 views cost a third of a batch's read time).

    Attributes:
        waveforms: ``[B, 1, length]`` float32 tensor.
        labels: ``[B]`` int64 tensor.

    Used by the training batches (:func:`us8k_lib.train.make_batches`, notebook 5).
    """

    def __init__(self, waveforms: torch.Tensor, labels: torch.Tensor) -> None:
        self.waveforms, self.labels = waveforms, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(len(self)))]
        return self.waveforms[j], int(self.labels[j])


def collate_clips(batch: list) -> Any:
    """DataLoader ``collate_fn`` for :class:`US8KDataset`: returns ``(waveforms [B,1,L], labels [B])``.

    Same result as the default collate, without copying each sample a second time; falls back to
    ``default_collate`` for anything else. Used by :func:`us8k_lib.engine.batches.make_loader`.
    """
    if isinstance(batch, ClipBatch):
        return batch.waveforms, batch.labels
    return default_collate(batch)


class US8KDataset(Dataset):
    """UrbanSound8K clips of some folds as ``(waveform [1, length] float32, classID)`` items.

    The first construction formats every clip of the metadata (all folds, so the train and test
    datasets share one cache build) with :func:`build_cache`; items are then read from the cache
    file (see :meth:`FormattedCache.read_rows`). Labels come from the metadata given (or loaded).

    Attributes:
        root: the UrbanSound8K folder.
        folds: the folds included, sorted.
        table: DataFrame of the items in item order: slice_file_name, fold, classID, class.
        skipped: ``(slice_file_name, problem)`` of this dataset's clips that were skipped as bad
            (only with ``skip_bad=True``; they are not items).
        cache: the :class:`FormattedCache` the items are read from.

    Used by notebooks 3 and 5.
    """

    def __init__(self, root: str | Path, folds: int | Iterable[int], *, metadata: pd.DataFrame | None = None,
                 cache_dir: str | Path | None = None, skip_bad: bool = False, progress: bool = True,
                 workers: int | None = None, sr: int = audio.TARGET_SR,
                 length: int = audio.TARGET_LENGTH) -> None:
        from us8k_lib.metadata import load_metadata, select_folds

        self.root = normalize_root(root)
        if metadata is None:
            metadata = load_metadata(self.root)
        folds = [folds] if isinstance(folds, (int, np.integer)) else list(folds)
        chosen = select_folds(metadata, folds)  # first: a bad fold number fails before any work
        self.folds = sorted({int(f) for f in folds})
        self.cache = build_cache(self.root, metadata, cache_dir=cache_dir, workers=workers,
                                 skip_bad=skip_bad, progress=progress, sr=sr, length=length)
        ct = self.cache.table
        row_of = dict(zip(zip(ct["fold"].tolist(), ct["slice_file_name"].tolist()), range(len(ct))))
        bad = dict(self.cache.skipped)
        keep, rows, self.skipped = [], [], []
        for i, (fold, name) in enumerate(zip(chosen["fold"].tolist(), chosen["slice_file_name"].astype(str))):
            if name in bad:
                self.skipped.append((name, bad[name]))
                continue
            keep.append(i)
            rows.append(row_of[(int(fold), name)])
        table = chosen.iloc[keep][["slice_file_name", "fold", "classID", "class"]].reset_index(drop=True)
        table["class"] = table["class"].astype(str)
        self.table = table
        self._rows = np.asarray(rows, dtype=np.int64)
        self._labels = table["classID"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        i = int(i)
        if i < 0:
            i += len(self)
        x = torch.empty((1, self.cache.length), dtype=torch.float32)
        self.cache.read_rows(self._rows[i : i + 1], out=x)
        return x, int(self._labels[i])

    def __getitems__(self, indices: Sequence[int]) -> ClipBatch:
        """Read a whole batch straight into one tensor (the DataLoader calls this when batching)."""
        idx = np.asarray(indices, dtype=np.int64)
        n, length = len(idx), self.cache.length
        if get_worker_info() is not None:
            # Allocate in shared memory, as default_collate does (same call), so sending the batch
            # to the main process does not copy it again.
            storage = torch.UntypedStorage._new_shared(n * length * 4)
            x = torch.empty(0, dtype=torch.float32).set_(storage).view(n, 1, length)
        else:
            x = torch.empty((n, 1, length), dtype=torch.float32)
        self.cache.read_rows(self._rows[idx], out=x)
        return ClipBatch(x, torch.from_numpy(self._labels[idx]))

    @property
    def rows(self) -> np.ndarray:
        """The cache row of every item, in item order (int64); what the device-resident batches index."""
        return self._rows

    @property
    def labels(self) -> np.ndarray:
        """The class ID of every item, in item order (int64)."""
        return self._labels

    def __repr__(self) -> str:
        return (f"US8KDataset({len(self)} clips, folds {self.folds}, root={str(self.root)!r}, "
                f"cache={str(self.cache.path)!r})")

