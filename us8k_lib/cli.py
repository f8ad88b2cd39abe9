"""Command line: ``python -m us8k_lib COMMAND`` (or ``us8k COMMAND``).

Commands: ``make-mini``, ``train``, ``crossval``, ``predict``, ``download``, ``validate``. Each command's work
is a library function; this module only parses arguments, with flags from modules that need no
torch (:mod:`us8k_lib.recipe`, :mod:`us8k_lib.augment_settings`), and imports the command's module
only to run it, so ``--help`` is fast (a test checks that it imports no torch).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from us8k_lib.errors import US8KError
from us8k_lib.recipe import add_training_arguments


def _make_mini(args: argparse.Namespace) -> int:
    from us8k_lib.mini import make_mini_command

    return make_mini_command(args)


def _train(args: argparse.Namespace) -> int:
    from us8k_lib.train import train_command

    return train_command(args)


def _crossval(args: argparse.Namespace) -> int:
    from us8k_lib.crossval import crossval_command

    return crossval_command(args)


def _predict(args: argparse.Namespace) -> int:
    from us8k_lib.predict import predict_command

    return predict_command(args)


def _download(args: argparse.Namespace) -> int:
    from us8k_lib.download import download_command

    return download_command(args)


def _validate(args: argparse.Namespace) -> int:
    from us8k_lib.validate import validate_command

    return validate_command(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of all commands (used by ``main`` and the CLI tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m us8k_lib",
        description="Learn audio classification on UrbanSound8K with the M5 raw-waveform CNN.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    root_help = (
        "UrbanSound8K folder or its parent, or 'sample' for the bundled real sample (20 real clips) "
        "(default: $US8K_ROOT, which accepts the same, else data/UrbanSound8K, else the generated mini dataset)"
    )

    p = sub.add_parser("make-mini", help="generate the small offline UrbanSound8K (real layout and formats)")
    p.add_argument("--root", default=None, help="parent folder to write UrbanSound8K/ into (default: data/mini)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--size", default="mini", help="'tiny' (tests), 'mini' (default) or 'medium'")
    p.add_argument("--force", action="store_true", help="regenerate even if a dataset is already there")
    p.set_defaults(func=_make_mini)

    p = sub.add_parser("train", help="train a model on all folds but one and test on that one")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--test-fold", type=int, default=10, help="held-out fold (default 10)")
    p.add_argument("--val-fold", type=int, default=None,
                   help="fold held out of training to select the epoch (default: none, report the last epoch)")
    p.add_argument("--out", default=None,
                   help="run folder for checkpoint, history and metrics (default runs/MODEL-DATASET-foldF)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (refused if it is of another dataset)")
    add_training_arguments(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("crossval", help="10-fold cross-validation on the official folds, epoch chosen on a validation fold")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--folds", default=None,
                   help="test folds to run, e.g. 1-3 or 1,4,7 (default: every fold the dataset has)")
    p.add_argument("--out", default=None,
                   help="folder for the fold runs and summary (default runs/crossval-MODEL-DATASET; with several "
                        "models, DIR/MODEL each and DIR/comparison.csv)")
    p.add_argument("--jobs", type=int, default=1,
                   help="folds trained side by side, each in its own process on this machine's device "
                        "(one GPU is shared; several are used in turn); same numbers as one at a time (default 1)")
    add_training_arguments(p, several_models=True)
    p.set_defaults(func=_crossval)

    p = sub.add_parser("predict", help="print the top-3 classes of sound files (and folders of them) with a trained model")
    p.add_argument("checkpoint", metavar="RUN",
                   help="a run folder written by train or crossval (its best.pt when it has one, else its "
                        "checkpoint.pt) or a checkpoint file")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="sound files (WAV in any format, FLAC, OGG, MP3, ...) or folders, searched recursively; "
                        "a file that cannot be read is reported and the others are still classified (exit 1)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the predictions and failures as JSON")
    p.set_defaults(func=_predict)

    p = sub.add_parser("download", help="download, verify and extract the real UrbanSound8K (6 GB)")
    p.add_argument("--root", default=None, help="parent folder to put UrbanSound8K/ into (default: data/)")
    p.add_argument("--url", default=None, help="archive URL (default: $US8K_URL, else Zenodo record 1203745)")
    p.add_argument("--md5", default=None, help="expected archive md5 (default: $US8K_MD5, else the official one)")
    p.set_defaults(func=_download)

    p = sub.add_parser("validate", help="check the metadata and every clip of a dataset folder")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--json", default=None, metavar="REPORT.json", help="write the full report as JSON")
    p.add_argument("--checksums", action="store_true",
                   help="also check each file's size and md5 against the shipped checksums (real data only)")
    p.set_defaults(func=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command and return its exit code (0 success, 1 data problem, 2 usage)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except US8KError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
