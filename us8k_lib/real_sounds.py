"""What the model makes of real sounds: the bundled real sample, an honest verdict, your own sound.

The mini dataset's audio is synthesized, so a model trained on it has never heard a real dog bark
or siren. This module puts that model in front of real recordings: the 20 genuine UrbanSound8K
clips shipped with the package (:func:`us8k_lib.paths.sample_root`), with a verdict worded from
the numbers it is given (:func:`real_sample_verdict`), and any sound file a learner uploads
(:class:`SoundUploader`, an ipywidgets upload button with a player, the waveform the model hears
and its top-3 classes).

Used by notebook 5.
"""

from __future__ import annotations

import html
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from us8k_lib import listen, plots
from us8k_lib.errors import US8KError
from us8k_lib.evaluate import EvalResult, evaluate
from us8k_lib.folds import FOLDS
from us8k_lib.metadata import CLASSES, load_metadata
from us8k_lib.paths import is_mini, sample_root
from us8k_lib.predict import Classifier, Prediction, Sound

#: Chance level on UrbanSound8K's 10 classes: a guess is right one time in ten.
CHANCE = 1 / len(CLASSES)
#: What the upload button offers in the file dialog (any file can still be chosen).
ACCEPT = "audio/*,.wav,.flac,.ogg,.oga,.opus,.mp3,.aif,.aiff,.au,.caf"


def evaluate_sample(model: torch.nn.Module, *, root: str | Path | None = None,
                    cache_dir: str | Path | None = None) -> EvalResult:
    """Classify every clip of the bundled real sample (or another small dataset) with ``model``.

    Args:
        model: returns logits over :data:`us8k_lib.metadata.CLASSES`; run on its own device.
        root: the dataset to classify; default :func:`us8k_lib.paths.sample_root`.
        cache_dir: where the formatted clips are cached (default: the project's cache folder).

    Returns:
        An :class:`us8k_lib.evaluate.EvalResult` over all the dataset's clips (all folds).
        Used by notebook 5.
    """
    from us8k_lib.dataset import US8KDataset

    root = sample_root() if root is None else Path(root)
    data = US8KDataset(root, folds=FOLDS, cache_dir=cache_dir, progress=False)
    return evaluate(model, data)


def prediction_players(result: EvalResult, root: str | Path | None = None, *, columns: int = 5) -> widgets.GridBox:
    """Return a player per classified clip, captioned with its true class, the model's answer
    and, for the bundled sample, the clip's freesound.org author.

    The players play what the model hears (mono, 8 kHz), which also keeps a saved notebook small.

    Args:
        result: an evaluation of the clips (e.g. :func:`evaluate_sample`).
        root: the dataset folder the clips are in (default: the bundled sample).
        columns: players per row.

    Returns:
        A ``GridBox`` (see :func:`us8k_lib.listen.make_class_examples`). Used by notebook 5.
    """
    from us8k_lib.audio import TARGET_SR
    from us8k_lib.paths import sample_credits

    root = sample_root() if root is None else Path(root)
    table = sample_credits() if root == sample_root() else None
    authors = {} if table is None else dict(zip(table["slice_file_name"], table["freesound_user"]))
    captions = []
    for row in result.predictions.itertuples():
        mark = "<span style='color:#1e8449'>&#10004; right</span>" if row.correct else \
            "<span style='color:#c0392b'>&#10008; wrong</span>"
        by = f"<br><small>by {html.escape(authors[row.file])} (freesound.org)</small>" if row.file in authors else ""
        captions.append(f"<b>{html.escape(row.true)}</b> {mark}<br><small>heard as {html.escape(row.predicted)} "
                        f"({row.probability:.0%})<br>fold{row.fold}/{html.escape(row.file)}</small>{by}")
    return listen.make_class_examples(root, result.predictions, listen_sr=TARGET_SR, columns=columns,
                                      captions=captions)


