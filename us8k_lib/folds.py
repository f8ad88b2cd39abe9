"""The ten official folds of UrbanSound8K and the role each fold plays in a run.

The dataset's authors split the clips into ten folds, every slice of a recording in one fold, and
ask for results over all ten (notebook 1). A run trains on some folds and tests on one held out
(fold 10 unless told otherwise, as Dai et al. and the original tutorial did); cross-validation
tests every fold in turn, each time choosing the epoch on the fold before it (notebook 6). These
rules are written here once; :class:`us8k_lib.recipe.TrainConfig`, ``crossval`` and the command
line all ask this module. Nothing here imports torch or pandas.
"""

from __future__ import annotations

from collections.abc import Sequence

from us8k_lib.errors import SettingsError, setting

#: The ten official folds (the one place their numbers are written).
FOLDS: tuple[int, ...] = tuple(range(1, 11))

#: The fold one training run tests on unless told otherwise: fold 10, as Dai et al. (2017) and the
#: original tutorial did (cross-validation tests every fold in turn).
DEFAULT_TEST_FOLD = 10


def fold_roles(dataset_folds: Sequence[int], test_fold: int) -> tuple[int, list[int]]:
    """Return (validation fold, training folds) of ``test_fold`` in cross-validation over ``dataset_folds``.

    The validation fold is the fold before the test fold, cyclically (fold 10 validates test fold
    1): every fold validates once and tests once, and the test fold never chooses anything. Used by
    notebook 6, ``crossval`` and the notebooks' cost estimate.

    Raises:
        SettingsError: if the dataset has fewer than three folds (train, validation and test).
    """
    folds = sorted(int(f) for f in dataset_folds)
    if len(folds) < 3:
        raise SettingsError("cross-validation needs at least 3 folds (train, validation, test); "
                            f"the dataset has {folds}")
    i = folds.index(test_fold)
    val = folds[i - 1]
    return val, [f for f in folds if f not in (test_fold, val)]


def fold_problems(test_fold: int, val_fold: int | None, train_folds: Sequence[int] | None) -> list[str]:
    """Return what is wrong with the folds of one run (empty when nothing is): every fold must be an
    official one, the validation fold must not be the test fold (the test fold chooses nothing),
    and neither may also be a training fold (that would leak). Used by
    :class:`us8k_lib.recipe.TrainConfig` and the command line's ``--test-fold``/``--val-fold``."""
    problems = []
    span = f"{FOLDS[0]}-{FOLDS[-1]}"
    test, val, train = setting("test_fold"), setting("val_fold"), setting("train_folds")
    if test_fold not in FOLDS:
        problems.append(f"{test} must be {span}, got {test_fold}")
    if val_fold is not None:
        if val_fold not in FOLDS:
            problems.append(f"{val} must be {span}, got {val_fold}")
        if val_fold == test_fold:
            problems.append(f"{val} {val_fold} is also the test fold ({test}): the test fold must not choose "
                            "anything; pick another validation fold")
    if train_folds is not None:
        if not train_folds or any(f not in FOLDS for f in train_folds):
            problems.append(f"{train} must be folds {span}, got {tuple(train_folds)}")
        if test_fold in train_folds:
            problems.append(f"{test} {test_fold} is also a training fold (that would leak)")
        if val_fold is not None and val_fold in train_folds:
            problems.append(f"{val} {val_fold} is also a training fold")
    return problems


def training_folds(test_fold: int, val_fold: int | None = None) -> tuple[int, ...]:
    """Return every official fold but ``test_fold`` and ``val_fold``: what a run trains on by default."""
    return tuple(f for f in FOLDS if f not in (test_fold, val_fold))
