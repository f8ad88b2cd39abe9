"""Evaluate like a paper: 10-fold cross-validation on the official folds, epochs chosen on validation.

UrbanSound8K's authors ask for three things: use the 10 official folds, never reshuffle them (the
slices of one recording must stay in one fold), and report the mean over 10-fold
cross-validation. :func:`crossval` does that by construction. Each official fold is the test
fold once; the fold before it (cyclically) is the *validation fold*, which picks the epoch whose
weights are kept; the model trains on the remaining eight. The test fold is evaluated after every
epoch so the learning curves can be drawn, but it never chooses anything.

The output folder holds one run folder per test fold (``fold01/`` ...; see :func:`us8k_lib.train.fit`)
and, once every fold is done, ``summary.json``, ``summary.csv`` and ``confusion.csv``. A finished
fold is skipped on a rerun and an interrupted one resumes from its checkpoint. Under ``torchrun``
the folds are spread over the ranks (one device each) and rank 0 writes the summary.

Used by notebooks 6 and 7 and by ``python -m us8k_lib crossval``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from us8k_lib.checkpoint import CHECKPOINT_NAME, load_checkpoint, write_atomic, write_json
from us8k_lib.errors import CheckpointError, US8KError
from us8k_lib.metadata import CLASSES
from us8k_lib.train import HISTORY_NAME, METRICS_NAME, TrainConfig, fit

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
CONFUSION_CSV = "confusion.csv"
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
    """

    model: str
    folds: pd.DataFrame
    per_class: pd.DataFrame
    per_class_by_fold: pd.DataFrame
    confusion: np.ndarray
    dataset_folds: list[int]
    out: Path

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


def display_name(model: str) -> str:
    """Return the paper's spelling of a model name (``"m34res"`` -> ``"M34-res"``)."""
    from us8k_lib.model import SPECS, parse_model_name

    return SPECS[parse_model_name(model)].title


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
        raise ValueError(f"cross-validation needs at least 3 folds (train, validation, test); the dataset has {folds}")
    i = folds.index(test_fold)
    val = folds[i - 1]
    return val, [f for f in folds if f not in (test_fold, val)]


def fold_dir(out: Path, test_fold: int) -> Path:
    """Return the run folder of one test fold inside a cross-validation folder."""
    return Path(out) / f"fold{test_fold:02d}"


def crossval(config: TrainConfig | None = None, root: str | Path | None = None, folds: Sequence[int] | None = None,
             out: str | Path | None = None, *, cache_dir: str | Path | None = None, skip_bad: bool = False,
             progress: bool = True, verbose: bool = True) -> CrossValResult:
    """Cross-validate ``config.model`` over the official folds, choosing each fold's epoch on validation.

    Args:
        config: training settings shared by every fold (its ``test_fold``, ``val_fold`` and
            ``train_folds`` are set per fold); default ``TrainConfig()``.
        root: UrbanSound8K folder (or parent); default :func:`us8k_lib.paths.resolve_root`.
        folds: test folds to run (default: every fold the dataset has).
        out: output folder (default ``runs/crossval-MODEL``).
        cache_dir: preprocessing cache folder; one cache serves every fold.
        skip_bad, progress, verbose: as for :func:`us8k_lib.train.fit`.

    Returns:
        A :class:`CrossValResult` over the folds run (on every rank under torchrun).

    Used by notebooks 6 and 7 and ``python -m us8k_lib crossval``.
    """
    from us8k_lib import distributed as dist
    from us8k_lib.dataset import build_cache
    from us8k_lib.metadata import load_metadata
    from us8k_lib.paths import normalize_root, resolve_root

    config = config or TrainConfig()
    main = dist.is_main()
    fold_verbose = verbose  # every rank reports the folds it trains
    verbose = verbose and main
    root = resolve_root(verbose=verbose) if root is None else normalize_root(root)
    metadata = load_metadata(root)
    dataset_folds = sorted(int(f) for f in metadata["fold"].unique())
    wanted = list(dataset_folds) if folds is None else sorted(int(f) for f in folds)
    absent = [f for f in wanted if f not in dataset_folds]
    if absent:
        raise US8KError(f"{root}: no clips in fold(s) {absent}; this dataset has folds {dataset_folds}")
    out = Path(out) if out is not None else Path("runs") / f"crossval-{config.model}"
    if verbose:
        if dataset_folds != list(range(1, 11)):
            print(f"This dataset has folds {dataset_folds}, not all ten official ones: "
                  f"cross-validating over the folds it has.")
        print(f"Cross-validating {display_name(config.model)} over test folds {wanted} "
              f"({dist.world_size()} rank(s)); runs in {out}")

    # One cache for every fold: build it once, on one rank, before anybody trains.
    if main:
        build_cache(root, metadata, cache_dir=cache_dir, skip_bad=skip_bad, progress=progress)
    dist.barrier()
    mine = wanted[dist.rank()::dist.world_size()]
    rows = []
    for test_fold in mine:
        val_fold, train_folds = fold_roles(dataset_folds, test_fold)
        fold_config = dataclasses.replace(config, test_fold=test_fold, val_fold=val_fold,
                                          train_folds=tuple(train_folds))
        rows.append(_run_fold(fold_config, root, fold_dir(out, test_fold), cache_dir=cache_dir,
                              skip_bad=skip_bad, progress=progress and dist.world_size() == 1,
                              verbose=fold_verbose))
    gathered = [r for part in dist.all_gather_objects(rows) for r in part]
    result = _summarize(config.model, gathered, dataset_folds, out)
    if main:
        _write_summary(result, config)
    dist.barrier()
    return result


