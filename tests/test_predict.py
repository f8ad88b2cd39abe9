"""predict: sound files in any container libsndfile reads, folders searched recursively, bad files
reported by name while the others are still classified (on real clips of the bundled sample)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from us8k_lib import cli
from us8k_lib.audio import format_clip, read_header
from us8k_lib.errors import AudioError
from us8k_lib.metadata import CLASSES, load_metadata
from us8k_lib.paths import clip_path
from us8k_lib.predict import (
    MIN_SECONDS,
    Classifier,
    find_sound_files,
    load_sound,
    predict_files,
    predict_paths,
)
from us8k_lib.runs.checkpoint import load_model

BLOCK_LINE = re.compile(r"^  (\d)\. (\w+)\s+(\d\.\d{3})$")


def _clip(real_sample: Path, name: str) -> Path:
    row = load_metadata(real_sample).set_index("slice_file_name").loc[name]
    return clip_path(real_sample, int(row["fold"]), name)


# ---------------------------------------------------------------------------------------------
# load_sound: any container, formatted exactly like the training clips


def test_every_real_clip_loads_exactly_as_the_training_pipeline_formats_it(real_sample: Path) -> None:
    meta = load_metadata(real_sample)
    for r in meta.itertuples():
        path = clip_path(real_sample, r.fold, r.slice_file_name)
        sound = load_sound(path)
        header = read_header(path)
        assert sound.description == header["description"] and sound.sr == header["samplerate"]
        assert sound.samples.shape == (header["frames"], header["channels"])
        assert sound.duration == pytest.approx(r.end - r.start, abs=0.01)
        np.testing.assert_array_equal(sound.model_input, format_clip(path))


def test_flac_and_ogg_load_like_the_wav_they_were_made_from(real_sample: Path, tmp_path: Path) -> None:
    wav = _clip(real_sample, "6902-2-0-4.wav")  # 22.05 kHz 16-bit stereo
    x, sr = sf.read(wav, dtype="int16")
    sf.write(tmp_path / "kids.flac", x, sr, subtype="PCM_16")
    sf.write(tmp_path / "kids.ogg", x, sr, format="OGG", subtype="VORBIS")
    reference = load_sound(wav).model_input
    flac = load_sound(tmp_path / "kids.flac")
    assert flac.description == "FLAC 16-bit stereo 22.05 kHz"
    np.testing.assert_array_equal(flac.model_input, reference)  # lossless: the same samples
    ogg = load_sound(tmp_path / "kids.ogg")
    assert ogg.description == "OGG vorbis stereo 22.05 kHz"
    # Lossy, but the same sound: close sample by sample once aligned.
    assert np.corrcoef(ogg.model_input, reference)[0, 1] > 0.95


def _write_problem(kind: str, folder: Path, real_sample: Path) -> tuple[Path, str]:
    """Create a bad file of the given kind; return it and (part of) the problem it must report."""
    if kind == "empty":
        path = folder / "empty.wav"
        path.write_bytes(b"")
        return path, "empty file (0 bytes)"
    if kind == "random bytes":
        path = folder / "noise.wav"
        path.write_bytes(np.random.default_rng(0).bytes(4000))
        return path, "not a WAV file"
    if kind == "header only":
        path = folder / "cut.wav"
        path.write_bytes(_clip(real_sample, "50901-0-0-0.wav").read_bytes()[:200])
        return path, "truncated"
    if kind == "text":
        path = folder / "notes.txt"
        path.write_text("not a sound\n")
        return path, "not a sound file libsndfile can decode"
    if kind == "too short":
        path = folder / "click.wav"
        sf.write(path, np.full(80, 0.5), 8000)  # 10 ms
        return path, f"too short: 10.0 ms of sound; the model needs at least {MIN_SECONDS * 1000:.0f} ms"
    if kind == "silent":
        path = folder / "silence.flac"
        sf.write(path, np.zeros(8000), 8000)
        return path, "silent"
    if kind == "directory":
        path = folder / "folder.wav"
        path.mkdir()
        return path, "is a directory"
    path = folder / "nowhere.wav"
    return path, "does not exist"


PROBLEMS = ["empty", "random bytes", "header only", "text", "too short", "silent", "directory", "missing"]


@pytest.mark.parametrize("kind", PROBLEMS)
def test_a_bad_file_is_an_error_naming_it_and_the_problem(kind: str, tmp_path: Path, real_sample: Path) -> None:
    path, problem = _write_problem(kind, tmp_path, real_sample)
    with pytest.raises(AudioError) as caught:
        load_sound(path)
    assert caught.value.path == path and problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("suffix", [".mp3", ".flac", ".ogg", ".aiff"])
def test_random_bytes_in_another_container_are_one_line_and_nothing_on_stderr(
        suffix: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(b"\x00" + np.random.default_rng(1).bytes(20_000))  # starts like no container
    with pytest.raises(AudioError) as caught:
        load_sound(path)
    assert caught.value.path == path
    assert caught.value.problem.startswith("not a sound file libsndfile can decode: its first bytes")
    assert "does not exist" not in str(caught.value)
    assert capfd.readouterr().err == ""  # no decoder's notes on the terminal


# ---------------------------------------------------------------------------------------------
# find_sound_files


def test_folders_are_searched_recursively_for_sound_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "deeper").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "empty").mkdir()
    for rel in ["a/2.wav", "a/1.FLAC", "a/deeper/3.ogg", "a/readme.txt", "a/.4.wav", "a/.hidden/5.wav", "x.bin"]:
        (tmp_path / rel).write_bytes(b"x")
    files, problems = find_sound_files([tmp_path / "a", tmp_path / "x.bin", tmp_path / "a" / "2.wav",
                                        tmp_path / "empty", tmp_path / "gone.wav"])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a/1.FLAC", "a/2.wav", "a/deeper/3.ogg", "x.bin"]
    assert problems[0] == (str(tmp_path / "empty"), problems[0][1]) and "no sound files" in problems[0][1]
    assert problems[1] == (str(tmp_path / "gone.wav"), "does not exist")
    assert len(problems) == 2


# ---------------------------------------------------------------------------------------------
# With a checkpoint (one quick training epoch on tiny)


@pytest.mark.slow
def test_classifier_from_checkpoint_or_memory_agree(tiny_checkpoint: Path, real_sample: Path) -> None:
    from_file = Classifier.from_checkpoint(tiny_checkpoint)
    in_memory = Classifier(load_model(tiny_checkpoint))
    assert from_file.classes == list(CLASSES) and (from_file.sr, from_file.length) == (8000, 32000)
    x = load_sound(_clip(real_sample, "71171-4-0-0.wav")).model_input
    p = from_file.probabilities(x)
    assert p.shape == (10,) and p.sum() == pytest.approx(1.0) and (p > 0).all()
    np.testing.assert_allclose(in_memory.probabilities(x), p, rtol=1e-6)
    top = from_file.top(x, 3)
    assert [c for c, _ in top] == [CLASSES[i] for i in np.argsort(-p)[:3]]
    assert [q for _, q in top] == pytest.approx(sorted(p, reverse=True)[:3])
    assert len(from_file.top(x, 50)) == 10


@pytest.mark.slow
def test_predict_files_stops_at_a_bad_file(tiny_checkpoint: Path, real_sample: Path, tmp_path: Path) -> None:
    good = _clip(real_sample, "99180-9-0-2.wav")
    table = predict_files(tiny_checkpoint, [good])
    assert list(table.columns) == ["file", "classified", "class_1", "probability_1", "class_2", "probability_2",
                                   "class_3", "probability_3"]
    assert list(table["classified"]) == ["4.0 s, 1 window of 4 s"]
    bad, _ = _write_problem("random bytes", tmp_path, real_sample)
    with pytest.raises(AudioError, match=re.escape(str(bad))):
        predict_files(tiny_checkpoint, [good, bad])


def _folder_with_one_corrupt_file(real_sample: Path, tmp_path: Path) -> tuple[Path, list[Path], Path]:
    folder = tmp_path / "sounds"
    (folder / "more").mkdir(parents=True)
    good = []
    for name, where in [("71171-4-0-0.wav", folder), ("99180-9-0-2.wav", folder), ("6902-2-0-4.wav", folder / "more")]:
        shutil.copy(_clip(real_sample, name), where / name)
        good.append(where / name)
    bad = folder / "more" / "broken.wav"
    bad.write_bytes(_clip(real_sample, "50901-0-0-0.wav").read_bytes()[:300])
    return folder, sorted(good), bad


@pytest.mark.slow
def test_predict_command_on_a_folder_with_a_corrupt_file(tiny_checkpoint: Path, real_sample: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder, good, bad = _folder_with_one_corrupt_file(real_sample, tmp_path)
    report = tmp_path / "out" / "predictions.json"
    code = cli.main(["predict", str(tiny_checkpoint), str(folder), "--json", str(report)])
    captured = capsys.readouterr()
    assert code == 1
    # The weights used come first, then every good file, in path order, with what was classified and its top 3.
    lines = captured.out.strip().splitlines()
    assert lines[0] == f"weights: {tiny_checkpoint}: the checkpoint given, epoch 1"
    lines = lines[1:]
    assert len(lines) == 4 * len(good)
    printed = {}
    for i, path in enumerate(good):
        block = lines[4 * i: 4 * i + 4]
        assert block[0] == f"{path}  (4.0 s, 1 window of 4 s)"
        ranks = [BLOCK_LINE.match(line) for line in block[1:]]
        assert all(ranks) and [int(m.group(1)) for m in ranks] == [1, 2, 3], block
        assert all(m.group(2) in CLASSES for m in ranks)
        printed[str(path)] = [(m.group(2), float(m.group(3))) for m in ranks]
    # The bad file is named, with its problem, on stderr.
    err = captured.err.strip().splitlines()
    assert err[0].startswith(f"error: {bad}: ") and "truncated" in err[0]
    assert err[-1] == "1 of 4 path(s) could not be classified"
    # --json holds the same table and the failure.
    data = json.loads(report.read_text())
    assert data["checkpoint"] == str(tiny_checkpoint)
    assert [p["file"] for p in data["predictions"]] == list(printed)
    for p in data["predictions"]:
        assert [(t["class"], round(t["probability"], 3)) for t in p["top"]] == printed[p["file"]]
    assert data["failed"] == [{"file": str(bad), "problem": err[0].split(": ", 2)[2]}]
    assert [f.name for f in report.parent.iterdir()] == ["predictions.json"]  # no temp file left


@pytest.mark.slow
def test_predict_command_exits_0_when_every_file_is_classified(tiny_checkpoint: Path, real_sample: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", str(tiny_checkpoint), str(real_sample / "audio" / "fold3")]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    names = [line.split("  (")[0] for line in captured.out.splitlines()[1:] if not line.startswith("  ")]
    assert [Path(n).name for n in names] == sorted(p.name for p in (real_sample / "audio" / "fold3").glob("*.wav"))


@pytest.mark.slow
def test_predict_paths_keeps_going_past_every_kind_of_problem(tiny_checkpoint: Path, real_sample: Path,
                                                              tmp_path: Path) -> None:
    bad = dict(_write_problem(kind, tmp_path, real_sample) for kind in PROBLEMS)
    bad[tmp_path / "folder.wav"] = "no sound files in this folder"  # a folder given is searched
    good = _clip(real_sample, "157867-8-0-27.wav")
    report = predict_paths(tiny_checkpoint, [*bad, good])
    assert not report.ok
    assert list(report.table["file"]) == [str(good)]
    assert {f: p for f, p in report.failed}.keys() == {str(p) for p in bad}
    for file, problem in report.failed:
        assert bad[Path(file)] in problem, (file, problem)


# --------------------------------------------------------------------------------------------
# whole recordings: sliding windows


def test_windows_cover_the_whole_sound() -> None:
    from us8k_lib.predict import cut_windows

    x = np.arange(1, 101, dtype=np.float32)
    windows, starts = cut_windows(x, 40, 20)
    assert list(starts) == [0, 20, 40, 60]  # the last window reaches the end
    np.testing.assert_array_equal(windows[-1], x[60:100])
    windows, starts = cut_windows(x[:90], 40, 20)
    assert list(starts) == [0, 20, 40, 60] and list(windows[-1][30:]) == [0] * 10  # padded at the end
    windows, starts = cut_windows(x[:25], 40, 20)
    assert list(starts) == [0] and windows.shape == (1, 40) and windows[0, 25:].sum() == 0


# Margin of the top class over the second for this clip with tiny_checkpoint: 0.011 (both alone
# and in the long file), far above any rounding difference between CPUs.
LONG_CLIP = "118101-3-0-3.wav"


@pytest.mark.slow
def test_a_long_recording_with_leading_silence_gets_the_top_class_of_its_sound(
        tiny_checkpoint: Path, real_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = _clip(real_sample, LONG_CLIP)
    x, sr = sf.read(clip, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    assert len(x) == 4 * sr
    long = tmp_path / "thirty-seconds.wav"
    sf.write(long, np.concatenate([np.zeros(10 * sr, np.float32)] + [x] * 5), sr)  # 10 s silence, 20 s sound
    clf = Classifier.from_checkpoint(tiny_checkpoint)
    alone = clf.classify(clf.load(clip))
    whole = clf.classify(clf.load(long))
    assert whole.top(1)[0][0] == alone.top(1)[0][0]
    sound = whole.sound
    assert len(sound.windows) == 14 and list(sound.starts[:3] / 8000) == [0.0, 2.0, 4.0]
    assert sound.silent[:3].all() and not sound.silent[5:].any()  # what the model hears of 0-10 s is silence
    assert sound.what_was_classified().startswith("30.0 s, 14 windows of 4 s (hop 2 s), ")
    heard = ~sound.silent
    np.testing.assert_allclose(whole.probabilities, whole.window_probabilities[heard].mean(axis=0))
    assert np.isnan(whole.window_probabilities[~heard]).all()
    # The first 4 s alone are silent: that is what the old 'first 4 s' prediction classified.
    with pytest.raises(AudioError, match="silent"):
        load_sound_of_the_first_seconds(long, tmp_path, 4)
    # The command says what it classified and writes every window's scores.
    report = tmp_path / "p.json"
    assert cli.main(["predict", str(tiny_checkpoint), str(long), "--json", str(report)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"{long}  ({sound.what_was_classified()})"
    assert out[2].split()[1] == alone.top(1)[0][0]
    data = json.loads(report.read_text())["predictions"][0]
    assert data["classified"] == sound.what_was_classified() and len(data["windows"]) == 14
    assert data["windows"][0] == {"start": 0.0, "end": 4.0, "silent": True}
    last = data["windows"][-1]
    assert (last["start"], last["end"], last["silent"]) == (26.0, 30.0, False)
    assert sum(last["probabilities"].values()) == pytest.approx(1.0)


def load_sound_of_the_first_seconds(path: Path, tmp_path: Path, seconds: int) -> object:
    x, sr = sf.read(path, dtype="float32")
    sf.write(tmp_path / "first.wav", x[: seconds * sr], sr)
    return load_sound(tmp_path / "first.wav")


@pytest.mark.slow
def test_a_recording_silent_in_every_window_is_reported_silent(tmp_path: Path) -> None:
    path = tmp_path / "quiet.wav"
    sf.write(path, np.full(9 * 8000, 1e-6, np.float32), 8000)
    with pytest.raises(AudioError, match=r"silent: its loudest sample, as the model hears it"):
        load_sound(path)
