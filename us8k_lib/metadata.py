"""UrbanSound8K metadata: load and validate the CSV, pick folds, check leakage, summarise it.

The metadata file ``UrbanSound8K/metadata/UrbanSound8K.csv`` has one row per clip: its file name
``{fsID}-{classID}-{occurrenceID}-{sliceID}.wav``, the freesound recording it was cut from
(``fsID``), where in that recording (``start``/``end`` seconds), ``salience`` (1 foreground,
2 background), the ``fold`` (1..10) and the label (``classID`` and ``class``). The original file
ships with this package (CC BY-NC 3.0, see ``data/README.md``), so notebook 1 can explore it
before any audio exists.

Why the official folds must be used: the dataset cuts each recording into many slices (up to 4 s
each). Slices of one recording share its microphone, room and background, so a random train/test
split puts near-copies of test clips in the training set and the model scores by recognising the
recording, not the class (one study: 98.1% accuracy with a random split against 83.9% with the
official folds). The authors placed all slices of a recording and class in a single fold; train on
some folds, test on another, never reshuffle. :func:`check_leakage` verifies exactly that.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from us8k_lib.datasets.layout import metadata_path, normalize_root
from us8k_lib.errors import DatasetNotFoundError, MetadataError
from us8k_lib.folds import FOLDS

#: The 10 class names; the index is the ``classID``.
CLASSES: tuple[str, ...] = (
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
)
#: The columns of the metadata CSV, in the official order.
COLUMNS: tuple[str, ...] = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
#: Columns of the shipped per-clip checksum table.
CHECKSUM_COLUMNS: tuple[str, ...] = ("slice_file_name", "fold", "size", "md5", "sha256")
#: Length of a full slice; shorter clips are zero-padded to this length before training.
CLIP_SECONDS = 4.0
# The CSV's float artefacts make full 4 s slices measure 3.9999999999999996 s (end - start).
_DURATION_TOLERANCE = 1e-6
_INT_COLUMNS = ("fsID", "salience", "fold", "classID")
_FLOAT_COLUMNS = ("start", "end")
_NAME_PATTERN = r"^(\d+)-(\d+)-(\d+)-(\d+)\.wav\Z"
_DATA_DIR = Path(__file__).resolve().parent / "data"


def reference_metadata_path() -> Path:
    """Return the path of the original UrbanSound8K.csv shipped in the package.

    Used by :func:`load_metadata` (notebook 1) and the mini dataset's generator."""
    return _DATA_DIR / "UrbanSound8K.csv"


def reference_checksums_path() -> Path:
    """Return the path of the shipped per-clip checksums CSV (fold, size, md5, sha256)."""
    return _DATA_DIR / "UrbanSound8K-checksums.csv"


def load_metadata(source: str | Path | None = None, *, validate: bool = True) -> pd.DataFrame:
    """Load an UrbanSound8K metadata CSV into a typed DataFrame, checking every row.

    Args:
        source: ``None`` for the shipped original CSV, a CSV file, or a dataset root (the
            ``UrbanSound8K`` folder or its parent).
        validate: also check the dataset's rules (fold, salience, classID<->class, end > start,
            file names, duplicates). With ``False`` the file must still parse into typed columns.

    Returns:
        One row per clip with columns :data:`COLUMNS` (str, int64, float64, float64, int64, int64,
        int64, str) and a fresh 0-based index. Extra columns are kept (as str) after them; column
        order in the file does not matter. A UTF-8 byte-order mark is accepted. Used by notebook 1.

    Raises:
        DatasetNotFoundError: the file or dataset root does not exist (message names the path).
        MetadataError: listing every problem found, each as ``row N (CSV line N+1) [file name]
            column 'X': what is wrong``; row N is the N-th data row, the header is CSV line 1.
            An empty file, a header without rows, non-UTF-8 bytes, rows with the wrong number of
            fields and blank lines between rows are errors too.
    """
    path = _metadata_file(source)
    text = _read_text(path)
    raw = _parse_csv(path, text)
    checker = _Checker(raw, _csv_location, rules=validate)
    if checker.problems:
        raise MetadataError(path, checker.problems)
    numbers = checker.num
    typed = {c: numbers[c].astype("int64" if c in _INT_COLUMNS else "float64") if c in numbers else raw[c].astype(str)
             for c in COLUMNS}
    return pd.DataFrame({**typed, **{c: raw[c].astype(str) for c in raw.columns if c not in COLUMNS}})


