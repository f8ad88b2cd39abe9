"""Which sizes a training notebook uses on the dataset it finds, what they cost, and how to change them.

The training notebooks (5-8) are written for two regimes: the generated mini dataset on a laptop
CPU (a few epochs of small models, in minutes) and the real UrbanSound8K on a GPU (the recipe's
defaults: 30 epochs, batch 128, the paper's widths). Each notebook's settings cell names its sizes
for both, and :func:`choose` decides which set applies:

- ``"auto"`` (the default): ``small`` on the generated mini dataset and the bundled sample, and on
  any dataset when no GPU is found (the full recipe would take hours on a CPU); ``full`` on any
  other dataset (the real download, ``US8K_ROOT``) when a GPU is found.
- ``"small"``, ``"full"``: that set, wherever the notebook runs.
- ``"quick"``: one epoch and the fewest folds, to check that a notebook runs to its end (the
  test suite executes notebooks 5-8 this way on a dataset that is not the generated one).

The choice comes from the notebook's ``SETTINGS`` line, which reads the environment variable
:data:`ENV` (``US8K_NOTEBOOK_SETTINGS``) so that a test or a shell can set it without editing the
notebook. Checks whose thresholds were calibrated on the default generated mini dataset (what
``make-mini`` generates without options) with the small settings (notebook 5's minimum test accuracy, the per-fold minimum of notebooks 7 and 8) run only
there: :attr:`NotebookSettings.calibrated` says whether they apply.

Nothing here imports torch. Used by notebooks 5, 6, 7 and 8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

#: The environment variable a notebook's ``SETTINGS`` line reads.
ENV = "US8K_NOTEBOOK_SETTINGS"
#: What ``SETTINGS`` may be.
CHOICES = ("auto", "small", "full", "quick")
#: The size of mini dataset the accuracy thresholds were calibrated on (``make-mini``'s default).
DEFAULT_SIZE = "mini"

#: Training rates used for the cost estimate (M5 at full width, batch 128, fp32), from the measured
#: figures in docs/performance.md: an NVIDIA H200, and a 2-core AMD EPYC CPU (40-58 clips/s).
GPU_CLIPS_PER_S = 7_900
CPU_CLIPS_PER_S = (40, 58)

T = TypeVar("T")


@dataclass(frozen=True)
class NotebookSettings:
    """The settings a notebook runs with, and why.

    Attributes:
        name: ``"small"``, ``"full"`` or ``"quick"``.
        why: one sentence: why this set applies here.
        dataset: which dataset it is (``"the generated mini dataset"``, ``"UrbanSound8K (real
            recordings)"`` ...), as :func:`us8k_lib.paths.describe_dataset` says it.
        generated: the dataset is a generated mini dataset (synthesized sounds).
        default_mini: it is the default one (``make-mini``'s default size and seed), the dataset
            the notebooks' accuracy thresholds were calibrated on (a tiny one, or another seed,
            is not).
        gpu: a GPU was found.
    """

    name: str
    why: str
    dataset: str
    generated: bool
    default_mini: bool
    gpu: bool

    @property
    def calibrated(self) -> bool:
        """True where the notebooks' accuracy thresholds were calibrated: the generated mini
        dataset with the small settings. Elsewhere a low accuracy is a finding, not a bug."""
        return self.default_mini and self.name == "small"

    @property
    def shows_progress(self) -> bool:
        """True for the full settings: their runs take minutes to hours, so the notebook's training
        cells show progress bars and a line per fold (the small runs stay quiet, for nbval)."""
        return self.name == "full"

    def pick(self, *, small: T, full: T, quick: T | None = None) -> T:
        """Return the value for this set (``quick`` falls back to ``small``)."""
        if self.name == "full":
            return full
        if self.name == "quick" and quick is not None:
            return quick
        return small

    def check(self, condition: bool, message: str, what: str) -> str:
        """Assert ``condition`` where the thresholds were calibrated; return a line saying what happened.

        ``what`` names the check for the line printed elsewhere (``"the minimum test accuracy"``).

        Raises:
            AssertionError: with ``message``, on the generated mini dataset with the small
                settings, if ``condition`` is false.
        """
        if self.calibrated:
            if not condition:  # not an assert statement: `python -O` would skip it
                raise AssertionError(message)
            return f"checked {what}: yes"
        return (f"not checked {what}: the threshold was calibrated on the default generated mini dataset with the small "
                f"settings; on this data ({self.dataset}) with the {self.name} settings, a low number is a result, "
                "not a bug")

    def report(self, sizes: dict[str, Any], cost: str) -> str:
        """Return what a settings cell prints: the set and why, the sizes, the cost, how to change them."""
        shown = ", ".join(f"{k} = {v!r}" for k, v in sizes.items())
        return "\n".join([
            f"Settings: {self.name}. Why: {self.why}.",
            f"  {shown}",
            f"Cost: {cost}",
            f"To change: set SETTINGS to one of {', '.join(repr(c) for c in CHOICES)} (or the environment "
            f"variable {ENV} before starting Jupyter), or edit a size above.",
            "Accuracy checks calibrated on the generated mini dataset: "
            + ("on." if self.calibrated else "off here (they run on the generated mini dataset, small settings)."),
        ])


def choose(requested: str, root: str | Path, *, gpu: bool) -> NotebookSettings:
    """Return the settings a notebook uses for ``requested`` (one of :data:`CHOICES`) on ``root``.

    ``gpu``: whether the notebook found a GPU (``devices.choose_device().type != "cpu"``).

    Raises:
        ValueError: naming :data:`ENV` and the choices, if ``requested`` is not one of them.
    """
    from us8k_lib.datasets.layout import read_marker
    from us8k_lib.paths import MINI_SEED, describe_dataset, is_mini, is_sample

    requested = str(requested).strip().lower()
    if requested not in CHOICES:
        raise ValueError(f"SETTINGS (or {ENV}) is {requested!r}: choose one of {', '.join(CHOICES)}")
    generated, small_data = is_mini(root), is_mini(root) or is_sample(root)
    dataset = describe_dataset(root)
    if requested != "auto":
        name, why = requested, f"asked for, on: {dataset}"
    elif small_data:
        name, why = "small", f"{dataset}, a small dataset"
    elif gpu:
        name, why = "full", f"{dataset}, and a GPU: the recipe for the real data"
    else:
        name, why = "small", (f"{dataset}, but no GPU: the full recipe would take hours here, so the small "
                              "sizes show the method; SETTINGS = 'full' runs the recipe")
    marker = read_marker(root) or {}
    default_mini = generated and marker.get("size") == DEFAULT_SIZE and marker.get("seed") == str(MINI_SEED)
    return NotebookSettings(name=name, why=why, dataset=dataset, generated=generated, default_mini=default_mini,
                            gpu=gpu)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _about(seconds: float) -> str:
    return _duration(seconds) if seconds < 1 else f"about {_duration(seconds)}"


def training_cost(root: str | Path, *, epochs: int, test_folds: Sequence[int] | None, runs: int = 1,
                  validation: bool = True, full_width: bool = True) -> str:
    """Return a sentence estimating what a notebook's training costs on ``root``.

    Counts the clips trained on (every fold but the test fold and, with ``validation``, the fold
    before it) times ``epochs``, for each test fold (None: every fold the dataset has) and each of
    ``runs`` (models or settings compared), and converts that with M5's measured full-width rates
    (:data:`GPU_CLIPS_PER_S`, :data:`CPU_CLIPS_PER_S`). Computed, not timed; ``full_width=False``
    says that narrower models train faster than that.
    """
    from us8k_lib.metadata import load_metadata

    counts = load_metadata(root)["fold"].value_counts().sort_index()
    folds = list(counts.index)
    tests = list(test_folds) if test_folds is not None else folds
    clips = 0
    for test in tests:
        # the fold before the test fold, cyclically, validates (as crossval.fold_roles does)
        val = folds[(folds.index(test) - 1) % len(folds)] if validation and test in folds else None
        clips += int(counts.drop([f for f in (test, val) if f in counts.index]).sum())
    passes = clips * epochs * runs
    lo, hi = passes / CPU_CLIPS_PER_S[1], passes / CPU_CLIPS_PER_S[0]
    return (f"{passes:,} training clip-passes ({runs} run(s) x {len(tests)} test fold(s) x {epochs} epoch(s)); "
            f"at M5's full-width rates that is {_about(passes / GPU_CLIPS_PER_S)} on an NVIDIA H200 "
            f"({GPU_CLIPS_PER_S:,} clips/s; a smaller GPU takes several times longer) and "
            f"{_duration(lo)} to {_duration(hi)} on a 2-core CPU "
            f"({CPU_CLIPS_PER_S[0]}-{CPU_CLIPS_PER_S[1]} clips/s), plus evaluation and start-up"
            + ("" if full_width else "; the narrow models here train several times faster than that") + ".")
