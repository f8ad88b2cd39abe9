"""What the model makes of real sounds: the bundled sample's evaluation, the verdict's wording
(chosen from the numbers), and the "classify your own sound" upload widget."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from us8k_lib import real_sounds
from us8k_lib.evaluate import EvalResult
from us8k_lib.metadata import CLASSES, load_metadata
from us8k_lib.paths import clip_path, sample_credits
from us8k_lib.predict import Classifier, load_sound
from us8k_lib.real_sounds import SoundUploader, clips_heard_in_training, real_sample_verdict, wilson_interval
from us8k_lib.runs.checkpoint import load_model

# ---------------------------------------------------------------------------------------------
# The honest verdict


@pytest.mark.parametrize("correct, n, low, high", [
    (0, 20, 0.0, 0.1611), (20, 20, 0.8389, 1.0), (10, 20, 0.2993, 0.7007), (3, 20, 0.0524, 0.3604),
])
def test_wilson_interval(correct: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(correct, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(21, 20)


def _result(true: list[str], predicted: list[str]) -> EvalResult:
    predictions = pd.DataFrame({"file": [f"{i}.wav" for i in range(len(true))], "fold": 1, "true": true,
                                "predicted": predicted, "probability": 0.5,
                                "correct": [t == p for t, p in zip(true, predicted)]})
    correct = int(predictions["correct"].sum())
    return EvalResult(accuracy=correct / len(true), loss=1.0, per_class=pd.DataFrame(), confusion=np.zeros((10, 10)),
                      predictions=predictions)


TRUE = [c for c in CLASSES for _ in range(2)]  # two clips per class, like the sample


def _guess(correct: int) -> list[str]:
    """Predictions with the first ``correct`` clips right and every other one wrong: "siren"
    (or "gun_shot" for the sirens)."""
    return [t if i < correct else ("siren" if t != "siren" else "gun_shot") for i, t in enumerate(TRUE)]


def test_verdict_at_chance_says_it_cannot_tell_from_guessing() -> None:
    text = real_sample_verdict(_result(TRUE, _guess(2)), synthetic_accuracy=0.95)
    assert text.startswith("2 of 20 real clips classified correctly (10%)")
    assert "95% interval" in text and "3% to 30%" in text and "Guessing would get 10%" in text
    assert "cannot be told apart from guessing" in text and "better than guessing" not in text
    assert "siren most often" in text and "2 of the clips are really siren" in text


def test_verdict_above_chance_below_the_synthetic_fold() -> None:
    text = real_sample_verdict(_result(TRUE, _guess(9)), synthetic_accuracy=0.95)
    assert text.startswith("9 of 20 real clips classified correctly (45%)")
    assert "better than guessing, but below the 95% it scored on its test fold" in text
    assert "cannot be told apart" not in text


def test_verdict_as_good_as_the_test_fold_claims_no_more_than_that() -> None:
    text = real_sample_verdict(_result(TRUE, _guess(18)), synthetic_accuracy=0.95)
    assert "as good as the 95% it scored on its test fold" in text and "better than guessing, but" not in text
    assert real_sample_verdict(_result(TRUE, _guess(18))).splitlines()[1] == "That is better than guessing."


def test_verdict_warns_when_the_model_was_trained_on_these_clips() -> None:
    text = real_sample_verdict(_result(TRUE, TRUE), synthetic_accuracy=0.7, heard=["a.wav", "b.wav"])
    assert "trained on 2 of these 20 clips" in text


def test_verdict_on_clips_all_heard_in_training_says_nothing_about_carrying_over() -> None:
    # a model trained on the real folds 1-9 has heard every bundled clip (folds 1, 3, 5, 7, 9)
    text = real_sample_verdict(_result(TRUE, _guess(9)), synthetic_accuracy=0.7, heard=[f"{i}.wav" for i in range(20)])
    assert "trained on all 20 of these clips" in text and "the test fold is that number" in text
    assert "carries over" not in text and "better than guessing" not in text


def test_clips_heard_in_training(tiny_root: Path, real_sample: Path) -> None:
    # The mini dataset reuses real rows (here: two of the sample's recordings), but its audio is
    # synthesized: nothing real was heard, even with every fold trained on.
    assert set(load_metadata(tiny_root)["fsID"]) & set(load_metadata(real_sample)["fsID"])
    assert clips_heard_in_training(tiny_root, range(1, 11)) == []
    # Trained on real clips (here: the sample itself, folds 3 and 5): exactly those were heard.
    meta = load_metadata(real_sample)
    expected = sorted(meta.loc[meta["fold"].isin([3, 5]), "slice_file_name"])
    assert clips_heard_in_training(real_sample, [3, 5]) == expected and len(expected) == 5


# ---------------------------------------------------------------------------------------------
# With a checkpoint (one quick training epoch on tiny)


@pytest.mark.slow
def test_evaluate_sample_classifies_all_20_real_clips(tiny_checkpoint: Path, real_sample: Path,
                                                      tmp_path: Path) -> None:
    model = load_model(tiny_checkpoint)
    result = real_sounds.evaluate_sample(model, cache_dir=tmp_path)
    assert result.n_clips == 20
    assert list(result.per_class["clips"]) == [2] * 10
    assert result.accuracy == pytest.approx(result.predictions["correct"].mean())
    # The same numbers the predict path gives, clip by clip.
    clf = Classifier(model)
    for row in result.predictions.head(4).itertuples():
        top = clf.top(load_sound(clip_path(real_sample, row.fold, row.file)).model_input, 1)[0]
        assert top[0] == row.predicted and top[1] == pytest.approx(row.probability, abs=1e-5)


def _upload(uploader: SoundUploader, name: str, content: bytes) -> None:
    """What JupyterLab's FileUpload does when a file is chosen (ipywidgets 8 value format)."""
    uploader.upload.value = ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                              "last_modified": datetime(2024, 1, 1, tzinfo=timezone.utc)},)


