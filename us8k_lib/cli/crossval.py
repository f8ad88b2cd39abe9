"""The ``crossval`` command: cross-validate one model or compare several over the same folds.

A thin layer over :func:`us8k_lib.crossval.crossval`: the flags make the config, ``--jobs`` picks
the :class:`us8k_lib.engine.jobs.SideBySide` runner, and the tables and the result lines are
printed here, the result last.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from us8k_lib.cli.flags import parse_folds
from us8k_lib.cli.training_flags import config_from_args
from us8k_lib.crossval import COMPARISON_CSV, comparison_table, crossval
from us8k_lib.devices import choose_device
from us8k_lib.engine import distributed as dist
from us8k_lib.engine.jobs import SideBySide
from us8k_lib.errors import SettingsError
from us8k_lib.folds import FOLDS
from us8k_lib.model import display_name
from us8k_lib.paths import choose_root, dataset_name
from us8k_lib.recipe import recipe_line
from us8k_lib.runs.files import write_text
from us8k_lib.runs.folder import SUMMARY_FILES


def crossval_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib crossval``: cross-validate, write the summary, print the result line last.

    ``--model a,b`` cross-validates each model in turn over the same folds (each in its own
    folder, as if run alone), then prints and writes a comparison table, and ends with one result
    line per model.
    """
    models = (args.model or "m5").split(",")  # canonical and distinct: checked by the --model flag
    folds = parse_folds(args.folds)
    if args.jobs > 1 and dist.world_size() > 1:
        raise SettingsError("--jobs runs folds side by side in one command; under torchrun the ranks already do "
                            "(use one or the other)")
    runner = SideBySide(args.jobs) if args.jobs > 1 else None
    root, where = choose_root(args.root)
    results = []
    with dist.process_group(choose_device("auto" if args.device is None else args.device)):
        main = dist.is_main()
        for model in models:
            config, sources, note = config_from_args(args, root, model=model)
            if main:
                print(f"{recipe_line(config, sources)}; {note}")
                if model == models[0]:
                    print(where + (f" Training {args.jobs} folds side by side." if runner else ""))
            out = args.out
            if out is not None and len(models) > 1:
                out = Path(out) / model
            results.append(crossval(config, root=root, folds=folds, out=out, overwrite=args.overwrite,
                                    skip_bad=args.skip_bad, runner=runner, sources=sources, show_recipe=False))
    if not main:
        return 0
    for result in results:
        table = result.folds[["test_fold", "val_fold", "selected_epoch", "test_acc", "test_acc_last",
                              "best_test_epoch", "best_test_acc"]]
        print(f"{display_name(result.model)}:")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"last epoch instead of the selected one: {result.mean_last:.3f}; "
              f"best epoch picked on the test fold (optimistic, not a result): {result.mean_best_on_test:.3f}")
        print("summary: " + ", ".join(str(result.out / name) for name in SUMMARY_FILES))
    missing = [f for f in FOLDS if f not in results[0].dataset_folds]
    if missing:
        print(f"note: the dataset has no fold(s) {missing}, so this is not the official 10-fold protocol")
    if len(results) > 1:
        table = comparison_table(results)
        path = (Path(args.out) if args.out is not None else Path("runs")
                / f"compare-{'-'.join(models)}-{dataset_name(root)}") / COMPARISON_CSV
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, table.to_csv(float_format="%.6g"))
        print("side by side (test accuracy at the epoch each validation fold selected):")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        print(f"comparison: {path}")
    for result in results:
        print(result.summary_line())
    return 0
