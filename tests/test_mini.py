"""The mini UrbanSound8K: real rows, synthetic audio in the real format mix, deterministic, atomic."""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from us8k_lib.datasets import mini
from us8k_lib.errors import US8KError
from us8k_lib.metadata import CLASSES, check_leakage, load_metadata, reference_metadata_path
from us8k_lib.paths import is_mini


def _hashes(dataset: Path) -> dict[str, str]:
    return {p.relative_to(dataset).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dataset.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_hashes(tiny_root: Path) -> dict[str, str]:
    return _hashes(tiny_root)


@pytest.fixture(scope="module")
def tiny_table(tiny_root: Path) -> pd.DataFrame:
    """The tiny dataset's rows plus what soundfile.info says about each file."""
    df = load_metadata(tiny_root)
    infos = [sf.info(str(tiny_root / "audio" / f"fold{r.fold}" / r.slice_file_name)) for r in df.itertuples()]
    return df.assign(container=[i.format for i in infos], subtype=[i.subtype for i in infos],
                     samplerate=[i.samplerate for i in infos], channels=[i.channels for i in infos],
                     frames=[i.frames for i in infos])


# ----------------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path, tiny_root: Path,
                                                                tiny_hashes: dict[str, str]) -> None:
    # A dataset with the same seed and size but from an older generator is stale: regenerated.
    stale_dataset = tmp_path / "UrbanSound8K"
    stale_dataset.mkdir()
    (stale_dataset / mini.MARKER_NAME).write_text("seed: 0\nsize: tiny\ngenerator: 0\n")
    again = mini.make_mini(tmp_path, seed=0, size="tiny", progress=False, workers=1)
    assert again == stale_dataset.resolve() != tiny_root
    assert _hashes(again) == tiny_hashes  # other worker count, other folder, later time: same bytes

    with pytest.raises(US8KError, match="different mini dataset.*overwrite"):
        mini.make_mini(tmp_path, seed=1, size="tiny", progress=False)
    stale = tmp_path / ".UrbanSound8K.tmp-crashed"
    stale.mkdir()
    (stale / "junk.wav").write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    other = mini.make_mini(tmp_path, seed=1, size="tiny", overwrite=True, progress=False)
    assert other == again
    assert mini.read_marker(other)["seed"] == "1"
    assert not stale.exists(), "a temp folder left by a crashed run hours ago is cleaned up"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["UrbanSound8K"]
    hashes = _hashes(other)
    assert hashes["metadata/UrbanSound8K.csv"] != tiny_hashes["metadata/UrbanSound8K.csv"]
    common = [k for k in hashes if k.startswith("audio/") and k in tiny_hashes]
    assert all(hashes[k] != tiny_hashes[k] for k in common)  # rows both seeds picked get new audio too
    row = load_metadata(other).iloc[0]
    assert not np.array_equal(mini._render(row, 8000, 1, 0), mini._render(row, 8000, 1, 1))


def test_float_files_carry_no_timestamp(tiny_root: Path, tiny_table: pd.DataFrame) -> None:
    # libsndfile writes a PEAK chunk with the current time into float files unless it is removed.
    floats = tiny_table[tiny_table["subtype"] == "FLOAT"]
    assert len(floats) > 0
    for r in floats.itertuples():
        assert b"PEAK" not in (tiny_root / "audio" / f"fold{r.fold}" / r.slice_file_name).read_bytes()[:200]


# ----------------------------------------------------------------------------------- rows