def _assert_shows_prediction(uploader: SoundUploader, name: str) -> None:
    assert uploader.problem is None and uploader.top is not None and len(uploader.top) == 3
    shown = re.findall(r"class='us8k-top-class'>(\w+)<", uploader.ranking.value)
    assert [c for c, _ in uploader.top] == shown
    assert all(c in CLASSES for c, _ in uploader.top)
    assert name in uploader.info.value
    players = [w for w in uploader.players.children[0].children]
    audios = [c for cell in players for c in cell.children if isinstance(c, widgets.Audio)]
    assert len(audios) == 2 and all((a.format, a.autoplay, a.loop) == ("wav", False, False) for a in audios)
    x, sr = sf.read(io.BytesIO(audios[1].value))
    assert (sr, len(x)) == (8000, 32000)  # what the model hears
    assert uploader.image.value[:8] == b"\x89PNG\r\n\x1a\n" and uploader.image.layout.display is None


@pytest.mark.slow
def test_uploading_a_real_clip_shows_format_players_waveform_and_top3(tiny_checkpoint: Path,
                                                                      real_sample: Path) -> None:
    uploader = SoundUploader(tiny_checkpoint)
    path = clip_path(real_sample, 5, "71171-4-0-0.wav")
    _upload(uploader, "71171-4-0-0.wav", path.read_bytes())
    _assert_shows_prediction(uploader, "71171-4-0-0.wav")
    assert "WAVE_FORMAT_EXTENSIBLE PCM 24-bit stereo 96 kHz, 4.00 s" in uploader.info.value
    assert uploader.upload.value == ()  # cleared, so the same file can be chosen again
    expected = Classifier.from_checkpoint(tiny_checkpoint).top(load_sound(path).model_input, 3)
    assert [c for c, _ in uploader.top] == [c for c, _ in expected]
    assert [p for _, p in uploader.top] == pytest.approx([p for _, p in expected])
    original, sr = sf.read(io.BytesIO(uploader.players.children[0].children[0].children[1].value))
    assert sr == 96000 and original.shape == (384000, 2)


