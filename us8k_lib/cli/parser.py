"""Command line: ``python -m us8k_lib COMMAND`` (or ``us8k COMMAND``).

Commands: ``make-mini``, ``train``, ``crossval``, ``predict``, ``download``, ``validate``. Each command's work
is a library function; this module only parses arguments, with flags from modules that need no
torch (:mod:`us8k_lib.recipe`, :mod:`us8k_lib.augment_settings`), and imports the command's module
only to run it, so ``--help`` is fast (a test checks that it imports no torch).

Exit status: 0 success; 2 a usage error, where every flag's value is checked as it is parsed
(:mod:`us8k_lib.cli.flags`), so a bad value stops before any work with argparse's ``usage`` and one
``error:`` line naming the flag and what it accepts; 1 any other expected failure (a missing or
bad file, a dataset without the fold asked for, a refused run folder, a file that cannot be
written), reported as one ``error: ...`` line on stderr. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from us8k_lib.cli import flags
from us8k_lib.cli.training_flags import add_training_arguments
from us8k_lib.errors import SettingsError, US8KError, failure_line, speaking_flags
from us8k_lib.folds import DEFAULT_TEST_FOLD, fold_problems

#: Each command's function, ``module:function`` under ``us8k_lib.cli``: imported only to run it.
COMMANDS = {
    "make-mini": "data:make_mini_command",
    "train": "train:train_command",
    "crossval": "crossval:crossval_command",
    "predict": "predict:predict_command",
    "download": "data:download_command",
    "validate": "data:validate_command",
}


def command_function(name: str) -> object:
    """Return the function that runs command ``name`` (its module imported now)."""
    module, function = COMMANDS[name].split(":")
    return getattr(importlib.import_module(f"us8k_lib.cli.{module}"), function)


def _train_usage(args: argparse.Namespace) -> str | None:
    """Return what is wrong with the combination of ``train``'s flags (the library's rules, in
    flags' words), or None."""
    try:
        from us8k_lib.runs.folder import check_resume_or_overwrite

        with speaking_flags():
            check_resume_or_overwrite(args.resume, args.overwrite)
    except SettingsError as exc:
        return str(exc)
    # Without --test-fold a new run tests the default fold; a resumed one its checkpoint's (checked when read).
    test_fold = args.test_fold if args.test_fold is not None or args.resume else DEFAULT_TEST_FOLD
    if test_fold is not None:
        with speaking_flags():
            problems = fold_problems(test_fold, args.val_fold, None)
        if problems:
            return problems[0]
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
    p.set_defaults(usage=_train_usage, command_parser=p)

    p = sub.add_parser("crossval",
                       help="10-fold cross-validation on the official folds, epoch chosen on a validation fold")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--folds", type=flags.folds, default=None,
                   help="test folds to run, e.g. 1-3 or 1,4,7 (default: every fold the dataset has)")
    p.add_argument("--out", type=flags.folder, default=None,
                   help="folder for the fold runs and summary (default runs/crossval-MODEL-DATASET; with several "
                        "models, DIR/MODEL each and DIR/comparison.csv)")
    p.add_argument("--jobs", type=flags.integer(1), default=1,
                   help="folds trained side by side, each in its own process on this machine's device "
                        "(one GPU is shared; several are used in turn). Each fold is the same run as one at a "
                        "time; on a CPU each job gets a share of the threads, so the numbers differ from "
                        "--jobs 1's by float rounding (docs/scaling-out.md) (default 1)")
    add_training_arguments(p, several_models=True)

    p = sub.add_parser("predict",
                       help="print the top-3 classes of sound files (and folders of them) with a trained model")
    p.add_argument("checkpoint", metavar="RUN",
                   help="a run folder written by train or crossval (its best.pt when it has one, else its "
                        "checkpoint.pt) or a checkpoint file")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="sound files (WAV in any format, FLAC, OGG, MP3, ...) or folders, searched recursively; "
                        "a file that cannot be read is reported and the others are still classified (exit 1)")
    p.add_argument("--json", type=flags.output_file, default=None, metavar="FILE",
                   help="also write the predictions and failures as JSON")

    p = sub.add_parser("download", help="download, verify and extract the real UrbanSound8K (6 GB)")
    p.add_argument("--root", type=flags.folder, default=None,
                   help="parent folder to put UrbanSound8K/ into (default: data/)")
    p.add_argument("--url", type=flags.url, default=None,
                   help="archive URL (default: $US8K_URL, else Zenodo record 1203745)")
    p.add_argument("--md5", type=flags.md5, default=None,
                   help="expected archive md5 (default: $US8K_MD5, else the official one)")

    p = sub.add_parser("validate", help="check the metadata and every clip of a dataset folder")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--json", type=flags.output_file, default=None, metavar="REPORT.json",
                   help="write the full report as JSON")
    p.add_argument("--checksums", action="store_true",
                   help="also check each file's size and md5 against the shipped checksums (real data only)")
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
        with speaking_flags():
            return int(command_function(args.command)(args) or 0)
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
