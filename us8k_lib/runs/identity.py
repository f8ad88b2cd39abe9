"""Which dataset a run belongs to: the identity every checkpoint and ``metrics.json`` records.

A run's numbers are only continued, skipped or reported for the dataset they were measured on:
:class:`DatasetIdentity` names it (its folder, the metadata rows used, the formatting cache's key),
and two identities say in words what differs. Used by :mod:`us8k_lib.runs.folder`, ``fit`` and
``crossval``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from us8k_lib.errors import CheckpointError, run_folder_choices

_METADATA_COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]


@dataclass(frozen=True)
class DatasetIdentity:
    """Which dataset a run trained and was tested on.

    Attributes:
        name: a short name (:func:`us8k_lib.paths.dataset_name`), for people.
        root: the resolved ``UrbanSound8K`` folder.
        n_clips: metadata rows the run used.
        metadata_sha256: hash of those rows (file name, fsID, start, end, salience, fold, class).
        cache_key: the formatting cache's key (:func:`us8k_lib.engine.cache.cache_key`): every clip's
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
                                  f"{run_folder_choices()} (or move the file away).")
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