def test_csv_is_a_valid_real_subset(tiny_root: Path) -> None:
    csv = tiny_root / "metadata" / "UrbanSound8K.csv"
    real_lines = reference_metadata_path().read_bytes().splitlines(keepends=True)
    lines = csv.read_bytes().splitlines(keepends=True)
    assert lines[0] == real_lines[0] == b"slice_file_name,fsID,start,end,salience,fold,classID,class\n"
    assert set(lines[1:]) <= set(real_lines[1:]), "every row is byte-for-byte a row of the real CSV"
    assert len(set(lines[1:])) == len(lines) - 1

    df = load_metadata(tiny_root)  # raises MetadataError if any rule is broken
    assert len(df) == mini.SIZES["tiny"].n_clips == 110
    assert df["fsID"].map(df.groupby("fsID")["fold"].nunique()).max() == 1, "no recording spans folds"
    assert check_leakage(df).ok
    table = df.groupby(["fold", "classID"]).size().unstack(fill_value=0)
    assert list(table.columns) == list(range(10)) and list(table.index) == list(range(1, 11))
    assert (table.loc[1:9] == 1).all().all() and (table.loc[10] == 2).all()
    for r in df.itertuples():
        assert (tiny_root / "audio" / f"fold{r.fold}" / r.slice_file_name).is_file()
    assert sum(1 for _ in (tiny_root / "audio").rglob("*.wav")) == len(df)


@pytest.mark.parametrize("size", ["mini", "medium"])
def test_sizes_as_documented(size: str) -> None:
    plan = mini.plan_mini(seed=0, size=size)
    spec = mini.SIZES[size]
    assert len(plan) == spec.n_clips
    table = plan.groupby(["fold", "classID"]).size().unstack(fill_value=0)
    assert (table.loc[1:9] == spec.per_class_fold).all().all()
    assert (table.loc[10] == spec.per_class_test).all()
    assert plan["fsID"].map(plan.groupby("fsID")["fold"].nunique()).max() == 1
    # Recordings contribute runs of several slices, as in the real data; longer runs than the size's
    # maximum only where the (class, fold) has too few recordings, and then all of them are used.
    per_recording = plan.groupby(["classID", "fold", "fsID"]).size()
    assert (per_recording >= 2).sum() >= 20
    real = load_metadata()
    real = real[real["fsID"].map(real.groupby("fsID")["fold"].nunique()) == 1]
    available = real.groupby(["classID", "fold"])["fsID"].nunique()
    used = per_recording.groupby(["classID", "fold"]).size()
    longest = per_recording.groupby(["classID", "fold"]).max()
    crowded = longest[longest > spec.max_slices_per_recording].index
    assert (used[crowded] == available[crowded]).all()
    assert len(crowded) < 10
    if size == "mini":  # the training command needs the 360 clips of folds 1-9
        assert (plan["fold"] != 10).sum() == 360


def test_selection_is_deterministic_and_seed_dependent() -> None:
    real = load_metadata()
    a, b, c = (mini.select_rows(seed, "tiny", metadata=real) for seed in (0, 0, 1))
    assert a["slice_file_name"].tolist() == b["slice_file_name"].tolist()
    assert a["slice_file_name"].tolist() != c["slice_file_name"].tolist()
    assert a["slice_file_name"].map(dict(zip(real["slice_file_name"], real.index))).is_monotonic_increasing


def test_unknown_size_and_bad_seed_are_errors(tmp_path: Path) -> None:
    with pytest.raises(US8KError, match="unknown mini dataset size 'huge'"):
        mini.make_mini(tmp_path, size="huge")
    with pytest.raises(US8KError, match="seed"):
        mini.make_mini(tmp_path, seed=-1)
    assert not (tmp_path / "UrbanSound8K").exists()


# ----------------------------------------------------------------------------------- formats

def test_files_show_the_real_format_mix(tiny_table: pd.DataFrame) -> None:
    t = tiny_table
    assert set(t["subtype"]) >= {"PCM_16", "PCM_24", "FLOAT", "PCM_U8"}
    assert {"MS_ADPCM", "IMA_ADPCM"} & set(t["subtype"])
    assert set(t["container"]) == {"WAV", "WAVEX"}
    assert (t.loc[t["container"] == "WAVEX", "subtype"] == "PCM_24").all()
    assert t["samplerate"].min() <= 11025 and t["samplerate"].max() == 96000
    assert len(set(t["samplerate"])) >= 6
    assert set(t["channels"]) == {1, 2}
    assert 0.5 < (t["channels"] == 2).mean() < 0.95
    # The commonest format is the real dataset's commonest one.
    commonest = Counter(zip(t["subtype"], t["samplerate"], t["channels"])).most_common(1)[0][0]
    assert commonest == ("PCM_16", 44100, 2)
    # Every format of the table appears, even the rare ones, in every size.
    seen = set(zip(t["container"], t["subtype"], t["samplerate"], t["channels"]))
    assert seen == {(f.container, f.subtype, f.samplerate, f.channels) for f in mini.FORMATS}


