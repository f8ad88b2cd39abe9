"""validate: a clean dataset passes; each kind of damage is reported exactly, in its own key."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from archive_server import small_dataset

from us8k_lib.cli.parser import main
from us8k_lib.datasets import validate as validate_module
from us8k_lib.datasets.validate import DURATION_TOLERANCE, PROBLEM_KEYS, validate_dataset
from us8k_lib.metadata import load_metadata


@pytest.fixture()
def dataset(tmp_path: Path, tiny_root: Path) -> Path:
    """A writable copy of the first 24 clips of the tiny dataset (with its marker file), to damage."""
    root = small_dataset(tiny_root, tmp_path / "UrbanSound8K", 24)
    shutil.copy(tiny_root / "MINI_DATASET.txt", root)
    return root


def clip(root: Path, index: int) -> tuple[Path, pd.Series]:
    """Return (path, metadata row) of the index-th clip of at least 0.5 s (long enough to shorten)."""
    df = load_metadata(root)
    row = df[df["end"] - df["start"] >= 5 * DURATION_TOLERANCE].iloc[index]
    return root / "audio" / f"fold{row['fold']}" / row["slice_file_name"], row


def found(report) -> dict[str, list[str]]:
    """The non-empty problem lists of a report (metadata problems under 'metadata')."""
    out = {k: report.files(k) for k in PROBLEM_KEYS if report.files(k)}
    if report.metadata_problems:
        out["metadata"] = report.metadata_problems
    return out


def test_tiny_dataset_is_clean(tiny_root: Path) -> None:
    report = validate_dataset(tiny_root, progress=False)
    assert found(report) == {}
    assert report.ok
    assert report.listed == report.checked == report.decoded == len(load_metadata(tiny_root)) > 0


def test_mini_dataset_is_clean(mini_root: Path) -> None:
    report = validate_dataset(mini_root, progress=False)
    assert found(report) == {}
    assert report.checked == len(load_metadata(mini_root))


# Each damage returns (the problem key, the file name it must be reported under).
def delete_file(root: Path) -> tuple[str, str]:
    path, row = clip(root, 0)
    path.unlink()
    return "missing", row["slice_file_name"]


def add_extra_file(root: Path) -> tuple[str, str]:
    path, _ = clip(root, 1)
    shutil.copy(path, root / "audio" / "fold3" / "99999-0-0-0.wav")
    (root / "audio" / "fold3" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not extra
    return "extra", "99999-0-0-0.wav"


def add_stray_file(root: Path) -> tuple[str, str]:
    path, _ = clip(root, 1)
    shutil.copy(path, root / "audio" / "stray.wav")
    return "extra", "stray.wav"


def truncate(root: Path) -> tuple[str, str]:
    path, row = clip(root, 2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return "unreadable", row["slice_file_name"]


def random_bytes(root: Path) -> tuple[str, str]:
    path, row = clip(root, 3)
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    return "unreadable", row["slice_file_name"]


def move_to_wrong_fold(root: Path) -> tuple[str, str]:
    path, row = clip(root, 4)
    other = root / "audio" / f"fold{row['fold'] % 10 + 1}" / path.name
    path.rename(other)
    return "wrong_fold", row["slice_file_name"]


def _rewrite(path: Path, fn: Callable[[np.ndarray], np.ndarray], subtype: str) -> None:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    sf.write(path, fn(x), sr, subtype=subtype, format="WAV")


def put_nan(root: Path) -> tuple[str, str]:
    path, row = clip(root, 5)

    def nan(x: np.ndarray) -> np.ndarray:
        x[len(x) // 2, 0] = np.nan
        return x

    _rewrite(path, nan, "FLOAT")
    return "non_finite", row["slice_file_name"]


def silence(root: Path) -> tuple[str, str]:
    path, row = clip(root, 6)
    _rewrite(path, np.zeros_like, "PCM_16")
    return "silent", row["slice_file_name"]


def shorten(root: Path) -> tuple[str, str]:
    path, row = clip(root, 9)
    _rewrite(path, lambda x: x[: len(x) // 2], "PCM_16")  # a valid WAV, just half as long
    return "duration_mismatch", row["slice_file_name"]


def directory_named_wav(root: Path) -> tuple[str, str]:
    path, row = clip(root, 7)
    path.unlink()
    path.mkdir()
    return "unreadable", row["slice_file_name"]


def dangling_symlink(root: Path) -> tuple[str, str]:
    path, row = clip(root, 8)
    path.unlink()
    path.symlink_to(root / "nowhere.wav")
    return "unreadable", row["slice_file_name"]


DAMAGES = [delete_file, add_extra_file, add_stray_file, truncate, random_bytes, move_to_wrong_fold,
           put_nan, silence, shorten, directory_named_wav, dangling_symlink]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damage_is_reported_exactly(dataset: Path, damage) -> None:
    key, name = damage(dataset)
    report = validate_dataset(dataset, progress=False)
    assert found(report) == {key: [name]}
    assert not report.ok
    (entry,) = report.to_dict()["details"][key]
    assert entry["file"] == name and entry["problem"]


def test_every_damage_at_once_is_reported_each_in_its_key(dataset: Path) -> None:
    expected: dict[str, list[str]] = {}
    for damage in DAMAGES:
        key, name = damage(dataset)
        expected.setdefault(key, []).append(name)
    report = validate_dataset(dataset, progress=False, workers=3)
    assert {k: sorted(v) for k, v in found(report).items()} == {k: sorted(v) for k, v in expected.items()}
    n_missing = len(expected["missing"])
    assert report.checked == report.listed - n_missing
    assert report.decoded == report.checked - len(expected["unreadable"])
    assert f"{report.listed} clips listed, {report.decoded} decoded ({len(expected['unreadable'])} could not be)" \
        in report.summary()


def test_the_summary_counts_only_the_clips_that_decoded(dataset: Path) -> None:
    key, _ = random_bytes(dataset)
    assert key == "unreadable"
    report = validate_dataset(dataset, progress=False)
    assert report.checked == report.listed and report.decoded == report.listed - 1
    assert f": {report.listed} clips listed, {report.listed - 1} decoded (1 could not be);" in report.summary()
    assert report.to_dict()["decoded"] == report.listed - 1


def test_problem_descriptions_say_what_is_wrong(dataset: Path) -> None:
    _, moved = move_to_wrong_fold(dataset)
    _, truncated = truncate(dataset)
    _, nan = put_nan(dataset)
    details = validate_dataset(dataset, progress=False).to_dict()["details"]
    fold = int(load_metadata(dataset).set_index("slice_file_name").at[moved, "fold"])
    assert details["wrong_fold"][0]["problem"] == f"found in fold{fold % 10 + 1}, but the metadata says fold{fold}"
    assert "truncated" in details["unreadable"][0]["problem"]
    assert "NaN" in details["non_finite"][0]["problem"]


def real_checksums(root: Path) -> pd.DataFrame:
    """A checksum table in load_checksums' shape, computed from the files as they are."""
    rows = []
    for p in sorted((root / "audio").glob("fold*/*.wav")):
        data = p.read_bytes()
        rows.append({"slice_file_name": p.name, "fold": int(p.parent.name[4:]), "size": len(data),
                     "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()})
    return pd.DataFrame(rows)


def test_checksum_mismatch_is_reported_exactly(dataset: Path, monkeypatch) -> None:
    (dataset / "MINI_DATASET.txt").unlink()  # pose as real data: checksums are only checked there
    table = real_checksums(dataset)
    table.loc[3, "md5"] = "0" * 32
    table.loc[5, "size"] += 1
    monkeypatch.setattr(validate_module, "load_checksums", lambda: table)
    report = validate_dataset(dataset, checksums=True, progress=False)
    assert set(found(report)) == {"checksum_mismatch"}
    assert sorted(report.files("checksum_mismatch")) == sorted(table.loc[[3, 5], "slice_file_name"])
    problems = {d["file"]: d["problem"] for d in report.to_dict()["details"]["checksum_mismatch"]}
    assert problems[table.at[3, "slice_file_name"]].endswith(f"expected {'0' * 32}")
    assert problems[table.at[5, "slice_file_name"]].startswith("size ")
    assert report.checksums == "checked"


def test_checksums_are_skipped_with_a_note_on_the_mini_dataset(tiny_root: Path, capsys) -> None:
    report = validate_dataset(tiny_root, checksums=True, progress=False)
    assert report.ok
    assert report.checksums.startswith("skipped")
    assert "--checksums applies to the real UrbanSound8K only" in capsys.readouterr().out


def test_metadata_problems_are_reported_and_files_still_checked(dataset: Path) -> None:
    _, name = delete_file(dataset)
    csv = dataset / "metadata" / "UrbanSound8K.csv"
    lines = csv.read_text().splitlines()
    lines.append(lines[1])  # a duplicate row
    csv.write_text("\n".join(lines) + "\n")
    report = validate_dataset(dataset, progress=False)
    assert report.files("missing") == [name]
    assert any("duplicate" in v.lower() for v in report.metadata_problems)
    assert not report.ok


def test_cli_exit_codes_summary_and_json(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "reports" / "clean.json"
    assert main(["validate", "--root", str(dataset), "--json", str(out)]) == 0
    clean = json.loads(out.read_text())
    assert clean["ok"] is True and clean["checked"] == len(load_metadata(dataset))
    assert all(clean[k] == [] for k in PROBLEM_KEYS) and clean["metadata_problems"] == []
    assert "OK: no problems found." in capsys.readouterr().out

    _, name = move_to_wrong_fold(dataset)
    fold = int(load_metadata(dataset).set_index("slice_file_name").at[name, "fold"])
    assert main(["validate", "--root", str(dataset), "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["ok"] is False and report["wrong_fold"] == [name]
    assert report["details"]["wrong_fold"][0]["fold"] == fold
    printed = capsys.readouterr().out
    assert f"fold {fold}: {name}: found in fold{fold % 10 + 1}" in printed
    assert "FAILED: 1 problem(s) found." in printed
    assert [p.name for p in out.parent.iterdir()] == ["clean.json"]  # no temp file left beside it


def test_cli_missing_root_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["validate", "--root", str(tmp_path / "nope")]) == 1
    assert f"{tmp_path / 'nope'}: dataset root does not exist" in capsys.readouterr().err


def test_real_clips_validate_clean_with_checksums(tmp_path: Path, shared_reference: Path) -> None:
    """17 real clips, one per format, with their real metadata rows and published checksums."""
    root = tmp_path / "UrbanSound8K"
    for k in range(1, 11):
        (root / "audio" / f"fold{k}").mkdir(parents=True)
    names = []
    for p in sorted((shared_reference / "real-clips").glob("fold*/*.wav")):
        shutil.copy(p, root / "audio" / p.parent.name / p.name)
        names.append(p.name)
    lines = (shared_reference / "UrbanSound8K.csv").read_text().splitlines()
    (root / "metadata").mkdir()
    (root / "metadata" / "UrbanSound8K.csv").write_text(
        "\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in names]) + "\n")
    report = validate_dataset(root, checksums=True, progress=False)
    assert found(report) == {}
    assert report.checked == len(names) == 17
    assert report.checksums == "checked"
