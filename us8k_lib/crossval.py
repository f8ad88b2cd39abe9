"""Evaluate like a paper: 10-fold cross-validation on the official folds, epochs chosen on validation.

UrbanSound8K's authors ask for three things: use the 10 official folds, never reshuffle them (the
slices of one recording must stay in one fold), and report the mean over 10-fold
cross-validation. :func:`crossval` does that by construction. Each official fold is the test
fold once; the fold before it (cyclically) is the *validation fold*, which picks the epoch whose
weights are kept; the model trains on the remaining eight. The test fold is evaluated after every
epoch so the learning curves can be drawn, but it never chooses anything.

The output folder (by default ``runs/crossval-MODEL-DATASET``) holds one run folder per test fold
(``fold01/`` ...; see :mod:`us8k_lib.runfolder`) and, once every fold is done, ``summary.json``,
``summary.csv`` and ``confusion.csv``. The folder is locked while the command runs (a second
cross-validation into it stops at once, naming the holder). A finished fold of the same settings
and dataset is skipped on a rerun and an interrupted one resumes from its checkpoint; a fold of
other settings or another dataset stops the command before any training, naming the choices
(another ``out``, or ``overwrite``). Under ``torchrun`` the folds are spread over the ranks
(one device each) and rank 0 writes the summary; ``jobs`` runs several folds side by side in
one command (several processes sharing one GPU). :func:`comparison_table` puts two models'
cross-validations side by side (``--model m5,logmel``).

Used by notebooks 6, 7 and 8 and by ``python -m us8k_lib crossval``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from us8k_lib.errors import SettingsError, US8KError, failure_line
from us8k_lib.metadata import CLASSES
from us8k_lib.model import display_name
from us8k_lib.recipe import TrainConfig
from us8k_lib.runfolder import (
    DatasetIdentity,
    default_run_dir,
    locked,
    plan,
    read_results,
    weights_file,
    write_atomic,
    write_json,
)
from us8k_lib.train import fit
from us8k_lib.training_setup import DataSource

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
CONFUSION_CSV = "confusion.csv"
COMPARISON_CSV = "comparison.csv"
#: Columns of :attr:`CrossValResult.folds` (and the per-fold rows of summary.csv).
FOLD_COLUMNS = ["test_fold", "val_fold", "n_test", "selected_epoch", "val_acc", "test_acc", "test_acc_last",
                "best_test_epoch", "best_test_acc"]


@dataclass
class CrossValResult:
    """What :func:`crossval` returns (and what summary.json holds).

    Attributes:
        model: the model's name (``"m5"`` ...).
        folds: one row per test fold: ``test_fold``, ``val_fold``, ``n_test`` (clips),
            ``selected_epoch`` (chosen on the validation fold), ``val_acc`` (at that epoch),
            ``test_acc`` (the test fold at that epoch: the number to report), ``test_acc_last``
            (the test fold after the last epoch), ``best_test_epoch`` and ``best_test_acc``
            (the epoch the *test* fold would have picked: optimistic, shown only to measure the gap).
        per_class: per-class test accuracy at the selected epochs, averaged over folds
            (index: class name; columns ``accuracy`` and ``folds``, the folds the class appears in).
        confusion: ``[n_classes, n_classes]`` counts at the selected epochs, summed over folds.
        per_class_by_fold: per-class test accuracy at the selected epoch, one row per test fold
            (index: test fold; columns: class names; NaN where a fold has no clip of the class).
        dataset_folds: the folds the dataset has.
        out: the output folder.
        dataset: the identity of the dataset every fold ran on (:class:`us8k_lib.runfolder.DatasetIdentity`).
    """

    model: str
    folds: pd.DataFrame
    per_class: pd.DataFrame
    per_class_by_fold: pd.DataFrame
    confusion: np.ndarray
    dataset_folds: list[int]
    out: Path
    dataset: DatasetIdentity | None = None

    def fold_model(self, test_fold: int) -> Any:
        """Return the model one fold reported (its validation-selected epoch), on CPU in eval mode.
        Used by notebook 8."""
        from us8k_lib.checkpoint import load_model

        return load_model(weights_file(fold_dir(self.out, test_fold))[0])

    @property
    def training_seconds(self) -> float:
        """Seconds the folds' epochs took when they were trained (summed from each fold's history),
        the same whether this call trained them or found them finished. Used by notebooks 7 and 8."""
        return float(sum(row.get("seconds", 0.0) for fold in self.folds["test_fold"]
                         for row in read_results(fold_dir(self.out, int(fold)))[1]))

    @property
    def mean(self) -> float:
        """Mean test accuracy over folds, each at its validation-selected epoch."""
        return float(self.folds["test_acc"].mean())

    @property
    def std(self) -> float:
        """Sample standard deviation of the per-fold test accuracy (0 for a single fold)."""
        return _std(self.folds["test_acc"])

    @property
    def mean_last(self) -> float:
        """Mean test accuracy over folds after the last epoch."""
        return float(self.folds["test_acc_last"].mean())

    @property
    def mean_best_on_test(self) -> float:
        """Mean of each fold's best epoch *on the test fold*: the optimistic number (never report it)."""
        return float(self.folds["best_test_acc"].mean())

    def summary_line(self) -> str:
        """The one line to report, as the command prints it last."""
        return (f"cross-validation accuracy: {self.mean:.3f} ± {self.std:.3f} ({len(self.folds)} folds, "
                f"model {display_name(self.model)}, selected on validation folds)")

    def to_dict(self) -> dict[str, Any]:
        """Return everything as JSON-friendly values (the content of summary.json)."""
        return {
            "model": self.model,
            "protocol": "official folds; each test fold once; epoch selected on the previous fold (validation), "
                        "training on the others; the test fold never selects",
            "n_folds": len(self.folds),
            "dataset": None if self.dataset is None else self.dataset.to_dict(),
            "dataset_folds": self.dataset_folds,
            "missing_official_folds": [f for f in range(1, 11) if f not in self.dataset_folds],
            "mean": self.mean, "std": self.std,
            "mean_last_epoch": self.mean_last, "std_last_epoch": _std(self.folds["test_acc_last"]),
            "mean_best_epoch_on_test_fold": self.mean_best_on_test,
            "folds": [_json_row(r) for r in self.folds.to_dict(orient="records")],
            "per_class_accuracy": {c: _none_if_nan(a) for c, a in self.per_class["accuracy"].items()},
            "confusion": self.confusion.tolist(),
            "classes": list(self.per_class.index),
        }


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
    if not folds or any(not 1 <= f <= 10 for f in folds):
        raise ValueError(f"--folds {text!r}: folds are numbered 1-10")
    return sorted(folds)