def find_metadata_problems(df: pd.DataFrame) -> list[str]:
    """Check a metadata DataFrame (typed or all-text) against UrbanSound8K's rules.

    Returns:
        One line per problem, ``row N [file name] column 'X': what is wrong``, where row N is the
        N-th row of ``df`` (counted from 1); an empty list if the frame is valid.
    """
    if df.columns.duplicated().any():
        return [f"column {c!r} appears more than once" for c in df.columns[df.columns.duplicated()].unique()]
    return _Checker(df.reset_index(drop=True), lambda i: f"row {i + 1}", rules=True).problems


def load_checksums() -> pd.DataFrame:
    """Return the shipped size, md5 and sha256 of all 8 732 real clips, one row per clip.

    Columns :data:`CHECKSUM_COLUMNS`: slice_file_name (str), fold (int64), size in bytes (int64),
    md5 and sha256 (lower-case hex str). Used to verify a downloaded dataset file by file.
    """
    path = reference_checksums_path()
    df = pd.read_csv(path, dtype={"slice_file_name": str, "fold": "int64", "size": "int64", "md5": str,
                                  "sha256": str})
    if tuple(df.columns) != CHECKSUM_COLUMNS:
        raise MetadataError(path, [f"header is {list(df.columns)}, expected {list(CHECKSUM_COLUMNS)}"])
    return df


def select_folds(df: pd.DataFrame, folds: int | Iterable[int]) -> pd.DataFrame:
    """Return the rows of ``df`` whose fold is in ``folds`` (one fold or several), re-indexed from 0.

    Raises:
        ValueError: if no fold is given or one is not an integer in 1..10.
    Used by :class:`us8k_lib.dataset.US8KDataset` (notebooks 3 and 5).
    """
    wanted = [folds] if isinstance(folds, (int, np.integer)) else list(folds)
    if not wanted or any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f not in FOLDS
                         for f in wanted):
        raise ValueError(f"folds must be one or more integers in 1..10, got {folds!r}")
    return df[df["fold"].isin(wanted)].reset_index(drop=True)


@dataclass(eq=False)
class LeakageReport:
    """Result of :func:`check_leakage`.

    Attributes:
        leaks: slices of one recording and class spread over more than one fold (a model would
            be tested on near-copies of its training clips). Columns fsID, classID, class, fold,
            slices: one row per (recording, class, fold).
        cross_class_recordings: recordings whose *different* classes sit in different folds
            (each class of it in a single fold). Legitimate: the clips differ in label and
            content; the real CSV has 5 such recordings. Same columns. A recording with a leak
            is listed under ``leaks`` only.
    """

    leaks: pd.DataFrame
    cross_class_recordings: pd.DataFrame

    @property
    def ok(self) -> bool:
        """True if no (recording, class) pair sits in two folds."""
        return self.leaks.empty

    def summary(self, max_recordings: int = 10) -> str:
        """Return readable lines on leaks, then on cross-class recordings (up to ``max_recordings`` each).

        Used by notebook 1.
        """
        pairs = self.leaks.groupby(["fsID", "classID"]).ngroups
        lines = [f"LEAKAGE: {pairs} (recording, class) pair(s) sit in several folds." if pairs
                 else "No leakage: all slices of a recording and class sit in one fold.",
                 f"{self.cross_class_recordings['fsID'].nunique()} recording(s) have different classes in different "
                 "folds (allowed: their clips differ in label and content)."]
        for title, table in (("leak", self.leaks), ("different classes", self.cross_class_recordings)):
            ids = table["fsID"].unique()
            for fs_id, rows in table[table["fsID"].isin(ids[:max_recordings])].groupby("fsID"):
                parts = [f"{c} in fold {f} ({n} slice{'s' * (n != 1)})"
                         for c, f, n in rows[["class", "fold", "slices"]].to_numpy()]
                lines.append(f"  {title}: recording {fs_id}: {', '.join(parts)}")
            if len(ids) > max_recordings:
                lines.append(f"  ... and {len(ids) - max_recordings} more recording(s) ({title})")
        return "\n".join(lines)