def clips_heard_in_training(training_root: str | Path, train_folds: Sequence[int],
                            sample: str | Path | None = None) -> list[str]:
    """Return the sample clips whose recordings a model trained on ``training_root`` has heard.

    The mini dataset reuses real file names but synthesizes its audio, so a model trained on it
    has heard none of the real clips (empty list). A model trained on the real UrbanSound8K has
    heard every sample clip that sits in one of its training folds.

    Args:
        training_root: the dataset the model was trained on.
        train_folds: the folds it was trained on (e.g. ``config.folds_to_train``).
        sample: the real clips to check; default the bundled sample.

    Returns:
        File names, sorted. Used by notebook 5.
    """
    if is_mini(training_root):
        return []
    trained = load_metadata(training_root)
    names = set(trained.loc[trained["fold"].isin(list(train_folds)), "slice_file_name"])
    return sorted(n for n in load_metadata(sample_root() if sample is None else sample)["slice_file_name"]
                  if n in names)


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Return the Wilson score interval of an accuracy of ``correct`` out of ``n`` (95% for z = 1.96).

    Unlike the textbook ``p +- z*sqrt(p(1-p)/n)``, it stays inside [0, 1] and is sensible for
    small ``n`` and for 0 or ``n`` correct. Used by :func:`real_sample_verdict` (notebook 5).
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in 0..{n}, got {correct}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def real_sample_verdict(result: EvalResult, *, synthetic_accuracy: float | None = None,
                        heard: Sequence[str] = ()) -> str:
    """Word what an evaluation on a few real clips shows, claiming no more than its numbers.

    The sentences are chosen from the numbers: the share right and its 95% Wilson interval
    (:func:`wilson_interval`), compared with chance (10%) and, if given, with the model's
    accuracy on its (synthetic) test fold; how many classes the model predicted at all; and a
    warning when the model was trained on some of these very clips (``heard``, from
    :func:`clips_heard_in_training`).

    Returns:
        A few sentences of plain text. Used by notebook 5.
    """
    n = result.n_clips
    if n == 0:
        return "No clips were classified, so there is nothing to conclude."
    correct = int(result.predictions["correct"].sum())
    low, high = wilson_interval(correct, n)
    lines = [f"{correct} of {n} real clips classified correctly ({correct / n:.0%}); with only {n} clips, "
             f"the 95% interval for the model's accuracy on such clips is {low:.0%} to {high:.0%}. "
             f"Guessing would get {CHANCE:.0%}."]
    if len(heard) >= n:
        # e.g. trained on the real folds 1-9: every bundled clip was a training clip, so nothing here
        # says whether what it learned carries over
        lines.append(f"Careful: the model was trained on all {n} of these clips, so this says how well it fits "
                     "recordings it learned from, not how it does on new ones; the test fold is that number.")
    else:
        if heard:
            lines.append(f"Careful: the model was trained on {len(heard)} of these {n} clips, so this is not a "
                         "test on sounds it has never heard.")
        lines.append(_carry_over(n, low, high, synthetic_accuracy))
    counts = result.predictions["predicted"].value_counts()
    if len(counts):
        top, times = str(counts.index[0]), int(counts.iloc[0])
        really = int((result.predictions["true"] == top).sum())
        lines.append(f"It predicted {len(counts)} different classes for the {n} clips, "
                     f"{top} most often ({times} times; {really} of the clips are really {top}).")
    return "\n".join(lines)


def _carry_over(n: int, low: float, high: float, synthetic_accuracy: float | None) -> str:
    """The sentence on whether what the model learned carries over to real clips it never heard."""
    if low <= CHANCE:
        return (f"With {n} clips, that cannot be told apart from guessing: on these real recordings the "
                "model shows no sign that what it learned carries over.")
    if synthetic_accuracy is not None and high < synthetic_accuracy:
        return (f"That is better than guessing, but below the {synthetic_accuracy:.0%} it scored on its "
                "test fold: part of what it learned carries over to real recordings, much does not.")
    if synthetic_accuracy is not None:
        return (f"As far as {n} clips can tell, that is as good as the {synthetic_accuracy:.0%} "
                "it scored on its test fold.")
    return "That is better than guessing."


# ---------------------------------------------------------------------------------------------
# Classify your own sound


def _safe_name(name: str) -> str:
    """The last path component of an uploaded file's name, with only harmless characters."""
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", Path(str(name)).name).strip(" .")
    return base or "upload"


