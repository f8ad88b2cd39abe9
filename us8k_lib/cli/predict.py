"""The ``predict`` command: a thin layer over :mod:`us8k_lib.predict`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from us8k_lib.predict import Classifier, predict_paths
from us8k_lib.runs.files import write_json


def predict_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib predict RUN PATH... [--json FILE]``: print each file's top-3 classes.

    ``RUN`` is a run folder (its ``best.pt``, else its ``checkpoint.pt``) or a checkpoint file;
    the first line says which weights were used. Bad files are listed on stderr with their
    problem; returns 1 if any file failed, else 0.
    """
    clf = Classifier.from_checkpoint(args.checkpoint)
    print(f"weights: {clf.source}")
    report = predict_paths(clf, args.paths, k=3)
    for _, row in report.table.iterrows():
        print(f"{row['file']}  ({row['classified']})")
        rank = 1
        while f"class_{rank}" in row:
            print(f"  {rank}. {row[f'class_{rank}']:<17} {row[f'probability_{rank}']:.3f}")
            rank += 1
    sys.stdout.flush()
    for file, problem in report.failed:
        print(f"error: {file}: {problem}", file=sys.stderr)
    if args.json:
        path = Path(args.json)
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"checkpoint": str(args.checkpoint), **report.to_dict()})
    if report.failed:
        total = len(report.table) + len(report.failed)
        print(f"{len(report.failed)} of {total} path(s) could not be classified", file=sys.stderr)
        return 1
    return 0
