"""``python -m us8k_lib train``: train one model, write its run folder, print the test accuracy last.

The recipe is the preset for the dataset (``--preset``, see :mod:`us8k_lib.recipe`) with the flags
over it; ``--resume`` continues the checkpoint's recipe, ``--overwrite`` replaces the run in
``--out``. What happens to a folder that holds a run already is :mod:`us8k_lib.runs.folder`'s rule.
Used by :mod:`us8k_lib.cli.parser`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from us8k_lib.engine.fit import FitResult, fit
from us8k_lib.folds import DEFAULT_TEST_FOLD
from us8k_lib.recipe import TrainConfig


def train_command(args: argparse.Namespace) -> int:
    """Run ``train``; return the exit code (0; errors are raised for :mod:`us8k_lib.cli.parser` to word).

    Under ``torchrun`` it trains one model over all ranks with DistributedDataParallel; rank 0
    holds the run folder's lock, logs and writes the run folder.
    """
    from us8k_lib.cli.training_flags import config_from_args, flag_values
    from us8k_lib.devices import place
    from us8k_lib.engine.distributed import is_main, process_group
    from us8k_lib.model import parse_model_name
    from us8k_lib.paths import choose_root
    from us8k_lib.recipe import recipe_line
    from us8k_lib.runs.folder import default_run_dir, has_checkpoint, saved_config

    root, where = choose_root(args.root)
    model_name = parse_model_name(flag_values(args).get("model", "m5"))
    # --test-fold left out: fold 10 for a new run, the checkpoint's for --resume (a run of another
    # test fold, such as a crossval fold folder, continues as it was)
    fixed = {} if args.test_fold is None else {"test_fold": args.test_fold}
    out = Path(args.out) if args.out else default_run_dir("train", model_name, root, args.test_fold or 10)
    base = TrainConfig.from_dict(saved_config(out)) if args.resume else None
    config, sources, note = config_from_args(args, root, base=base, **fixed)
    placement = place(config.device, config.amp)  # decided once: the process group and fit use it
    with process_group(placement.device) as distributed:
        main = is_main()
        if main:  # the recipe first, then the dataset: what the numbers below depend on
            print(f"{recipe_line(config, sources, amp=placement.amp)}; {note}")
            print(where)
        try:
            result = fit(config, root=root, out=out, resume=args.resume, overwrite=args.overwrite,
                         skip_bad=args.skip_bad, verbose=True, sources=sources, show_recipe=False,
                         placement=placement)
        except KeyboardInterrupt:
            if main and has_checkpoint(out):
                again = _resume_line(root, out, config, distributed)
                print(f"Stopped; the last finished epoch is saved. Continue with: {again}", file=sys.stderr)
            raise
    if main:
        _report(result, out)
    return 0


def _resume_line(root: Path, out: Path, config: TrainConfig, distributed: bool) -> str:
    """The command that continues a stopped run: its dataset named, since the default one may be
    another (and a resume on another dataset is refused)."""
    launcher = ["torchrun", "...", "-m", "us8k_lib"] if distributed else ["python", "-m", "us8k_lib"]
    fold = [] if config.test_fold == DEFAULT_TEST_FOLD else ["--test-fold", str(config.test_fold)]
    return shlex.join([*launcher, "train", "--root", str(root), *fold, "--out", str(out), "--resume"])


def _report(result: FitResult, out: Path) -> None:
    """Print where the run is and what it reports, the test accuracy last."""
    from us8k_lib.runs.checkpoint import CHECKPOINT_NAME
    from us8k_lib.runs.results import METRICS_NAME, run_files

    config = result.config
    if result.skipped:
        print(f"{len(result.skipped)} bad clip(s) skipped (listed in {out / METRICS_NAME}).")
    files = ", ".join(p.name for p in run_files(out, result.selected is not None))
    print(f"run folder: {out} ({files}); total {result.seconds:.0f} s")
    last, chosen = result.evaluation, result.reported
    if result.selected is None:
        print(f"reported: the last epoch ({config.epochs}), weights in {result.reported_weights}")
        print(f"test accuracy: {chosen.accuracy:.3f} (fold {config.test_fold}, {chosen.n_clips} clips)")
        return
    print(f"last epoch ({config.epochs}, {out / CHECKPOINT_NAME}): test accuracy {last.accuracy:.3f}")
    print(f"test accuracy: {chosen.accuracy:.3f} (fold {config.test_fold}, {chosen.n_clips} clips; "
          f"epoch {result.selected_epoch} selected on validation fold {config.val_fold}, weights in "
          f"{result.reported_weights})")