def _run_fold(config: TrainConfig, root: Path, run: Path, **kwargs: Any) -> dict[str, Any]:
    """Train one fold (or skip/resume it) and return its numbers from its run files."""
    tag = f"[test fold {config.test_fold}, validation fold {config.val_fold}]"
    if _finished(run, config):
        if kwargs["verbose"]:
            print(f"{tag} already done in {run}: skipped")
    else:
        resume = _resumable(run, config)
        if kwargs["verbose"]:
            started_over = not resume and (run / CHECKPOINT_NAME).exists()
            print(f"{tag} {'resuming' if resume else 'training'} in {run}"
                  + (" (it held a run with other settings: starting over)" if started_over else ""))
        fit(config, root=root, out=run, resume=resume, ddp=False, **kwargs)
    return _fold_row(run)


def _resumable(run: Path, config: TrainConfig) -> bool:
    """True if ``run`` holds an unfinished run of ``config`` (one with other settings is started over)."""
    try:
        saved = load_checkpoint(run / CHECKPOINT_NAME)["config"]
    except CheckpointError:
        return False
    return all(saved.get(k) == v for k, v in config.to_dict().items() if k != "workers")


def _finished(run: Path, config: TrainConfig) -> bool:
    """True if ``run`` holds a finished run of exactly ``config`` (so a rerun can skip it)."""
    try:
        metrics = json.loads((run / METRICS_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (metrics.get("epoch") == config.epochs and metrics.get("selected") is not None
            and metrics.get("config") == config.to_dict())


def _fold_row(run: Path) -> dict[str, Any]:
    """Read one finished fold's numbers from its metrics.json and history.json."""
    metrics = json.loads((run / METRICS_NAME).read_text())
    history = json.loads((run / HISTORY_NAME).read_text())
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


def _summarize(model: str, rows: list[dict[str, Any]], dataset_folds: list[int], out: Path) -> CrossValResult:
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
                          confusion=confusion, dataset_folds=dataset_folds, out=out)


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


def crossval_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib crossval``: cross-validate, write the summary, print the result line last."""
    from us8k_lib import distributed as dist
    from us8k_lib.devices import choose_device
    from us8k_lib.train import config_overrides

    config = TrainConfig(**config_overrides(args))
    folds = parse_folds(args.folds)
    with dist.process_group(choose_device(config.device)):
        main = dist.is_main()
        result = crossval(config, root=args.root, folds=folds, out=args.out, skip_bad=args.skip_bad)
    if not main:
        return 0
    table = result.folds[["test_fold", "val_fold", "selected_epoch", "test_acc", "test_acc_last",
                          "best_test_epoch", "best_test_acc"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"last epoch instead of the selected one: {result.mean_last:.3f}; "
          f"best epoch picked on the test fold (optimistic, not a result): {result.mean_best_on_test:.3f}")
    missing = [f for f in range(1, 11) if f not in result.dataset_folds]
    if missing:
        print(f"note: the dataset has no fold(s) {missing}, so this is not the official 10-fold protocol")
    print(f"summary: {result.out / SUMMARY_JSON}, {result.out / SUMMARY_CSV}, {result.out / CONFUSION_CSV}")
    print(result.summary_line())
    return 0