def fold_roles(dataset_folds: Sequence[int], test_fold: int) -> tuple[int, list[int]]:
    """Return (validation fold, training folds) for ``test_fold``: validation is the previous fold, cyclically.

    Raises:
        ValueError: if the dataset has fewer than three folds (train, validation and test).
    """
    folds = sorted(int(f) for f in dataset_folds)
    if len(folds) < 3:
        raise SettingsError(f"cross-validation needs at least 3 folds (train, validation, test); the dataset has {folds}")
    i = folds.index(test_fold)
    val = folds[i - 1]
    return val, [f for f in folds if f not in (test_fold, val)]


def fold_dir(out: Path, test_fold: int) -> Path:
    """Return the run folder of one test fold inside a cross-validation folder."""
    return Path(out) / f"fold{test_fold:02d}"


def crossval(config: TrainConfig | None = None, root: str | Path | None = None, folds: Sequence[int] | None = None,
             out: str | Path | None = None, *, overwrite: bool = False, cache_dir: str | Path | None = None,
             skip_bad: bool = False, progress: bool = True, verbose: bool = True, jobs: int = 1,
             sources: Mapping[str, str] | None = None, show_recipe: bool = True) -> CrossValResult:
    """Cross-validate ``config.model`` over the official folds, choosing each fold's epoch on validation.

    The output folder is locked for the command's life, and before anything trains every fold's
    run folder is checked (:func:`us8k_lib.runfolder.plan`): a finished fold of the same settings
    and dataset is skipped, an unfinished one resumed; a fold of other settings or of **another
    dataset** stops the run with an error naming the choices (nothing is overwritten), unless
    ``overwrite`` asks to train every fold again.

    Args:
        config: training settings shared by every fold (its ``test_fold``, ``val_fold`` and
            ``train_folds`` are set per fold); default ``TrainConfig()``.
        root: UrbanSound8K folder (or parent); default :func:`us8k_lib.paths.resolve_root`.
        folds: test folds to run (default: every fold the dataset has).
        out: output folder (default ``runs/crossval-MODEL-DATASET``, see
            :func:`us8k_lib.runfolder.default_run_dir`).
        overwrite: replace the runs already in ``out`` (every fold asked for is trained again).
        cache_dir: preprocessing cache folder; one cache serves every fold.
        skip_bad, progress, verbose: as for :func:`us8k_lib.train.fit`.
        jobs: train this many folds side by side, each in its own process on this machine's
            device (one GPU is shared by all; several GPUs are used in turn). Every fold is the
            same run as in one process, so the numbers are the same (tested on a CPU).
        sources, show_recipe: for the recipe line printed first (see :func:`us8k_lib.train.fit`).

    Returns:
        A :class:`CrossValResult` over the folds run (on every rank under torchrun).

    Used by notebooks 6-8 and ``python -m us8k_lib crossval``.
    """
    from us8k_lib import distributed as dist

    config = config or TrainConfig()
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs > 1 and dist.world_size() > 1:
        raise SettingsError("jobs > 1 runs folds side by side in one command; under torchrun the ranks already do "
                            "(use one or the other)")
    main = dist.is_main()
    fold_verbose = verbose  # every rank reports the folds it trains
    verbose = verbose and main
    source = DataSource.open(root, verbose=verbose)  # once: every fold gets it
    dataset_folds = source.folds
    wanted = list(dataset_folds) if folds is None else sorted(int(f) for f in folds)
    absent = [f for f in wanted if f not in dataset_folds]
    if absent:
        raise US8KError(f"{source.root}: no clips in fold(s) {absent}; this dataset has folds {dataset_folds}")
    roles = {test_fold: fold_roles(dataset_folds, test_fold) for test_fold in wanted}  # before the folder is made
    out = Path(out) if out is not None else default_run_dir("crossval", config.model, source.root)
    with locked(out, main, ranks_together=True):
        if verbose:
            _announce(config, sources, show_recipe, dataset_folds, wanted, jobs, out)
        identity = source.identity(dataset_folds)
        tasks = []
        for test_fold in wanted:  # every fold checked first: nothing trains if one is refused
            val_fold, train_folds = roles[test_fold]
            fold_config = dataclasses.replace(config, test_fold=test_fold, val_fold=val_fold,
                                              train_folds=tuple(train_folds))
            run = fold_dir(out, test_fold)
            tasks.append((fold_config, run, plan(run, fold_config.to_dict(), identity, resume=False, overwrite=overwrite,
                                                 continue_unfinished=True)))
        # One cache for every fold: built once, on one rank, before anybody trains.
        if main:
            from us8k_lib.dataset import build_cache

            build_cache(source.root, source.metadata, cache_dir=cache_dir, skip_bad=skip_bad, progress=progress)
        dist.barrier()
        kwargs = dict(cache_dir=cache_dir, skip_bad=skip_bad, verbose=fold_verbose, sources=sources)
        mine = tasks[dist.rank()::dist.world_size()]
        if jobs > 1:
            _run_side_by_side(mine, jobs, source, kwargs)
        else:
            for fold_config, run, action in mine:
                _run_fold(fold_config, source, run, action, progress=progress and dist.world_size() == 1, **kwargs)
        rows = [_fold_row(run) for _, run, _ in mine]
        gathered = [r for part in dist.all_gather_objects(rows) for r in part]
        result = _summarize(config.model, gathered, dataset_folds, out, identity)
        if main:
            _write_summary(result, config)
        dist.barrier()
    return result