def check_leakage(df: pd.DataFrame) -> LeakageReport:
    """Find recordings (fsID) whose slices of one class sit in more than one fold.

    Also lists recordings whose different classes sit in different folds, which is allowed.
    Try it on a random split (``df.assign(fold=rng.integers(1, 11, len(df)))``) to see why the
    official folds matter. Used by notebook 1.
    """
    per_fold = (df.groupby(["fsID", "classID", "class", "fold"]).size().rename("slices").reset_index()
                .sort_values(["fsID", "classID", "fold"], ignore_index=True))
    folds_of_pair = per_fold.groupby(["fsID", "classID"])["fold"].transform("nunique")
    leaking_ids = per_fold.loc[folds_of_pair > 1, "fsID"].unique()
    by_id = per_fold.groupby("fsID")
    cross = (by_id["fold"].transform("nunique") > 1) & (by_id["classID"].transform("nunique") > 1)
    return LeakageReport(
        leaks=per_fold[folds_of_pair > 1].reset_index(drop=True),
        cross_class_recordings=per_fold[cross & ~per_fold["fsID"].isin(leaking_ids)].reset_index(drop=True),
    )


def compute_class_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Return clips per class: index classID 0..9, columns class, clips, percent. Used by notebook 1."""
    clips = df["classID"].value_counts().reindex(range(len(CLASSES)), fill_value=0).to_numpy()
    out = pd.DataFrame({"class": list(CLASSES), "clips": clips}, index=pd.RangeIndex(len(CLASSES), name="classID"))
    out["percent"] = 100.0 * out["clips"] / max(len(df), 1)
    return out


def compute_class_fold_table(df: pd.DataFrame) -> pd.DataFrame:
    """Return clip counts per class (rows, CLASSES order) and fold (columns 1..10), with totals.

    The last row and column are named ``total``. Used by notebook 1.
    """
    table = pd.crosstab(df["class"], df["fold"]).reindex(index=list(CLASSES), columns=list(FOLDS), fill_value=0)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name, table.columns.name = "class", "fold"
    return table


def compute_duration_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Return clip durations (end - start) per class plus an ``all`` row.

    Columns: clips; shorter_than_4s (clips zero-padded to 4 s before training) and its percent;
    under_1s; min_s, mean_s (seconds); total_min (minutes of audio). Durations within 1 µs of 4 s
    count as full (the CSV's float artefacts). Used by notebook 1.
    """
    seconds = (df["end"] - df["start"]).to_numpy(dtype="float64")
    frame = pd.DataFrame({"class": df["class"].astype(str).to_numpy(), "duration": seconds,
                          "short": seconds < CLIP_SECONDS - _DURATION_TOLERANCE, "under_1s": seconds < 1.0})
    columns = {"clips": ("duration", "size"), "shorter_than_4s": ("short", "sum"), "under_1s": ("under_1s", "sum"),
               "min_s": ("duration", "min"), "mean_s": ("duration", "mean"), "total_min": ("duration", "sum")}
    per_class = frame.groupby("class").agg(**columns)
    present = [c for c in CLASSES if c in per_class.index] + sorted(set(per_class.index) - set(CLASSES))
    out = pd.concat([per_class.loc[present], frame.assign(**{"class": "all"}).groupby("class").agg(**columns)])
    out.insert(2, "shorter_percent", 100.0 * out["shorter_than_4s"] / out["clips"])
    out["total_min"] /= 60.0
    out.index.name = "class"
    return out


