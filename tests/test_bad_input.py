"""The bad-input suite: each case breaks a dataset (or an archive, or a server) in one specific way,
runs what a learner would run, checks the error or report names the file and the problem, and then
checks the learner's files are all still there and unchanged.

Every case gets a fresh folder (``tmp_path``) holding "the user's data"; the harness hashes the
whole folder before and after the action. Only cases that legitimately create something (a
download that succeeds, a preprocessing cache) may add files, and only under the paths they name.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from archive_server import ArchiveServer, Behaviour, dataset_tarball, evil_tarball, md5, small_dataset, snapshot

from us8k_lib.audio import read_wav
from us8k_lib.cli.parser import main
from us8k_lib.datasets.download import download_dataset
from us8k_lib.datasets.validate import PROBLEM_KEYS, validate_dataset
from us8k_lib.errors import AudioError, DatasetNotFoundError, DownloadError, MetadataError, UnsafeArchiveError
from us8k_lib.metadata import load_metadata

N_CLIPS = 12  # a small dataset keeps each case fast; validate's thoroughness is test_validate's job


@pytest.fixture(scope="module")
def small_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid UrbanSound8K folder with the first N_CLIPS rows of the tiny dataset (read-only)."""
    root = small_dataset(tiny_root, tmp_path_factory.mktemp("small") / "UrbanSound8K", N_CLIPS)
    assert validate_dataset(root, progress=False).ok
    return root


@pytest.fixture(scope="module")
def tarball(small_root: Path) -> tuple[bytes, str]:
    data = dataset_tarball(small_root)
    return data, md5(data)


@dataclass
class Env:
    tmp: Path
    small_root: Path
    tarball: tuple[bytes, str]

    def dataset(self) -> Path:
        """A writable copy of the small dataset inside the case's folder."""
        return Path(shutil.copytree(self.small_root, self.tmp / "UrbanSound8K"))


# -- helpers ---------------------------------------------------------------------------------------

def csv_path(root: Path) -> Path:
    return root / "metadata" / "UrbanSound8K.csv"


def read_csv(root: Path) -> list[list[str]]:
    with open(csv_path(root), newline="") as f:
        return list(csv.reader(f))