def _announce(config: TrainConfig, sources: Mapping[str, str] | None, show_recipe: bool, dataset_folds: list[int],
              wanted: list[int], jobs: int, out: Path) -> None:
    from us8k_lib import distributed as dist
    from us8k_lib.recipe import recipe_line

    if show_recipe:
        print(recipe_line(config, sources))
    if dataset_folds != list(range(1, 11)):
        print(f"This dataset has folds {dataset_folds}, not all ten official ones: "
              f"cross-validating over the folds it has.")
    side = f", {jobs} side by side" if jobs > 1 else ""
    print(f"Cross-validating {display_name(config.model)} over test folds {wanted} "
          f"({dist.world_size()} rank(s){side}); runs in {out}")


def _run_fold(config: TrainConfig, source: DataSource, run: Path, action: str, **kwargs: Any) -> None:
    """Train one fold, resume it, start it over, or skip it when it is finished (``action`` from plan)."""
    tag = f"[test fold {config.test_fold}, validation fold {config.val_fold}]"
    if action == "finished":
        if kwargs["verbose"]:
            print(f"{tag} already done in {run}: skipped")
        return
    if kwargs["verbose"]:
        doing = {"resume": "resuming", "new": "training", "overwrite": "training over (replacing the run there)"}
        print(f"{tag} {doing[action]} in {run}")
    fit(config, root=source, out=run, resume=action == "resume", overwrite=action == "overwrite", ddp=False,
        show_recipe=False, **kwargs)