def _metadata_file(source: str | Path | None) -> Path:
    if source is None:
        return reference_metadata_path()
    path = Path(source).expanduser()
    if path.is_dir():
        return metadata_path(normalize_root(path))
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such metadata file or dataset folder")
    return path


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MetadataError(path, [f"cannot read the file ({exc.strerror or exc})"]) from None
    if not data.strip():
        raise MetadataError(path, ["empty file: no header and no rows"])
    try:
        return data.decode("utf-8-sig")  # the BOM Excel writes is harmless
    except UnicodeDecodeError as first:
        bad = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append(f"CSV line {number}: not UTF-8 (byte 0x{line[exc.start]:02x} at position {exc.start + 1})")
        raise MetadataError(path, bad or [f"not UTF-8 ({first})"]) from None


def _csv_location(i: int) -> str:
    return f"row {i + 1} (CSV line {i + 2})"


def _parse_csv(path: Path, text: str) -> pd.DataFrame:
    """Split the text into header and rows, every cell kept as text; rows must match the header."""
    reader = csv.reader(io.StringIO(text.rstrip("\r\n")))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise MetadataError(path, [f"CSV line {reader.line_num}: {exc}"]) from None
    header, body = rows[0], rows[1:]
    if not header:
        raise MetadataError(path, ["CSV line 1 is blank: expected the header " + ",".join(COLUMNS)])
    if len(set(header)) < len(header):
        raise MetadataError(path, [f"column {c!r} appears {header.count(c)} times in the header"
                                   for c in dict.fromkeys(header) if header.count(c) > 1])
    if not body:
        raise MetadataError(path, ["no data rows: the file has only a header"])
    if set(map(len, body)) != {len(header)}:  # pandas would silently pad or drop such cells
        raise MetadataError(path, [
            f"{_csv_location(i)} [{row[0]}]: {len(row)} fields, but the header has {len(header)}" if row
            else f"{_csv_location(i)}: blank line"
            for i, row in enumerate(body) if len(row) != len(header)])
    return pd.DataFrame(body, columns=header, dtype=object)


