"""Widgets to hear the data: a clip browser, one example per class, and a browser of the mistakes.

Sound goes to the browser as 16-bit PCM WAV bytes (``audio.wav_bytes``) in an
``ipywidgets.Audio`` with ``format='wav'``, ``autoplay=False`` and ``loop=False``: the widget's
defaults (mp3, autoplay, loop) would mislabel the bytes and start every clip playing in a loop.
Many UrbanSound8K files (24-bit extensible, 32-bit float, ADPCM) would not play in a browser as
they are, so clips are always decoded with soundfile and re-encoded.

Pictures are matplotlib figures rendered to JPEG into an ``ipywidgets.Image``; that works in any
front end (and in tests) without an interactive matplotlib backend.

Used by notebook 2 (:class:`ClipBrowser`, :func:`make_class_examples`) and notebook 5
(:class:`MistakesBrowser`, :func:`make_class_examples`, and the upload widget of
:mod:`us8k_lib.real_sounds`).
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from us8k_lib import audio, plots
from us8k_lib.errors import US8KError
from us8k_lib.metadata import CLASSES
from us8k_lib.paths import clip_path, describe_dataset, is_sample, sample_root

#: Sample rate the side-by-side examples are played at: high enough to hear every class well,
#: low enough that ten players saved in a notebook stay small.
EXAMPLE_LISTEN_SR = 16000

#: Top of the browsers' spectrograms (Hz): clips come at 8 to 96 kHz, and a common scale that
#: covers what tells the classes apart keeps a 96 kHz file from squeezing everything into its bottom tenth.
BROWSER_MAX_FREQ = 11025.0

VIEW_ORIGINAL = "original file"
VIEW_MODEL = "what the model hears (8 kHz mono, 4 s)"


def make_audio_widget(x: np.ndarray, sr: int, **layout: Any) -> widgets.Audio:
    """Return an ``ipywidgets.Audio`` player for samples ``x`` at ``sr`` Hz.

    The player gets WAV bytes and ``format='wav'``, and neither starts by itself nor loops.
    Used by every player of this module (notebooks 2, 3, 5 and 7).
    """
    return widgets.Audio(
        value=audio.wav_bytes(x, sr), format="wav", autoplay=False, loop=False,
        layout=widgets.Layout(**layout) if layout else widgets.Layout(width="100%"),
    )


def figure_bytes(fig: Figure, fmt: str = "jpeg", dpi: int = 90) -> bytes:
    """Return ``fig`` rendered as image bytes for an ``ipywidgets.Image`` (``fmt`` 'jpeg' or 'png').

    JPEG by default: a spectrogram is mostly noise-like texture, which PNG stores at ~300 kB per
    picture and JPEG at under 100 kB, and notebooks save the last picture of every widget.
    Used by the browsers of notebooks 2 and 5.
    """
    buf = io.BytesIO()
    kwargs = {"pil_kwargs": {"quality": 88}} if fmt in ("jpeg", "jpg") else {}
    fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white", **kwargs)
    return buf.getvalue()


def _clip_figure(figsize: tuple[float, float] = (9.0, 4.6)) -> Figure:
    # A bare Figure (not pyplot) so notebooks do not also show it as a static image at the end
    # of the cell, and nothing keeps it alive but the widget that owns it.
    fig = Figure(figsize=figsize, layout="constrained")
    # waveform above spectrogram, and a narrow column for the spectrogram's colour bar (redrawn per clip)
    fig.subplot_mosaic([["wave", "."], ["spec", "bar"]], width_ratios=[60, 1])
    return fig


def _draw_clip(fig: Figure, x: np.ndarray, sr: int, title: str) -> None:
    wave_ax, spec_ax, bar_ax = fig.axes
    for ax in fig.axes:
        ax.clear()
    # ~4 points per pixel column is all a 900-pixel-wide picture can show.
    plots.plot_waveform(x, sr, ax=wave_ax, title=title, max_points=4000)
    plots.plot_spectrogram(audio.to_mono(x) if x.ndim > 1 else x, sr, ax=spec_ax, colorbar=False,
                           max_freq=BROWSER_MAX_FREQ)
    fig.colorbar(spec_ax.images[0], cax=bar_ax, label="dB")


def _describe_file(path: Path) -> str:
    info = audio.read_header(path)
    return f"{info['description']}, {info['duration']:.2f} s"


def dataset_choices(root: str | Path) -> dict[str, Path]:
    """Return ``{label: folder}`` for :class:`ClipBrowser`'s ``datasets``: the active dataset and
    the bundled real sample, each labelled with what it holds (see ``paths.describe_dataset``).

    Used by notebook 2.
    """
    choices = {f"active: {describe_dataset(root)}": Path(root)}
    if not is_sample(root):
        choices[describe_dataset(sample_root())] = sample_root()
    return choices


class _ClipView:
    """Shared part of the browsers: an audio player, a figure, a caption and a view toggle."""

    def __init__(self) -> None:
        self.view_toggle = widgets.ToggleButtons(options=[VIEW_ORIGINAL, VIEW_MODEL], value=VIEW_ORIGINAL,
                                                 style={"button_width": "auto"})
        self.audio = widgets.Audio(value=b"", format="wav", autoplay=False, loop=False,
                                   layout=widgets.Layout(width="100%"))
        self.caption = widgets.HTML()
        self.figure = _clip_figure()
        self.image = widgets.Image(format="jpeg", layout=widgets.Layout(width="100%", max_width="900px"))
        #: Path of the clip shown, or None.
        self.path: Path | None = None
        #: (samples, sample rate) currently shown and played.
        self.samples: tuple[np.ndarray, int] | None = None
        self.view_toggle.observe(lambda _: self._render(), names="value")

    def snapshot(self) -> Any:
        """Return the current picture as an ``IPython.display.Image``: a static copy of the widget's
        picture that a notebook keeps even where widgets do not render (e.g. on GitHub)."""
        from IPython.display import Image

        return Image(data=self.image.value, format="jpeg")

    def _show(self, path: Path | None, title: str, caption: str) -> None:
        self.path = path
        self._title = title
        self._caption = caption
        self._render()

    def _render(self) -> None:
        if self.path is None:
            self.samples = None
            self.audio.value = b""
            self.image.value = b""
            self.caption.value = self._caption
            return
        try:
            if self.view_toggle.value == VIEW_MODEL:
                x, sr = audio.format_clip(self.path), audio.TARGET_SR
                what = f"as the model hears it: {sr:,} Hz mono, {len(x) / sr:g} s"
            else:
                x, sr = audio.read_wav(self.path)
                x = x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x
                what = f"original file: {_describe_file(self.path)}"
        except US8KError as exc:
            # A widget callback has nowhere to raise to: say what is wrong where the learner looks.
            self.samples = None
            self.audio.value = b""
            self.image.value = b""
            problem = html.escape(str(getattr(exc, "problem", exc)))
            self.caption.value = (f"{self._caption}<br><b style='color:#c0392b'>cannot play "
                                  f"{html.escape(self.path.name)}: {problem}</b>")
            return
        self.samples = (x, sr)
        self.audio.value = audio.wav_bytes(x, sr)
        _draw_clip(self.figure, x, sr, self._title)
        self.image.value = figure_bytes(self.figure)
        self.caption.value = f"{self._caption}<br><small>{what}</small>"


class ClipBrowser(_ClipView):
    """Pick a class, a fold and a clip; hear it and see its waveform and spectrogram.

    Attributes:
        dataset_dropdown: which dataset to browse, when the browser was given ``datasets``
            (hidden otherwise); changing it reloads the classes from that dataset's metadata.
        root, metadata: the dataset browsed now.
        class_dropdown, fold_dropdown, clip_dropdown: the three choices (changing one updates
            the ones after it, then the clip).
        view_toggle: play and draw the original file or what the model hears (8 kHz mono, 4 s).
        audio: the ``ipywidgets.Audio`` player (WAV bytes).
        figure: the matplotlib figure (waveform on top, spectrogram below); ``image`` shows it.
        caption: HTML line naming the clip and its file format.
        path: path of the clip shown. samples: (array, sample rate) shown and played.
        widget: the whole browser, a ``VBox``; displaying the browser displays it.

    Used by notebook 2.
    """

    def __init__(self, root: str | Path, metadata: pd.DataFrame | None = None, *,
                 class_name: str | None = None, fold: int | None = None, clip: str | None = None,
                 datasets: Mapping[str, str | Path] | None = None) -> None:
        """Build the browser over ``metadata`` (default: the dataset's own CSV) of the dataset in ``root``.

        ``datasets`` (label -> dataset folder) adds a dropdown to switch to other datasets, e.g.
        ``{"mini (synthesized)": root, "real sample": paths.sample_root()}``; ``root`` must be
        one of them.
        """
        super().__init__()
        self._holding = False
        self._datasets = {label: Path(p) for label, p in (datasets or {}).items()}
        self._labels = {p.resolve(): label for label, p in self._datasets.items()}
        if self._datasets and Path(root).resolve() not in self._labels:
            offered = ", ".join(map(str, self._datasets.values()))
            raise ValueError(f"{root}: not one of the datasets offered ({offered})")
        self.dataset_dropdown = widgets.Dropdown(
            options=list(self._datasets), description="dataset", layout=widgets.Layout(
                width="auto", display=None if self._datasets else "none"))
        self.class_dropdown = widgets.Dropdown(description="class")
        self.fold_dropdown = widgets.Dropdown(description="fold")
        self.clip_dropdown = widgets.Dropdown(description="clip", layout=widgets.Layout(width="380px"))
        self._load(root, metadata)
        if self._datasets:
            self.dataset_dropdown.value = self._labels[self.root.resolve()]
        self.dataset_dropdown.observe(self._on_dataset, names="value")
        self.class_dropdown.observe(self._on_class, names="value")
        self.fold_dropdown.observe(self._on_fold, names="value")
        self.clip_dropdown.observe(self._on_clip, names="value")
        self.widget = widgets.VBox([
            self.dataset_dropdown,
            widgets.HBox([self.class_dropdown, self.fold_dropdown, self.clip_dropdown]),
            self.view_toggle, self.caption, self.audio, self.image,
        ])
        self.select(class_name or self.class_dropdown.options[0], fold, clip)

    def _load(self, root: str | Path, metadata: pd.DataFrame | None) -> None:
        """Make ``root`` the dataset browsed: read its metadata and offer its classes."""
        from us8k_lib.metadata import load_metadata

        root = Path(root)
        table = load_metadata(root) if metadata is None else metadata
        table = table.assign(**{"class": table["class"].astype(str)})
        present = set(table["class"])
        classes = [c for c in CLASSES if c in present]
        if not classes:
            raise ValueError(f"{root}: the metadata has no clips to browse")
        self.root, self.metadata = root, table
        with self._hold():
            self.class_dropdown.options = classes

    def use_dataset(self, label: str) -> None:
        """Browse the dataset offered as ``label`` (see ``datasets``), keeping the class if it has one.

        Raises:
            ValueError: if no dataset was offered under that label.
        """
        if label not in self._datasets:
            raise ValueError(f"no dataset {label!r} (choose from {list(self._datasets)})")
        keep = self.class_dropdown.value
        self._load(self._datasets[label], None)
        with self._hold():
            self.dataset_dropdown.value = label
        self.select(keep if keep in self.class_dropdown.options else self.class_dropdown.options[0])

    def _on_dataset(self, change: dict) -> None:
        if not self._holding and change["new"] is not None:
            self.use_dataset(change["new"])

    @contextmanager
    def _hold(self) -> Iterator[None]:
        # Setting options programmatically fires value observers; render once, at the end.
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _folds_of(self, class_name: str) -> list[int]:
        return sorted(int(f) for f in self.metadata.loc[self.metadata["class"] == class_name, "fold"].unique())

    def _clips_of(self, class_name: str, fold: int) -> list[tuple[str, str]]:
        rows = self.metadata[(self.metadata["class"] == class_name) & (self.metadata["fold"] == fold)]
        rows = rows.sort_values("slice_file_name")
        return [(f"{r.slice_file_name} ({r.end - r.start:.1f} s)", r.slice_file_name) for r in rows.itertuples()]

    def select(self, class_name: str | None = None, fold: int | None = None, clip: str | None = None) -> None:
        """Show a clip: ``class_name`` (default: current), ``fold`` and ``clip`` (default: first available).

        Raises:
            ValueError: if the class, fold or clip is not in the metadata.
        """
        class_name = class_name or self.class_dropdown.value
        if class_name not in self.class_dropdown.options:
            raise ValueError(f"no clips of class {class_name!r} (choose from {list(self.class_dropdown.options)})")
        folds = self._folds_of(class_name)
        if fold is not None and int(fold) not in folds:
            raise ValueError(f"no {class_name} clips in fold {fold} (folds with some: {folds})")
        if fold is None:
            fold = self.fold_dropdown.value if self.fold_dropdown.value in folds else folds[0]
        fold = int(fold)
        clips = self._clips_of(class_name, fold)
        names = [v for _, v in clips]
        if clip is not None and clip not in names:
            raise ValueError(f"{clip!r} is not a {class_name} clip of fold {fold}")
        with self._hold():
            self.class_dropdown.value = class_name
            self.fold_dropdown.options = folds
            self.fold_dropdown.value = fold
            self.clip_dropdown.options = clips
            self.clip_dropdown.value = clip or names[0]
        self._show_current()

    def _on_class(self, change: dict) -> None:
        if not self._holding:
            self.select(change["new"])

    def _on_fold(self, change: dict) -> None:
        if not self._holding and change["new"] is not None:
            self.select(self.class_dropdown.value, change["new"])

    def _on_clip(self, change: dict) -> None:
        if not self._holding and change["new"] is not None:
            self.select(self.class_dropdown.value, self.fold_dropdown.value, change["new"])

    def _show_current(self) -> None:
        name, fold, class_name = self.clip_dropdown.value, self.fold_dropdown.value, self.class_dropdown.value
        row = self.metadata[(self.metadata["fold"] == fold) & (self.metadata["slice_file_name"] == name)].iloc[0]
        where = {1: "foreground", 2: "background"}.get(int(row["salience"]), "?")
        self._show(clip_path(self.root, fold, name), f"{class_name}: fold{fold}/{name}",
                   f"<b>{class_name}</b> &middot; fold {fold} &middot; {name} &middot; {where} sound "
                   f"(salience {int(row['salience'])}), {row['end'] - row['start']:.2f} s of recording {row['fsID']}")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class MistakesBrowser(_ClipView):
    """List the misclassified test clips; pick one to hear it and see true vs predicted class.

    Attributes:
        mistakes: the wrong rows of the prediction table, most confident first.
        class_filter: restrict the list to one true class ("all" by default).
        mistake_list: the ``Select`` list of mistakes (value: row label in ``mistakes``).
        audio, figure, image, caption, path, samples, view_toggle, widget: as in :class:`ClipBrowser`.

    Used by notebook 5.
    """

    ALL = "all classes"

    def __init__(self, predictions: pd.DataFrame, root: str | Path) -> None:
        """Build the browser from a prediction table (``file``, ``fold``, ``true``, ``predicted``,
        ``probability``) of clips in the dataset at ``root``."""
        super().__init__()
        missing = {"file", "fold", "true", "predicted"} - set(predictions.columns)
        if missing:
            raise ValueError(f"prediction table lacks column(s) {sorted(missing)}")
        self.root = Path(root)
        wrong = predictions[predictions["true"].astype(str) != predictions["predicted"].astype(str)]
        if "probability" in wrong.columns:
            wrong = wrong.sort_values("probability", ascending=False, kind="stable")
        self.mistakes = wrong.reset_index(drop=True)
        self._filling = False
        true_classes = [c for c in CLASSES if c in set(self.mistakes["true"].astype(str))]
        self.class_filter = widgets.Dropdown(options=[self.ALL, *true_classes], value=self.ALL,
                                             description="true class")
        self.mistake_list = widgets.Select(rows=8, layout=widgets.Layout(width="100%"))
        self.summary = widgets.HTML()
        self.class_filter.observe(lambda _: self._fill_list(), names="value")
        self.mistake_list.observe(self._on_pick, names="value")
        self.widget = widgets.VBox([self.summary, self.class_filter, self.mistake_list,
                                    self.view_toggle, self.caption, self.audio, self.image])
        total = len(predictions)
        self.summary.value = (f"<b>{len(self.mistakes)}</b> of {total} test clips misclassified; "
                              "the most confident mistakes come first.")
        self._fill_list()

    def _label(self, row: Any) -> str:
        p = f" ({row.probability:.0%} sure)" if hasattr(row, "probability") else ""
        return f"fold{row.fold}/{row.file} — true: {row.true}, predicted: {row.predicted}{p}"

    def _fill_list(self) -> None:
        rows = self.mistakes
        if self.class_filter.value != self.ALL:
            rows = rows[rows["true"].astype(str) == self.class_filter.value]
        options = [(self._label(r), int(i)) for i, r in zip(rows.index, rows.itertuples())]
        # New options reset the selection, which would render once here and once more below.
        self._filling = True
        try:
            self.mistake_list.options = options
            if options:
                self.mistake_list.value = options[0][1]
        finally:
            self._filling = False
        if options:
            self._pick(options[0][1])
        else:
            self._show(None, "", "No mistakes to listen to.")

    def _on_pick(self, change: dict) -> None:
        if change["new"] is not None and not self._filling:
            self._pick(change["new"])

    def select(self, index: int) -> None:
        """Show the mistake in row ``index`` of :attr:`mistakes`."""
        self.class_filter.value = self.ALL
        self.mistake_list.value = int(index)

    def _pick(self, index: int) -> None:
        row = self.mistakes.loc[index]
        title = f"fold{row['fold']}/{row['file']}: true {row['true']}, predicted {row['predicted']}"
        caption = (f"true: <b>{row['true']}</b> &middot; predicted: <b style='color:#c0392b'>{row['predicted']}</b>"
                   f" &middot; fold{row['fold']}/{row['file']}")
        self._show(clip_path(self.root, int(row["fold"]), str(row["file"])), title, caption)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def pick_class_examples(metadata: pd.DataFrame, *, seed: int = 0, fold: int | None = None) -> pd.DataFrame:
    """Return one metadata row per class (in class-ID order), drawn at random with ``seed``.

    Clips at least 3 s long are preferred so every example has something to hear.
    ``fold`` restricts the choice to one fold. Used by notebook 2.
    """
    table = metadata if fold is None else metadata[metadata["fold"] == fold]
    rng = np.random.default_rng(seed)
    rows = []
    for class_name in CLASSES:
        candidates = table[table["class"].astype(str) == class_name].sort_values("slice_file_name")
        long = candidates[(candidates["end"] - candidates["start"]) >= 3.0]
        pool = long if len(long) else candidates
        if len(pool):
            rows.append(pool.iloc[int(rng.integers(len(pool)))])
    return pd.DataFrame(rows).reset_index(drop=True)


def make_class_examples(root: str | Path, examples: pd.DataFrame, *, listen_sr: int = EXAMPLE_LISTEN_SR,
                        columns: int = 5, captions: Sequence[str] | None = None) -> widgets.GridBox:
    """Return a grid of players, one per row of ``examples`` (e.g. :func:`pick_class_examples`).

    Args:
        root: the dataset folder the clips are in.
        examples: rows naming the clips to play: ``slice_file_name`` (or ``file``), ``fold``,
            and ``class`` for the default caption.
        listen_sr: playback sample rate (mono), kept modest so a saved notebook stays small.
        columns: players per row.
        captions: one HTML caption per row instead of the class and file name.

    Returns:
        A ``GridBox``; each cell is a ``VBox`` of an HTML caption and an ``Audio`` player.
        Used by notebook 2.
    """
    if captions is not None and len(captions) != len(examples):
        raise ValueError(f"{len(captions)} captions for {len(examples)} clips")
    name_column = "slice_file_name" if "slice_file_name" in examples.columns else "file"
    cells = []
    for i, (_, row) in enumerate(examples.iterrows()):
        name = str(row[name_column])
        x, sr = audio.read_wav(clip_path(root, int(row["fold"]), name))
        mono = audio.to_mono(x)
        heard = audio.resample(mono, sr, listen_sr) if sr != listen_sr else mono
        caption = widgets.HTML(captions[i] if captions is not None
                               else f"<b>{row['class']}</b><br><small>fold{row['fold']}/{name}</small>")
        cells.append(widgets.VBox([caption, make_audio_widget(heard, listen_sr)],
                                  layout=widgets.Layout(border="1px solid #ddd", padding="4px")))
    return widgets.GridBox(cells, layout=widgets.Layout(grid_template_columns=f"repeat({columns}, 1fr)",
                                                        grid_gap="6px"))


def make_players(items: list[tuple[str, np.ndarray, int]]) -> widgets.HBox:
    """Return labelled players side by side, one per ``(label, samples, sample rate)``.

    Used by notebook 3 to compare a clip before and after formatting, and x[::5] with resampling.
    """
    cells = [widgets.VBox([widgets.HTML(f"<b>{label}</b><br><small>{sr:,} Hz</small>"), make_audio_widget(x, sr)],
                          layout=widgets.Layout(width=f"{100 // max(len(items), 1) - 1}%"))
             for label, x, sr in items]
    return widgets.HBox(cells)


def make_sweep(sr: int, seconds: float = 4.0, f0: float = 100.0, f1: float = 20000.0,
               amplitude: float = 0.3) -> np.ndarray:
    """Return a linear sine sweep from ``f0`` to ``f1`` Hz (float32, mono) at ``sr`` Hz.

    A sweep makes aliasing audible: once it passes half the new sample rate, naive decimation
    folds it back, so its pitch turns around and falls instead of vanishing. Used by notebook 3.
    """
    if f1 >= sr / 2:
        raise ValueError(f"f1={f1} Hz must be below half the sample rate ({sr / 2} Hz)")
    t = np.arange(int(round(sr * seconds))) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)
    return (amplitude * np.sin(phase)).astype(np.float32)


def augmentation_players(clip: np.ndarray, demos: Sequence[Any], sr: int, title: str = "original") -> widgets.GridBox:
    """Return a grid of players: the original, then each augmentation of it
    (:func:`us8k_lib.augment.demonstrate`) with what was drawn for it. Used by notebook 7."""
    cells = []
    for label, x, caption in [(title, np.asarray(clip, np.float32), "")] + [(d.name, d.x, d.drawn) for d in demos]:
        text = f"<b>{html.escape(label)}</b><br><small>{html.escape(caption)}</small>"
        cells.append(widgets.VBox([widgets.HTML(text), make_audio_widget(x, sr)],
                                  layout=widgets.Layout(border="1px solid #ddd", padding="4px")))
    return widgets.GridBox(cells, layout=widgets.Layout(grid_template_columns="repeat(3, 1fr)", grid_gap="6px"))
