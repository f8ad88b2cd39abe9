"""Atomic file writes: a file of a run folder (or a report) is either the old one or the new one,
never half of one.

Each write goes to a temporary file beside its target (``.NAME.tmp-PID``), is flushed to disk and
renamed into place. A temporary left by a killed process is swept by the next run that opens the
folder (:func:`sweep_temporaries`, with the folder's lock held). Used by every module that writes
run folders, summaries, reports and the cache index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TMP_MARK = ".tmp-"


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
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(Path(path), lambda f: f.write(text), mode="w")


def check_writable(folder: Path) -> None:
    """Raise unless a file can be created in ``folder``: before a run trains for an epoch only to find
    it cannot save it (a read-only folder or disk).

    Raises:
        OSError: naming ``folder``, with the system's reason (permission denied, read-only file system).
    """
    probe = Path(folder) / f".write-test{_TMP_MARK}{os.getpid()}"  # swept like a temporary if left behind
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(folder)) from exc
    os.close(fd)
    probe.unlink()


def sweep_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries of :func:`write_atomic` in ``folder``; return them.

    Called with the folder's lock held, so no live writer owns one: each was left by a killed process.
    """
    swept = [p for p in Path(folder).glob(f".*{_TMP_MARK}*") if p.is_file()]
    for p in swept:
        p.unlink(missing_ok=True)
    return swept
