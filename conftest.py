"""How `pytest` shares this machine's cores: pyproject's addopts run the suite with pytest-xdist.

``-n auto --dist loadfile``: a few worker processes, each taking whole files (a notebook's cells
must run in order, in one kernel). On 2 cores that measured 6:04 against 8:24 for one process (2026-11),
because much of the suite (imports, kernel start-ups, subprocesses) uses one core at a time.

Workers take files in collection order (``--no-loadscope-reorder``; xdist's default would queue
files with the most tests first, which put the long notebooks last). The longest files are
collected first, so the short ones fill in around them and the workers finish together.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Files that take longest (seconds measured on a 2-core VM, one thread each), run first.
LONGEST_FIRST = (
    "notebooks/08-raw-or-spectrogram.ipynb",  # ~40 s: two models over three folds
    "tests/test_notebooks_any_dataset.py",  # ~60 s: notebooks 5-8 on a dataset that is not generated
    "tests/test_distributed.py",  # ~55 s: four torchrun launches of three processes each
    "notebooks/05-train-and-test.ipynb",  # ~35 s: trains M5 for four epochs
    "notebooks/07-augment.ipynb",  # ~35 s: two augmentation settings over three folds
    "notebooks/06-evaluate-like-a-paper.ipynb",  # a three-fold cross-validation
    "tests/test_train.py",  # ~34 s
)

#: More workers than this would mostly add memory: each imports torch and starts notebook kernels.
MAX_WORKERS = 4


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which the dev extra installs
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker per core (at most MAX_WORKERS); none (one process) when a single file is asked for."""
    if len(config.args) == 1 and Path(config.args[0].split("::")[0]).is_file():
        return 0  # one notebook or test file gains nothing from workers, and keeps every thread
    return max(1, min(MAX_WORKERS, _cores()))


def pytest_configure(config: pytest.Config) -> None:
    """In each xdist worker, give torch (and the kernels and subprocesses it starts) its share of the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # Set before torch is imported, and inherited by notebook kernels and subprocesses: two
        # workers with two threads each on two cores spend their time waiting on each other.
        os.environ["OMP_NUM_THREADS"] = str(max(1, _cores() // workers))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the files of LONGEST_FIRST to the front (in that order), keeping every file's own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        try:
            name = item.path.relative_to(config.rootpath).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: the other files, and the tests within each file, keep their order
