"""The sizes of a training run, in one table: the sets ``small``, ``full`` and ``quick``, what each
training notebook changes in them, which set applies where, and what a run will cost.

A run's result is decided by its :class:`us8k_lib.recipe.TrainConfig`, whose defaults are the
recipe for the real UrbanSound8K on a GPU (the ``full`` set). The generated mini dataset (a few
hundred clips) and a laptop CPU are another regime, so there is a ``small`` set (small batches, a
higher learning rate, few epochs), and a ``quick`` one (one epoch, to see that everything runs).
:data:`PRESETS` is what the command line's ``--preset`` uses; :data:`NOTEBOOK_SIZES` adds what each
training notebook (5-8) changes so that its small run takes about a minute, and the settings cell
of each notebook prints the sizes it got from here (``use.sizes``), one line each to override.

:func:`choose` decides which set applies:

- ``"auto"`` (the default): ``small`` on a generated mini dataset and the bundled sample;
  otherwise (the real data) ``full``, except in a notebook without a GPU, where the full recipe
  would take hours: ``small`` again, and the settings cell says how to get a GPU.
- ``"small"``, ``"full"``, ``"quick"``: that set, wherever it runs.

A notebook reads its choice from its ``SETTINGS`` line, which reads the environment variable
:data:`ENV` (``US8K_NOTEBOOK_SETTINGS``) so that a test or a shell can set it. Checks whose
thresholds were calibrated on the default generated mini dataset with the small settings run only
there (:attr:`Settings.calibrated`). Nothing here imports torch.

Used by notebooks 5, 6, 7 and 8 and the ``train`` and ``crossval`` commands (``--preset``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from us8k_lib.folds import fold_roles

#: The environment variable a notebook's ``SETTINGS`` line reads.
ENV = "US8K_NOTEBOOK_SETTINGS"
#: The sets of sizes.
SETS = ("small", "full", "quick")
#: What ``SETTINGS`` (and ``--preset``) may be: a set, or ``auto``.
CHOICES = ("auto", *SETS)
#: The size of mini dataset the accuracy thresholds were calibrated on (``make-mini``'s default).
DEFAULT_SIZE = "mini"

#: What each set changes in :class:`us8k_lib.recipe.TrainConfig`'s defaults (``full`` is the
#: defaults themselves: 30 epochs, batch 128, lr 1e-3). ``small`` is what the generated mini
#: dataset was measured with (docs/recipe.md): its 460 clips need small batches (23 steps an
#: epoch) and a higher learning rate. ``quick`` is one epoch of that.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "small": {"epochs": 8, "batch_size": 16, "lr": 5e-3},
    "quick": {"epochs": 1, "batch_size": 16, "lr": 5e-3},
}

#: What each training notebook changes in a set: fewer epochs and narrower models, so that the
#: small set runs in about a minute on a laptop CPU (and in Binder's memory), and the folds and
#: settings it compares. ``width`` is the channels of a model's first stage (None: the paper's;
#: notebook 8 gives each model its own), ``folds`` the test folds (None: every fold). Notebooks 6,
#: 7 and 8 train the same small M5 (three epochs, width 16, folds 1-3), so their M5 numbers agree.
NOTEBOOK_SIZES: dict[int, dict[str, dict[str, Any]]] = {
    5: {"small": {"epochs": 4, "width": 64},
        "full": {"width": None},
        "quick": {"width": 64}},
    6: {"small": {"epochs": 3, "width": 16, "folds": [1, 2, 3]},
        "full": {"width": None, "folds": None},
        "quick": {"width": 16, "folds": [1, 2]}},
    7: {"small": {"epochs": 3, "width": 16, "folds": [1, 2, 3], "compare": ["none", "strong"]},
        "full": {"width": None, "folds": None, "compare": ["none", "light", "strong"]},
        "quick": {"width": 16, "folds": [1, 2], "compare": ["none", "strong"]}},
    8: {"small": {"epochs": 3, "width": {"m5": 16, "logmel": 8}, "folds": [1, 2, 3]},
        "full": {"width": {"m5": None, "logmel": None}, "folds": None},
        "quick": {"width": {"m5": 16, "logmel": 8}, "folds": [1, 2]}},
}
#: The sizes every notebook's settings cell prints, in this order (those the set has).
_SIZE_ORDER = ("epochs", "batch_size", "lr", "width", "folds", "compare")

#: Training rates for the cost estimate (M5 at full width, batch 128, fp32): an NVIDIA H200
#: (``python benchmarks/bench_gpu.py``, the figure in docs/performance.md) and a 2-core AMD EPYC
#: CPU (``python benchmarks/bench_pipeline.py``, the range measured on its AVX2 and AVX512 kinds).
GPU_CLIPS_PER_S = 7_900
CPU_CLIPS_PER_S = (40, 58)


def sizes_for(name: str, notebook: int | None = None) -> dict[str, Any]:
    """Return the sizes of set ``name`` (in :data:`SETS`), with what ``notebook`` changes in it:
    ``epochs``, ``batch_size``, ``lr``, and for a notebook its ``width``, ``folds`` and what it compares."""
    from us8k_lib.recipe import TrainConfig

    defaults = TrainConfig()
    sizes = {"epochs": defaults.epochs, "batch_size": defaults.batch_size, "lr": defaults.lr, **PRESETS[name]}
    if notebook is not None:
        sizes.update(NOTEBOOK_SIZES[notebook][name])
    return {k: sizes[k] for k in _SIZE_ORDER if k in sizes}


@dataclass(frozen=True)
class Settings:
    """The set of sizes a run uses, and why.

    Attributes:
        name: ``"small"``, ``"full"`` or ``"quick"``.
        why: one sentence: why this set applies here.
        dataset: which dataset it is, as :func:`us8k_lib.paths.describe_dataset` says it.
        generated: the dataset is a generated mini dataset (synthesized sounds).
        default_mini: it is the default one (``make-mini``'s default size and seed), the dataset
            the notebooks' accuracy thresholds were calibrated on.
        gpu: a GPU was found (None: not asked, as on the command line).
        sizes: the sizes (:func:`sizes_for`), for a notebook with its changes.
    """

    name: str
    why: str
    dataset: str
    generated: bool
    default_mini: bool
    gpu: bool | None
    sizes: Mapping[str, Any] = field(default_factory=dict)

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
        return (f"not checked {what}: the threshold was calibrated on the default generated mini dataset "
                f"with the small settings; on this data ({self.dataset}) with the {self.name} settings, "
                "a low number is a result, not a bug")

    def report(self, cost: str) -> str:
        """Return what a settings cell prints: the set and why, its sizes, the cost, how to change
        them, and, on Colab or Kaggle without a GPU, how to switch one on."""
        from us8k_lib import hosted

        shown = ", ".join(f"{k.upper()} = {v!r}" for k, v in self.sizes.items())
        lines = [f"Settings: {self.name}. Why: {self.why}.", f"  {shown}", f"Cost: {cost}",
                 f"To change: set SETTINGS to one of {', '.join(repr(c) for c in CHOICES)} (or the environment "
                 f"variable {ENV} before starting Jupyter), or override a size in its line below.",
                 "Accuracy checks calibrated on the generated mini dataset: "
                 + ("on." if self.calibrated else "off here (they run on the generated mini dataset, small settings).")]
        advice = hosted.gpu_advice(self.gpu)
        return "\n".join(lines + ([advice] if advice else []))


def choose(requested: str, root: str | Path, *, gpu: bool | None = None, notebook: int | None = None) -> Settings:
    """Return the :class:`Settings` for ``requested`` (one of :data:`CHOICES`) on the dataset ``root``.

    ``gpu``: whether a GPU was found (a notebook passes ``devices.choose_device().type != "cpu"``);
    None (the command line) leaves the device out of the choice. ``notebook``: 5-8, whose changes
    to the sets (:data:`NOTEBOOK_SIZES`) the sizes include.

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
    elif gpu is None:
        name, why = "full", f"{dataset}: the recipe for the real data"
    elif gpu:
        name, why = "full", f"{dataset}, and a GPU: the recipe for the real data"
    else:
        name, why = "small", (f"{dataset}, but no GPU: the full recipe would take hours here, so the small "
                              "sizes show the method; SETTINGS = 'full' runs the recipe")
    marker = read_marker(root) or {}
    default_mini = generated and marker.get("size") == DEFAULT_SIZE and marker.get("seed") == str(MINI_SEED)
    return Settings(name=name, why=why, dataset=dataset, generated=generated, default_mini=default_mini, gpu=gpu,
                    sizes=sizes_for(name, notebook))


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
    """Return a sentence estimating what a notebook's training costs on ``root``: computed from
    measured rates, not timed.

    Counts the clips trained on (every fold but the test fold and, with ``validation``, the fold
    before it) times ``epochs``, for each test fold (None: every fold the dataset has) and each of
    ``runs`` (models or settings compared), and converts that with M5's measured full-width rates
    (:data:`GPU_CLIPS_PER_S`, :data:`CPU_CLIPS_PER_S`); ``full_width=False`` says that narrower
    models train faster than that.
    """
    from us8k_lib.metadata import load_metadata

    counts = load_metadata(root)["fold"].value_counts().sort_index()
    folds = [int(f) for f in counts.index]
    tests = list(test_folds) if test_folds is not None else folds
    clips = 0
    for test in tests:
        val = fold_roles(folds, test)[0] if validation and test in folds and len(folds) >= 3 else None
        clips += int(counts.drop([f for f in (test, val) if f in counts.index]).sum())
    passes = clips * epochs * runs
    lo, hi = passes / CPU_CLIPS_PER_S[1], passes / CPU_CLIPS_PER_S[0]
    return (f"{passes:,} training clip-passes ({runs} run(s) x {len(tests)} test fold(s) x {epochs} epoch(s)); "
            f"computed from M5's measured full-width rates, that is {_about(passes / GPU_CLIPS_PER_S)} on an NVIDIA "
            f"H200 ({GPU_CLIPS_PER_S:,} clips/s; a smaller GPU takes several times longer) and "
            f"{_duration(lo)} to {_duration(hi)} on a 2-core CPU "
            f"({CPU_CLIPS_PER_S[0]}-{CPU_CLIPS_PER_S[1]} clips/s), plus evaluation and start-up"
            + ("" if full_width else "; the narrow models here train several times faster than that") + ".")