def write_csv(root: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    csv_path(root).write_text(buf.getvalue())


def set_cell(root: Path, row: int, column: str, value: str) -> str:
    """Set one cell (row counted from 1, as MetadataError counts); return that row's file name."""
    rows = read_csv(root)
    rows[row][rows[0].index(column)] = value
    write_csv(root, rows)
    return rows[row][0]


def clip(root: Path, index: int, *, min_seconds: float = 0.0) -> Path:
    df = load_metadata(root)
    row = df[df["end"] - df["start"] >= min_seconds].iloc[index]
    return root / "audio" / f"fold{row['fold']}" / row["slice_file_name"]


def expect_metadata_problem(root: Path, pattern: str) -> None:
    """load_metadata raises MetadataError naming the CSV, and validate reports the same problem."""
    with pytest.raises(MetadataError) as err:
        load_metadata(root)
    assert str(err.value).startswith(str(csv_path(root)))
    assert any(re.search(pattern, v) for v in err.value.violations), (pattern, err.value.violations)
    report = validate_dataset(root, progress=False)
    assert not report.ok
    assert any(re.search(pattern, v) for v in report.metadata_problems), report.metadata_problems


def expect_report(root: Path, key: str, path: Path, problem: str) -> None:
    """validate reports exactly this file under exactly this key, with ``problem`` in its text."""
    report = validate_dataset(root, progress=False)
    assert {k: report.files(k) for k in PROBLEM_KEYS if report.files(k)} == {key: [path.name]}
    assert not report.metadata_problems
    (entry,) = report.to_dict()["details"][key]
    assert problem in entry["problem"], entry


def expect_audio_error(path: Path, problem: str) -> None:
    """Decoding raises AudioError whose message starts with the file and says what is wrong."""
    with pytest.raises(AudioError) as err:
        read_wav(path)
    assert str(err.value).startswith(f"{path}: ")
    assert problem in err.value.problem


def rewrite(path: Path, fn: Callable[[np.ndarray], np.ndarray], subtype: str) -> None:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    sf.write(path, fn(x), sr, subtype=subtype, format="WAV")


# -- the cases -------------------------------------------------------------------------------------

Action = Callable[[], None]
CASES: dict[str, tuple[Callable[[Env], Action], tuple[str, ...]]] = {}


def case(*creates: str) -> Callable:
    """Register a case; ``creates`` are the relative paths under which it may add files."""
    def register(fn: Callable[[Env], Action]) -> Callable[[Env], Action]:
        CASES[fn.__name__] = (fn, creates)
        return fn
    return register


@case()
def missing_root(env: Env) -> Action:
    root = env.tmp / "no-such-folder"

    def act() -> None:
        with pytest.raises(DatasetNotFoundError, match=f"^{root}: dataset root does not exist"):
            validate_dataset(root, progress=False)
        assert main(["validate", "--root", str(root)]) == 1
        assert not root.exists()
    return act


@case()
def missing_csv(env: Env) -> Action:
    root = env.dataset()
    csv_path(root).unlink()

    def act() -> None:
        with pytest.raises(DatasetNotFoundError, match=f"^{root}: no metadata/UrbanSound8K.csv"):
            validate_dataset(root, progress=False)
    return act


@case()
def missing_column(env: Env) -> Action:
    root = env.dataset()
    rows = read_csv(root)
    i = rows[0].index("salience")
    write_csv(root, [r[:i] + r[i + 1:] for r in rows])
    return lambda: expect_metadata_problem(root, r"missing column 'salience'")


@case()
def renamed_column(env: Env) -> Action:
    root = env.dataset()
    set_cell(root, 0, "classID", "class_id")
    return lambda: expect_metadata_problem(root, r"missing column 'classID'.*unexpected column.*'class_id'")


@case()
def wrong_dtype(env: Env) -> Action:
    root = env.dataset()
    name = set_cell(root, 3, "fold", "three")
    return lambda: expect_metadata_problem(root, rf"row 3 .*\[{name}\] column 'fold': 'three' is not a number")


@case()
def fold_0(env: Env) -> Action:
    root = env.dataset()
    name = set_cell(root, 2, "fold", "0")
    return lambda: expect_metadata_problem(root, rf"row 2 .*\[{name}\] column 'fold': 0 is not a fold in 1..10")


@case()
def fold_11(env: Env) -> Action:
    root = env.dataset()
    name = set_cell(root, 5, "fold", "11")
    return lambda: expect_metadata_problem(root, rf"row 5 .*\[{name}\] column 'fold': 11 is not a fold in 1..10")


@case()
def classid_class_mismatch(env: Env) -> Action:
    root = env.dataset()
    rows = read_csv(root)
    label = rows[4][rows[0].index("class")]
    other = "siren" if label != "siren" else "car_horn"
    name = set_cell(root, 4, "class", other)
    return lambda: expect_metadata_problem(root,
                                           rf"row 4 .*\[{name}\] column 'class': '{other}' does not match classID")


@case()
def duplicate_rows(env: Env) -> Action:
    root = env.dataset()
    rows = read_csv(root)
    write_csv(root, rows + [rows[1]])
    return lambda: expect_metadata_problem(root, rf"\[{rows[1][0]}\].*duplicate")


@case()
def non_utf8_csv(env: Env) -> Action:
    root = env.dataset()
    data = csv_path(root).read_bytes().replace(b"siren", b"sir\xe9n").replace(b"dog_bark", b"dog\xffbark")
    if data == csv_path(root).read_bytes():
        data += b"99999-0-0-0.wav,99999,0.0,1.0,1,1,0,air_\xe9conditioner\n"
    csv_path(root).write_bytes(data)
    return lambda: expect_metadata_problem(root, r"not UTF-8")


@case()
def empty_csv(env: Env) -> Action:
    root = env.dataset()
    csv_path(root).write_bytes(b"")
    return lambda: expect_metadata_problem(root, r"empty file")


@case()
def listed_file_missing(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 0)
    path.unlink()
    return lambda: expect_report(root, "missing", path, "not found in any fold folder")


@case()
def zero_byte_wav(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 1)
    path.write_bytes(b"")

    def act() -> None:
        expect_report(root, "unreadable", path, "empty file (0 bytes)")
        expect_audio_error(path, "empty file (0 bytes)")
    return act


@case()
def truncated_wav(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 0, min_seconds=0.5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    def act() -> None:
        expect_report(root, "unreadable", path, "truncated")
        expect_audio_error(path, "truncated")
    return act


@case()
def random_bytes_wav(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 2)
    path.write_bytes(np.random.default_rng(1).bytes(5000))

    def act() -> None:
        expect_report(root, "unreadable", path, "not a WAV file")
        expect_audio_error(path, "not a WAV file")
    return act


@case()
def nan_wav(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 3)

    def put_nan(x: np.ndarray) -> np.ndarray:
        x[len(x) // 3, 0] = np.nan
        return x

    rewrite(path, put_nan, "FLOAT")

    def act() -> None:
        expect_report(root, "non_finite", path, "NaN")
        expect_audio_error(path, "NaN")
    return act


@case()
def silent_wav(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 4)
    rewrite(path, np.zeros_like, "PCM_16")
    return lambda: expect_report(root, "silent", path, "peak 0 is below")


@case()
def wav_in_wrong_fold(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 5)
    fold = int(path.parent.name[4:])
    moved = root / "audio" / f"fold{fold % 10 + 1}" / path.name
    path.rename(moved)
    return lambda: expect_report(root, "wrong_fold", path,
                                 f"found in fold{fold % 10 + 1}, but the metadata says fold{fold}")


@case()
def unlisted_wav(env: Env) -> Action:
    root = env.dataset()
    extra = root / "audio" / "fold2" / "1-0-0-0.wav"
    shutil.copy(clip(root, 0), extra)
    return lambda: expect_report(root, "extra", extra, "not listed in the metadata")


@case()
def directory_named_wav(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 6)
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("a folder, not a clip")

    def act() -> None:
        expect_report(root, "unreadable", path, "is a directory")
        expect_audio_error(path, "is a directory")
    return act


@case()
def dangling_symlink_wav(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 7)
    path.unlink()
    path.symlink_to(env.tmp / "elsewhere" / path.name)

    def act() -> None:
        expect_report(root, "unreadable", path, "broken symbolic link")
        expect_audio_error(path, "broken symbolic link")
    return act


def _evil(kind: str) -> Callable[[Env], Action]:
    def setup(env: Env) -> Action:
        root, outside = env.tmp / "data", env.tmp / "outside"
        root.mkdir()
        outside.mkdir()
        (outside / "victim.txt").write_text("precious")
        (root / "my-notes.txt").write_text("mine")
        data, member = evil_tarball(kind, outside)

        def act() -> None:
            with ArchiveServer(data) as server, pytest.raises(UnsafeArchiveError) as err:
                download_dataset(root, server.url, md5(data), progress=False)
            assert str(err.value).startswith(f"{root / 'UrbanSound8K.tar.gz'}: refusing to extract member {member!r}")
        return act
    setup.__name__ = f"tarball_{kind}_member"
    return setup


for _kind in ("dotdot", "absolute", "symlink", "hardlink", "device"):
    case()(_evil(_kind))


@case("data/UrbanSound8K")
def download_dies_midway_and_resumes(env: Env) -> Action:
    root = env.tmp / "data"
    root.mkdir()
    (root / "my-notes.txt").write_text("mine")
    data, digest = env.tarball
    cut = len(data) // 2

    def act() -> None:
        with ArchiveServer(data, Behaviour(drop_after=cut, drops=1)) as server:
            target = download_dataset(root, server.url, digest, progress=False)
        assert [r.range for r in server.requests] == [None, f"bytes={cut}-"]
        assert snapshot(target) == snapshot(env.small_root)
        assert sorted(p.name for p in root.iterdir()) == ["UrbanSound8K", "my-notes.txt"]
    return act


@case()
def server_returns_wrong_bytes(env: Env) -> Action:
    root = env.tmp / "data"
    root.mkdir()
    (root / "my-notes.txt").write_text("mine")
    data, digest = env.tarball

    def act() -> None:
        with ArchiveServer(data, Behaviour(corrupt=True)) as server:
            with pytest.raises(DownloadError, match=f"UrbanSound8K.tar.gz.part: md5 mismatch: expected {digest}, got "):
                download_dataset(root, server.url, digest, progress=False)
    return act


def _dataset_module():
    return pytest.importorskip("us8k_lib.dataset")


@case("cache")
def training_stops_on_a_bad_clip(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 0)
    path.write_bytes(path.read_bytes()[:30])

    def act() -> None:
        with pytest.raises(AudioError) as err:
            _dataset_module().US8KDataset(root, range(1, 11), cache_dir=env.tmp / "cache", progress=False, workers=1)
        assert str(err.value).startswith(f"{path}: ")
        assert "skip_bad" in str(err.value)
    return act


@case("cache")
def training_skip_bad_lists_the_skipped_clip(env: Env) -> Action:
    root = env.dataset()
    path = clip(root, 0)
    path.write_bytes(b"")

    def act() -> None:
        ds = _dataset_module().US8KDataset(root, range(1, 11), cache_dir=env.tmp / "cache", skip_bad=True,
                                           progress=False, workers=1)
        assert ds.skipped == [(path.name, "empty file (0 bytes)")]
        assert len(ds) == N_CLIPS - 1 and path.name not in set(ds.table["slice_file_name"])
    return act


def test_the_suite_has_at_least_20_distinct_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, small_root: Path, tarball: tuple[bytes, str]) -> None:
    setup, creates = CASES[name]
    act = setup(Env(tmp_path, small_root, tarball))
    before = snapshot(tmp_path)
    act()
    after = snapshot(tmp_path)
    # The user's data is untouched: every file is still there with the same bytes...
    assert {p: after.get(p) for p in before} == before
    # ...and nothing was added, except where the action's job is to create something.
    added = [p for p in after if p not in before and not any(p == c or p.startswith(c + "/") for c in creates)]
    assert added == []
