"""Tests of us8k_lib.metadata: the shipped real CSV, validation of bad CSVs, folds, leakage, tables."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from us8k_lib import metadata as md
from us8k_lib.errors import DatasetNotFoundError, MetadataError

HEADER = list(md.COLUMNS)
# Recordings whose different classes sit in different folds, found by grouping the real CSV
# (fsID -> number of folds and classes) independently of check_leakage.
CROSS_CLASS_FSIDS = {77751, 106905, 132016, 176638, 180937}


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    """The shipped real metadata, loaded and validated once."""
    return md.load_metadata()


def real_rows(n: int = 6) -> list[list[str]]:
    """The first ``n`` data rows of the shipped CSV, cells as text exactly as written."""
    with open(md.reference_metadata_path(), newline="", encoding="utf-8") as f:
        rows = list(itertools.islice(csv.reader(f), n + 1))
    assert rows[0] == HEADER
    return rows[1:]


def write_rows(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def load_error(path: Path) -> MetadataError:
    with pytest.raises(MetadataError) as info:
        md.load_metadata(path)
    assert info.value.path == path
    assert str(info.value).startswith(str(path))
    return info.value


# ---------------------------------------------------------------- the shipped real metadata


def test_shipped_csv_is_the_original_file() -> None:
    data = md.reference_metadata_path().read_bytes()
    assert hashlib.md5(data).hexdigest() == "5015c37ce7d54c0bb8cd40a0b5ee2074"


def test_shipped_csv_parses_into_typed_columns(real: pd.DataFrame) -> None:
    assert len(real) == 8732
    assert tuple(real.columns) == md.COLUMNS
    assert isinstance(real.index, pd.RangeIndex)
    for c in ("fsID", "salience", "fold", "classID"):
        assert real[c].dtype == np.int64, c
    for c in ("start", "end"):
        assert real[c].dtype == np.float64, c
    assert pd.api.types.is_string_dtype(real["slice_file_name"]) and pd.api.types.is_string_dtype(real["class"])
    assert (real["fold"] == 10).sum() == 837
    assert sorted(real["fold"].unique()) == list(range(1, 11))


def test_shipped_csv_values_match_a_plain_pandas_read(real: pd.DataFrame) -> None:
    # The quirks (0.0/4.0, 11.341332999999999) must come through exactly: every value the nearest
    # double to its text, as pandas' exact ("round_trip") parser reads them.
    plain = pd.read_csv(md.reference_metadata_path(), float_precision="round_trip")
    pd.testing.assert_frame_equal(real, plain, check_exact=True)
    row = real[real["slice_file_name"] == "101281-3-0-14.wav"].iloc[0]
    assert row["end"] == float("11.341332999999999") and row["start"] == float("7.341333")


def test_shipped_classes_follow_classes_order(real: pd.DataFrame) -> None:
    assert len(md.CLASSES) == 10
    names_per_id = real.groupby("classID")["class"].unique()
    assert list(names_per_id.index) == list(range(10))
    assert [list(v) for v in names_per_id] == [[name] for name in md.CLASSES]


def test_shipped_csv_has_no_problems(real: pd.DataFrame) -> None:
    assert md.find_metadata_problems(real) == []


def test_shipped_csv_has_no_leakage_and_five_cross_class_recordings(real: pd.DataFrame) -> None:
    report = md.check_leakage(real)
    assert report.ok and report.leaks.empty
    multi_fold = real.groupby("fsID")["fold"].nunique()
    assert set(multi_fold[multi_fold > 1].index) == CROSS_CLASS_FSIDS  # the data itself, without check_leakage
    cross = report.cross_class_recordings
    assert set(cross["fsID"]) == CROSS_CLASS_FSIDS
    assert (cross.groupby("fsID")["fold"].nunique() > 1).all()
    assert (cross.groupby(["fsID", "classID"])["fold"].nunique() == 1).all()
    assert cross["slices"].sum() == real["fsID"].isin(CROSS_CLASS_FSIDS).sum()
    text = report.summary()
    assert "No leakage" in text and all(str(i) in text for i in CROSS_CLASS_FSIDS)


def test_shipped_checksums_cover_every_clip(real: pd.DataFrame) -> None:
    sums = md.load_checksums()
    assert tuple(sums.columns) == md.CHECKSUM_COLUMNS
    assert len(sums) == 8732 and sums["slice_file_name"].is_unique
    assert set(sums["slice_file_name"]) == set(real["slice_file_name"])
    joined = real.merge(sums, on="slice_file_name", suffixes=("", "_sum"))
    assert (joined["fold"] == joined["fold_sum"]).all()
    assert sums["md5"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert sums["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert sums["size"].dtype == np.int64 and (sums["size"] > 44).all()  # more than a WAV header


# ---------------------------------------------------------------- where the CSV comes from


def test_load_from_dataset_root_or_its_parent(tmp_path: Path) -> None:
    meta = tmp_path / "UrbanSound8K" / "metadata"
    meta.mkdir(parents=True)
    write_rows(meta / "UrbanSound8K.csv", real_rows())
    for source in (tmp_path, tmp_path / "UrbanSound8K", str(meta / "UrbanSound8K.csv")):
        assert list(md.load_metadata(source)["slice_file_name"]) == [r[0] for r in real_rows()]


@pytest.mark.parametrize("name", ["missing.csv", "no_such_dir"])
def test_missing_file_or_root_names_the_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetNotFoundError, match=name):
        md.load_metadata(tmp_path / name)


def test_folder_without_metadata_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        md.load_metadata(tmp_path)


# ---------------------------------------------------------------- row-level violations

# (id, row to edit (1-based), column, new value, column blamed, words expected in the message, problems)
ROW_CASES = [
    ("fold-11", 2, "fold", "11", "fold", "11 is not a fold in 1..10", 1),
    ("fold-0", 3, "fold", "0", "fold", "0 is not a fold in 1..10", 1),
    ("salience-3", 1, "salience", "3", "salience", "3 is not 1 (foreground) or 2 (background)", 1),
    ("classID-10", 1, "classID", "10", "classID", "10 is not a classID in 0..9", 2),  # and the file name
    ("class-mismatch", 1, "class", "siren", "class", "'siren' does not match classID 3 (dog_bark)", 1),
    ("class-unknown", 4, "class", "kids_playing", "class", "'kids_playing' is not one of the 10", 1),
    ("end-equals-start", 1, "end", "0.0", "end", "0 is not after start 0", 1),
    ("end-before-start", 2, "end", "50.25", "end", "50.25 is not after start 58.5", 1),
    ("start-negative", 1, "start", "-0.5", "start", "-0.5 is negative", 1),
    ("fsID-not-number", 2, "fsID", "abc", "fsID", "'abc' is not a number", 1),
    ("start-nan", 3, "start", "nan", "start", "'nan' is not a number", 1),
    ("fold-not-whole", 5, "fold", "5.5", "fold", "'5.5' is not a whole number", 1),
    ("fsID-vs-name", 1, "fsID", "100033", "fsID", "100033 disagrees with the file name, which says fsID 100032", 1),
    ("fsID-zero", 1, "fsID", "0", "fsID", "0 is not a freesound id", 2),  # and the file name
    ("name-pattern", 2, "slice_file_name", "100263-2-0.wav", "slice_file_name", "does not match {fsID}-{classID}", 1),
    ("name-not-wav", 2, "slice_file_name", "100263-2-0-117.mp3", "slice_file_name", "does not match", 1),
    ("duplicate-name", 3, "slice_file_name", "100263-2-0-117.wav", "slice_file_name", "duplicate of row 2", 1),
    ("empty-class", 4, "class", "", "class", "empty", 1),
    ("empty-fold", 4, "fold", "", "fold", "empty", 1),
    ("blank-start", 4, "start", "  ", "start", "empty", 1),
]


@pytest.mark.parametrize(("row", "column", "value", "blamed", "words", "count"),
                         [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES])
def test_each_row_violation_names_file_row_and_column(
    tmp_path: Path, row: int, column: str, value: str, blamed: str, words: str, count: int
) -> None:
    rows = real_rows()
    rows[row - 1][HEADER.index(column)] = value
    path = write_rows(tmp_path / "bad.csv", rows)
    error = load_error(path)
    assert len(error.violations) == count, error.violations
    matching = [v for v in error.violations if words in v]
    assert len(matching) == 1, error.violations
    name = rows[row - 1][0]
    assert matching[0].startswith(f"row {row} (CSV line {row + 1}) [{name}] column '{blamed}': "), matching[0]


def test_every_violation_in_a_file_is_reported_in_row_order(tmp_path: Path) -> None:
    rows = real_rows()
    rows[4][HEADER.index("fold")] = "12"
    rows[0][HEADER.index("class")] = "gun_shot"
    rows[2][HEADER.index("salience")] = "x"
    rows[2][HEADER.index("end")] = "1.0"
    error = load_error(write_rows(tmp_path / "bad.csv", rows))
    assert [v.split(" column ")[0].split(" [")[0] for v in error.violations] == [
        "row 1 (CSV line 2)", "row 3 (CSV line 4)", "row 3 (CSV line 4)", "row 5 (CSV line 6)"]
    assert "column 'fold': 12" in str(error) and "'x' is not a number" in str(error)


def test_validate_false_skips_rules_but_not_parsing(tmp_path: Path) -> None:
    rows = real_rows()
    rows[0][HEADER.index("fold")] = "11"
    path = write_rows(tmp_path / "rules.csv", rows)
    load_error(path)
    assert md.load_metadata(path, validate=False)["fold"].iloc[0] == 11
    rows[1][HEADER.index("fold")] = "eleven"
    with pytest.raises(MetadataError, match="'eleven' is not a number"):
        md.load_metadata(write_rows(tmp_path / "parse.csv", rows), validate=False)


# ---------------------------------------------------------------- file-level violations


def test_empty_file(tmp_path: Path) -> None:
    for content in (b"", b"\n \n"):
        path = tmp_path / "empty.csv"
        path.write_bytes(content)
        assert load_error(path).violations == ["empty file: no header and no rows"]


def test_header_only_is_an_error(tmp_path: Path) -> None:
    # A metadata file without clips is a truncated or wrong file: fail here, not later in training.
    error = load_error(write_rows(tmp_path / "header.csv", []))
    assert error.violations == ["no data rows: the file has only a header"]


def test_non_utf8_bytes_name_every_bad_line(tmp_path: Path) -> None:
    lines = write_rows(tmp_path / "ok.csv", real_rows()).read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"children_playing", b"ni\xf1os")  # Latin-1, not UTF-8
    lines[4] = lines[4] + b"\xff"
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"\n".join(lines))
    error = load_error(path)
    assert len(error.violations) == 2
    assert error.violations[0].startswith("CSV line 3: not UTF-8 (byte 0xf1")
    assert error.violations[1].startswith("CSV line 5: not UTF-8 (byte 0xff")


@pytest.mark.parametrize("column", ["salience", "class", "slice_file_name"])
def test_missing_column(tmp_path: Path, column: str) -> None:
    keep = [i for i, c in enumerate(HEADER) if c != column]
    rows = [[r[i] for i in keep] for r in real_rows()]
    error = load_error(write_rows(tmp_path / "missing.csv", rows, [HEADER[i] for i in keep]))
    assert error.violations[0] == f"missing column '{column}'"


def test_renamed_column_names_both_names(tmp_path: Path) -> None:
    header = [("Fold" if c == "fold" else c) for c in HEADER]
    error = load_error(write_rows(tmp_path / "renamed.csv", real_rows(), header))
    assert error.violations == ["missing column 'fold' (the header has unexpected column(s) 'Fold')"]


def test_duplicated_column(tmp_path: Path) -> None:
    rows = [r + [r[HEADER.index("fold")]] for r in real_rows()]
    error = load_error(write_rows(tmp_path / "dup.csv", rows, HEADER + ["fold"]))
    assert error.violations == ["column 'fold' appears 2 times in the header"]


def test_extra_column_is_kept_and_order_does_not_matter(tmp_path: Path) -> None:
    order = list(reversed(HEADER)) + ["note"]
    rows = [[r[HEADER.index(c)] for c in reversed(HEADER)] + [f"note {i}"] for i, r in enumerate(real_rows())]
    df = md.load_metadata(write_rows(tmp_path / "extra.csv", rows, order))
    assert list(df.columns) == HEADER + ["note"]
    assert list(df["note"]) == [f"note {i}" for i in range(len(rows))]
    pd.testing.assert_frame_equal(df[HEADER], md.load_metadata(write_rows(tmp_path / "plain.csv", real_rows())))


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda r: r + ["extra"], "row 2 (CSV line 3) [100263-2-0-117.wav]: 9 fields, but the header has 8"),
    (lambda r: r[:-1], "row 2 (CSV line 3) [100263-2-0-117.wav]: 7 fields, but the header has 8"),
], ids=["too-many-fields", "too-few-fields"])
def test_wrong_number_of_fields(tmp_path: Path, edit: Callable[[list[str]], list[str]], expected: str) -> None:
    rows = real_rows()
    rows[1] = edit(rows[1])
    assert load_error(write_rows(tmp_path / "fields.csv", rows)).violations == [expected]


def test_blank_line_between_rows(tmp_path: Path) -> None:
    lines = write_rows(tmp_path / "ok.csv", real_rows()).read_text().splitlines()
    path = tmp_path / "blank.csv"
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")
    assert load_error(path).violations == ["row 3 (CSV line 4): blank line"]


def test_bom_crlf_and_trailing_blank_lines_are_harmless(tmp_path: Path) -> None:
    clean = write_rows(tmp_path / "clean.csv", real_rows())
    messy = tmp_path / "messy.csv"
    messy.write_bytes(b"\xef\xbb\xbf" + clean.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    pd.testing.assert_frame_equal(md.load_metadata(messy), md.load_metadata(clean))


# ---------------------------------------------------------------- problems of an in-memory frame


def test_find_metadata_problems_on_a_doctored_frame(real: pd.DataFrame) -> None:
    df = real.copy()
    df.loc[5, "fold"] = 11
    df.loc[7, "class"] = "siren" if df.loc[7, "class"] != "siren" else "dog_bark"
    problems = md.find_metadata_problems(df)
    assert len(problems) == 2
    assert problems[0].startswith(f"row 6 [{df.loc[5, 'slice_file_name']}] column 'fold': 11")
    assert problems[1].startswith(f"row 8 [{df.loc[7, 'slice_file_name']}] column 'class'")
    assert md.find_metadata_problems(real.drop(columns="end")) == ["missing column 'end'"]
    assert md.find_metadata_problems(real.astype(str)) == []  # all-text frames are checked too


# ---------------------------------------------------------------- folds and leakage


def test_select_folds(real: pd.DataFrame) -> None:
    test = md.select_folds(real, 10)
    train = md.select_folds(real, range(1, 10))
    assert len(test) == (real["fold"] == 10).sum() and set(test["fold"]) == {10}
    assert set(train["fold"]) == set(range(1, 10)) and len(train) + len(test) == len(real)
    assert not set(train["slice_file_name"]) & set(test["slice_file_name"])
    assert isinstance(test.index, pd.RangeIndex) and test.index[0] == 0
    pd.testing.assert_frame_equal(md.select_folds(real, [3, 3]), md.select_folds(real, np.int64(3)))


@pytest.mark.parametrize("folds", [0, 11, [], [1, 11], ["10"], [1.5], True])
def test_select_folds_rejects_bad_folds(real: pd.DataFrame, folds: object) -> None:
    with pytest.raises(ValueError, match="1..10"):
        md.select_folds(real, folds)  # type: ignore[arg-type]


def test_leakage_detects_one_slice_moved_to_another_fold(real: pd.DataFrame) -> None:
    df = real.copy()
    group = df.index[(df["fsID"] == 100263) & (df["classID"] == 2)]
    old_fold = int(df.loc[group[0], "fold"])
    new_fold = old_fold % 10 + 1
    df.loc[group[0], "fold"] = new_fold
    report = md.check_leakage(df)
    assert not report.ok
    assert set(report.leaks["fsID"]) == {100263} and set(report.leaks["classID"]) == {2}
    assert set(report.leaks["fold"]) == {old_fold, new_fold}
    assert report.leaks["slices"].sum() == len(group)
    assert set(report.cross_class_recordings["fsID"]) == CROSS_CLASS_FSIDS
    assert "LEAKAGE: 1 (recording, class) pair" in report.summary()


def test_different_class_in_another_fold_is_not_a_leak(real: pd.DataFrame) -> None:
    df = real.copy()
    group = df.index[(df["fsID"] == 100263) & (df["classID"] == 2)]
    moved = group[:2]  # relabel two slices as street_music in another fold: allowed
    df.loc[moved, ["classID", "class", "fold"]] = [9, "street_music", int(df.loc[moved[0], "fold"]) % 10 + 1]
    report = md.check_leakage(df)
    assert report.ok
    assert set(report.cross_class_recordings["fsID"]) == CROSS_CLASS_FSIDS | {100263}


def test_a_leaking_recording_is_listed_as_leak_only(real: pd.DataFrame) -> None:
    df = real.copy()
    drilling = df.index[(df["fsID"] == 77751) & (df["class"] == "drilling")]  # fold 2; its jackhammer: fold 7
    df.loc[drilling[0], "fold"] = 3
    report = md.check_leakage(df)
    assert set(zip(report.leaks["fsID"], report.leaks["class"])) == {(77751, "drilling")}
    assert set(report.cross_class_recordings["fsID"]) == CROSS_CLASS_FSIDS - {77751}


def test_random_split_leaks(real: pd.DataFrame) -> None:
    shuffled = real.assign(fold=np.random.default_rng(0).integers(1, 11, len(real)))
    report = md.check_leakage(shuffled)
    assert not report.ok
    assert (report.leaks.groupby(["fsID", "classID"])["fold"].nunique() > 1).all()
    multi = shuffled.groupby(["fsID", "classID"])["fold"].nunique()
    assert report.leaks.groupby(["fsID", "classID"]).ngroups == (multi > 1).sum()


# ---------------------------------------------------------------- notebook-1 tables


def test_compute_class_counts(real: pd.DataFrame) -> None:
    counts = md.compute_class_counts(real)
    assert list(counts.index) == list(range(10)) and list(counts["class"]) == list(md.CLASSES)
    assert counts["clips"].sum() == len(real)
    assert dict(zip(counts["class"], counts["clips"])) == real["class"].value_counts().to_dict()
    assert counts["percent"].sum() == pytest.approx(100.0)
    no_gunshots = md.compute_class_counts(real[real["class"] != "gun_shot"])
    assert no_gunshots.loc[6, "clips"] == 0 and len(no_gunshots) == 10


def test_compute_class_fold_table(real: pd.DataFrame) -> None:
    table = md.compute_class_fold_table(real)
    assert list(table.index) == [*md.CLASSES, "total"] and list(table.columns) == [*range(1, 11), "total"]
    assert table.loc["total", "total"] == len(real)
    assert table.loc["total", 10] == 837
    assert list(table.loc[list(md.CLASSES), "total"]) == list(md.compute_class_counts(real)["clips"])
    assert list(table.loc["total", list(range(1, 11))]) == list(real["fold"].value_counts().sort_index())
    assert table.loc["car_horn", 5] == ((real["class"] == "car_horn") & (real["fold"] == 5)).sum()


def test_compute_duration_summary_counts_padded_clips() -> None:
    # 60.5 -> 64.5 is a full slice whose float difference is not exactly 4.
    df = pd.DataFrame({"class": ["siren", "siren", "dog_bark", "dog_bark"],
                       "start": [0.0, 60.5, 1.0, 2.0], "end": [4.0, 64.5, 1.5, 4.5]})
    summary = md.compute_duration_summary(df)
    assert list(summary.index) == ["dog_bark", "siren", "all"]
    assert summary.loc["all", "clips"] == 4
    assert summary.loc["siren", "shorter_than_4s"] == 0
    assert summary.loc["dog_bark", "shorter_than_4s"] == 2 and summary.loc["dog_bark", "under_1s"] == 1
    assert summary.loc["all", "shorter_percent"] == pytest.approx(50.0)
    assert summary.loc["all", "min_s"] == pytest.approx(0.5)
    assert summary.loc["all", "total_min"] == pytest.approx(11.0 / 60)


def test_real_duration_summary(real: pd.DataFrame) -> None:
    summary = md.compute_duration_summary(real)
    assert summary.loc["all", "clips"] == 8732
    # 1 399 real clips are shorter than 4 s; gun shots are nearly all short, street music never.
    assert summary.loc["all", "shorter_than_4s"] == 1399
    assert summary.loc["street_music", "shorter_than_4s"] == 0
    assert summary.loc["gun_shot", "shorter_percent"] > 90
