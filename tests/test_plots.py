"""Tests for us8k_lib.plots: each plot draws the data it is given (checked through matplotlib's artists)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: no display, and the same rendering everywhere

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from us8k_lib import audio, plots
from us8k_lib.metadata import CLASSES


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def tone(freq: float, sr: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def small_metadata() -> pd.DataFrame:
    # 3 air_conditioner (one short), 1 dog_bark, 2 siren; other classes absent.
    return pd.DataFrame({
        "slice_file_name": ["1-0-0-0.wav", "1-0-0-1.wav", "2-0-0-0.wav", "3-3-0-0.wav", "4-8-0-0.wav", "4-8-0-1.wav"],
        "fsID": [1, 1, 2, 3, 4, 4],
        "start": [0.0, 4.0, 0.0, 1.0, 0.0, 2.0],
        "end": [4.0, 8.0, 0.5, 2.5, 4.0, 6.0],
        "salience": [1, 1, 2, 1, 1, 2],
        "fold": [1, 1, 2, 3, 4, 4],
        "classID": [0, 0, 0, 3, 8, 8],
        "class": ["air_conditioner"] * 3 + ["dog_bark", "siren", "siren"],
    })


def test_waveform_draws_every_sample_against_time():
    sr = 8000
    x = tone(440, sr, 0.5)
    fig = plots.plot_waveform(x, sr, title="a tone")
    ax = fig.axes[0]
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_ydata(), x)
    assert line.get_xdata()[-1] == pytest.approx((len(x) - 1) / sr)
    assert ax.get_title() == "a tone"


def test_waveform_draws_each_channel_of_stereo_input():
    sr = 8000
    stereo = np.stack([tone(440, sr, 0.25), tone(880, sr, 0.25, 0.2)], axis=1)
    fig = plots.plot_waveform(stereo, sr)
    lines = fig.axes[0].lines
    assert len(lines) == 2
    np.testing.assert_array_equal(lines[1].get_ydata(), stereo[:, 1])


def test_long_waveform_is_drawn_as_an_envelope_that_keeps_the_peaks():
    sr = 44100
    x = tone(100, sr, 4.0, amplitude=0.1)
    x[123_457] = 0.9  # a click between envelope points must still show
    x[150_001] = -0.8
    fig = plots.plot_waveform(x, sr, max_points=2000)
    (line,) = fig.axes[0].lines
    y = line.get_ydata()
    assert len(y) <= 2000
    assert y.max() == pytest.approx(0.9) and y.min() == pytest.approx(-0.8)
    assert line.get_xdata()[-1] < 4.0 and line.get_xdata()[-1] > 3.99


def test_waveform_into_given_axes_returns_that_figure():
    fig, ax = plt.subplots()
    assert plots.plot_waveform(np.zeros(100, np.float32), 8000, ax=ax) is fig
    assert len(ax.lines) == 1


def test_spectrogram_shows_a_tone_at_its_frequency():
    sr = 16000
    fig = plots.plot_spectrogram(tone(3000, sr), sr, title="3 kHz")
    ax = fig.axes[0]
    (image,) = ax.images
    data = np.asarray(image.get_array())
    db, freqs, _ = audio.compute_spectrogram(tone(3000, sr), sr)
    assert data.shape == db.shape
    assert freqs[data.mean(axis=1).argmax()] == pytest.approx(3000, abs=sr / 512)
    assert image.get_extent()[3] == pytest.approx(sr / 2)
    assert len(fig.axes) == 2  # the colour bar


def test_spectrogram_of_stereo_input_uses_the_mix_and_limits_frequencies():
    sr = 16000
    stereo = np.stack([tone(1000, sr), tone(1000, sr)], axis=1)
    fig = plots.plot_spectrogram(stereo, sr, colorbar=False, max_freq=4000)
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    assert ax.get_ylim()[1] == pytest.approx(4000)


def test_class_counts_bars_match_the_metadata():
    fig = plots.plot_class_counts(small_metadata())
    bars = fig.axes[0].patches
    widths = {tick.get_text(): bar.get_width() for tick, bar in zip(fig.axes[0].get_yticklabels(), bars)}
    assert set(widths) == set(CLASSES)
    assert widths["air_conditioner"] == 3 and widths["siren"] == 2 and widths["dog_bark"] == 1
    assert widths["gun_shot"] == 0
    assert "6 in total" in fig.axes[0].get_title()


def test_duration_histogram_counts_every_clip_and_the_short_ones():
    fig = plots.plot_duration_histogram(small_metadata())
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 6
    assert "2 clips shorter than 4 s" in ax.texts[0].get_text()


def test_learning_curves_plot_each_series_from_records_or_frame():
    history = [
        {"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "test_acc": 0.25},
        {"epoch": 2, "train_loss": 1.2, "train_acc": 0.6, "test_acc": 0.55},
        {"epoch": 3, "train_loss": 0.7, "train_acc": 0.8, "test_acc": 0.70},
    ]
    for given in (history, pd.DataFrame(history)):
        fig = plots.plot_learning_curves(given)
        ax_loss, ax_acc = fig.axes
        assert [list(line.get_ydata()) for line in ax_loss.lines] == [[2.0, 1.2, 0.7]]
        assert sorted(line.get_label() for line in ax_acc.lines) == ["test acc", "train acc"]
        assert list(ax_acc.lines[0].get_xdata()) == [1, 2, 3]
        fig.canvas.draw()
        ticks = [t for t in ax_acc.get_xticks() if ax_acc.get_xlim()[0] <= t <= ax_acc.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), f"epoch ticks between epochs: {ticks}"
        plt.close(fig)


def test_confusion_matrix_prints_counts_and_colours_row_shares():
    cm = np.zeros((10, 10), dtype=int)
    cm[0, 0], cm[0, 3], cm[3, 3] = 6, 2, 5
    fig = plots.plot_confusion_matrix(cm, CLASSES)
    ax = fig.axes[0]
    texts = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert ((0, 0), "6") in texts and ((3, 0), "2") in texts and ((3, 3), "5") in texts
    assert len(ax.texts) == 3  # zero cells stay empty
    shown = np.asarray(ax.images[0].get_array())
    assert shown[0, 0] == pytest.approx(0.75) and shown[3, 3] == pytest.approx(1.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASSES)
    bar = fig.axes[1]  # the colour's scale: a share of the true class, 0 to 1
    assert "share" in bar.get_ylabel() and ax.images[0].get_clim() == (0, 1)


def test_confusion_matrix_takes_class_names_from_a_dataframe():
    frame = pd.DataFrame([[1, 0], [2, 3]], index=["dog_bark", "siren"], columns=["dog_bark", "siren"])
    fig = plots.plot_confusion_matrix(frame, normalize=False)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dog_bark", "siren"]


def test_per_class_accuracy_bars_and_overall_line():
    acc = pd.Series({"dog_bark": 0.5, "siren": 1.0, "gun_shot": float("nan")})
    fig = plots.plot_per_class_accuracy(acc, overall=0.8)
    ax = fig.axes[0]
    widths = {t.get_text(): p.get_width() for t, p in zip(ax.get_yticklabels(), ax.patches)}
    assert widths == {"dog_bark": 0.5, "siren": 1.0, "gun_shot": 0.0}
    assert ax.lines[0].get_xdata()[0] == pytest.approx(0.8)
    assert "n/a" in [t.get_text() for t in ax.texts]
    assert ax.get_xlabel() == "accuracy on the test fold"
    # the legend sits below the axes, so it cannot cover a bar's label
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 <= axes_box.y0
    plt.close(fig)
    fig = plots.plot_per_class_accuracy(acc, xlabel="accuracy, mean over test folds")
    assert fig.axes[0].get_xlabel() == "accuracy, mean over test folds"
    plt.close(fig)


def freqs_of_peak(db: np.ndarray) -> float:
    """The frequency (Hz) of the loudest row of an 8 kHz spectrogram image."""
    _, freqs8k, _ = audio.compute_spectrogram(np.zeros(8000, np.float32), 8000)
    return float(freqs8k[db.mean(axis=1).argmax()])


def test_aliasing_comparison_shows_the_folded_tone_only_in_the_naive_panel():
    sr = 40000
    x = tone(6000, sr)  # above 4 kHz: x[::5] folds it to 8000 - 6000 = 2000 Hz
    fig = plots.plot_aliasing_comparison(x, sr, factor=5, new_sr=8000)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    original, naive, proper, difference = (np.asarray(ax.images[0].get_array()) for ax in panels)
    # the original names where each result's band ends: 40 kHz / 5 / 2 = 4 kHz for both here
    assert [t.get_text() for t in panels[0].texts] == ["top of x[::5]: 4 kHz"]
    assert len(fig.axes) == 5 and "dB" in fig.axes[4].get_ylabel()
    # the same rate for both results: a fourth panel holds their difference, the alias alone, as loud as in x[::5]
    assert freqs_of_peak(difference) == pytest.approx(2000, abs=8000 / 512)
    assert abs(difference.max() - naive.max()) < 1 and panels[3].images[0].get_clim() == panels[1].images[0].get_clim()
    assert freqs_of_peak(naive) == pytest.approx(2000, abs=8000 / 512)
    assert naive.max() > -10  # the alias is as loud as the tone (amplitude 0.5: about -6 dB)
    # The filter removed it; only the clicks where the tone starts and stops leave a trace.
    assert proper[:, 4:-4].max() < -60
    assert "aliased" in fig.axes[1].get_title()
    plt.close(fig)
    # at 44.1 kHz, x[::5] keeps up to 4.41 kHz and a resampling to 8 kHz up to 4 kHz: two lines, both named
    fig = plots.plot_aliasing_comparison(tone(1000, 44100), 44100, factor=5, new_sr=8000)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["top of x[::5]: 4.41 kHz", "top at 8,000 Hz: 4 kHz"]
    assert [t.get_verticalalignment() for t in fig.axes[0].texts] == ["bottom", "top"]  # one above, one below
    assert len(fig.axes) == 4  # two rates: no difference panel
    plt.close(fig)


def test_class_examples_grid_draws_one_spectrogram_per_clip(tiny_root):
    from us8k_lib.metadata import load_metadata

    meta = load_metadata(tiny_root)
    examples = meta[meta["fold"] == 10].drop_duplicates("class").head(7)
    fig = plots.plot_class_examples(tiny_root, examples, columns=4)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    visible = [ax for ax in panels if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list(examples["class"])
    assert len(panels) == 8 and all(len(ax.images) == 1 for ax in visible)
    assert all(ax.get_ylim()[1] == pytest.approx(8000) for ax in visible)
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and "dB" in colorbars[0].get_ylabel()
    plt.close(fig)


def test_class_examples_say_why_a_low_rate_clip_is_blank_above_its_nyquist(tmp_path):
    import soundfile as sf

    from us8k_lib.paths import clip_path

    path = clip_path(tmp_path, 1, "1-0-0-0.wav")
    path.parent.mkdir(parents=True)
    sf.write(path, tone(1000, 8000), 8000)  # an 8 kHz file holds nothing above 4 kHz
    examples = pd.DataFrame({"slice_file_name": ["1-0-0-0.wav"], "fold": [1], "class": ["siren"]})
    fig = plots.plot_class_examples(tmp_path, examples, columns=1)
    panel = fig.axes[0]
    assert any("nothing above 4 kHz" in t.get_text() for t in panel.texts)
    assert any(p.get_hatch() == "//" for p in panel.patches)
    plt.close(fig)


def test_stereo_waveform_names_its_channels():
    stereo = np.stack([tone(440, 8000), 0.5 * tone(880, 8000)], axis=1)
    fig = plots.plot_waveform(stereo, 8000)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["left", "right"]
    plt.close(fig)
    fig = plots.plot_waveform(tone(440, 8000), 8000)
    assert fig.axes[0].get_legend() is None  # one channel, one colour: nothing to tell apart
    plt.close(fig)


def test_fold_accuracies_plot_shows_each_fold_and_the_mean() -> None:
    folds = pd.DataFrame({"test_fold": [1, 2, 3], "test_acc": [0.8, 0.9, 0.7],
                          "test_acc_last": [0.75, 0.9, 0.7], "best_test_acc": [0.85, 0.95, 0.7]})
    fig = plots.plot_fold_accuracies(folds)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches if p.get_width() < 1]  # the bars, not the std band
    assert heights == pytest.approx([0.8, 0.9, 0.7])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "mean 0.800" in labels and "mean ± 1 std (0.100) over folds" in labels  # the band is in the legend
    # the markers sit beside their bars (not on the bar tops, where an equal value would hide them)
    bar_centres = [p.get_x() + p.get_width() / 2 for p in ax.patches if p.get_width() < 1]
    for line in ax.lines[:2]:
        assert all(abs(xm - xb) > 0.25 for xm, xb in zip(line.get_xdata(), bar_centres))
    plt.close(fig)


def test_fold_comparison_draws_one_bar_per_model_and_fold_and_each_mean() -> None:
    from us8k_lib.plots import plot_fold_comparison

    table = pd.DataFrame({"M5 acc": [0.8, 0.7, 0.75, 0.07], "M5 epoch": [1, 2, 1.5, 0.7],
                          "LogMel-CNN acc": [0.9, 0.6, 0.75, 0.21], "LogMel-CNN epoch": [2, 2, 2, 0],
                          "difference": [0.1, -0.1, 0.0, 0.14]}, index=[1, 2, "mean", "std"])
    fig = plot_fold_comparison(table)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.6, 0.7, 0.8, 0.9]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["M5: mean 0.750 ± 0.070", "LogMel-CNN: mean 0.750 ± 0.210"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]


def test_front_ends_number_the_time_axis_of_both_panels():
    x = np.sin(np.linspace(0, 2000, 32000)).astype(np.float32)
    fig = plots.plot_front_ends(x, 8000, np.zeros((64, 251), np.float32), title="a tone")
    wave, mel = fig.axes[0], fig.axes[1]
    fig.canvas.draw()
    for ax in (wave, mel):
        assert ax.get_xlabel() == "time (s)" and any(t.get_text() for t in ax.get_xticklabels() if t.get_visible())


def test_learned_filters_are_drawn_in_the_order_of_their_peaks():
    freqs = np.linspace(0, 4000, 257)
    learned = np.stack([-np.abs(freqs - f) / 100 for f in (500, 1500, 3000)])  # already ordered by peak
    fig = plots.plot_filterbanks(freqs, learned, np.eye(64, 257))
    dots = fig.axes[0].collections[0].get_offsets()
    assert list(np.asarray(dots)[:, 0]) == pytest.approx([500, 1500, 3000], abs=16)  # each filter's peak, marked


def test_filter_responses_find_each_filters_band() -> None:
    import torch

    from us8k_lib.logmel import compute_filter_responses
    from us8k_lib.model import build_model

    model = build_model("m5", width=2)
    t = torch.arange(80) / 8000
    with torch.no_grad():  # two filters: a 3 kHz and a 500 Hz cosine under a Hann window
        model.conv1.weight[:, 0] = torch.stack([torch.cos(2 * torch.pi * 3000 * t),
                                                         torch.cos(2 * torch.pi * 500 * t)]) * torch.hann_window(80)
    freqs, db = compute_filter_responses(model)
    assert freqs[-1] == 4000 and db.shape == (2, 257) and db.max() <= 0
    peaks = freqs[db.argmax(dim=1)]
    assert abs(peaks[0] - 500) < 40 and abs(peaks[1] - 3000) < 40  # sorted: the low filter first
