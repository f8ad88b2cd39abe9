"""Plots the notebooks show: waveforms, spectrograms, dataset tables, training results.

Every ``plot_*`` function draws into ``ax`` when given one (the clip browser reuses its axes) and
otherwise makes a new pyplot figure, so a notebook's inline backend shows it once at the end of
the cell. Each returns the :class:`matplotlib.figure.Figure` it drew on, which tests inspect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

#: Range of the spectrogram colour scale in dB below the clip's loudest bin: fixed so that
#: clips can be compared by eye and quiet clips do not get their noise floor stretched to full colour.
SPECTROGRAM_DB_RANGE = 80.0


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def plot_waveform(
    x: np.ndarray,
    sr: int,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    color: str = "C0",
    max_points: int = 20_000,
) -> Figure:
    """Draw a waveform (amplitude against time in seconds).

    Args:
        x: samples, shape (frames,) or (frames, channels); channels are drawn on top of each other,
            each in its own colour, named in a legend.
        sr: sample rate in Hz (sets the time axis).
        ax: axes to draw into; a new figure when None.
        title: axes title.
        color: line colour of the first channel.
        max_points: longer signals are drawn as their min/max envelope over ``max_points // 2``
            equal stretches, which looks the same at screen resolution and renders much faster.

    Returns:
        The figure. Used by notebook 3 and by the clip browsers (notebook 2).
    """
    fig, ax = _axes(ax, (8, 2.5))
    x = np.asarray(x)
    frames = x.shape[0]
    channels = x.reshape(frames, -1)
    names = ["left", "right"] if channels.shape[1] == 2 else [f"channel {c + 1}" for c in range(channels.shape[1])]
    for c in range(channels.shape[1]):
        t, y = _envelope(channels[:, c], sr, max_points)
        ax.plot(t, y, lw=0.6, color=color if c == 0 else f"C{c + 1}", alpha=1.0 if c == 0 else 0.6, label=names[c])
    if channels.shape[1] > 1:  # each channel has its own colour: say which is which
        ax.legend(fontsize=7, loc="upper right", ncol=channels.shape[1])
    ax.set_xlim(0, max(frames / float(sr), 1.0 / sr))
    peak = float(np.max(np.abs(channels))) if channels.size else 0.0
    ax.set_ylim(-1.05 * max(peak, 1e-3), 1.05 * max(peak, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    if title:
        ax.set_title(title)
    return fig


def _envelope(y: np.ndarray, sr: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (times, values) to draw: every sample, or the min/max of equal stretches, interleaved."""
    frames = y.shape[0]
    if frames <= max_points:
        return np.arange(frames) / float(sr), y
    starts = np.linspace(0, frames, max(max_points // 2, 1), endpoint=False).astype(np.int64)
    lows, highs = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    return np.repeat(starts / float(sr), 2), np.stack([lows, highs], axis=1).ravel()


def plot_spectrogram(
    x: np.ndarray,
    sr: int,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    max_freq: float | None = None,
    colorbar: bool = True,
    top_db: float | None = None,
) -> Figure:
    """Draw a spectrogram in dB (time against frequency) computed by ``audio.compute_spectrogram``.

    Args:
        x: mono samples, shape (frames,); multi-channel input is averaged first.
        sr: sample rate in Hz; the frequency axis goes up to ``sr / 2`` (or ``max_freq``).
        ax: axes to draw into; a new figure when None.
        title: axes title.
        max_freq: upper limit of the frequency axis in Hz, e.g. to compare clips at different rates.
        colorbar: add a dB colour bar.
        top_db: the level drawn brightest (default: the loudest bin), so that two panels drawn
            with the same ``top_db`` share one scale.

    Returns:
        The figure. Used by notebook 3 and by the clip browsers (notebook 2).
    """
    from us8k_lib.audio import compute_spectrogram

    fig, ax = _axes(ax, (8, 3))
    x = np.asarray(x, dtype=np.float32)
    if x.ndim > 1:
        x = x.mean(axis=1)
    db, freqs, times = compute_spectrogram(x, sr)
    db = np.asarray(db)
    top = top_db if top_db is not None else float(np.max(db)) if db.size else 0.0
    duration = x.shape[0] / float(sr)
    image = ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=top - SPECTROGRAM_DB_RANGE,
        vmax=top,
        extent=(0.0, max(duration, 1.0 / sr), 0.0, sr / 2.0),
        interpolation="nearest",
    )
    ax.set_ylim(0, min(max_freq, sr / 2.0) if max_freq else sr / 2.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(image, ax=ax, label="dB", pad=0.01)
    return fig


def plot_class_counts(metadata: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw a horizontal bar chart of clips per class.

    Args:
        metadata: an UrbanSound8K metadata table (needs the ``class`` column).
        ax: axes to draw into; a new figure when None.
        title: axes title (default: the number of clips).

    Returns:
        The figure. Used by notebook 1.
    """
    from us8k_lib.metadata import CLASSES

    fig, ax = _axes(ax, (7, 3.5))
    counts = metadata["class"].astype(str).value_counts().reindex(list(CLASSES), fill_value=0)
    bars = ax.barh(list(counts.index)[::-1], counts.values[::-1], color="C0")
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.set_xlabel("clips")
    ax.set_xlim(0, counts.max() * 1.15 if counts.max() > 0 else 1)
    ax.set_title(title or f"Clips per class ({len(metadata):,} in total)")
    return fig


def plot_duration_histogram(
    metadata: pd.DataFrame,
    *,
    ax: Axes | None = None,
    clip_seconds: float = 4.0,
    bins: int = 40,
) -> Figure:
    """Draw a histogram of clip durations (``end - start``) with the model's input length marked.

    Args:
        metadata: an UrbanSound8K metadata table (``start`` and ``end`` columns, seconds).
        ax: axes to draw into; a new figure when None.
        clip_seconds: the length every clip is padded or cropped to.
        bins: number of histogram bins.

    Returns:
        The figure. Used by notebook 1.
    """
    fig, ax = _axes(ax, (7, 3))
    durations = (metadata["end"] - metadata["start"]).to_numpy(dtype=float)
    ax.hist(durations, bins=bins, range=(0.0, max(clip_seconds, float(durations.max(initial=0.0)))), color="C0")
    ax.set_yscale("log")
    ax.axvline(clip_seconds, color="C3", ls="--", lw=1)
    short = int((durations < clip_seconds - 1e-6).sum())
    # headroom above the tallest bar (a log axis: a factor), so the note sits over empty space
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 40)
    ax.text(0.45, 0.95, f"dashed line: the model's {clip_seconds:g} s input\n"
            f"{short:,} clips shorter than {clip_seconds:g} s (zero-padded)", transform=ax.transAxes,
            ha="center", va="top", fontsize=8, color="C3")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("clips (log scale)")
    ax.set_title("Clip durations")
    return fig


def _history_frame(history: Any) -> pd.DataFrame:
    if isinstance(history, pd.DataFrame):
        frame = history.copy()
    elif isinstance(history, Mapping):
        frame = pd.DataFrame(dict(history))
    else:
        rows = [r if isinstance(r, Mapping) else vars(r) for r in history]
        frame = pd.DataFrame(rows)
    if "epoch" not in frame.columns:
        frame["epoch"] = np.arange(1, len(frame) + 1)
    return frame


def plot_learning_curves(history: Any, *, title: str | None = None) -> Figure:
    """Draw loss and accuracy per epoch, side by side.

    Args:
        history: one record per epoch as a DataFrame, a list of dicts or dataclasses, or a dict of
            lists. Columns whose name contains ``loss`` go left, ``acc`` right (e.g. ``train_loss``,
            ``train_acc``, ``test_acc``); an ``epoch`` column is the x axis (else 1, 2, ...).
        title: figure title.

    Returns:
        The figure. Used by notebook 5.
    """
    frame = _history_frame(history)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
    epochs = frame["epoch"].to_numpy()
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        columns = [c for c in frame.columns if key in str(c).lower() and pd.api.types.is_numeric_dtype(frame[c])]
        for c in columns:
            ax.plot(epochs, frame[c].to_numpy(dtype=float), marker="o", ms=3, label=str(c).replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5 between 1 and 2
        if columns:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_acc.set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion_matrix(
    confusion: np.ndarray | pd.DataFrame,
    classes: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    normalize: bool = True,
    title: str | None = None,
) -> Figure:
    """Draw a confusion matrix: rows are true classes, columns predicted classes.

    Args:
        confusion: square matrix of counts (a DataFrame's index/columns give the class names).
        classes: class names (default: the DataFrame's index, else ``metadata.CLASSES``).
        ax: axes to draw into; a new figure when None.
        normalize: colour by the share of each true class (row), while cells still print counts.
        title: axes title.

    Returns:
        The figure, with a colour bar for the colour's scale. Used by notebooks 5 and 6.
    """
    if isinstance(confusion, pd.DataFrame):
        classes = classes or [str(c) for c in confusion.index]
        counts = confusion.to_numpy()
    else:
        counts = np.asarray(confusion)
    if classes is None:
        from us8k_lib.metadata import CLASSES

        classes = CLASSES
    counts = counts.astype(int)
    fig, ax = _axes(ax, (7, 6))
    rows = counts.sum(axis=1, keepdims=True)
    shown = counts / np.maximum(rows, 1) if normalize else counts
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(int(counts.max()), 1))
    fig.colorbar(image, ax=ax, pad=0.02, fraction=0.046,
                 label="share of the true class's clips" if normalize else "clips")
    limit = (1 if normalize else max(int(counts.max()), 1)) * 0.6
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > limit else "black")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, list(classes), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, list(classes), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix (counts; colour = share of the true class)")
    return fig


def plot_per_class_accuracy(
    per_class: Mapping[str, float] | pd.Series,
    *,
    ax: Axes | None = None,
    overall: float | None = None,
    title: str | None = None,
    xlabel: str = "accuracy on the test fold",
) -> Figure:
    """Draw a horizontal bar chart of accuracy per class.

    Args:
        per_class: accuracy in [0, 1] per class name (NaN for a class absent from the test fold).
        ax: axes to draw into; a new figure when None.
        overall: overall accuracy, drawn as a dashed line (its legend sits below the axes, where
            it cannot cover a bar's label).
        title: axes title.
        xlabel: what the bars measure (notebook 6: a mean over test folds).

    Returns:
        The figure. Used by notebooks 5 and 6.
    """
    series = pd.Series(per_class, dtype=float)
    fig, ax = _axes(ax, (7, 3.5))
    names = [str(n) for n in series.index][::-1]
    values = series.to_numpy()[::-1]
    bars = ax.barh(names, np.nan_to_num(values), color="C2")
    ax.bar_label(bars, labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in values], padding=3, fontsize=8)
    if overall is not None:
        ax.axvline(overall, color="C3", ls="--", lw=1, label=f"overall {overall:.2f}")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel(xlabel)
    ax.set_title(title or "Accuracy per class")
    return fig


def plot_fold_accuracies(folds: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw each test fold's accuracy (at the epoch validation picked) with the mean and ± 1 std.

    Args:
        folds: one row per test fold with ``test_fold``, ``test_acc`` (the reported number),
            ``test_acc_last`` and ``best_test_acc`` (drawn as markers), e.g.
            :attr:`us8k_lib.crossval.CrossValResult.folds`.
        ax: axes to draw into; a new figure when None.
        title: axes title.

    Returns:
        The figure. Used by notebook 6.
    """
    fig, ax = _axes(ax, (7, 3.8))
    x = np.arange(len(folds))
    acc = folds["test_acc"].to_numpy(dtype=float)
    mean, std = float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    ax.bar(x, acc, color="C0", width=0.5, label="epoch picked on validation (reported)")
    # the two markers sit beside the bar, not on its top, where they would hide when they equal it
    ax.plot(x + 0.33, folds["test_acc_last"], "o", color="C1", ms=6, mec="black", mew=0.6, label="last epoch")
    ax.plot(x + 0.33, folds["best_test_acc"], "_", color="C3", ms=14, mew=2.5,
            label="best epoch on the test fold (optimistic)")
    ax.axhspan(mean - std, mean + std, color="0.5", alpha=0.2, lw=0)
    ax.axhline(mean, color="0.2", lw=1, ls="--", label=f"mean {mean:.3f}")
    _fold_axes(ax, x, [str(int(f)) for f in folds["test_fold"]], title or "Cross-validation: one bar per test fold", 7,
               extra=[Patch(color="0.5", alpha=0.2, label=f"mean ± 1 std ({std:.3f}) over folds")])
    return fig


def _fold_axes(ax: Axes, x: np.ndarray, folds: list[str], title: str, legend_size: int,
               extra: Sequence[Any] = ()) -> None:
    """Label a chart of accuracy per test fold, its legend below it (with ``extra`` legend handles)."""
    ax.set_xticks(x, folds)
    ax.set_xlabel("test fold")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    handles, labels = ax.get_legend_handles_labels()
    handles += list(extra)
    labels += [h.get_label() for h in extra]
    ax.legend(handles, labels, fontsize=legend_size, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
              frameon=False)
    ax.set_title(title)


def plot_aliasing_comparison(
    x: np.ndarray,
    sr: int,
    *,
    factor: int = 5,
    new_sr: int | None = None,
) -> Figure:
    """Compare spectrograms of a signal, its naive ``x[::factor]`` decimation and a proper resampling.

    Energy above the new Nyquist frequency folds back into the band when samples are simply
    dropped (aliasing); an anti-aliasing low-pass filter (``audio.resample``) removes it instead.
    When both results have the same rate (``new_sr`` is ``sr // factor``), a fourth panel shows
    their difference: the folded-back energy alone, which is hard to see by comparing the two.

    Args:
        x: mono samples at ``sr``.
        sr: their sample rate in Hz.
        factor: decimation factor of the naive method (the original tutorial used 5).
        new_sr: target rate of the proper resampling (default ``sr // factor``).

    Returns:
        The figure: the spectrograms, the original marked where each result's band ends (each line
        labelled beside it), and one dB colour bar. Used by notebook 3.
    """
    from us8k_lib.audio import naive_decimate, resample

    naive_sr = sr // factor
    new_sr = int(new_sr or naive_sr)
    naive = naive_decimate(x, factor)
    proper = resample(x, sr, new_sr)
    same_rate = new_sr == naive_sr
    fig, axes = plt.subplots(1, 4 if same_rate else 3, figsize=(16 if same_rate else 13, 3.4), layout="constrained")
    plot_spectrogram(x, sr, ax=axes[0], title=f"original, {sr:,} Hz", colorbar=False)
    # where each result's band ends: above its line, the original's content folds back (x[::k]) or is removed
    naive_top = naive_sr / 2
    lines = [(naive_top, "white", "--", f"top of x[::{factor}]: {naive_top / 1000:.3g} kHz")]
    if abs(new_sr / 2 - naive_top) > 1:
        lines.append((new_sr / 2, "cyan", ":", f"top at {new_sr:,} Hz: {new_sr / 2000:.3g} kHz"))
    for k, (y, colour, style, label) in enumerate(sorted(lines, reverse=True)):
        axes[0].axhline(y, color=colour, ls=style, lw=1.2)
        # the higher line labelled above itself, the lower one below: close lines stay readable
        axes[0].annotate(label, (0.35, y), xycoords=("axes fraction", "data"), color=colour, fontsize=7,
                         xytext=(0, 3 if k == 0 else -3), textcoords="offset points", va="bottom" if k == 0 else "top")
    plot_spectrogram(naive, naive_sr, ax=axes[1], title=f"x[::{factor}] ({naive_sr:,} Hz): aliased", colorbar=False)
    plot_spectrogram(proper, new_sr, ax=axes[2], title=f"resampled to {new_sr:,} Hz: filtered", colorbar=False)
    if same_rate:
        from us8k_lib.audio import compute_spectrogram

        n = min(len(naive), len(proper))
        # on x[::k]'s scale: how much of what the naive method hands the model is folded energy
        plot_spectrogram(naive[:n] - proper[:n], naive_sr, ax=axes[3], colorbar=False,
                         top_db=float(np.max(compute_spectrogram(naive[:n], naive_sr)[0])),
                         title=f"the difference: folded energy (x[::{factor}]'s scale)")
    for ax in axes[1:]:
        ax.set_ylabel("")
    # one scale serves every panel: each drawn against its own loudest bin, the difference against x[::k]'s
    scale = ScalarMappable(norm=Normalize(-SPECTROGRAM_DB_RANGE, 0), cmap="magma")
    fig.colorbar(scale, ax=axes, label="dB below the loudest bin", pad=0.01)
    return fig


def plot_class_examples(root: Any, examples: pd.DataFrame, *, columns: int = 5, max_freq: float = 8000.0) -> Figure:
    """Draw the spectrogram of one clip per row of ``examples`` in a grid, titled with its class.

    Args:
        root: the dataset folder (``UrbanSound8K``) the clips are in.
        examples: metadata rows (slice_file_name, fold, class), e.g. ``listen.pick_class_examples``.
        columns: spectrograms per row.
        max_freq: upper limit of every frequency axis in Hz, so clips at different rates compare;
            above half a clip's sample rate (where it holds nothing) its panel is hatched and says so.

    Returns:
        The figure, with one dB colour bar for all panels. Used by notebook 2.
    """
    from us8k_lib.audio import read_wav, to_mono
    from us8k_lib.paths import clip_path

    rows = -(-len(examples) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.1 * rows), layout="constrained",
                             sharey=True, squeeze=False)
    for ax, (_, row) in zip(axes.flat, examples.iterrows()):
        x, sr = read_wav(clip_path(root, int(row["fold"]), str(row["slice_file_name"])))
        plot_spectrogram(to_mono(x), sr, ax=ax, title=str(row["class"]), max_freq=max_freq, colorbar=False)
        ax.set_ylim(0, max_freq)
        if sr / 2 < max_freq:
            # a file sampled at sr holds no frequency above sr / 2: say so instead of leaving it blank
            ax.axhspan(sr / 2, max_freq, facecolor="0.92", edgecolor="0.6", hatch="//", lw=0)
            ax.text(0.5, (sr / 2 + max_freq) / 2 / max_freq, f"recorded at {sr / 1000:g} kHz:\nnothing above "
                    f"{sr / 2000:g} kHz", transform=ax.transAxes, ha="center", va="center", fontsize=7,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("")
        ax.set_ylabel("")
    for ax in list(axes.flat)[len(examples):]:
        ax.set_visible(False)
    fig.supxlabel("time (s)", fontsize=8)
    fig.supylabel("frequency (Hz)", fontsize=8)
    # every panel is scaled to its own loudest bin (plot_spectrogram), so one scale serves them all
    scale = ScalarMappable(norm=Normalize(-SPECTROGRAM_DB_RANGE, 0), cmap="magma")
    fig.colorbar(scale, ax=axes, label="dB below the clip's loudest bin", shrink=0.8, pad=0.01)
    return fig


def plot_augmentations(clip: np.ndarray, demos: Sequence[Any], sr: int, title: str = "original") -> Figure:
    """Draw the original and each augmentation of it (:func:`us8k_lib.augment.demonstrate`) one row
    each: waveform left, spectrogram right, every waveform on one amplitude scale and every
    spectrogram on one dB scale (the loudest bin of all rows at the top), with its colour bar.
    Returns the figure. Used by notebook 7."""
    from us8k_lib.audio import compute_spectrogram

    rows = [(title, np.asarray(clip, np.float32))] + [(d.name, d.x) for d in demos]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 1.7 * len(rows)), layout="constrained", squeeze=False)
    peak = max(float(np.abs(x).max()) for _, x in rows)
    top = max(float(np.max(compute_spectrogram(x, sr)[0])) for _, x in rows)
    for (label, x), (wave_ax, spec_ax) in zip(rows, axes):
        plot_waveform(x, sr, ax=wave_ax, title=label, max_points=4000)
        wave_ax.set_ylim(-1.05 * peak, 1.05 * peak)
        plot_spectrogram(x, sr, ax=spec_ax, title=label, colorbar=False, top_db=top)
    for ax in axes[:-1].ravel():
        ax.set_xlabel("")
    scale = ScalarMappable(norm=Normalize(-SPECTROGRAM_DB_RANGE, 0), cmap="magma")
    fig.colorbar(scale, ax=axes[:, 1], label="dB below the loudest bin of all rows", pad=0.01, shrink=0.6)
    return fig


# ---------------------------------------------------------------------------------------------
# Raw waveform or spectrogram? (notebook 8)


def plot_front_ends(x: np.ndarray, sr: int, log_mel: np.ndarray, *, title: str = "", hop: int = 128) -> Figure:
    """Draw one clip as the two kinds of model see it: the waveform (M5's input) above its log-mel
    spectrogram (the log-mel CNN's input, bands against frames).

    Args:
        x: the clip as the models get it (mono, ``sr`` Hz).
        sr: its sample rate.
        log_mel: ``[bands, frames]`` log-mel energies (e.g. ``LogMelFrontEnd.log_mel``).
        title: what the clip is.
        hop: samples between frames (for the time axis).

    Returns:
        The figure. Used by notebook 8.
    """
    fig, (wave_ax, mel_ax) = plt.subplots(2, 1, figsize=(9, 5), layout="constrained", sharex=True)
    plot_waveform(x, sr, ax=wave_ax, title=f"raw waveform: {len(x):,} samples" + (f" ({title})" if title else ""),
                  max_points=4000)
    wave_ax.tick_params(labelbottom=True)  # shared with the spectrogram's time axis, and numbered too
    wave_ax.set_xlabel("time (s)")
    frames = log_mel.shape[1]
    image = mel_ax.imshow(log_mel, origin="lower", aspect="auto", cmap="magma",
                          extent=(0, frames * hop / sr, 0, log_mel.shape[0]), interpolation="nearest")
    mel_ax.set_xlabel("time (s)")
    mel_ax.set_ylabel("mel band")
    mel_ax.set_title(f"log-mel spectrogram: {log_mel.shape[0]} bands x {frames} frames = {log_mel.size:,} numbers")
    fig.colorbar(image, ax=mel_ax, label="log energy", pad=0.01)
    return fig


def plot_filterbanks(freqs: np.ndarray, learned_db: np.ndarray, mel: np.ndarray, *,
                     learned_title: str = "M5's first layer (learned)") -> Figure:
    """Draw two filterbanks side by side as images, filters against frequency: a raw-waveform
    model's learned first-layer filters (gains in dB, e.g. from
    ``logmel.compute_filter_responses``, ordered by the frequency each passes best, which a dot
    marks) and the log-mel front end's fixed mel filters.

    Returns:
        The figure. Used by notebook 8.
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    top = float(freqs[-1])
    im = a.imshow(np.asarray(learned_db), origin="lower", aspect="auto", cmap="viridis", vmin=-30, vmax=0,
                  extent=(0, top, 0, len(learned_db)), interpolation="nearest")
    learned_db = np.asarray(learned_db)
    peaks = freqs[np.argmax(learned_db, axis=1)]
    a.scatter(peaks, np.arange(len(learned_db)) + 0.5, s=10, color="white", edgecolor="black", linewidth=0.5,
              label="each filter's peak", zorder=3)
    a.legend(fontsize=7, loc="lower right", framealpha=0.8)
    a.set_title(learned_title)
    a.set_xlabel("frequency (Hz)")
    a.set_ylabel("filter, by peak frequency")
    fig.colorbar(im, ax=a, label="gain (dB, each filter's peak = 0)", pad=0.01)
    mel = np.asarray(mel)
    im = b.imshow(mel / np.maximum(mel.max(axis=1, keepdims=True), 1e-12), origin="lower", aspect="auto",
                  cmap="viridis", extent=(0, top, 0, len(mel)), interpolation="nearest")
    b.set_title(f"log-mel front end: {len(mel)} mel filters (fixed)")
    b.set_xlabel("frequency (Hz)")
    b.set_ylabel("mel band")
    fig.colorbar(im, ax=b, label="weight (each filter's peak = 1)", pad=0.01)
    return fig


def plot_fold_comparison(table: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw two or more models' test accuracy per fold side by side, with each model's mean.

    Args:
        table: :func:`us8k_lib.crossval.comparison_table` (columns ``MODEL acc``; rows per test
            fold, then ``mean`` and ``std``).

    Returns:
        The figure. Used by notebook 8.
    """
    fig, ax = _axes(ax, (7, 3.8))
    folds = [i for i in table.index if i not in ("mean", "std")]
    models = [c.removesuffix(" acc") for c in table.columns if c.endswith(" acc")]
    x = np.arange(len(folds))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        values = table.loc[folds, f"{model} acc"].astype(float).to_numpy()
        mean, std = float(table.loc["mean", f"{model} acc"]), float(table.loc["std", f"{model} acc"])
        ax.bar(x + (k - (len(models) - 1) / 2) * width, values, width=width, color=f"C{k}",
               label=f"{model}: mean {mean:.3f} ± {std:.3f}")
        ax.axhline(mean, color=f"C{k}", lw=1, ls="--")
    _fold_axes(ax, x, [str(f) for f in folds], title or "The same folds, two front ends", 8)
    return fig

