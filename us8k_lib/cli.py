"""Command line: ``python -m us8k_lib COMMAND`` (or ``us8k COMMAND``).

Commands: ``make-mini``, ``train``, ``crossval``, ``predict``, ``download``, ``validate``. Each command's work
is a library function; this module only parses arguments, with flags from modules that need no
torch (:mod:`us8k_lib.recipe`, :mod:`us8k_lib.augment_settings`), and imports the command's module
only to run it, so ``--help`` is fast (a test checks that it imports no torch).

Exit status: 0 success; 2 a usage error, where every flag's value is checked as it is parsed
(:mod:`us8k_lib.flags`), so a bad value stops before any work with argparse's ``usage`` and one
``error:`` line naming the flag and what it accepts; 1 any other expected failure (a missing or
bad file, a dataset without the fold asked for, a refused run folder, a file that cannot be
written), reported as one ``error: ...`` line on stderr. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from us8k_lib import flags
from us8k_lib.errors import US8KError, failure_line
from us8k_lib.recipe import add_training_arguments


def _make_mini(args: argparse.Namespace) -> int:
    from us8k_lib.mini import make_mini_command

    return make_mini_command(args)


def _train(args: argparse.Namespace) -> int:
    from us8k_lib.train_command import train_command

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


def _folds(text: str) -> str:
    """argparse type of ``crossval --folds``: checked by :func:`us8k_lib.crossval.parse_folds`,
    returned as given (the command parses it again)."""
    from us8k_lib.crossval import parse_folds  # late: crossval needs torch, and runs next anyway

    try:
        parse_folds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2] + f", got {text!r}") from None
    return text


def _train_usage(args: argparse.Namespace) -> str | None:
    """Return what is wrong with the combination of ``train``'s flags, or None."""
    if args.resume and getattr(args, "overwrite", False):
        return "argument --overwrite: not allowed with --resume (continue the run in --out, or replace it: one of the two)"
    # Without --test-fold a new run tests fold 10; a resumed one its checkpoint's (checked when read).
    test_fold = args.test_fold if args.test_fold is not None or args.resume else 10
    if args.val_fold is not None and args.val_fold == test_fold:
        return (f"argument --val-fold: fold {args.val_fold} is also the test fold (--test-fold); the test fold "
                "must not choose anything: pick another validation fold")
    return None


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
    p.add_argument("--root", type=flags.folder, default=None,
                   help="parent folder to write UrbanSound8K/ into (default: data/mini)")
    p.add_argument("--seed", type=flags.integer(0), default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--size", type=flags.mini_size, default="mini", help="'tiny' (tests), 'mini' (default) or 'medium'")
    p.add_argument("--force", action="store_true", help="regenerate even if a dataset is already there")
    p.set_defaults(func=_make_mini)

    p = sub.add_parser("train", help="train a model on all folds but one and test on that one")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--test-fold", type=flags.fold, default=None,
                   help="held-out fold (default 10; with --resume, the checkpoint's)")
    p.add_argument("--val-fold", type=flags.fold, default=None,
                   help="fold held out of training to select the epoch (default: none, report the last epoch)")
    p.add_argument("--out", type=flags.folder, default=None,
                   help="run folder for checkpoint, history and metrics (default runs/MODEL-DATASET-foldF)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (refused if it is of another dataset)")
    add_training_arguments(p)
    p.set_defaults(func=_train, usage=_train_usage, command_parser=p)

    p = sub.add_parser("crossval", help="10-fold cross-validation on the official folds, epoch chosen on a validation fold")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--folds", type=_folds, default=None,
                   help="test folds to run, e.g. 1-3 or 1,4,7 (default: every fold the dataset has)")
    p.add_argument("--out", type=flags.folder, default=None,
                   help="folder for the fold runs and summary (default runs/crossval-MODEL-DATASET; with several "
                        "models, DIR/MODEL each and DIR/comparison.csv)")
    p.add_argument("--jobs", type=flags.integer(1), default=1,
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
    p.add_argument("--json", type=flags.output_file, default=None, metavar="FILE", help="also write the predictions and failures as JSON")
    p.set_defaults(func=_predict)

    p = sub.add_parser("download", help="download, verify and extract the real UrbanSound8K (6 GB)")
    p.add_argument("--root", type=flags.folder, default=None,
                   help="parent folder to put UrbanSound8K/ into (default: data/)")
    p.add_argument("--url", type=flags.url, default=None, help="archive URL (default: $US8K_URL, else Zenodo record 1203745)")
    p.add_argument("--md5", type=flags.md5, default=None, help="expected archive md5 (default: $US8K_MD5, else the official one)")
    p.set_defaults(func=_download)

    p = sub.add_parser("validate", help="check the metadata and every clip of a dataset folder")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--json", type=flags.output_file, default=None, metavar="REPORT.json", help="write the full report as JSON")
    p.add_argument("--checksums", action="store_true",
                   help="also check each file's size and md5 against the shipped checksums (real data only)")
    p.set_defaults(func=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command and return its exit code: 0 success, 1 an expected failure (one ``error: ...``
    line on stderr), 2 a usage error (argparse's usage and ``error:`` line). Used by
    ``python -m us8k_lib`` and the ``us8k`` script."""
    try:
        args = build_parser().parse_args(argv)
        check = getattr(args, "usage", None)
        problem = check(args) if check is not None else None
        if problem:
            args.command_parser.error(problem)  # exits 2, as argparse does for one flag
        return int(args.func(args) or 0)
    except (US8KError, OSError) as exc:
        line = failure_line(exc)
        if line is None:  # an OSError about no file the user named: a bug, keep its traceback
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