def test_durations_match_end_minus_start(tiny_table: pd.DataFrame) -> None:
    t = tiny_table
    expected = ((t["end"] - t["start"]) * t["samplerate"]).round()
    adpcm = t["subtype"].str.endswith("ADPCM")
    assert ((t["frames"] - expected).abs()[~adpcm] <= 1).all()
    # ADPCM is stored in whole blocks (< 4096 frames at 44.1 kHz mono): padded with silence.
    assert ((t["frames"] - expected)[adpcm] >= 0).all() and ((t["frames"] - expected)[adpcm] < 4096).all()
    assert (t["end"] - t["start"]).max() == pytest.approx(4.0)


def test_audio_is_sane(tiny_root: Path, tiny_table: pd.DataFrame) -> None:
    for r in tiny_table.itertuples():
        x, sr = sf.read(str(tiny_root / "audio" / f"fold{r.fold}" / r.slice_file_name), always_2d=True)
        if r.subtype.endswith("ADPCM"):
            x = x[: int(round((r.end - r.start) * sr))]
        peak = np.abs(x).max()
        assert np.isfinite(x).all()
        assert 10 ** (-17 / 20) < peak < 10 ** (-1.5 / 20), (r.slice_file_name, peak)  # no clipping
        if r.channels == 2:
            assert not np.allclose(x[:, 0], x[:, 1]), "stereo channels differ, as in real recordings"


def test_format_is_independent_of_class() -> None:
    plan = mini.plan_mini(seed=0, size="mini")
    # The format is drawn per recording from a stream that never sees the class, so every class
    # comes in many formats, and the mix of formats does not tell the classes apart.
    assert plan.groupby("classID")["format"].nunique().min() >= 4
    group = np.select([plan["format"] == 0, plan["format_label"].str.contains("PCM_24")], [0, 1], 2)
    units = plan.assign(group=group).drop_duplicates(["fsID", "classID"])  # recordings, not slices
    observed = pd.crosstab(units["classID"], units["group"]).to_numpy(float)
    expected = observed.sum(1, keepdims=True) * observed.sum(0, keepdims=True) / observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 34.81  # chi-square critical value, 18 degrees of freedom, p = 0.01


def test_write_wav_round_trips_every_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i, fmt in enumerate(mini.FORMATS):
        x = (0.3 * np.sin(np.arange(1000)[:, None] * [0.05, 0.07][: fmt.channels])
             + 0.01 * rng.standard_normal((1000, fmt.channels))).astype(np.float32)
        path = tmp_path / f"{i}.wav"
        mini.write_wav(path, x, fmt)
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == \
            (fmt.container, fmt.subtype, fmt.samplerate, fmt.channels)
        y, _ = sf.read(str(path), dtype="float32", always_2d=True)
        tol = {"PCM_U8": 0.02, "MS_ADPCM": 0.08, "IMA_ADPCM": 0.08}.get(fmt.subtype, 1e-3)
        assert np.abs(y[:1000] - x).max() < tol, fmt.label
        assert np.abs(y[1000:]).max(initial=0) < tol and np.abs(y[1032:]).max(initial=0) < 0.01  # silent padding


# ----------------------------------------------------------------------------------- signals

def _foreground(class_name: str, seed: int, sr: int = 16000, seconds: float = 4.0) -> np.ndarray:
    row = {"slice_file_name": f"{100 + seed}-{CLASSES.index(class_name)}-0-0.wav", "fsID": 100 + seed,
           "classID": CLASSES.index(class_name), "start": 0.0, "end": seconds, "salience": 1}
    fg, _, _ = mini._render(row, sr, 1, seed, parts=True)
    return fg[:, 0].astype(np.float64)


