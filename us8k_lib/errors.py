"""Errors the package raises on bad input: each says what is wrong, and names the file it is about.

Every error a learner can trigger with bad data or settings derives from :class:`US8KError`, so a
notebook or command can catch one type (the command line prints it as one ``error:`` line, exit
1). A message about a file or folder starts with its path; one about settings
(:class:`SettingsError`) names the setting, as :func:`setting` words it: by its Python name in a
notebook (``lr``, ``overwrite=True``), by its flag on the command line (``--lr``, ``--overwrite``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

#: True while the command line runs: errors then name settings by their flags.
_SPEAK_FLAGS: ContextVar[bool] = ContextVar("us8k_speak_flags", default=False)


def setting(name: str, value: Any = None) -> str:
    """Return how an error names the setting ``name`` (with ``value``, for an on/off setting or an
    example): ``lr``, ``overwrite=True`` from Python; ``--lr``, ``--overwrite`` on the command line."""
    if _SPEAK_FLAGS.get():
        flag = "--" + name.replace("_", "-")
        return flag if value is None or value is True else f"{flag} {value}"
    return name if value is None else f"{name}={value!r}"


@contextmanager
def speaking_flags() -> Iterator[None]:
    """Within this block, errors name settings by their command-line flags (:func:`setting`).
    Used by :mod:`us8k_lib.cli.parser` and the processes of ``crossval --jobs``."""
    token = _SPEAK_FLAGS.set(True)
    try:
        yield
    finally:
        _SPEAK_FLAGS.reset(token)


def run_folder_choices(resume: bool = False) -> str:
    """Return the choices an error offers when a run folder holds a run that must not be replaced
    (``resume``: for a run asked to continue one)."""
    if resume:
        return (f"Choose another run folder ({setting('out')}) for a new run, or replace this one: "
                f"{setting('overwrite', True)} instead of {setting('resume', True)}")
    return f"Choose another run folder ({setting('out')}), or replace this one ({setting('overwrite', True)})"


class US8KError(Exception):
    """Base class of every error this package raises on bad input."""


class DatasetNotFoundError(US8KError):
    """A dataset root, metadata file or clip that should exist does not."""


class MetadataError(US8KError):
    """The metadata CSV is unreadable or breaks UrbanSound8K's rules.

    Attributes:
        path: the CSV file.
        violations: one human-readable line per problem (row number, column, file name).
    """

    def __init__(self, path: str | Path, violations: list[str]) -> None:
        self.path = Path(path)
        self.violations = list(violations)
        shown = "\n  ".join(self.violations[:20])
        more = f"\n  ... and {len(self.violations) - 20} more" if len(self.violations) > 20 else ""
        super().__init__(f"{self.path}: invalid UrbanSound8K metadata "
                         f"({len(self.violations)} problem(s)):\n  {shown}{more}")


class AudioError(US8KError):
    """A WAV file cannot be decoded, or decodes to unusable audio.

    Attributes:
        path: the file.
        problem: what is wrong, in a few words (e.g. "empty file (0 bytes)").
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DownloadError(US8KError):
    """A download failed or its checksum did not match (the bad file is removed)."""


class UnsafeArchiveError(US8KError):
    """An archive member would write outside the target folder, or is a link or device."""


class CacheError(US8KError):
    """A preprocessing cache is corrupt or stale (callers rebuild it)."""


class CheckpointError(US8KError):
    """A file is not a usable checkpoint, or does not match the run it should continue."""


class TorchaudioLoadError(US8KError, ImportError):
    """torchaudio is missing or does not load beside the installed torch (the message says how to repair)."""


class RunMismatchError(CheckpointError):
    """A run folder holds a run on another dataset: resuming or skipping it would report that
    dataset's numbers as this one's (the message names both datasets)."""


class RunInUseError(US8KError):
    """Another process holds the run folder's lock (the message names the folder and the holder)."""


class RunExistsError(CheckpointError):
    """The folder holds a run this one must not replace unasked (the message names the choices)."""


class DiskSpaceError(US8KError):
    """Not enough free disk space for what was asked (the message names the folder and the sizes)."""


class SettingsError(US8KError, ValueError):
    """Settings that cannot work with this dataset or this launch: cross-validation on a dataset of
    fewer than three folds, a batch that does not split over the torchrun ranks, ``--jobs`` under
    torchrun. A ValueError too, like every other invalid argument; the command line reports it
    as one ``error:`` line (exit 1)."""


def failure_line(exc: BaseException) -> str | None:
    """Return the one line an expected failure is reported with (without ``error: ``), or None
    for an error that is not the user's to fix (a bug, whose traceback is kept).

    Expected: a :class:`US8KError`, and an ``OSError`` about a named file or folder (permissions,
    a full disk). Used by ``python -m us8k_lib`` and by ``crossval --jobs``'s fold processes.
    """
    if isinstance(exc, US8KError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return f"{where}: {exc.strerror or exc}"
    return None
