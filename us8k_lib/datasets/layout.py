"""The dataset's folder layouts: where a dataset's metadata and clips sit, the bundled real sample,
the project's data folder, and the marker of a generated mini dataset.

Two layouts are accepted wherever a dataset is. The official archive's, ``UrbanSound8K/`` holding
``metadata/UrbanSound8K.csv`` and ``audio/fold1/`` ... ``audio/fold10/``; and the flat one of
Kaggle's copy (``chrisfilo/urbansound8k``, attached to a notebook or fetched with ``kagglehub``),
``UrbanSound8K.csv`` and ``fold1/`` ... ``fold10/`` side by side. Nothing is ever written into a
dataset's folder (the cache and the runs go to the data folder), so a read-only copy works.

The lowest layer of the data modules: it imports nothing of the package but its errors, so
:mod:`us8k_lib.metadata` and :mod:`us8k_lib.datasets.mini` can use it, and :mod:`us8k_lib.paths`, which
decides which dataset a command uses (and generates the mini one), can use them. Every name here is
also importable from :mod:`us8k_lib.paths`, where the notebooks find them.
"""

from __future__ import annotations

import os
from pathlib import Path

from us8k_lib.errors import DatasetNotFoundError

#: Folder name of the dataset inside any root, as in the official archive.
DATASET_DIRNAME = "UrbanSound8K"
#: Relative location of the metadata CSV inside the dataset folder (the official layout).
METADATA_RELPATH = Path("metadata") / "UrbanSound8K.csv"
#: The metadata CSV of the flat layout: beside the fold folders.
FLAT_METADATA = Path("UrbanSound8K.csv")
#: Seed the default mini dataset is generated with (tests and notebooks rely on it).
MINI_SEED = 0
#: The spelling that selects the bundled real sample wherever a dataset root is accepted.
SAMPLE = "sample"
_PACKAGE = Path(__file__).resolve().parents[1]  # us8k_lib/
_SAMPLE_DIR = _PACKAGE / "data" / "sample"
#: Name of the marker file that makes a folder a generated mini dataset (written by :mod:`us8k_lib.datasets.mini`).
MARKER_NAME = "MINI_DATASET.txt"


def sample_root() -> Path:
    """Return the bundled real sample: an ``UrbanSound8K`` folder of 20 genuine clips, two per class.

    It ships inside the package (so a pip install has it), with the clips' 20 metadata rows, their
    freesound.org authors (``CREDITS.csv``) and the CC BY-NC 3.0 licence (``README.md``). Every
    function that takes a dataset root accepts it. Used by notebooks 2, 3 and 5.
    """
    return _SAMPLE_DIR


def is_sample(root: str | Path) -> bool:
    """Return True if ``root`` is the bundled real sample (the folder or the word ``sample``)."""
    if isinstance(root, str) and root == SAMPLE:
        return True
    try:
        return Path(root).expanduser().resolve() == _SAMPLE_DIR
    except OSError:
        return False


def project_data_dir() -> Path:
    """Return the folder that holds downloaded and generated datasets, caches and runs.

    ``US8K_DATA_DIR`` wins; otherwise ``data/`` beside ``pyproject.toml`` when the package is
    installed in editable mode from a checkout, else ``./data``. Used by every notebook.
    """
    env = os.environ.get("US8K_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "us8k_lib").is_dir():
        return checkout / "data"
    return Path.cwd() / "data"


def normalize_root(path: str | Path) -> Path:
    """Return the dataset folder given that folder or its parent, in either layout.

    The folder is the one holding ``metadata/UrbanSound8K.csv`` (the official layout) or
    ``UrbanSound8K.csv`` beside its fold folders (the flat layout); ``path`` may also be the folder
    above an ``UrbanSound8K/`` one. The string ``"sample"`` (:data:`SAMPLE`) returns :func:`sample_root`.

    Raises:
        DatasetNotFoundError: naming the path, if no metadata is found in either layout.
    """
    if isinstance(path, str) and path == SAMPLE:
        return sample_root()
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetNotFoundError(f"{p}: dataset root does not exist")
    if not p.is_dir():
        raise DatasetNotFoundError(f"{p}: dataset root is not a directory")
    for candidate in (p, p / DATASET_DIRNAME):
        if (candidate / METADATA_RELPATH).is_file() or (candidate / FLAT_METADATA).is_file():
            return candidate.resolve()
    raise DatasetNotFoundError(
        f"{p}: no {METADATA_RELPATH.as_posix()} (the official layout) or {FLAT_METADATA} beside fold1/ ... "
        f"fold10/ (the flat one) here or in {DATASET_DIRNAME}/ (pass the UrbanSound8K folder or its parent)"
    )


def is_flat(root: str | Path) -> bool:
    """True for a dataset in the flat layout (``UrbanSound8K.csv`` beside the fold folders)."""
    return not (Path(root) / METADATA_RELPATH).is_file() and (Path(root) / FLAT_METADATA).is_file()


def metadata_path(root: str | Path) -> Path:
    """Return the metadata CSV of the dataset folder ``root`` (either layout)."""
    return Path(root) / (FLAT_METADATA if is_flat(root) else METADATA_RELPATH)


def audio_dir(root: str | Path) -> Path:
    """Return the folder holding ``fold1/`` ... ``fold10/`` in the dataset folder ``root``: its
    ``audio/`` folder, or the dataset folder itself in the flat layout."""
    audio = Path(root) / "audio"
    return audio if audio.is_dir() or not is_flat(root) else Path(root)


def clip_path(root: str | Path, fold: int, slice_file_name: str) -> Path:
    """Return the path of one clip: ``root/audio/fold{fold}/{slice_file_name}`` (flat layout:
    ``root/fold{fold}/{slice_file_name}``).

    ``root`` is the dataset folder (see :func:`normalize_root`). Used by notebooks 2 and 3.
    """
    return audio_dir(root) / f"fold{int(fold)}" / slice_file_name


def is_mini(root: str | Path) -> bool:
    """Return True if ``root`` is a dataset generated by ``make-mini`` (it leaves a marker file)."""
    return (Path(root) / MARKER_NAME).is_file()


def read_marker(dataset: str | Path) -> dict[str, str] | None:
    """Return the ``key: value`` fields of a mini dataset's marker file, or None if there is none.

    ``dataset`` is the ``UrbanSound8K`` folder. Used by :func:`us8k_lib.datasets.mini.make_mini`,
    :func:`us8k_lib.paths.dataset_name` and notebook 1.
    """
    path = Path(dataset) / MARKER_NAME
    if not path.is_file():
        return None
    fields = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.isidentifier():
            fields[key] = value.strip()
    return fields