class _Prefixed:
    """A text stream that starts every line with a prefix (the fold a side-by-side job trains)."""

    def __init__(self, stream: Any, prefix: str) -> None:
        self.stream, self.prefix, self.at_start = stream, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.at_start:
                self.stream.write(self.prefix)
            self.stream.write(piece)
            self.at_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _job(tasks: list[tuple[TrainConfig, Path, str]], source: DataSource, kwargs: dict[str, Any], threads: int) -> None:
    """One side-by-side job (a process of its own): train its folds one after the other.

    An expected failure (a fold folder in use, a file that cannot be written, Ctrl-C) ends the job
    with one ``error: [fold N] ...`` line on stderr and a non-zero exit code, as the command line
    words it, instead of multiprocessing's traceback; the parent then reports the failed job.
    """
    import sys

    import torch

    torch.set_num_threads(threads)
    stdout = sys.stdout
    for fold_config, run, action in tasks:
        sys.stdout = _Prefixed(stdout, f"[fold {fold_config.test_fold}] ")
        try:
            _run_fold(fold_config, source, run, action, progress=False, **kwargs)
        except KeyboardInterrupt:
            print(f"error: [fold {fold_config.test_fold}] interrupted", file=sys.stderr)
            sys.exit(130)
        except (US8KError, OSError) as exc:
            line = failure_line(exc)
            if line is None:
                raise  # not the user's to fix: its traceback kept, as the command line does
            print(f"error: [fold {fold_config.test_fold}] {line}", file=sys.stderr)
            sys.exit(1)
        finally:
            sys.stdout.flush()
            sys.stdout = stdout


