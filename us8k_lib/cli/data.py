"""The data commands: ``make-mini``, ``download`` and ``validate``, each a thin layer over
:mod:`us8k_lib.datasets`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from us8k_lib.datasets.download import download_dataset
from us8k_lib.datasets.layout import project_data_dir
from us8k_lib.datasets.mini import generate, plan_mini
from us8k_lib.datasets.validate import ValidationReport, validate_dataset
from us8k_lib.metadata import CLASSES
from us8k_lib.paths import resolve_root
from us8k_lib.runs.files import write_json


def _shown_path(p: Path) -> str:
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return str(p)
    return str(p) if rel.startswith("..") else rel


def make_mini_command(args: argparse.Namespace) -> int:
    """Run ``python -m us8k_lib make-mini`` (args: root, seed, size, force) and print a summary.

    Returns:
        0 on success (errors are raised as :class:`~us8k_lib.errors.US8KError`).
    """
    root = Path(args.root) if getattr(args, "root", None) else project_data_dir() / "mini"
    seed, size = getattr(args, "seed", 0), getattr(args, "size", "mini")
    began = time.perf_counter()
    target, plan = generate(root, seed, size, bool(getattr(args, "force", False)), True)
    took = time.perf_counter() - began
    created = plan is not None
    if plan is None:
        plan = plan_mini(seed, size)
    per_fold = plan.groupby("fold").size()
    formats = plan["format_label"].value_counts()
    shown = _shown_path(target)
    if created:
        print(f"Wrote the mini UrbanSound8K (seed {seed}, size {size!r}) to {shown} in {took:.1f} s.")
    else:
        print(f"{shown} already holds the mini UrbanSound8K (seed {seed}, size {size!r}); nothing to do "
              "(--force regenerates it).")
    print(f"{len(plan)} clips of {len(CLASSES)} classes; clips per fold: "
          + ", ".join(f"{f}: {c}" for f, c in per_fold.items()))
    print(f"{len(formats)} WAV formats: " + ", ".join(f"{label} ({c})" for label, c in formats.items()))
    print("The audio is synthetic; the rows are real UrbanSound8K metadata "
          "(Salamon, Jacoby & Bello 2014, CC BY-NC 3.0). See MINI_DATASET.txt.")
    return 0


def download_command(args: argparse.Namespace) -> int:
    """Run ``python -m us8k_lib download``; return 0 (errors raise US8KError, which the CLI turns into 1)."""
    target = download_dataset(args.root, args.url, args.md5)
    print(f"Check every clip with: python -m us8k_lib validate --root {target}")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """Run ``python -m us8k_lib validate``: print a summary, write ``--json``; return 0 if clean, else 1."""
    root = resolve_root(args.root)
    report = validate_dataset(root, checksums=args.checksums)
    print(report.summary())
    if args.json:
        print(f"Full report: {_write_report(report, args.json)}")
    return 0 if report.ok else 1


def _write_report(report: ValidationReport, path: str | Path) -> Path:
    """Write the report as JSON to ``path`` (atomically, its folder made); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report.to_dict())
    return path