class _Checker:
    """Checks a typed or all-text frame, vectorised; Python only loops over the rows found bad.

    After construction, ``problems`` lists every problem sorted by row and ``num`` holds the
    numeric columns as float64.
    """

    def __init__(self, df: pd.DataFrame, locate: Callable[[int], str], *, rules: bool) -> None:
        self.locate = locate
        unexpected = ", ".join(repr(c) for c in df.columns if c not in COLUMNS)
        hint = f" (the header has unexpected column(s) {unexpected})" if unexpected else ""
        self.found = [(-1, f"missing column {c!r}{hint}") for c in COLUMNS if c not in df.columns]
        if df.empty:
            self.found.append((-1, "no data rows"))
        self.text = {c: df[c].astype(str) for c in ("slice_file_name", "class") if c in df.columns}
        self.blank = {c: df[c].isna().to_numpy() | (self.text[c].str.strip() == "").to_numpy() for c in self.text}
        for c in self.text:
            self.report(self.blank[c], c, lambda i: "empty")
        self.num: dict[str, pd.Series] = {}  # numeric columns as float64 (NaN where unparsable)
        self.ok: dict[str, np.ndarray] = {}  # where those values are usable (finite; whole for int columns)
        for c in (c for c in COLUMNS if c in df.columns and c in _INT_COLUMNS + _FLOAT_COLUMNS):
            cell = df[c]
            values = _to_float(cell)
            finite = np.isfinite(values.to_numpy())
            # Empty cells fail to parse too: tell them apart on the bad rows only.
            self.report(~finite, c, lambda i, v=cell: f"{str(v.iat[i]).strip()!r} is not a number"
                        if pd.notna(v.iat[i]) and str(v.iat[i]).strip() else "empty")
            self.ok[c] = finite & ((values == values.round()).to_numpy() if c in _INT_COLUMNS else True)
            self.report(finite & ~self.ok[c], c, lambda i, v=cell: f"{str(v.iat[i]).strip()!r} is not a whole number")
            self.num[c] = values
        if rules:
            self.check_rules()
        self.problems = [message for _, message in sorted(self.found, key=lambda item: item[0])]

    def report(self, bad: np.ndarray, column: str, what: Callable[[int], str]) -> None:
        names, blank = self.text.get("slice_file_name"), self.blank.get("slice_file_name")
        for i in map(int, np.flatnonzero(bad)):
            name = "no file name" if names is None or blank[i] else names.iat[i]
            self.found.append((i, f"{self.locate(i)} [{name}] column {column!r}: {what(i)}"))

    def shown(self, c: str, i: int) -> str:
        value = float(self.num[c].iat[i])
        return str(int(value)) if value.is_integer() else repr(value)

    def check_rules(self) -> None:
        """Report values that parse but break the dataset's rules (only where the inputs are usable)."""
        num, ok = self.num, self.ok
        range_rules = (  # column, other columns it needs, bad rows, message
            ("fold", (), lambda: ~num["fold"].isin(FOLDS), "{v} is not a fold in 1..10"),
            ("salience", (), lambda: ~num["salience"].isin((1, 2)), "{v} is not 1 (foreground) or 2 (background)"),
            ("classID", (), lambda: ~num["classID"].isin(range(len(CLASSES))), "{v} is not a classID in 0..9"),
            ("fsID", (), lambda: num["fsID"] < 1, "{v} is not a freesound id (>= 1)"),
            ("start", (), lambda: num["start"] < 0, "{v} is negative"),
            ("end", ("start",), lambda: num["end"] <= num["start"], "{v} is not after start {start}"),
        )
        for c, needs, bad, what in range_rules:
            if c in num and all(n in num for n in needs):
                usable = np.logical_and.reduce([ok[n] for n in (c, *needs)])
                self.report(usable & bad().to_numpy(), c, lambda i, c=c, what=what, needs=needs: what.format(
                    v=self.shown(c, i), **{n: self.shown(n, i) for n in needs}))
        if "class" in self.text:
            label = self.text["class"]
            known = label.isin(CLASSES).to_numpy()
            self.report(~known & ~self.blank["class"], "class",
                        lambda i: f"{label.iat[i]!r} is not one of the 10 classes")
            if "classID" in num:
                expected = num["classID"].map(dict(enumerate(CLASSES)))  # NaN where classID is out of range
                self.report(known & expected.notna().to_numpy() & (label != expected).to_numpy(), "class",
                            lambda i: f"{label.iat[i]!r} does not match classID {self.shown('classID', i)} "
                                      f"({expected.iat[i]})")
        if "slice_file_name" in self.text:
            self.check_file_names(self.text["slice_file_name"], ~self.blank["slice_file_name"])

    def check_file_names(self, names: pd.Series, given: np.ndarray) -> None:
        pieces = names.str.extract(_NAME_PATTERN)
        parsed = pieces[0].notna().to_numpy()
        self.report(~parsed & given, "slice_file_name",
                    lambda i: "does not match {fsID}-{classID}-{occurrenceID}-{sliceID}.wav")
        for c, group in (("fsID", 0), ("classID", 1)):
            if c in self.num:
                from_name = pd.to_numeric(pieces[group], errors="coerce")
                self.report(parsed & self.ok[c] & (from_name != self.num[c]).to_numpy(), c, lambda i, c=c, f=from_name:
                            f"{self.shown(c, i)} disagrees with the file name, which says {c} {int(f.iat[i])}")
        repeated = names.duplicated(keep="first").to_numpy() & given
        if repeated.any():
            first = pd.Series(np.arange(len(names))).groupby(names.to_numpy()).transform("min").to_numpy()
            self.report(repeated, "slice_file_name", lambda i: f"duplicate of row {first[i] + 1}")


def _to_float(cells: pd.Series) -> pd.Series:
    """Parse text cells as Python parses floats (exact round trip; NaN where unparsable).

    pandas' own fast parser (``pd.to_numeric``) is not exact in every version: pandas 2.3 reads
    ``11.341332999999999`` as ``11.341333``. Python's ``float`` gives the nearest double.
    """
    def parse(v: object) -> float:
        try:
            return float(str(v).strip()) if v is not None else float("nan")
        except ValueError:
            return float("nan")

    return pd.Series([parse(v) for v in cells], index=cells.index, dtype="float64")