def _run_side_by_side(tasks: list[tuple[TrainConfig, Path, str]], jobs: int, source: DataSource,
                      kwargs: dict[str, Any]) -> None:
    """Run the folds in ``jobs`` processes at once (fold k goes to job k mod jobs) and wait for all.

    Each job is a fresh process (``spawn``: CUDA cannot be forked), so it pays the import of torch
    once. On a CPU the cores are shared out (torch threads per job); with several GPUs visible,
    job j gets GPU j mod count, through ``CUDA_VISIBLE_DEVICES``. Each fold's run folder is
    locked by the job that trains it.
    """
    import multiprocessing
    import os

    import torch

    from us8k_lib.devices import choose_device

    device = choose_device(tasks[0][0].device) if tasks else torch.device("cpu")
    gpus = torch.cuda.device_count() if device.type == "cuda" and device.index is None else 0
    threads = max(1, torch.get_num_threads() // jobs) if device.type == "cpu" else torch.get_num_threads()
    ctx = multiprocessing.get_context("spawn")
    processes = []
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for j in range(min(jobs, len(tasks))):
            if gpus > 1:  # read by the child when it starts (the parent's own CUDA is unaffected)
                os.environ["CUDA_VISIBLE_DEVICES"] = str(j % gpus)
            p = ctx.Process(target=_job, args=(tasks[j::jobs], source, kwargs, threads), name=f"us8k-fold-job-{j}")
            p.start()
            processes.append(p)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    failed = []
    for p in processes:
        p.join()
        if p.exitcode != 0:
            failed.append(f"{p.name} (exit code {p.exitcode})")
    if failed:
        raise US8KError(f"side-by-side fold job(s) failed: {', '.join(failed)}; their errors are printed above. "
                        "Run the same command again: finished folds are skipped, interrupted ones resumed")


def _fold_row(run: Path) -> dict[str, Any]:
    """Read one finished fold's numbers from its metrics.json and history.json."""
    metrics, history = read_results(run)
    selected = metrics["selected"]
    test_accs = [row["test_acc"] for row in history]
    best = int(np.argmax(test_accs))  # the earliest best epoch, as validation's choice is
    return {
        "test_fold": metrics["folds"]["test"], "val_fold": metrics["folds"]["validation"],
        "n_test": selected["test"]["n_clips"], "selected_epoch": selected["epoch"], "val_acc": selected["val_acc"],
        "test_acc": selected["test"]["accuracy"], "test_acc_last": metrics["test"]["accuracy"],
        "best_test_epoch": best + 1, "best_test_acc": test_accs[best],
        "per_class": selected["test"]["per_class_accuracy"], "confusion": selected["test"]["confusion"],
        "classes": selected["test"]["classes"],
    }


def _summarize(model: str, rows: list[dict[str, Any]], dataset_folds: list[int], out: Path,
               dataset: DatasetIdentity | None = None) -> CrossValResult:
    rows = sorted(rows, key=lambda r: r["test_fold"])
    classes = rows[0]["classes"] if rows else list(CLASSES)
    folds = pd.DataFrame([{k: r[k] for k in FOLD_COLUMNS} for r in rows], columns=FOLD_COLUMNS)
    per_fold = pd.DataFrame([{c: r["per_class"].get(c) for c in classes} for r in rows], columns=classes,
                            index=pd.Index([r["test_fold"] for r in rows], name="test_fold"), dtype=float)
    per_class = pd.DataFrame({"accuracy": per_fold.mean(axis=0, skipna=True), "folds": per_fold.notna().sum()},
                             index=pd.Index(classes, name="class"))
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for r in rows:
        confusion += np.asarray(r["confusion"], dtype=np.int64)
    return CrossValResult(model=model, folds=folds, per_class=per_class, per_class_by_fold=per_fold,
                          confusion=confusion, dataset_folds=dataset_folds, out=out, dataset=dataset)


def _write_summary(result: CrossValResult, config: TrainConfig) -> None:
    write_json(result.out / SUMMARY_JSON, {**result.to_dict(), "config": config.to_dict()})
    # summary.csv: one row per test fold (accuracies, then per-class accuracy), then mean and std
    per_class = result.per_class_by_fold.add_prefix("acc_").reset_index(drop=True)
    table = pd.concat([result.folds.reset_index(drop=True), per_class], axis=1)
    numeric = table.drop(columns=["test_fold", "val_fold"])
    spread = numeric.std(ddof=1) if len(table) > 1 else numeric.mean() * 0
    stats = pd.DataFrame([numeric.mean(), spread])
    stats.insert(0, "test_fold", ["mean", "std"])
    stats.insert(1, "val_fold", ["", ""])
    csv = pd.concat([table.astype({"test_fold": str, "val_fold": str}), stats], ignore_index=True).to_csv(
        index=False, float_format="%.6g")
    write_atomic(result.out / SUMMARY_CSV, lambda f: f.write(csv), mode="w")
    confusion = pd.DataFrame(result.confusion, index=pd.Index(result.per_class.index, name="true"),
                             columns=result.per_class.index).to_csv()
    write_atomic(result.out / CONFUSION_CSV, lambda f: f.write(confusion), mode="w")


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _none_if_nan(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else _none_if_nan(v)) for k, v in row.items()}


def comparison_table(results: Sequence[CrossValResult]) -> pd.DataFrame:
    """Return the models of ``results`` side by side over their common test folds.

    One row per test fold (index ``test_fold``), then ``mean`` and ``std`` rows; for each model
    the columns ``MODEL acc`` (test accuracy at the epoch its validation fold selected) and
    ``MODEL epoch`` (that epoch); with two models also ``difference`` (the second minus the
    first, fold by fold: a paired comparison, since both saw the same clips). Used by notebook 8
    and ``crossval --model a,b``.
    """
    if len(results) < 2:
        raise ValueError("comparison_table needs at least two cross-validation results")
    common = sorted(set.intersection(*(set(r.folds["test_fold"]) for r in results)))
    table = pd.DataFrame(index=pd.Index(common, name="test_fold"))
    for r in results:
        f = r.folds.set_index("test_fold").loc[common]
        table[f"{display_name(r.model)} acc"] = f["test_acc"].astype(float)
        table[f"{display_name(r.model)} epoch"] = f["selected_epoch"].astype(float)
    if len(results) == 2:
        a, b = (f"{display_name(r.model)} acc" for r in results)
        table["difference"] = table[b] - table[a]
    spread = table.std(ddof=1) if len(table) > 1 else table.mean() * 0
    stats = pd.DataFrame([table.mean(), spread], index=pd.Index(["mean", "std"], name="test_fold"))
    return pd.concat([table.astype(object), stats.astype(object)])


