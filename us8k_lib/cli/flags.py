"""Argument types for the command line: each checks a flag's value where it is parsed.

A value that breaks a rule is refused by argparse with one line naming the flag and what it
accepts (``error: argument --epochs: expected an integer >= 1, got '0'``) and exit status 2,
before any work starts. Nothing here imports torch or pandas (``--help`` stays fast); the types
that need them (``--model``, ``--device``, ``make-mini --size``) import them only when that flag
is given.

Used by :mod:`us8k_lib.cli.parser`, :mod:`us8k_lib.recipe` and :mod:`us8k_lib.augment_settings`.
"""

from __future__ import annotations

import argparse
import math
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from us8k_lib.folds import FOLDS


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """Return an argparse type accepting integers in ``[low, high]`` (no upper bound if ``high`` is None)."""
    accepts = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepts}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {accepts}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def number(*, low: float = 0.0, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """Return an argparse type accepting finite numbers from ``low`` (excluded if ``low_open``) to ``high``."""
    accepts = f"a number {'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepts}, got {text!r}") from None
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {accepts}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def fold(text: str) -> int:
    """argparse type of ``--test-fold`` and ``--val-fold``: an official fold number."""
    return integer(FOLDS[0], FOLDS[-1])(text)


def parse_folds(text: str | None) -> list[int] | None:
    """Parse ``--folds`` (``"1-3"``, ``"1,4,7"``, ``"1-3,10"``) into sorted fold numbers; None stays None."""
    if text is None:
        return None
    folds: set[int] = set()
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            lo, hi = int(a), int(b) if b else int(a)
            if lo > hi:
                raise ValueError
            folds.update(range(lo, hi + 1))
    except ValueError:
        raise ValueError(f"--folds {text!r}: expected folds like 1-3 or 1,4,7") from None
    if not folds or any(f not in FOLDS for f in folds):
        raise ValueError(f"--folds {text!r}: folds are numbered {FOLDS[0]}-{FOLDS[-1]}")
    return sorted(folds)


def folds(text: str) -> str:
    """argparse type of ``crossval --folds``: checked by :func:`parse_folds`, returned as given."""
    try:
        parse_folds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2] + f", got {text!r}") from None
    return text


def models(*, several: bool) -> Callable[[str], str]:
    """Return the argparse type of ``--model``: a known model name, or (``several``) a comma list
    of distinct ones, returned canonical (``"M34-res,logmel"`` -> ``"m34res,logmel"``)."""

    def parse(text: str) -> str:
        from us8k_lib.model import parse_model_name  # late: the model module needs torch

        names = [n for n in text.split(",") if n.strip()] if several else [text]
        if not names:
            raise argparse.ArgumentTypeError(f"expected a model name, got {text!r}")
        try:
            canonical = [parse_model_name(n) for n in names]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if len(set(canonical)) != len(canonical):
            raise argparse.ArgumentTypeError(f"{text!r}: a model is listed twice")
        return ",".join(canonical)

    parse.__name__ = "model"
    return parse


def device(text: str) -> str:
    """argparse type of ``--device``: ``auto`` or a device torch knows and this machine has."""
    if text == "auto":
        return text
    import torch  # late: only when a device is named

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a torch device such as 'cpu' or 'cuda:0', "
                                         f"got {text!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device (try 'auto' or 'cpu')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here (try 'auto' or 'cpu')")
    return text


def url(text: str) -> str:
    """argparse type of ``download --url``: an http, https or file URL."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc or parts.scheme == "file" and parts.path:
        return text
    raise argparse.ArgumentTypeError(f"expected an http://, https:// or file:// URL, got {text!r}")


def md5(text: str) -> str:
    """argparse type of ``download --md5``: 32 hex digits (returned lower case)."""
    value = text.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(f"expected an md5 checksum (32 hex digits), got {text!r}")
    return value


def _file_in_the_way(path: Path) -> Path | None:
    """Return ``path`` or the ancestor of it that is an existing file (no folder can be made there), or None."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def folder(text: str) -> str:
    """argparse type of a folder to create or reuse (``--out``, ``make-mini --root``): refuses a path
    that is an existing file, or that lies under one. Returns it with ``~`` expanded (as checked):
    a shell leaves ``--out=~/x`` unexpanded, and ``./~/x`` is not what was meant."""
    path = Path(text).expanduser()
    blocker = _file_in_the_way(path)
    if blocker == path:
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder")
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{text}: is inside {blocker}, which is a file")
    return str(path)


def output_file(text: str) -> str:
    """argparse type of a file to write (``--json``): refuses a folder, or a path under a file.
    Returns it with ``~`` expanded, as :func:`folder` does."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name, e.g. {Path(text) / 'report.json'}")
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{text}: is inside {blocker}, which is a file")
    return str(path)


def mini_size(text: str) -> str:
    """argparse type of ``make-mini --size``: a size the generator knows."""
    from us8k_lib.datasets.mini import SIZES  # late: the generator pulls in pandas

    if text not in SIZES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SIZES)}, got {text!r}")
    return text