BAD_UPLOADS = {
    "empty.wav": (b"", "empty file (0 bytes)"),
    "corrupt.wav": (b"RIFF\x10\x00\x00\x00WAVEfmt garbage", "truncated or invalid WAV header"),
    "notes.txt": (b"just some text\n" * 20, "not a sound file libsndfile can decode"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [*BAD_UPLOADS, "click.wav", "../../etc/odd name?.wav"])
def test_a_bad_upload_gets_a_message_and_the_widget_keeps_working(name: str, tiny_checkpoint: Path,
                                                                  real_sample: Path) -> None:
    uploader = SoundUploader(Classifier.from_checkpoint(tiny_checkpoint))
    if name in BAD_UPLOADS:
        content, problem = BAD_UPLOADS[name]
    elif name == "click.wav":
        buf = io.BytesIO()
        sf.write(buf, np.full(160, 0.5), 8000, format="WAV")  # 20 ms
        content, problem = buf.getvalue(), "too short: 20.0 ms of sound"
    else:
        content, problem = b"\x00" * 100, "not a WAV file"
    _upload(uploader, name, content)
    shown = re.sub(r"[^A-Za-z0-9._ -]", "_", Path(name).name)
    assert uploader.top is None and problem in uploader.problem
    assert f"Cannot classify {shown}: " in uploader.info.value and problem in uploader.info.value
    assert "Traceback" not in uploader.info.value
    assert uploader.players.children == () and uploader.image.value == b"" and uploader.ranking.value == ""
    assert uploader.image.layout.display == "none"
    # The next upload works.
    good = clip_path(real_sample, 1, "99180-9-0-2.wav")
    _upload(uploader, good.name, good.read_bytes())
    _assert_shows_prediction(uploader, good.name)
    assert "PCM 16-bit stereo 8 kHz, 4.00 s" in uploader.info.value


@pytest.mark.slow
def test_an_unexpected_error_is_shown_not_raised(tiny_checkpoint: Path, real_sample: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    uploader = SoundUploader(tiny_checkpoint)
    good = clip_path(real_sample, 1, "24074-1-0-0.wav")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(uploader.classifier, "classify", broken)
    _upload(uploader, good.name, good.read_bytes())
    assert "unexpected error: RuntimeError: out of memory" in uploader.info.value
    monkeypatch.undo()
    _upload(uploader, good.name, good.read_bytes())
    _assert_shows_prediction(uploader, good.name)


@pytest.mark.slow
def test_uploader_works_with_the_model_in_memory_and_a_flac_file(tiny_checkpoint: Path, real_sample: Path,
                                                                 tmp_path: Path) -> None:
    uploader = SoundUploader(load_model(tiny_checkpoint), CLASSES)
    x, sr = sf.read(clip_path(real_sample, 7, "6902-2-0-4.wav"), dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, x[: sr // 2], sr, format="FLAC")  # 0.5 s
    top = uploader.classify_bytes("kids.flac", buf.getvalue())
    assert top == uploader.top and len(top) == 3
    assert "FLAC 16-bit stereo 22.05 kHz, 0.50 s" in uploader.info.value
    assert "padded with silence to 4 s" in uploader.info.value
    assert uploader.snapshot().data == uploader.image.value


def test_prediction_players_caption_truth_answer_and_author(real_sample: Path) -> None:
    meta = load_metadata(real_sample)
    true = list(meta["class"])
    predicted = ["siren"] * len(true)
    result = _result(true, predicted)
    result.predictions["file"] = list(meta["slice_file_name"])
    result.predictions["fold"] = list(meta["fold"])
    grid = real_sounds.prediction_players(result)
    assert len(grid.children) == 20
    table = sample_credits()
    authors = dict(zip(table["slice_file_name"], table["freesound_user"]))
    for row, cell in zip(result.predictions.itertuples(), grid.children):
        caption, player = cell.children
        assert f"<b>{row.true}</b>" in caption.value and "heard as siren (50%)" in caption.value
        assert ("right" in caption.value) == (row.true == "siren") and f"by {authors[row.file]}" in caption.value
        x, sr = sf.read(io.BytesIO(player.value))
        assert sr == 8000 and x.ndim == 1