def comparison_verdict(results: Sequence[CrossValResult]) -> str:
    """Word what a two-model comparison over the same folds shows, claiming no more than its numbers.

    It reports the mean paired difference (second model minus first) with its standard error over
    the folds and how many folds each model won, and says whether the difference is larger than
    twice its standard error (a rough guide, not a test: with few folds nothing is certain).
    Used by notebook 8.
    """
    a, b = results
    table = comparison_table([a, b])
    diff = table.loc[[i for i in table.index if i not in ("mean", "std")], "difference"].astype(float)
    n = len(diff)
    names = display_name(a.model), display_name(b.model)
    won, lost = int((diff > 0).sum()), int((diff < 0).sum())
    se = float(diff.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    lines = [f"Over {n} test fold(s), {names[1]} minus {names[0]}: {diff.mean():+.3f} mean test accuracy "
             f"(fold by fold: {', '.join(f'{d:+.3f}' for d in diff)}); {names[1]} scored higher on {won} fold(s), "
             f"lower on {lost}, the same on {n - won - lost}."]
    if n < 2 or not np.isfinite(se):
        lines.append("With one fold there is no spread to compare the difference with: it is one number, not a result.")
    elif se == 0 or abs(diff.mean()) > 2 * se:
        lines.append(f"The difference is more than twice its standard error over the folds ({se:.3f}): on these "
                     f"folds and this data, the direction is consistent.")
    else:
        lines.append(f"The difference is within twice its standard error over the folds ({se:.3f}): these folds "
                     "cannot tell the two apart.")
    return "\n".join(lines)


def _write_comparison(path: Path, table: pd.DataFrame) -> None:
    csv = table.to_csv(float_format="%.6g")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(csv), mode="w")


def crossval_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib crossval``: cross-validate, write the summary, print the result line last.

    ``--model a,b`` cross-validates each model in turn over the same folds (each in its own
    folder, as if run alone), then prints and writes a comparison table, and ends with one result
    line per model.
    """
    from us8k_lib import distributed as dist
    from us8k_lib.devices import choose_device
    from us8k_lib.model import parse_model_name
    from us8k_lib.paths import choose_root, dataset_name
    from us8k_lib.recipe import config_from_args, recipe_line

    models = [parse_model_name(m) for m in (args.model or "m5").split(",") if m.strip()]
    if len(set(models)) != len(models):
        raise ValueError(f"--model {args.model!r}: a model is listed twice")
    folds = parse_folds(args.folds)
    root, where = choose_root(args.root)
    results = []
    with dist.process_group(choose_device("auto" if args.device is None else args.device)):
        main = dist.is_main()
        for model in models:
            config, sources, note = config_from_args(args, root, model=model)
            if main:
                print(f"{recipe_line(config, sources)}; {note}")
                if model == models[0]:
                    print(where)
            out = args.out
            if out is not None and len(models) > 1:
                out = Path(out) / model
            results.append(crossval(config, root=root, folds=folds, out=out, overwrite=args.overwrite,
                                    skip_bad=args.skip_bad, jobs=args.jobs, sources=sources, show_recipe=False))
    if not main:
        return 0
    for result in results:
        table = result.folds[["test_fold", "val_fold", "selected_epoch", "test_acc", "test_acc_last",
                              "best_test_epoch", "best_test_acc"]]
        print(f"{display_name(result.model)}:")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"last epoch instead of the selected one: {result.mean_last:.3f}; "
              f"best epoch picked on the test fold (optimistic, not a result): {result.mean_best_on_test:.3f}")
        print(f"summary: {result.out / SUMMARY_JSON}, {result.out / SUMMARY_CSV}, {result.out / CONFUSION_CSV}")
    missing = [f for f in range(1, 11) if f not in results[0].dataset_folds]
    if missing:
        print(f"note: the dataset has no fold(s) {missing}, so this is not the official 10-fold protocol")
    if len(results) > 1:
        table = comparison_table(results)
        path = (Path(args.out) if args.out is not None else Path("runs")
                / f"compare-{'-'.join(models)}-{dataset_name(root)}") / COMPARISON_CSV
        _write_comparison(path, table)
        print("side by side (test accuracy at the epoch each validation fold selected):")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        print(f"comparison: {path}")
    for result in results:
        print(result.summary_line())
    return 0