def _result_figure(prediction: Prediction, k: int) -> Figure:
    """What the model hears (left), its top classes as horizontal bars (right) and, for a sound of
    several windows, each window's probability of those classes (below)."""
    sound, top = prediction.sound, prediction.top(k)
    several = len(sound.windows) > 1
    fig = Figure(figsize=(10.0, 4.6 if several else 2.8), layout="constrained")
    if several:
        upper, lower = fig.subfigures(2, 1, height_ratios=[1.4, 1])
        wave_ax, bar_ax = upper.subplots(1, 2, width_ratios=[2.2, 1])
        window_ax = lower.subplots()
    else:
        wave_ax, bar_ax = fig.subplots(1, 2, width_ratios=[2.2, 1])
    heard = sound.resampled if several else sound.model_input
    plots.plot_waveform(heard, sound.model_sr, ax=wave_ax, max_points=4000,
                        title=f"what the model hears: {sound.model_sr:,} Hz mono, "
                              f"{len(heard) / sound.model_sr:g} s"
                              + (f", {len(sound.windows)} windows" if several else ""))
    names = [name for name, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    bars = bar_ax.barh(names, probs, color=["#bbbbbb"] * (len(top) - 1) + ["#2e86c1"])
    bar_ax.bar_label(bars, labels=[f"{p:.0%}" for p in probs], padding=3)
    bar_ax.set_xlim(0, 1.15)
    bar_ax.set_xlabel("probability" + (" (mean over windows)" if several else ""))
    bar_ax.set_title(f"top {len(top)} classes")
    if several:
        plot_window_scores(prediction, [name for name, _ in top], ax=window_ax)
    return fig


def plot_window_scores(prediction: Prediction, classes: Sequence[str] | None = None, *, ax: Any = None) -> Any:
    """Plot, for each window of a sound, the probability of some classes (default: the top 3 of
    the average) against the window's start; silent windows, left out of the average, are marked.

    Returns:
        The axes. Used by the upload widget (notebook 5).
    """
    if ax is None:
        ax = Figure(figsize=(8, 2.4), layout="constrained").subplots()
    classes = list(classes) if classes is not None else [name for name, _ in prediction.top(3)]
    starts = prediction.starts_s
    for name in classes:
        j = prediction.classes.index(name)
        ax.plot(starts, prediction.window_probabilities[:, j], marker="o", markersize=3, label=name)
    quiet = prediction.sound.silent
    if quiet.any():
        ax.plot(starts[quiet], np.zeros(int(quiet.sum())), "x", color="#888888", label="silent (left out)")
    ax.set_ylim(-0.03, 1.03)
    window_s = prediction.sound.windows.shape[1] / prediction.sound.model_sr
    ax.set_xlabel(f"window start (s); each window is {window_s:g} s")
    ax.set_ylabel("probability")
    ax.set_title("per window")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return ax


class SoundUploader:
    """"Classify your own sound": upload a sound file and see what the model makes of it.

    For an upload it shows the file's format and what the model classified (its duration and its
    4 s windows: a longer recording is classified window by window and the probabilities are
    averaged, silent windows left out), a player for the file and one for what the model hears,
    the waveform, the top-``k`` classes as a bar chart and, for several windows, each window's
    scores. A file that cannot be used (empty, corrupt, too short, silent, a format libsndfile
    cannot decode) gets a message in the widget saying what is wrong with which file, and the
    widget is ready for the next upload.

    Attributes:
        upload: the ``FileUpload`` button. info: HTML line with the format or the problem.
        players: the players. image: waveform + bar chart (+ window scores) (PNG). ranking: the
            top classes as text.
        classifier: the :class:`us8k_lib.predict.Classifier` used.
        sound, prediction, top, problem: the last upload's :class:`us8k_lib.predict.Sound`,
            :class:`us8k_lib.predict.Prediction`, top classes and problem (None where not applicable).
        widget: the whole thing, a ``VBox``; displaying the uploader displays it.

    Used by notebook 5.
    """

    def __init__(self, model: Classifier | torch.nn.Module | str | Path, classes: Sequence[str] = CLASSES,
                 *, k: int = 3) -> None:
        """Use ``model``: the notebook's trained model (with its ``classes``), a
        :class:`~us8k_lib.predict.Classifier`, or the path of any checkpoint written by ``train``.

        Raises:
            CheckpointError: if a checkpoint path is given and is not usable.
        """
        if isinstance(model, Classifier):
            self.classifier = model
        elif isinstance(model, (str, Path)):
            self.classifier = Classifier.from_checkpoint(model)
        else:
            self.classifier = Classifier(model, classes)
        self.k = min(int(k), len(self.classifier.classes))
        self.upload = widgets.FileUpload(accept=ACCEPT, multiple=False, description="Upload a sound",
                                         layout=widgets.Layout(width="auto"))
        self.info = widgets.HTML("Upload a sound file (WAV, FLAC, OGG, MP3, ...) to classify it.")
        self.players = widgets.Box(layout=widgets.Layout(width="100%", max_width="900px"))
        # Hidden while empty: browsers draw an empty image as a broken-image icon.
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="900px", display="none"))
        self.ranking = widgets.HTML()
        self.sound: Sound | None = None
        self.prediction: Prediction | None = None
        self.top: list[tuple[str, float]] | None = None
        self.problem: str | None = None
        self.upload.observe(self._on_upload, names="value")
        self.widget = widgets.VBox([self.upload, self.info, self.players, self.ranking, self.image])

    def classify_file(self, path: str | Path, name: str | None = None) -> list[tuple[str, float]] | None:
        """Classify a sound file on disk and show the result in the widget (as an upload would).

        Args:
            path: the file.
            name: the name to show (default: the file's name).

        Returns:
            The top-``k`` ``(class, probability)`` pairs, or None when the file cannot be used
            (then :attr:`problem` says why, and so does the widget).
        """
        name = name or Path(path).name
        try:
            prediction = self.classifier.classify(self.classifier.load(path))
        except US8KError as exc:
            self._show_problem(name, str(getattr(exc, "problem", exc)))
            return None
        self._show_result(name, prediction)
        return self.top

    def classify_bytes(self, name: str, content: bytes) -> list[tuple[str, float]] | None:
        """Classify the bytes of an uploaded file called ``name``; see :meth:`classify_file`."""
        shown = _safe_name(name)
        with tempfile.TemporaryDirectory(prefix="us8k-upload-") as tmp:
            path = Path(tmp) / shown
            path.write_bytes(bytes(content))
            return self.classify_file(path, name=shown)

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return  # the reset below, or nothing chosen
        upload = files[0]
        try:
            self.classify_bytes(upload["name"], upload["content"])
        except Exception as exc:
            # A widget callback has nowhere to raise to but a log the learner never sees; say it
            # in the widget instead, and stay usable for the next file.
            self._show_problem(_safe_name(upload.get("name", "upload")),
                               f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            # Forget the upload, so that choosing the same file again is a change too.
            self.upload.value = ()

    def _show_problem(self, name: str, problem: str) -> None:
        self.sound, self.prediction, self.top, self.problem = None, None, None, problem
        self.players.children = ()
        self.image.value = b""
        self.image.layout.display = "none"
        self.ranking.value = ""
        self.info.value = (f"<b style='color:#c0392b'>Cannot classify {html.escape(name)}: "
                           f"{html.escape(problem)}</b><br><small>Try another file.</small>")

    def _show_result(self, name: str, prediction: Prediction) -> None:
        sound = prediction.sound
        self.sound, self.prediction, self.top, self.problem = sound, prediction, prediction.top(self.k), None
        players = listen.make_players([
            ("your file", sound.samples[:, 0] if sound.samples.shape[1] == 1 else sound.samples, sound.sr),
            ("what the model hears", sound.resampled, sound.model_sr)])
        players.layout.width = "100%"
        self.players.children = (players,)
        several = " (mean over windows)" if len(sound.windows) > 1 else ""
        self.ranking.value = f"<b>The model's top {len(self.top)}{several}:</b> " + " &middot; ".join(
            f"{i}. <span class='us8k-top-class'>{html.escape(c)}</span> {p:.0%}"
            for i, (c, p) in enumerate(self.top, 1))
        fig = _result_figure(prediction, self.k)
        self.image.value = listen.figure_bytes(fig, fmt="png")
        self.image.layout.display = None
        # The file's name last: once it shows, everything below it is this file's.
        self.info.value = (f"<b>{html.escape(name)}</b>: {html.escape(sound.description)}, {sound.duration:.2f} s; "
                           "classified: <span class='us8k-classified'>"
                           f"{html.escape(sound.what_was_classified())}</span>")

    def snapshot(self) -> Any:
        """Return the current picture as an ``IPython.display.Image`` (a copy that shows without widgets)."""
        from IPython.display import Image

        return Image(data=self.image.value, format="png")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
