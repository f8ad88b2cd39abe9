"""The preprocessing cache and the Dataset: right items, one build, invalidation, corruption, crashes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from us8k_lib import audio
from us8k_lib.dataset import US8KDataset, collate_clips
from us8k_lib.engine import cache as cache_module
from us8k_lib.engine.cache import ARRAY_NAME, COMPLETE_NAME, INDEX_NAME, build_cache, cache_key
from us8k_lib.errors import AudioError
from us8k_lib.metadata import load_metadata, select_folds
from us8k_lib.paths import clip_path


class CountingFormat:
    """Stands in for audio.format_clip: counts calls (in this process) and can fail on call N."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_on = fail_on
        self.real = audio.format_clip

    def __call__(self, path, **kw):
        self.calls.append(Path(path).name)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("simulated crash while formatting")
        return self.real(path, **kw)


@pytest.fixture(scope="module")
def meta(tiny_root: Path) -> pd.DataFrame:
    return load_metadata(tiny_root)


@pytest.fixture(scope="module")
def full(tiny_root: Path, meta: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """Train (folds 1-9) and test (fold 10) datasets over one cache of the whole tiny dataset."""
    cache_dir = tmp_path_factory.mktemp("cache")
    train = US8KDataset(tiny_root, range(1, 10), metadata=meta, cache_dir=cache_dir, progress=False)
    test = US8KDataset(tiny_root, [10], metadata=meta, cache_dir=cache_dir, progress=False)
    return train, test, cache_dir


def _subset_root(tiny_root: Path, meta: pd.DataFrame, dst: Path, per_fold: int = 2) -> tuple[Path, pd.DataFrame]:
    """Copy a few clips per fold (files and metadata rows) into a dataset folder we may damage."""
    rows = meta.groupby("fold").head(per_fold).reset_index(drop=True)
    root = dst / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    shutil.copy2(tiny_root / "metadata" / "UrbanSound8K.csv", root / "metadata" / "UrbanSound8K.csv")
    for fold, name in zip(rows["fold"], rows["slice_file_name"]):
        target = clip_path(root, fold, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(clip_path(tiny_root, fold, name), target)
    return root, rows


@pytest.fixture()
def small(tiny_root: Path, meta: pd.DataFrame, tmp_path: Path) -> tuple[Path, pd.DataFrame, Path]:
    root, rows = _subset_root(tiny_root, meta, tmp_path / "data")
    return root, rows, tmp_path / "cache"


def _cache_folders(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if not p.name.startswith("."))


def _expected(root: Path, rows: pd.DataFrame) -> np.ndarray:
    """format_clip of every clip, in the cache's row order (fold, then file name)."""
    rows = rows.sort_values(["fold", "slice_file_name"])
    return np.stack([audio.format_clip(clip_path(root, f, n)) for f, n in zip(rows["fold"], rows["slice_file_name"])])


def _cached_by_name(cache) -> dict[str, np.ndarray]:
    return {n: cache.array[i] for i, n in enumerate(cache.table["slice_file_name"])}


# --- items ---------------------------------------------------------------------------------

def test_items_match_metadata(full, meta: pd.DataFrame) -> None:
    train, test, _ = full
    for ds, folds in ((train, range(1, 10)), (test, [10])):
        want = select_folds(meta, folds)
        assert len(ds) == len(want)
        assert list(ds.table.columns) == ["slice_file_name", "fold", "classID", "class"]
        assert ds.table["slice_file_name"].tolist() == want["slice_file_name"].tolist()
        assert ds.table["classID"].tolist() == want["classID"].tolist()
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.dtype == torch.float32 and tuple(x.shape) == (1, audio.TARGET_LENGTH)
            assert isinstance(y, int) and y == want["classID"].iloc[i]
    assert set(train.table["fold"]) == set(range(1, 10)) and set(test.table["fold"]) == {10}
    assert train.skipped == [] and test.skipped == []


def test_item_values_equal_format_clip(full, tiny_root: Path) -> None:
    train, test, _ = full
    for ds in (train, test):
        for i in (0, len(ds) // 2, len(ds) - 1):
            fold, name = ds.table.loc[i, ["fold", "slice_file_name"]]
            x, _ = ds[i]
            np.testing.assert_array_equal(x[0].numpy(), audio.format_clip(clip_path(tiny_root, fold, name)))
    assert not torch.equal(train[0][0], train[1][0])  # rows really differ (no zero/duplicate rows)


def test_train_and_test_share_one_build(full) -> None:
    train, test, cache_dir = full
    assert train.cache.path == test.cache.path
    assert _cache_folders(cache_dir) == [train.cache.path]
    assert len(train.cache) == len(train) + len(test)
    # The array is a standard .npy file: numpy itself opens it as the same data.
    np.testing.assert_array_equal(np.load(train.cache.array_path, mmap_mode="r"), train.cache.array)


def test_negative_index_and_out_of_range(full) -> None:
    train, _, _ = full
    assert torch.equal(train[-1][0], train[len(train) - 1][0])
    with pytest.raises(IndexError):
        train[len(train)]


# --- cache hits and invalidation --------------------------------------------------------------

def test_second_construction_does_not_format_again(small, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows, cache_dir = small
    counter = CountingFormat()
    monkeypatch.setattr(audio, "format_clip", counter)
    first = US8KDataset(root, [1, 2], metadata=rows, cache_dir=cache_dir, progress=False, workers=1)
    assert sorted(counter.calls) == sorted(rows["slice_file_name"])  # every clip of every fold, once
    counter.calls.clear()
    again = US8KDataset(root, [3], metadata=rows, cache_dir=cache_dir, progress=False, workers=1)
    assert counter.calls == []
    assert again.cache.path == first.cache.path


def test_cache_hit_needs_no_formatting_in_any_process(small, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows, cache_dir = small
    build_cache(root, rows, cache_dir=cache_dir, progress=False)
    expected = _expected(root, rows)

    def refuse(path, **kw):
        raise AssertionError(f"format_clip called for {path}")

    monkeypatch.setattr(audio, "format_clip", refuse)
    cache = build_cache(root, rows, cache_dir=cache_dir, progress=False)  # default workers
    np.testing.assert_array_equal(cache.array, expected)


@pytest.mark.parametrize("change", ["mtime", "content"])
def test_changed_file_invalidates(small, change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows, cache_dir = small
    old = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    fold, name = rows.loc[3, ["fold", "slice_file_name"]]
    old_row = _cached_by_name(old)[name].copy()
    path = clip_path(root, fold, name)
    st = path.stat()
    if change == "mtime":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    else:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        info = sf.info(path)
        sf.write(path, x[: len(x) // 2] * 0.5, sr, subtype=info.subtype, format=info.format)
    counter = CountingFormat()
    monkeypatch.setattr(audio, "format_clip", counter)
    new = build_cache(root, rows, cache_dir=cache_dir, progress=False, workers=1)
    assert new.key != old.key and new.path != old.path
    assert len(counter.calls) == len(rows)
    np.testing.assert_array_equal(_cached_by_name(new)[name], counter.real(path))
    if change == "content":
        assert not np.array_equal(_cached_by_name(new)[name], old_row)
    # The old cache can never be valid again: it is removed, and only the new one remains.
    assert not old.path.exists() and _cache_folders(cache_dir) == [new.path]


def test_only_superseded_caches_are_removed(small, capsys: pytest.CaptureFixture) -> None:
    # Caches of other parameters or other clip lists are kept when a new cache is built; the
    # one for the same clips and parameters under an old FORMAT_VERSION is removed, and said.
    root, rows, cache_dir = small
    other_length = build_cache(root, rows, cache_dir=cache_dir, progress=False, length=16000)
    subset = build_cache(root, rows.iloc[:4], cache_dir=cache_dir, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION - 1)
        older = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    capsys.readouterr()
    current = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    assert _cache_folders(cache_dir) == sorted([other_length.path, subset.path, current.path])
    assert not older.path.exists()
    assert f"Removed the superseded cache {older.path.name}" in capsys.readouterr().out
    by_name = _cached_by_name(current)
    for name, row in _cached_by_name(subset).items():  # the kept ones still read
        np.testing.assert_array_equal(row, by_name[name])


def test_changed_formatting_parameters_invalidate(small, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows, cache_dir = small
    base = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    short = build_cache(root, rows, cache_dir=cache_dir, progress=False, length=16000)
    assert short.key != base.key and short.array.shape == (len(rows), 16000)
    fold, name = rows.loc[0, ["fold", "slice_file_name"]]
    np.testing.assert_array_equal(_cached_by_name(short)[name],
                                  audio.format_clip(clip_path(root, fold, name), length=16000))
    other_rate = cache_key(root, rows, sr=16000)
    assert other_rate not in (base.key, short.key)
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION + 1)
    assert cache_key(root, rows) != base.key
    assert build_cache(root, rows, cache_dir=cache_dir, progress=False).path != base.path


def test_the_resampler_and_the_library_versions_are_in_the_key(small, monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile

    root, rows, cache_dir = small
    base = cache_key(root, rows)
    monkeypatch.setitem(audio.RESAMPLING, "lowpass_filter_width", audio.RESAMPLING["lowpass_filter_width"] + 1)
    assert cache_key(root, rows) != base  # another filter, other waveforms
    monkeypatch.undo()
    assert cache_key(root, rows) == base
    for module, attr, value in [(audio.torchaudio, "__version__", "0.0.1"), (soundfile, "__version__", "0.0.1"),
                                (soundfile, "__libsndfile_version__", "0.0.1")]:
        monkeypatch.setattr(module, attr, value)
        assert cache_key(root, rows) != base, attr
        monkeypatch.undo()
    built = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    index = json.loads((built.path / INDEX_NAME).read_text())
    assert index["recipe"] == cache_module.formatting_recipe() and index["recipe"]["resampling"] == audio.RESAMPLING


def test_a_cache_that_cannot_fit_is_refused_before_formatting(small, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    from us8k_lib.errors import DiskSpaceError

    root, rows, _ = small
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError, match=r"not enough free disk space: needs .* \(the formatted cache .*\), "
                                             r"0\.0 MB free") as err:
        build_cache(root, rows, cache_dir=tmp_path / "cache", progress=False)
    assert str(tmp_path / "cache") in str(err.value)
    assert not list((tmp_path / "cache").glob("*/*"))  # nothing written


def test_moved_or_missing_file_changes_key(small) -> None:
    root, rows, _ = small
    key = cache_key(root, rows)
    fold, name = rows.loc[0, ["fold", "slice_file_name"]]
    path = clip_path(root, fold, name)
    path.rename(path.with_suffix(".bak"))
    assert cache_key(root, rows) != key
    path.with_suffix(".bak").rename(path)
    assert cache_key(root, rows) == key
    assert cache_key(root, rows.iloc[::-1]) == key  # row order of the metadata does not matter


# --- damaged caches ----------------------------------------------------------------------

def _truncate_array(folder: Path) -> None:
    p = folder / ARRAY_NAME
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size - 4096)


def _garbage_index(folder: Path) -> None:
    (folder / INDEX_NAME).write_bytes(b"\x00{not json")


def _edited_index(folder: Path) -> None:
    # Valid JSON, but not what COMPLETE vouches for (e.g. a half-written or hand-edited index).
    index = json.loads((folder / INDEX_NAME).read_text())
    index["rows"]["classID"][0] = 9
    (folder / INDEX_NAME).write_text(json.dumps(index))


def _no_marker(folder: Path) -> None:
    (folder / COMPLETE_NAME).unlink()


def _scribbled_array(folder: Path) -> None:
    # Same size, wrong header: shape no longer matches the index.
    p = folder / ARRAY_NAME
    data = bytearray(p.read_bytes())
    pos = data.index(b"'shape': (") + len(b"'shape': (")
    data[pos] = ord("9")
    p.write_bytes(bytes(data))


def _array_missing(folder: Path) -> None:
    (folder / ARRAY_NAME).unlink()


@pytest.mark.parametrize("damage", [_truncate_array, _garbage_index, _edited_index, _no_marker,
                                    _scribbled_array, _array_missing])
def test_damaged_cache_is_detected_and_rebuilt(small, damage, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows, cache_dir = small
    good = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    reference = np.array(good.array)
    damage(good.path)
    capsys.readouterr()
    counter = CountingFormat()
    monkeypatch.setattr(audio, "format_clip", counter)
    rebuilt = build_cache(root, rows, cache_dir=cache_dir, progress=False, workers=1)
    out = capsys.readouterr().out
    assert "Cache unusable, rebuilding" in out and str(good.path) in out
    assert len(counter.calls) == len(rows)
    assert rebuilt.path == good.path
    np.testing.assert_array_equal(rebuilt.array, reference)
    assert [p.name for p in cache_dir.iterdir()] == [good.path.name]  # no temporaries left behind


def test_verify_data_detects_changed_samples(small) -> None:
    root, rows, cache_dir = small
    cache = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    cache.verify_data()
    p = cache.array_path
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(cache_module.CacheError, match=ARRAY_NAME):
        build_cache(root, rows, cache_dir=cache_dir, progress=False).verify_data()


# --- crashes mid-build ------------------------------------------------------------------------

def test_crash_mid_build_leaves_no_complete_cache(small, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows, cache_dir = small
    monkeypatch.setattr(audio, "format_clip", CountingFormat(fail_on=5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(root, rows, cache_dir=cache_dir, progress=False, workers=1)
    assert list(cache_dir.iterdir()) == []  # nothing final, and the temporary folder was removed
    monkeypatch.setattr(audio, "format_clip", CountingFormat())
    cache = build_cache(root, rows, cache_dir=cache_dir, progress=False, workers=1)
    np.testing.assert_array_equal(cache.array, _expected(root, rows))


_KILLED_BUILD = """
import sys, time
from us8k_lib import audio
from us8k_lib.engine import cache as cache_module
from us8k_lib.metadata import load_metadata
real = audio.format_clip
def slow(path, **kw):
    print("formatted", flush=True)
    time.sleep(0.3)
    return real(path, **kw)
audio.format_clip = slow
meta = load_metadata(sys.argv[1])
cache_module.build_cache(sys.argv[1], meta[meta["fold"] <= 2], cache_dir=sys.argv[2], workers=1, progress=False)
"""


def test_killed_build_is_never_used_and_is_cleaned_up(small) -> None:
    root, rows, cache_dir = small
    rows = rows[rows["fold"] <= 2]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(root), str(cache_dir)],
                            stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):  # wait until it is mid-way through the clips
            assert proc.stdout.readline().strip() == "formatted"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    leftovers = list(cache_dir.iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert not any((p / COMPLETE_NAME).exists() for p in leftovers)
    cache = build_cache(root, rows, cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(cache.array, _expected(root, rows))
    assert [p.name for p in cache_dir.iterdir()] == [cache.path.name]  # the dead build's folder is gone


# --- bad clips -----------------------------------------------------------------------------

@pytest.fixture()
def one_bad(small) -> tuple[Path, pd.DataFrame, Path, Path]:
    root, rows, cache_dir = small
    fold, name = rows.loc[5, ["fold", "slice_file_name"]]
    bad = clip_path(root, fold, name)
    bad.write_bytes(os.urandom(3000))
    return root, rows, cache_dir, bad


def test_bad_clip_stops_with_error_naming_it(one_bad) -> None:
    root, rows, cache_dir, bad = one_bad
    with pytest.raises(AudioError) as info:
        US8KDataset(root, range(1, 10), metadata=rows, cache_dir=cache_dir, progress=False)
    assert info.value.path == bad
    assert str(info.value).startswith(str(bad)) and "skip_bad" in str(info.value)
    assert not [p for p in cache_dir.iterdir() if not p.name.startswith(".")]  # nothing cached


def test_skip_bad_lists_exactly_the_bad_clip(one_bad, capsys: pytest.CaptureFixture) -> None:
    root, rows, cache_dir, bad = one_bad
    ds = US8KDataset(root, range(1, 11), metadata=rows, cache_dir=cache_dir, progress=False, skip_bad=True)
    out = capsys.readouterr()
    assert [name for name, _ in ds.skipped] == [bad.name]
    assert ds.skipped[0][1]  # the problem is stated
    assert str(bad) in out.out + out.err
    assert len(ds) == len(rows) - 1 and bad.name not in set(ds.table["slice_file_name"])
    good = rows[rows["slice_file_name"] != bad.name]
    assert ds.table["slice_file_name"].tolist() == good["slice_file_name"].tolist()
    other_fold = 1 if int(rows.loc[5, "fold"]) != 1 else 2
    assert US8KDataset(root, [other_fold], metadata=rows, cache_dir=cache_dir, progress=False,
                       skip_bad=True).skipped == []
    assert bad.name in capsys.readouterr().out  # a reused cache says again what it leaves out
    # The cache remembers the bad clip: without the opt-in it is still an error, not a silent skip.
    with pytest.raises(AudioError) as info:
        US8KDataset(root, range(1, 11), metadata=rows, cache_dir=cache_dir, progress=False)
    assert info.value.path == bad


# --- loading -------------------------------------------------------------------------------

def test_dataloader_with_worker_processes(full) -> None:
    train, _, _ = full
    loader = DataLoader(train, batch_size=8, shuffle=False, num_workers=2)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (len(train), 1, audio.TARGET_LENGTH) and x.dtype == torch.float32
    assert y.tolist() == train.table["classID"].tolist()
    for i in (0, 7, 8, len(train) - 1):
        assert torch.equal(x[i], train[i][0])


def test_fast_collate_equals_default(full) -> None:
    train, _, _ = full
    default = next(iter(DataLoader(train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))))
    fast_loader = DataLoader(train, batch_size=16, shuffle=True, collate_fn=collate_clips, num_workers=1,
                             generator=torch.Generator().manual_seed(0))
    fast = next(iter(fast_loader))
    assert torch.equal(fast[0], default[0]) and torch.equal(fast[1], default[1])
    assert fast[1].dtype == torch.int64


def test_dataset_pickles_without_its_memory_map(full) -> None:
    train, _, _ = full
    train[0]  # maps the file in this process
    blob = pickle.dumps(train)
    assert len(blob) < 200_000  # the waveforms are not in the pickle
    clone = pickle.loads(blob)
    assert clone.cache._array is None
    assert torch.equal(clone[3][0], train[3][0])


def test_default_cache_dir_is_outside_the_dataset(small, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root, rows, _ = small
    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "datadir"))
    cache = build_cache(root, rows, progress=False)
    assert cache.path.parent == tmp_path / "datadir" / "cache"
    assert not any(p.suffix == ".npy" for p in root.rglob("*"))


def test_process_pool_build_gives_the_same_cache(small, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows, cache_dir = small
    monkeypatch.setattr(cache_module, "EXECUTOR", "process")
    cache = build_cache(root, rows, cache_dir=cache_dir, progress=False, workers=2)
    np.testing.assert_array_equal(cache.array, _expected(root, rows))


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_an_epoch_keeps_resident_memory_flat(tiny_root: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # 1600 clips of 4 s = 205 MB of cache, written with generated rows (no audio needed).
    n = 1600
    rows = pd.DataFrame({"slice_file_name": [f"1-0-0-{i}.wav" for i in range(n)], "fold": 1,
                         "classID": 0, "class": "air_conditioner"})
    monkeypatch.setattr(audio, "format_clip", lambda path, sr, length: np.full(length, 0.5, np.float32))
    cache = build_cache(tiny_root, rows, cache_dir=tmp_path, workers=1, progress=False)
    assert cache.nbytes > 200e6
    out = torch.empty(64, 1, cache.length)
    cache.read_rows(range(64), out=out)
    before = _rss_kb()
    for start in range(0, n, 64):
        cache.read_rows(np.arange(start, start + 64)[::-1], out=out)
    assert torch.all(out == 0.5)
    assert _rss_kb() - before < 20_000  # < 20 MB more after reading 205 MB
    cache.array.sum()  # the memory map, by contrast, keeps what it touched resident
    assert _rss_kb() - before > 150_000


def test_read_rows_checks_its_arguments(full) -> None:
    train, _, _ = full
    with pytest.raises(IndexError):
        train.cache.read_rows([len(train.cache)])
    with pytest.raises(ValueError, match="contiguous float32"):
        train.cache.read_rows([0, 1], out=torch.empty(1, audio.TARGET_LENGTH))


@pytest.mark.parametrize("folds", [[0], [11], [1.5], []])
def test_bad_folds_are_refused_before_any_work(small, folds) -> None:
    root, rows, cache_dir = small
    with pytest.raises(ValueError, match="folds"):
        US8KDataset(root, folds, metadata=rows, cache_dir=cache_dir, progress=False)
    assert not cache_dir.exists()


def test_one_fold_as_an_int(full, tiny_root: Path, meta: pd.DataFrame) -> None:
    _, test, cache_dir = full
    again = US8KDataset(tiny_root, 10, metadata=meta, cache_dir=cache_dir, progress=False)
    assert again.folds == [10] and again.table.equals(test.table)
