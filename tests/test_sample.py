"""The bundled real sample: 20 genuine UrbanSound8K clips shipped in the package, with credits.

These tests need no ../shared: the sample is part of the package. One extra check compares the
credits with the dataset's own attribution list when ../shared is present.
"""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from us8k_lib import cli, listen, paths
from us8k_lib.audio import TARGET_LENGTH, format_clip, read_header, read_wav
from us8k_lib.dataset import US8KDataset
from us8k_lib.datasets.validate import validate_dataset
from us8k_lib.metadata import CLASSES, load_metadata, reference_metadata_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = paths.sample_root()


def _credits() -> list[dict[str, str]]:
    with open(SAMPLE / "CREDITS.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_sample_validates_clean_including_published_checksums() -> None:
    report = validate_dataset(SAMPLE, checksums=True, progress=False)
    assert report.ok, report.summary()
    assert (report.listed, report.checked, report.checksums) == (20, 20, "checked")


@pytest.mark.parametrize("how", ["--root", "US8K_ROOT"])
def test_validate_command_accepts_the_word_sample(how: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if how == "--root":
        monkeypatch.delenv("US8K_ROOT", raising=False)
        argv = ["validate", "--root", "sample", "--checksums"]
    else:
        monkeypatch.setenv("US8K_ROOT", "sample")
        argv = ["validate", "--checksums"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "bundled real sample" in out and f"Validated {SAMPLE}: 20 clips listed, 20 decoded" in out
    assert out.rstrip().endswith("OK: no problems found.")


def test_metadata_holds_the_original_rows_two_recordings_per_class() -> None:
    original = reference_metadata_path().read_text(encoding="utf-8").splitlines()
    mine = (SAMPLE / paths.METADATA_RELPATH).read_text(encoding="utf-8").splitlines()
    assert mine[0] == original[0]
    assert len(mine) == 21 and set(mine[1:]) <= set(original[1:])  # rows unchanged, byte for byte
    meta = load_metadata(SAMPLE)
    assert meta.groupby("class").size().to_dict() == {c: 2 for c in CLASSES}
    assert meta["fsID"].nunique() == 20  # two different recordings per class
    assert sorted(meta["fold"].unique()) == [1, 3, 5, 7, 9]


def test_formats_span_the_datasets_range_and_match_the_credits() -> None:
    headers = {}
    for row in _credits():
        h = read_header(SAMPLE / "audio" / f"fold{row['fold']}" / row["slice_file_name"])
        headers[row["slice_file_name"]] = h
        assert row["format"] == f"{h['subtype']} {h['channels']}ch {h['samplerate']} Hz", row
    rates = {h["samplerate"] for h in headers.values()}
    assert {8000, 22050, 44100, 48000, 96000} <= rates
    assert {h["subtype"] for h in headers.values()} == {"PCM_16", "PCM_24"}
    assert {h["channels"] for h in headers.values()} == {1, 2}
    assert headers["71171-4-0-0.wav"]["description"] == "WAVE_FORMAT_EXTENSIBLE PCM 24-bit stereo 96 kHz"


def test_every_clip_decodes_and_formats_for_the_model() -> None:
    meta = load_metadata(SAMPLE)
    for r in meta.itertuples():
        path = paths.clip_path(SAMPLE, r.fold, r.slice_file_name)
        x, sr = read_wav(path)
        assert abs(x.shape[0] / sr - (r.end - r.start)) < 0.01, path
        # Real levels vary: the quietest clip (children playing far off) peaks at -48 dBFS.
        peak = float(np.abs(x).max())
        assert np.isfinite(x).all() and 0.003 < peak <= 1.0, path
        y = format_clip(path)
        assert y.shape == (TARGET_LENGTH,) and 0.3 * peak < np.abs(y).max() < 1.5 * peak, path


def test_credits_and_licence_name_every_author_and_recording() -> None:
    authors = _credits()
    meta = load_metadata(SAMPLE).set_index("slice_file_name")
    assert sorted(r["slice_file_name"] for r in authors) == sorted(meta.index)
    readme = (SAMPLE / "README.md").read_text(encoding="utf-8")
    for r in authors:
        assert int(r["fsID"]) == meta.at[r["slice_file_name"], "fsID"]
        assert r["class"] == meta.at[r["slice_file_name"], "class"]
        assert int(r["fold"]) == meta.at[r["slice_file_name"], "fold"]
        assert r["freesound_url"] == f"https://freesound.org/people/{r['freesound_user']}/sounds/{r['fsID']}/"
        line = next(ln for ln in readme.splitlines() if r["slice_file_name"] in ln)
        assert r["freesound_user"] in line and r["freesound_url"] in line, line
    assert len({r["freesound_user"] for r in authors}) == 18  # one author recorded three of the clips
    assert "CC BY-NC 3.0" in readme and "https://creativecommons.org/licenses/by-nc/3.0/" in readme
    assert "J. Salamon, C. Jacoby and J. P. Bello" in readme and "A Dataset and Taxonomy for Urban Sound" in readme


def test_credits_agree_with_the_datasets_own_attribution_list(shared_reference: Path) -> None:
    text = (shared_reference / "FREESOUNDCREDITS.txt").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^(\d+) by (\S+)$", text, flags=re.M))
    for r in _credits():
        assert listed[r["fsID"]] == r["freesound_user"], r


def test_sample_is_small() -> None:
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 15e6, f"{size / 1e6:.1f} MB"


def test_package_data_ships_every_file_of_the_sample() -> None:
    """A pip install (not only this editable checkout) must carry the sample."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["us8k_lib"]
    package = SAMPLE.parents[1]
    files = [PurePosixPath(p.relative_to(package).as_posix()) for p in SAMPLE.rglob("*") if p.is_file()]
    assert len(files) == 23  # 20 clips, the metadata CSV, CREDITS.csv, README.md
    unshipped = [f for f in files if not any(len(f.parts) == len(PurePosixPath(g).parts) and f.match(g)
                                             for g in patterns)]
    assert not unshipped


def test_dataset_cache_and_clip_browser_work_on_the_sample(tmp_path: Path) -> None:
    ds = US8KDataset(SAMPLE, folds=range(1, 11), cache_dir=tmp_path, progress=False)
    assert len(ds) == 20 and sorted(set(ds.table["fold"])) == [1, 3, 5, 7, 9]
    x, label = ds[0]
    assert tuple(x.shape) == (1, TARGET_LENGTH)
    assert CLASSES[label] == ds.table.iloc[0]["class"]
    assert np.array_equal(x[0].numpy(), format_clip(paths.clip_path(SAMPLE, ds.table.iloc[0]["fold"],
                                                                     ds.table.iloc[0]["slice_file_name"])))
    browser = listen.ClipBrowser(SAMPLE, class_name="drilling", fold=5)
    assert browser.path == SAMPLE / "audio" / "fold5" / "71171-4-0-0.wav"
    assert browser.samples[1] == 96000 and len(browser.image.value) > 1000
    assert list(browser.class_dropdown.options) == list(CLASSES)
