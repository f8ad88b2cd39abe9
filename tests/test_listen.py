"""Tests for us8k_lib.listen: the widgets play the chosen clip and redraw its plots when a choice changes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: the browsers render their figures to PNG themselves

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from us8k_lib import audio, listen
from us8k_lib.metadata import CLASSES, load_metadata
from us8k_lib.paths import clip_path


@pytest.fixture(scope="module")
def tiny_meta(tiny_root) -> pd.DataFrame:
    return load_metadata(tiny_root)


def decode(wav: bytes) -> tuple[np.ndarray, int]:
    """Decode WAV bytes the way a browser would get them; fails if they are not a valid WAV."""
    info = sf.info(io.BytesIO(wav))
    assert (info.format, info.subtype) == ("WAV", "PCM_16")
    x, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return x, sr


def assert_player(player: widgets.Audio) -> None:
    assert isinstance(player, widgets.Audio)
    assert player.format == "wav"
    assert player.autoplay is False
    assert player.loop is False


def wave_data(browser) -> np.ndarray:
    return np.asarray(browser.figure.axes[0].lines[0].get_ydata())


def test_browser_plays_the_chosen_file_as_it_is(tiny_root, tiny_meta):
    b = listen.ClipBrowser(tiny_root, tiny_meta)
    assert_player(b.audio)
    row = tiny_meta[(tiny_meta["class"] == b.class_dropdown.value) & (tiny_meta["fold"] == b.fold_dropdown.value)
                    & (tiny_meta["slice_file_name"] == b.clip_dropdown.value)]
    assert len(row) == 1
    assert b.path == clip_path(tiny_root, b.fold_dropdown.value, b.clip_dropdown.value)
    played, sr = decode(b.audio.value)
    original, original_sr = audio.read_wav(b.path)
    assert sr == original_sr
    assert played.shape == original.shape
    np.testing.assert_allclose(played, np.clip(original, -1, 1), atol=1.5 / 32767)
    assert b.image.format == "jpeg" and b.image.value[:3] == b"\xff\xd8\xff"
    assert b.snapshot().data == b.image.value
    assert b.clip_dropdown.value in b.caption.value


def test_changing_class_updates_folds_clips_audio_and_plot(tiny_root, tiny_meta):
    b = listen.ClipBrowser(tiny_root, tiny_meta, class_name="air_conditioner")
    before_audio, before_wave, before_png = b.audio.value, wave_data(b).copy(), b.image.value
    b.class_dropdown.value = "siren"
    sirens = tiny_meta[tiny_meta["class"] == "siren"]
    assert list(b.fold_dropdown.options) == sorted(sirens["fold"].unique())
    in_fold = sirens[sirens["fold"] == b.fold_dropdown.value]["slice_file_name"]
    assert sorted(v for _, v in b.clip_dropdown.options) == sorted(in_fold)
    assert b.path.name in set(in_fold)
    assert b.audio.value != before_audio
    decode(b.audio.value)
    assert not np.array_equal(wave_data(b), before_wave)
    assert b.image.value != before_png
    assert "siren" in b.figure.axes[0].get_title()
    assert_player(b.audio)


def test_changing_fold_then_clip_updates_audio_and_plot(tiny_root, tiny_meta):
    b = listen.ClipBrowser(tiny_root, tiny_meta, class_name="dog_bark", fold=1)
    first = b.audio.value
    b.fold_dropdown.value = 10
    assert b.path.parent.name == "fold10"
    assert b.audio.value != first
    names = [v for _, v in b.clip_dropdown.options]
    assert len(names) >= 2, "the tiny dataset has two clips per class in fold 10"
    assert b.clip_dropdown.value == names[0]
    wave, sound = wave_data(b).copy(), b.audio.value
    b.clip_dropdown.value = names[1]
    assert b.path.name == names[1]
    assert b.audio.value != sound
    assert not np.array_equal(wave_data(b), wave)
    played, sr = decode(b.audio.value)
    assert sr == audio.read_header(b.path)["samplerate"]


def test_model_view_plays_8k_mono_4s(tiny_root, tiny_meta):
    b = listen.ClipBrowser(tiny_root, tiny_meta, class_name="gun_shot")
    b.view_toggle.value = listen.VIEW_MODEL
    played, sr = decode(b.audio.value)
    assert (sr, played.shape) == (audio.TARGET_SR, (audio.TARGET_LENGTH, 1))
    np.testing.assert_allclose(played[:, 0], np.clip(audio.format_clip(b.path), -1, 1), atol=1.5 / 32767)
    assert len(wave_data(b)) > 0
    # the choice sticks while browsing
    b.class_dropdown.value = "car_horn"
    assert decode(b.audio.value)[1] == audio.TARGET_SR


def test_select_rejects_what_is_not_there(tiny_root, tiny_meta):
    b = listen.ClipBrowser(tiny_root, tiny_meta)
    with pytest.raises(ValueError, match="no clips of class 'lion'"):
        b.select("lion")
    with pytest.raises(ValueError, match="not a siren clip of fold 10"):
        b.select("siren", 10, "nope.wav")


def test_browser_displays_as_its_widget(tiny_root, tiny_meta):
    b = listen.ClipBrowser(tiny_root, tiny_meta)
    bundle = b._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == b.widget.model_id
    assert b.audio in b.widget.children and b.image in b.widget.children


def predictions_from(meta: pd.DataFrame) -> pd.DataFrame:
    """A prediction table over fold 10 where every third clip is predicted as the next class."""
    test = meta[meta["fold"] == 10].sort_values("slice_file_name").reset_index(drop=True)
    predicted = [CLASSES[(CLASSES.index(c) + 1) % 10] if i % 3 == 0 else c for i, c in enumerate(test["class"])]
    return pd.DataFrame({
        "file": test["slice_file_name"], "fold": test["fold"], "true": test["class"],
        "predicted": predicted, "probability": np.linspace(0.3, 0.9, len(test)),
    })


def test_mistakes_browser_lists_only_mistakes_most_confident_first(tiny_root, tiny_meta):
    table = predictions_from(tiny_meta)
    wrong = table[table["true"] != table["predicted"]]
    m = listen.MistakesBrowser(table, tiny_root)
    assert len(m.mistakes) == len(wrong) == len(m.mistake_list.options)
    assert list(m.mistakes["probability"]) == sorted(wrong["probability"], reverse=True)
    assert f"<b>{len(wrong)}</b> of {len(table)}" in m.summary.value
    top = m.mistakes.iloc[0]
    assert m.path == clip_path(tiny_root, 10, top["file"])
    assert f"predicted: {top['predicted']}" in m.mistake_list.options[0][0]
    assert_player(m.audio)
    decode(m.audio.value)


def test_picking_another_mistake_updates_audio_and_plot(tiny_root, tiny_meta):
    m = listen.MistakesBrowser(predictions_from(tiny_meta), tiny_root)
    sound, wave = m.audio.value, wave_data(m).copy()
    m.mistake_list.value = m.mistake_list.options[1][1]
    assert m.path.name == m.mistakes.loc[1, "file"]
    assert m.audio.value != sound
    assert not np.array_equal(wave_data(m), wave)
    assert m.mistakes.loc[1, "predicted"] in m.caption.value


def test_mistakes_filter_by_true_class(tiny_root, tiny_meta):
    m = listen.MistakesBrowser(predictions_from(tiny_meta), tiny_root)
    some_class = m.class_filter.options[1]
    m.class_filter.value = some_class
    rows = [m.mistakes.loc[v] for _, v in m.mistake_list.options]
    assert rows and all(r["true"] == some_class for r in rows)
    assert m.path.name == rows[0]["file"]


def test_no_mistakes_means_nothing_to_play(tiny_root, tiny_meta):
    table = predictions_from(tiny_meta).assign(predicted=lambda t: t["true"])
    m = listen.MistakesBrowser(table, tiny_root)
    assert m.mistakes.empty and m.mistake_list.options == ()
    assert m.audio.value == b"" and m.path is None
    assert "No mistakes" in m.caption.value


def test_mistakes_browser_needs_the_prediction_columns(tiny_root):
    with pytest.raises(ValueError, match="predicted"):
        listen.MistakesBrowser(pd.DataFrame({"file": [], "fold": [], "true": []}), tiny_root)


def test_class_examples_one_playable_clip_per_class(tiny_root, tiny_meta):
    picked = listen.pick_class_examples(tiny_meta, seed=0)
    assert list(picked["class"]) == list(CLASSES)
    assert picked.equals(listen.pick_class_examples(tiny_meta, seed=0))
    assert not picked.equals(listen.pick_class_examples(tiny_meta, seed=1))
    grid = listen.make_class_examples(tiny_root, picked)
    assert len(grid.children) == len(CLASSES)
    for (_, row), cell in zip(picked.iterrows(), grid.children):
        caption, player = cell.children
        assert row["class"] in caption.value and row["slice_file_name"] in caption.value
        assert_player(player)
        x, sr = decode(player.value)
        assert sr == listen.EXAMPLE_LISTEN_SR and x.shape[1] == 1
        original, original_sr = audio.read_wav(clip_path(tiny_root, row["fold"], row["slice_file_name"]))
        assert abs(len(x) - len(original) * sr / original_sr) <= 1


def test_make_audio_widget_sets_format_and_no_autoplay_or_loop():
    sr = 8000
    player = listen.make_audio_widget(np.zeros(sr, dtype=np.float32), sr)
    assert_player(player)
    x, got_sr = decode(player.value)
    assert (got_sr, x.shape) == (sr, (sr, 1))


def test_sweep_rises_from_f0_to_f1():
    sr = 16000
    x = listen.make_sweep(sr, seconds=2.0, f0=200, f1=6000)
    assert x.dtype == np.float32 and len(x) == 2 * sr and np.abs(x).max() <= 0.3 + 1e-6
    # instantaneous frequency from zero crossings at the start and the end

    def freq(segment):
        return np.count_nonzero(np.diff(np.signbit(segment))) / 2 / (len(segment) / sr)
    assert freq(x[:1600]) == pytest.approx(200 + (6000 - 200) * 0.05 / 2 * 1, rel=0.3)
    assert freq(x[-1600:]) == pytest.approx(6000, rel=0.1)
    with pytest.raises(ValueError, match="below half the sample rate"):
        listen.make_sweep(sr, f1=9000)


def test_players_side_by_side_each_with_its_rate():
    box = listen.make_players([("a", np.zeros(800, np.float32), 8000), ("b", np.zeros(4410, np.float32), 44100)])
    assert len(box.children) == 2
    for (label, rate), cell in zip([("a", 8000), ("b", 44100)], box.children):
        caption, player = cell.children
        assert label in caption.value
        assert_player(player)
        assert decode(player.value)[1] == rate


def test_a_clip_that_cannot_be_read_is_reported_in_the_widget(tiny_root, tiny_meta):
    table = predictions_from(tiny_meta)
    table.loc[0, ["file", "predicted", "probability"]] = ["999999-3-0-0.wav", "siren", 0.99]
    table.loc[0, "true"] = "dog_bark"
    m = listen.MistakesBrowser(table, tiny_root)
    assert m.mistakes.loc[0, "file"] == "999999-3-0-0.wav"  # the most confident mistake comes first
    assert m.path.name == "999999-3-0-0.wav"
    assert "cannot play 999999-3-0-0.wav: does not exist" in m.caption.value
    assert m.audio.value == b"" and m.samples is None
    m.mistake_list.value = m.mistake_list.options[1][1]
    decode(m.audio.value)  # the next one plays


# ---------------------------------------------------------------------------------------------
# The bundled real sample in the widgets


def test_browser_switches_between_the_offered_datasets(tiny_root, tiny_meta, real_sample):
    b = listen.ClipBrowser(tiny_root, tiny_meta, class_name="drilling",
                           datasets={"mini (synthesized)": tiny_root, "real sample": real_sample})
    assert b.dataset_dropdown.layout.display is None and b.dataset_dropdown.value == "mini (synthesized)"
    mini_audio = b.audio.value
    b.dataset_dropdown.value = "real sample"
    real = load_metadata(real_sample)
    assert b.root == real_sample and len(b.metadata) == len(real)
    drills = real[real["class"] == "drilling"]
    assert b.class_dropdown.value == "drilling"  # the class is kept
    assert list(b.fold_dropdown.options) == sorted(drills["fold"].unique())
    assert b.path.parent.parent.parent == real_sample and b.path.name in set(drills["slice_file_name"])
    played, sr = decode(b.audio.value)
    original, original_sr = audio.read_wav(b.path)
    assert (sr, played.shape) == (original_sr, original.shape) and b.audio.value != mini_audio
    b.class_dropdown.value = "siren"
    assert b.path.name in set(real.loc[real["class"] == "siren", "slice_file_name"])
    b.use_dataset("mini (synthesized)")
    assert b.root == tiny_root and b.class_dropdown.value == "siren" and b.path.parent.parent.parent == tiny_root
    with pytest.raises(ValueError, match="no dataset 'real'"):
        b.use_dataset("real")


def test_dataset_choice_is_hidden_unless_offered_and_root_must_be_offered(tiny_root, tiny_meta, real_sample):
    assert listen.ClipBrowser(tiny_root, tiny_meta).dataset_dropdown.layout.display == "none"
    with pytest.raises(ValueError, match="not one of the datasets offered"):
        listen.ClipBrowser(tiny_root, tiny_meta, datasets={"real sample": real_sample})


def test_class_examples_with_own_captions_from_a_prediction_table(real_sample):
    table = load_metadata(real_sample).head(3).rename(columns={"slice_file_name": "file"})
    captions = [f"<b>clip {i}</b>" for i in range(3)]
    grid = listen.make_class_examples(real_sample, table, listen_sr=8000, captions=captions)
    for caption_html, (_, row), cell in zip(captions, table.iterrows(), grid.children):
        caption, player = cell.children
        assert caption.value == caption_html
        x, sr = decode(player.value)
        original, original_sr = audio.read_wav(clip_path(real_sample, row["fold"], row["file"]))
        assert sr == 8000 and abs(len(x) - len(original) * sr / original_sr) <= 1
    with pytest.raises(ValueError, match="2 captions for 3 clips"):
        listen.make_class_examples(real_sample, table, captions=captions[:2])


def test_dataset_choices_offer_the_active_dataset_and_the_real_sample(tiny_root, real_sample):
    assert listen.dataset_choices(tiny_root) == {
        "active: generated mini dataset (synthesized sounds)": tiny_root,
        "bundled real sample (20 real recordings)": real_sample,
    }
    assert listen.dataset_choices(real_sample) == {"active: bundled real sample (20 real recordings)": real_sample}
