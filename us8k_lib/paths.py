"""Where the data lives: one function decides which UrbanSound8K folder every command uses.

Order: an explicit ``root`` argument, else the ``US8K_ROOT`` environment variable, else
``<data dir>/UrbanSound8K`` if it exists (the real dataset, e.g. after ``python -m us8k_lib
download``), else the mini dataset, generated on first use into ``<data dir>/mini/``.
The data dir is ``US8K_DATA_DIR`` if set, else ``data/`` in the project checkout (so the notebooks,
run from ``notebooks/``, and the commands, run from the top level, share one copy), else ``./data``.

The package also ships a real sample: 20 genuine UrbanSound8K clips, two per class, laid out as a
dataset folder (:func:`sample_root`). Wherever a root is given (``--root``, ``US8K_ROOT``, the
``root`` argument), the word :data:`SAMPLE` (``sample``) means that folder; a folder that happens
to be called ``sample`` is reached as ``./sample``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from us8k_lib.errors import DatasetNotFoundError, DiskSpaceError

if TYPE_CHECKING:  # pandas is only needed (and imported) by sample_credits
    import pandas as pd

#: Folder name of the dataset inside any root, as in the official archive.
DATASET_DIRNAME = "UrbanSound8K"
#: Relative location of the metadata CSV inside the dataset folder.
METADATA_RELPATH = Path("metadata") / "UrbanSound8K.csv"
#: Seed the default mini dataset is generated with (tests and notebooks rely on it).
MINI_SEED = 0
#: The spelling that selects the bundled real sample wherever a dataset root is accepted.
SAMPLE = "sample"
_SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"


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
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "us8k_lib").is_dir():
        return checkout / "data"
    return Path.cwd() / "data"


def normalize_root(path: str | Path) -> Path:
    """Return the ``UrbanSound8K`` folder given that folder or its parent.

    The string ``"sample"`` (:data:`SAMPLE`) returns :func:`sample_root`.

    Raises:
        DatasetNotFoundError: naming the path, if neither it nor ``path/UrbanSound8K`` holds
            ``metadata/UrbanSound8K.csv``.
    """
    if isinstance(path, str) and path == SAMPLE:
        return sample_root()
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetNotFoundError(f"{p}: dataset root does not exist")
    if not p.is_dir():
        raise DatasetNotFoundError(f"{p}: dataset root is not a directory")
    for candidate in (p, p / DATASET_DIRNAME):
        if (candidate / METADATA_RELPATH).is_file():
            return candidate.resolve()
    raise DatasetNotFoundError(
        f"{p}: no {METADATA_RELPATH.as_posix()} here or in {DATASET_DIRNAME}/ "
        "(pass the UrbanSound8K folder or its parent)"
    )


def clip_path(root: str | Path, fold: int, slice_file_name: str) -> Path:
    """Return the path of one clip: ``root/audio/fold{fold}/{slice_file_name}``.

    ``root`` is the ``UrbanSound8K`` folder (see :func:`normalize_root`). Used by notebooks 2 and 3.
    """
    return Path(root) / "audio" / f"fold{int(fold)}" / slice_file_name


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
    else:
        from us8k_lib.mini import make_mini  # late import: synthesis is only needed here

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


def is_mini(root: str | Path) -> bool:
    """Return True if ``root`` is a dataset generated by ``make-mini`` (it leaves a marker file)."""
    return (Path(root) / "MINI_DATASET.txt").is_file()


def describe_dataset(root: str | Path) -> str:
    """Say in a few words what a dataset folder holds: synthesized sounds or real recordings.

    Returns:
        "generated mini dataset (synthesized sounds)", "bundled real sample (20 real recordings)",
        or "UrbanSound8K (real recordings)" for any other folder (the download, or ``US8K_ROOT``).
        Used by notebooks 2 and 3.
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
    skipping check (:mod:`us8k_lib.runs`). Used by notebooks 6-8 and the ``train`` and
    ``crossval`` commands.
    """
    if is_sample(root):
        return SAMPLE
    if is_mini(root):
        from us8k_lib.mini import read_marker  # late import: mini pulls in the synthesizer

        marker = read_marker(root) or {}
        size, seed = marker.get("size", "mini"), marker.get("seed", str(MINI_SEED))
        return "mini" + ("" if size == "mini" else f"-{size}") + ("" if seed == str(MINI_SEED) else f"-seed{seed}")
    return Path(root).resolve().name


def sample_credits() -> pd.DataFrame:
    """Return who recorded each clip of the bundled real sample, one row per clip.

    Columns: slice_file_name, fold, class, fsID, format, freesound_user, freesound_url (from the
    sample's ``CREDITS.csv``; the licence, CC BY-NC 3.0, is in its ``README.md``). Used by
    notebooks 2 and 5.
    """
    import pandas as pd

    return pd.read_csv(_SAMPLE_DIR / "CREDITS.csv", dtype={"fold": "int64", "fsID": "int64"}, keep_default_na=False)


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
    (:func:`us8k_lib.dataset.build_cache`).
    """
    folder = Path(folder)
    free = shutil.disk_usage(existing_ancestor(folder)).free
    total = sum(n for _, n in needs)
    if total > free:
        parts = ", ".join(f"{what} {_gb(n)}" for what, n in needs)
        raise DiskSpaceError(f"{folder}: not enough free disk space: needs {_gb(total)} ({parts}), "
                             f"{_gb(free)} free; free some space, or {remedy}")
