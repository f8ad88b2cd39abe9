"""Which dataset a command or notebook uses: explicit root > US8K_ROOT > data/UrbanSound8K > mini."""

from __future__ import annotations

from pathlib import Path

import pytest

from us8k_lib import paths
from us8k_lib.errors import DatasetNotFoundError


def _fake_dataset(parent: Path) -> Path:
    root = parent / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name\n")
    return root


@pytest.fixture()
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty data dir and no US8K_ROOT, so nothing of the developer's machine leaks in."""
    monkeypatch.delenv("US8K_ROOT", raising=False)
    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_root_accepts_dataset_folder_or_its_parent(isolated: Path) -> None:
    root = _fake_dataset(isolated / "somewhere")
    assert paths.normalize_root(root) == root.resolve()
    assert paths.normalize_root(root.parent) == root.resolve()


@pytest.mark.parametrize("make", ["missing", "file", "empty_dir"])
def test_bad_root_names_the_path(isolated: Path, make: str) -> None:
    target = isolated / "bad"
    if make == "file":
        target.write_text("x")
    elif make == "empty_dir":
        target.mkdir()
    with pytest.raises(DatasetNotFoundError, match=str(target)):
        paths.normalize_root(target)


def test_resolution_order(isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[Path] = []

    def fake_make_mini(root: Path, *, seed: int) -> Path:
        calls.append(Path(root))
        return _fake_dataset(Path(root))

    monkeypatch.setattr("us8k_lib.datasets.mini.make_mini", fake_make_mini)
    # nothing there: the mini dataset is generated into <data dir>/mini
    mini = paths.resolve_root()
    assert calls == [isolated / "data" / "mini"] and mini == isolated / "data" / "mini" / "UrbanSound8K"
    assert "mini dataset" in capsys.readouterr().out
    # a downloaded dataset in the data dir wins over the mini one
    downloaded = _fake_dataset(isolated / "data")
    assert paths.resolve_root() == downloaded.resolve()
    # US8K_ROOT wins over the data dir
    env_root = _fake_dataset(isolated / "env")
    monkeypatch.setenv("US8K_ROOT", str(env_root.parent))
    assert paths.resolve_root() == env_root.resolve()
    assert "US8K_ROOT" in capsys.readouterr().out
    # an explicit argument wins over everything
    explicit = _fake_dataset(isolated / "explicit")
    assert paths.resolve_root(explicit, verbose=False) == explicit.resolve()
    assert capsys.readouterr().out == ""
    assert len(calls) == 1


def test_bad_us8k_root_is_an_error_not_a_fallback(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("US8K_ROOT", str(isolated / "typo"))
    with pytest.raises(DatasetNotFoundError, match="typo"):
        paths.resolve_root()


def test_clip_path_layout() -> None:
    assert paths.clip_path(Path("R"), 3, "1-2-3-4.wav") == Path("R/audio/fold3/1-2-3-4.wav")


def test_data_dir_is_the_checkout_when_installed_editable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("US8K_DATA_DIR", raising=False)
    assert paths.project_data_dir() == Path(__file__).resolve().parents[1] / "data"


# ---------------------------------------------------------------------------------------------
# The bundled real sample: the word "sample" wherever a root is accepted


def test_sample_root_is_a_dataset_folder_inside_the_package() -> None:
    root = paths.sample_root()
    assert root == Path(paths.__file__).resolve().parent / "data" / "sample"
    assert (root / paths.METADATA_RELPATH).is_file()
    assert paths.normalize_root(root) == root
    assert paths.is_sample(root) and paths.is_sample("sample") and not paths.is_sample(root.parent)


def test_the_word_sample_selects_the_bundled_sample(isolated: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert paths.normalize_root(paths.SAMPLE) == paths.sample_root()
    assert paths.resolve_root("sample") == paths.sample_root()
    assert "bundled real sample" in capsys.readouterr().out
    monkeypatch.setenv("US8K_ROOT", "sample")
    assert paths.resolve_root() == paths.sample_root()
    out = capsys.readouterr().out
    assert "bundled real sample" in out and "US8K_ROOT" in out
    # An explicit root still wins over US8K_ROOT=sample.
    explicit = _fake_dataset(isolated / "explicit")
    assert paths.resolve_root(explicit, verbose=False) == explicit.resolve()


def test_a_folder_called_sample_is_reached_as_dot_slash_sample(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _fake_dataset(isolated / "sample")
    monkeypatch.chdir(isolated)
    assert paths.normalize_root("sample") == paths.sample_root()
    assert paths.normalize_root("./sample") == mine.resolve()
    assert paths.normalize_root(Path("sample")) == mine.resolve()


def test_describe_dataset_says_synthesized_or_real(tiny_root: Path) -> None:
    assert paths.describe_dataset(tiny_root) == "generated mini dataset (synthesized sounds)"
    assert paths.describe_dataset(paths.sample_root()) == "bundled real sample (20 real recordings)"
    assert paths.describe_dataset("sample") == "bundled real sample (20 real recordings)"
    assert paths.describe_dataset(Path("/elsewhere/UrbanSound8K")) == "UrbanSound8K (real recordings)"


def test_sample_credits_one_row_per_clip() -> None:
    authors = paths.sample_credits()
    assert list(authors.columns) == ["slice_file_name", "fold", "class", "fsID", "format", "freesound_user",
                                     "freesound_url"]
    assert len(authors) == 20 and authors["slice_file_name"].is_unique
    assert (authors["fold"].dtype, authors["fsID"].dtype) == ("int64", "int64")