def _frame_peak_freqs(x: np.ndarray, sr: int, frame: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    frames = x[: x.size // frame * frame].reshape(-1, frame) * np.hanning(frame)
    spec = np.abs(np.fft.rfft(frames, axis=1))
    loud = spec.max(1) > 0.1 * spec.max()
    return np.fft.rfftfreq(frame, 1 / sr)[spec.argmax(1)], loud


def _centroid(x: np.ndarray, sr: int) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float((np.fft.rfftfreq(x.size, 1 / sr) * power).sum() / power.sum())


def _envelope_rate(x: np.ndarray, sr: int) -> float:
    """Strongest amplitude-modulation frequency (Hz) between 4 and 60 Hz."""
    hop = sr // 400
    env = np.sqrt((x[: x.size // hop * hop] ** 2).reshape(-1, hop).mean(1))
    spec = np.abs(np.fft.rfft(env - env.mean()))
    freqs = np.fft.rfftfreq(env.size, 1 / 400)
    band = (freqs >= 4) & (freqs <= 60)
    return float(freqs[band][spec[band].argmax()])


@pytest.mark.parametrize("seed", range(4))
def test_class_signatures(seed: int) -> None:
    sr = 16000
    # A siren sweeps its pitch; a car horn holds it.
    siren_f, loud = _frame_peak_freqs(_foreground("siren", seed), sr)
    assert siren_f[loud].max() / siren_f[loud].min() > 1.1 and 500 < np.median(siren_f[loud]) < 2500
    # A jackhammer hits 12-25 times a second.
    assert 11 <= _envelope_rate(_foreground("jackhammer", seed), sr) <= 26
    # Engine rumble is low, a drill's whine high.
    engine = _foreground("engine_idling", seed)
    assert _centroid(engine, sr) < 600 < 900 < _centroid(_foreground("drilling", seed), sr)
    # A gun shot is an impulse: a huge peak over its average level; an air conditioner is steady.
    shot, ac = _foreground("gun_shot", seed), _foreground("air_conditioner", seed)
    assert np.abs(shot).max() / np.sqrt((shot**2).mean()) > 8 > 5 > np.abs(ac).max() / np.sqrt((ac**2).mean())


def _loud_runs(x: np.ndarray, sr: int, frame: int = 160) -> tuple[np.ndarray, float]:
    """Lengths (s) of the runs of 10 ms frames within 13 dB of the loudest, and their share of time."""
    energy = (x[: x.size // frame * frame].reshape(-1, frame) ** 2).mean(1)
    loud = energy > 0.05 * energy.max()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(int), [0]])))
    return (edges[1::2] - edges[::2]) * frame / sr, float(loud.mean())


@pytest.mark.parametrize("seed", range(3))
def test_barks_are_short_bursts_and_hums_are_steady(seed: int) -> None:
    runs, share = _loud_runs(_foreground("dog_bark", seed), 16000)
    assert len(runs) >= 2 and runs.max() <= 0.4 and share < 0.5
    for steady in ("air_conditioner", "siren"):
        runs, share = _loud_runs(_foreground(steady, seed), 16000)
        assert share > 0.9, steady


def test_salience_two_is_quieter_than_the_background() -> None:
    for salience in (1, 2):
        for seed in range(6):
            class_id = seed % 10
            row = {"slice_file_name": f"7-{class_id}-0-{seed}.wav", "fsID": 7, "classID": class_id,
                   "start": 2.0 * seed, "end": 2.0 * seed + 4.0, "salience": salience}
            fg, bg, gain = mini._render(row, 22050, 2, 0, parts=True)
            fg_level = mini._active_level(fg[:, 0].astype(np.float64), 22050)
            bg_level = float(np.sqrt((bg[:, 0].astype(np.float64) ** 2).mean()))
            assert (fg_level < bg_level) == (salience == 2), (salience, seed, fg_level, bg_level)


def test_slices_of_one_recording_share_source_but_differ() -> None:
    a = mini.synthesize("siren", 2.0, seed=0, recording=5)
    b = mini.synthesize("siren", 2.0, seed=0, recording=5)
    c = mini.synthesize("siren", 2.0, seed=0, recording=6)
    assert a.dtype == np.float32 and a.shape == (44100, 1)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    with pytest.raises(US8KError, match="unknown class"):
        mini.synthesize("thunder")
    with pytest.raises(US8KError, match="salience 3"):
        mini.synthesize("siren", salience=3)


# ----------------------------------------------------------------------------------- folder

def test_marker_and_noop(tiny_root: Path, tiny_hashes: dict[str, str]) -> None:
    marker = (tiny_root / mini.MARKER_NAME).read_text()
    assert is_mini(tiny_root)
    assert "synthetic" in marker.lower() and "CC BY-NC 3.0" in marker and "Salamon" in marker
    fields = mini.read_marker(tiny_root)
    assert (fields["seed"], fields["size"], fields["generator"]) == ("0", "tiny", str(mini.GENERATOR_VERSION))
    before = {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*")}
    assert mini.make_mini(tiny_root.parent, seed=0, size="tiny") == tiny_root
    assert {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*")} == before
    assert _hashes(tiny_root) == tiny_hashes


def test_partial_temp_folder_does_not_confuse_it(tmp_path: Path) -> None:
    partial = tmp_path / ".UrbanSound8K.tmp-123-abcd"
    (partial / "metadata").mkdir(parents=True)
    (partial / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name\n")
    calls = 0
    real_write_row = mini._write_row

    def failing(*args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("disk full")
        real_write_row(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mini, "_write_row", failing)
        with pytest.raises(OSError, match="disk full"):
            mini.make_mini(tmp_path, seed=0, size="tiny", progress=False, workers=1)
    # The interrupted run left neither a dataset nor its own temp folder; the old one is untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == [partial.name]
    assert (partial / "metadata" / "UrbanSound8K.csv").read_text() == "slice_file_name\n"


def test_failed_rebuild_keeps_the_old_dataset(tiny_root: Path, tiny_hashes: dict[str, str]) -> None:
    def failing(*args: object) -> None:
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mini, "_write_row", failing)
        with pytest.raises(OSError, match="disk full"):  # overwrite rebuilds even an identical dataset
            mini.make_mini(tiny_root.parent, seed=0, size="tiny", overwrite=True, progress=False)
    assert _hashes(tiny_root) == tiny_hashes
    assert sorted(p.name for p in tiny_root.parent.iterdir()) == ["UrbanSound8K"]


def test_never_replaces_a_folder_that_is_not_a_mini_dataset(tmp_path: Path) -> None:
    real = tmp_path / "UrbanSound8K"
    (real / "metadata").mkdir(parents=True)
    (real / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name\n")
    for overwrite in (False, True):
        with pytest.raises(US8KError, match="not a generated mini dataset"):
            mini.make_mini(tmp_path, seed=0, size="tiny", overwrite=overwrite)
    assert (real / "metadata" / "UrbanSound8K.csv").read_text() == "slice_file_name\n"


def test_command_prints_a_summary(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(root=str(tiny_root.parent), seed=0, size="tiny", force=False)
    from us8k_lib.cli.data import make_mini_command

    assert make_mini_command(args) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "110 clips" in out
    assert "1: 10, 2: 10" in out and "10: 20" in out
    assert f"{len(mini.FORMATS)} WAV formats" in out and "synthetic" in out


def test_cli_reports_bad_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from us8k_lib.cli.parser import main

    with pytest.raises(SystemExit) as exit_:  # a usage error: argparse's line, exit 2, nothing written
        main(["make-mini", "--root", str(tmp_path), "--size", "huge"])
    assert exit_.value.code == 2
    assert "argument --size: expected one of tiny, mini, medium, got 'huge'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
