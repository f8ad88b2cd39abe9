"""Evaluate like a paper: 10-fold cross-validation on the official folds, epochs chosen on validation.

UrbanSound8K's authors ask for three things: use the 10 official folds, never reshuffle them (the
slices of one recording must stay in one fold), and report the mean over 10-fold
cross-validation. :func:`crossval` does that by construction. Each official fold is the test
fold once; the fold before it (cyclically) is the *validation fold*, which picks the epoch whose
weights are kept; the model trains on the remaining eight. The test fold is evaluated after every
epoch so the learning curves can be drawn, but it never chooses anything.

The output folder (by default ``runs/crossval-MODEL-DATASET``) holds one run folder per test fold
(``fold01/`` ...; see :mod:`us8k_lib.runs.folder`) and, once every fold is done, ``summary.json``,
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

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from us8k_lib.engine.cache import build_cache
from us8k_lib.engine.fit import fit
from us8k_lib.engine.parts import DataSource
from us8k_lib.errors import US8KError
from us8k_lib.folds import FOLDS, fold_roles
from us8k_lib.metadata import CLASSES
from us8k_lib.model import display_name
from us8k_lib.recipe import TrainConfig, recipe_line
from us8k_lib.runs.files import write_json, write_text
from us8k_lib.runs.folder import (
    CONFUSION_CSV,
    SUMMARY_CSV,
    SUMMARY_JSON,
    check_kind,
    default_run_dir,
    fold_dir,
    plan,
    run_status,
)
from us8k_lib.runs.identity import DatasetIdentity
from us8k_lib.runs.lock import locked
from us8k_lib.runs.results import read_results, weights_file

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
        dataset: the identity of the dataset every fold ran on (:class:`us8k_lib.runs.identity.DatasetIdentity`).
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
        from us8k_lib.runs.checkpoint import load_model

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
            "missing_official_folds": [f for f in FOLDS if f not in self.dataset_folds],
            "mean": self.mean, "std": self.std,
            "mean_last_epoch": self.mean_last, "std_last_epoch": _std(self.folds["test_acc_last"]),
            "mean_best_epoch_on_test_fold": self.mean_best_on_test,
            "folds": [_json_row(r) for r in self.folds.to_dict(orient="records")],
            "per_class_accuracy": {c: _none_if_nan(a) for c, a in self.per_class["accuracy"].items()},
            "confusion": self.confusion.tolist(),
            "classes": list(self.per_class.index),
        }


@dataclass
class FoldTask:
    """One test fold of a cross-validation, checked before anything trains.

    Attributes:
        config: the fold's settings (its test, validation and training folds set).
        run: its run folder (:func:`fold_dir`).
        action: what :func:`us8k_lib.runs.folder.plan` decided: ``"new"``, ``"resume"``,
            ``"finished"`` (skipped) or ``"overwrite"``.
    """

    config: TrainConfig
    run: Path
    action: str


#: What trains a cross-validation's folds: called with the folds of this process, the dataset and
#: :func:`run_fold`'s keyword arguments. :func:`run_in_turn` by default; the command line's
#: ``--jobs`` passes :class:`us8k_lib.engine.jobs.SideBySide`.
Runner = Callable[[list[FoldTask], DataSource, dict[str, Any]], None]


def run_fold(task: FoldTask, source: DataSource, **kwargs: Any) -> None:
    """Train one fold, resume it, start it over, or skip it when it is finished (``task.action``);
    ``kwargs`` go to :func:`us8k_lib.engine.fit.fit`."""
    config, run, action = task.config, task.run, task.action
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


def run_in_turn(tasks: list[FoldTask], source: DataSource, kwargs: dict[str, Any]) -> None:
    """The default :data:`Runner`: train the folds one after the other in this process."""
    for task in tasks:
        run_fold(task, source, **kwargs)


def crossval(config: TrainConfig | None = None, root: str | Path | None = None, folds: Sequence[int] | None = None,
             out: str | Path | None = None, *, overwrite: bool = False, cache_dir: str | Path | None = None,
             skip_bad: bool = False, progress: bool = True, verbose: bool = True, runner: Runner | None = None,
             sources: Mapping[str, str] | None = None, show_recipe: bool = True) -> CrossValResult:
    """Cross-validate ``config.model`` over the official folds, choosing each fold's epoch on validation.

    The output folder is locked for the call's life, and before anything trains every fold's
    run folder is checked (:func:`us8k_lib.runs.folder.plan`): a finished fold of the same settings
    and dataset is skipped, an unfinished one resumed; a fold of other settings or of **another
    dataset** stops the run with an error naming the choices (nothing is overwritten), unless
    ``overwrite`` asks to train every fold again.

    Args:
        config: training settings shared by every fold (its ``test_fold``, ``val_fold`` and
            ``train_folds`` are set per fold); default ``TrainConfig()``.
        root: UrbanSound8K folder (or parent); default :func:`us8k_lib.paths.resolve_root`.
        folds: test folds to run (default: every fold the dataset has).
        out: output folder (default ``runs/crossval-MODEL-DATASET``, see
            :func:`us8k_lib.runs.folder.default_run_dir`).
        overwrite: replace the runs already in ``out`` (every fold asked for is trained again).
        cache_dir: preprocessing cache folder; one cache serves every fold.
        skip_bad, progress, verbose: as for :func:`us8k_lib.engine.fit.fit`.
        runner: what trains the folds (:data:`Runner`; default :func:`run_in_turn`).
        sources, show_recipe: for the recipe line printed first (see :func:`us8k_lib.engine.fit.fit`).

    Returns:
        A :class:`CrossValResult` (on every rank under torchrun) over every finished fold of these
        settings and dataset in ``out``: the folds asked for, and any that an earlier call into the
        same folder finished (``summary.json`` holds the same).

    Used by notebooks 6-8 and ``python -m us8k_lib crossval``.
    """
    from us8k_lib.engine import distributed as dist

    config = config or TrainConfig()
    main = dist.is_main()
    fold_verbose = verbose  # every rank reports the folds it trains
    verbose = verbose and main
    source = DataSource.open(root, verbose=verbose)  # once: every fold gets it
    dataset_folds = source.folds
    wanted = list(dataset_folds) if folds is None else sorted(int(f) for f in folds)
    absent = [f for f in wanted if f not in dataset_folds]
    if absent:
        raise US8KError(f"{source.root}: no clips in fold(s) {absent}; this dataset has folds {dataset_folds}")
    configs = {f: fold_config(config, dataset_folds, f) for f in dataset_folds if len(dataset_folds) >= 3}
    for test_fold in wanted:  # before the folder is made: a dataset of too few folds is refused here
        fold_roles(dataset_folds, test_fold)
    out = Path(out) if out is not None else default_run_dir("crossval", config.model, source.root)
    with locked(out, main, ranks_together=True):
        if main:
            check_kind(out, "crossval")
        if verbose:
            _announce(config, sources, show_recipe, dataset_folds, wanted, out)
        identity = source.identity(dataset_folds)
        tasks = [FoldTask(configs[f], fold_dir(out, f),
                          plan(fold_dir(out, f), configs[f].to_dict(), identity,
                               resume=False, overwrite=overwrite, continue_unfinished=True))
                 for f in wanted]  # every fold checked first: nothing trains if one is refused
        # One cache for every fold: built once, on one rank, before anybody trains.
        if main:
            build_cache(source.root, source.metadata, cache_dir=cache_dir, skip_bad=skip_bad, progress=progress)
        dist.barrier()
        mine = tasks[dist.rank()::dist.world_size()]
        kwargs = dict(cache_dir=cache_dir, skip_bad=skip_bad, verbose=fold_verbose, sources=sources,
                      progress=progress and dist.world_size() == 1)
        (runner or run_in_turn)(mine, source, kwargs)
        rows = [_fold_row(task.run) for task in mine]
        if main:  # folds an earlier call into this folder finished with the same settings count too
            earlier = [f for f in configs if f not in wanted
                       and run_status(fold_dir(out, f), configs[f].to_dict(), identity) == "finished"]
            rows += [_fold_row(fold_dir(out, f)) for f in earlier]
            if earlier and verbose:
                print(f"The summary also counts test fold(s) {earlier}, finished before in {out} with the same "
                      "settings and dataset.")
        gathered = [r for part in dist.all_gather_objects(rows) for r in part]
        result = _summarize(config.model, gathered, dataset_folds, out, identity)
        if main:
            _write_summary(result, config)
        dist.barrier()
    return result


def fold_config(config: TrainConfig, dataset_folds: Sequence[int], test_fold: int) -> TrainConfig:
    """Return ``config`` with the folds of ``test_fold``'s run set: validation on the fold before it
    (:func:`us8k_lib.metadata.fold_roles`), training on the others."""
    val_fold, train_folds = fold_roles(dataset_folds, test_fold)
    return dataclasses.replace(config, test_fold=test_fold, val_fold=val_fold, train_folds=tuple(train_folds))


def _announce(config: TrainConfig, sources: Mapping[str, str] | None, show_recipe: bool, dataset_folds: list[int],
              wanted: list[int], out: Path) -> None:
    from us8k_lib.engine import distributed as dist

    if show_recipe:
        print(recipe_line(config, sources))
    if dataset_folds != list(FOLDS):
        print(f"This dataset has folds {dataset_folds}, not all ten official ones: "
              f"cross-validating over the folds it has.")
    print(f"Cross-validating {display_name(config.model)} over test folds {wanted} "
          f"({dist.world_size()} rank(s)); runs in {out}")


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
    write_text(result.out / SUMMARY_CSV, csv)
    confusion = pd.DataFrame(result.confusion, index=pd.Index(result.per_class.index, name="true"),
                             columns=result.per_class.index).to_csv()
    write_text(result.out / CONFUSION_CSV, confusion)


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


