"""Where the data lives: one function decides which UrbanSound8K folder every command uses.

Order: an explicit ``root`` argument, else the ``US8K_ROOT`` environment variable, else
``<data dir>/UrbanSound8K`` if it exists (the real dataset, e.g. after ``python -m us8k_lib
download``), else an UrbanSound8K attached to a Kaggle notebook (:func:`us8k_lib.hosted.attached_dataset`),
else the mini dataset, generated on first use into ``<data dir>/mini/``. Any of them may be in the
official layout or Kaggle's flat one (:mod:`us8k_lib.datasets.layout`).
The data dir is ``US8K_DATA_DIR`` if set, else ``data/`` in the project checkout (so the notebooks,
run from ``notebooks/``, and the commands, run from the top level, share one copy), else ``./data``.

The package also ships a real sample: 20 genuine UrbanSound8K clips, two per class, laid out as a
dataset folder (:func:`sample_root`). Wherever a root is given (``--root``, ``US8K_ROOT``, the
``root`` argument), the word :data:`SAMPLE` (``sample``) means that folder; a folder that happens
to be called ``sample`` is reached as ``./sample``.

The folder layout itself (the metadata's place, the sample, the data folder, the mini dataset's
marker) is :mod:`us8k_lib.datasets.layout`, re-exported here; this module adds the choice of a dataset,
generating the mini one when there is none, and the disk-space check.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from us8k_lib.datasets.layout import (  # noqa: F401 - the layout's names are part of this module's interface
    DATASET_DIRNAME,
    MARKER_NAME,
    METADATA_RELPATH,
    MINI_SEED,
    SAMPLE,
    clip_path,
    is_mini,
    is_sample,
    normalize_root,
    project_data_dir,
    read_marker,
    sample_root,
)
from us8k_lib.errors import DiskSpaceError
from us8k_lib.hosted import attached_dataset

if TYPE_CHECKING:  # pandas is only needed (and imported) by sample_credits
    import pandas as pd


def choose_root(root: str | Path | None = None) -> tuple[Path, str]:
    """Decide which UrbanSound8K folder to use; return it and a sentence saying which and why.

    See :func:`resolve_root` (which prints the sentence). Used by the ``train`` and ``crossval``
    commands, which print their recipe first.
    """
    if root is not None:
        found, why = normalize_root(root), "the folder you passed"
    elif os.environ.get("US8K_ROOT"):
        found, why = normalize_root(os.environ["US8K_ROOT"]), "US8K_ROOT"
    elif (project_data_dir() / DATASET_DIRNAME / METADATA_RELPATH).is_file():
        found, why = (project_data_dir() / DATASET_DIRNAME).resolve(), "the downloaded dataset in the data folder"
    elif (attached := attached_dataset()) is not None:
        found, why = attached.resolve(), f"the dataset attached to this Kaggle notebook ({attached})"
    else:
        from us8k_lib.datasets.mini import make_mini  # late: synthesis and pandas are only needed here

        found = make_mini(project_data_dir() / "mini", seed=MINI_SEED)
        return found, ("Using the generated mini dataset (no real UrbanSound8K found). For the real data: "
                       "python -m us8k_lib download, or set US8K_ROOT.")
    if found == sample_root():
        return found, f"Using the bundled real sample of UrbanSound8K (20 real clips, 2 per class), from {why}."
    return found, f"Using UrbanSound8K from {why}."


def resolve_root(root: str | Path | None = None, *, verbose: bool = True) -> Path:
    """Decide which UrbanSound8K folder to use and return it.

    Args:
        root: explicit folder (``UrbanSound8K`` or its parent), or ``"sample"`` for the bundled
            real sample; wins over everything else. ``US8K_ROOT`` accepts the same spellings.
        verbose: print which dataset was picked and how to switch.

    Returns:
        The ``UrbanSound8K`` folder (holding ``metadata/`` and ``audio/``). The mini dataset is
        generated on first use. Used by every notebook and command.
    """
    found, message = choose_root(root)
    if verbose:
        print(message)
    return found


def describe_dataset(root: str | Path) -> str:
    """Say in a few words what a dataset folder holds: synthesized sounds or real recordings.

    Returns:
        "generated mini dataset (synthesized sounds)", "bundled real sample (20 real recordings)",
        or "UrbanSound8K (real recordings)" for any other folder (the download, or ``US8K_ROOT``).
        Used by notebook 2 and the notebooks' settings (:mod:`us8k_lib.settings`).
    """
    if is_sample(root):
        return "bundled real sample (20 real recordings)"
    if is_mini(root):
        return "generated mini dataset (synthesized sounds)"
    return "UrbanSound8K (real recordings)"


def dataset_name(root: str | Path) -> str:
    """Return a short name for a dataset folder, for naming run folders after it.

    ``"sample"`` for the bundled real sample; ``"mini"`` for the default generated mini dataset,
    ``"mini-tiny"``, ``"mini-medium-seed3"`` ... for other sizes and seeds; otherwise the folder's
    own name (``"UrbanSound8K"`` for the download). Two datasets can share a name (two copies of
    the real data): a run folder also records its dataset's identity, which is what resuming and
    skipping check (:mod:`us8k_lib.runs.folder`). Used by notebooks 6-8 and the ``train`` and
    ``crossval`` commands.
    """
    if is_sample(root):
        return SAMPLE
    if is_mini(root):
        marker = read_marker(root) or {}
        size, seed = marker.get("size", "mini"), marker.get("seed", str(MINI_SEED))
        return "mini" + ("" if size == "mini" else f"-{size}") + ("" if seed == str(MINI_SEED) else f"-seed{seed}")
    return Path(root).resolve().name


def sample_credits() -> pd.DataFrame:
    """Return who recorded each clip of the bundled real sample, one row per clip.

    Columns: slice_file_name, fold, class, fsID, format, freesound_user, freesound_url (from the
    sample's ``CREDITS.csv``; the licence, CC BY-NC 3.0, is in its ``README.md``). Used by
    notebooks 2 and 3 and the real sample's players (notebook 5).
    """
    import pandas as pd

    return pd.read_csv(sample_root() / "CREDITS.csv", dtype={"fold": "int64", "fsID": "int64"}, keep_default_na=False)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def existing_ancestor(path: Path) -> Path:
    """Return ``path`` or its nearest ancestor that exists (whose disk a new file there would go on)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path


def check_free_space(folder: str | Path, needs: list[tuple[str, int]], *,
                     remedy: str = "use a folder on a larger disk (--root DIR)") -> None:
    """Raise unless the filesystem of ``folder`` has room for every ``(what, bytes)`` of ``needs``.

    Raises:
        DiskSpaceError: naming the folder, what is needed (and for what) and what is free.

    Used by ``download`` (before the first byte and before extracting) and by the cache build
    (:func:`us8k_lib.engine.cache.build_cache`).
    """
    folder = Path(folder)
    free = shutil.disk_usage(existing_ancestor(folder)).free
    total = sum(n for _, n in needs)
    if total > free:
        parts = ", ".join(f"{what} {_gb(n)}" for what, n in needs)
        raise DiskSpaceError(f"{folder}: not enough free disk space: needs {_gb(total)} ({parts}), "
                             f"{_gb(free)} free; free some space, or {remedy}")
