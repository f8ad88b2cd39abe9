"""The formats a collection of WAV files is in: one row per file's header, and a count per format.

UrbanSound8K's clips keep the formats of their freesound.org uploads (8 to 96 kHz, 8- to 32-bit
integers, floats, ADPCM, mono to 8 channels); this tabulates them from the headers alone, without
decoding a sample (:func:`us8k_lib.audio.read_header`). Used by notebook 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from us8k_lib.audio import read_header
from us8k_lib.errors import AudioError

_HEADER_COLUMNS = (
    "path", "file", "samplerate", "channels", "frames", "duration",
    "format", "subtype", "bits", "is_float", "size", "description",
)


def compute_format_table(
    paths: Iterable[str | Path], *, skip_bad: bool = False, progress: bool = True
) -> pd.DataFrame:
    """Tabulate the header of every file (see :func:`us8k_lib.audio.read_header`), one row per path, in order.

    Args:
        paths: WAV files.
        skip_bad: instead of raising on the first bad file, give it a row whose ``problem``
            column says what is wrong (the other columns empty).
        progress: show a tqdm progress bar.

    Returns:
        DataFrame with the :func:`us8k_lib.audio.read_header` keys as columns (plus ``problem`` when
        ``skip_bad``); ``bits`` is a nullable integer column.

    Raises:
        AudioError: for the first bad file, unless ``skip_bad``.

    Used by notebook 1.
    """
    paths = list(paths)
    rows = []
    for p in tqdm(paths, desc="reading WAV headers", unit="file", disable=not progress):
        if not skip_bad:
            rows.append(read_header(p))
            continue
        try:
            rows.append({**read_header(p), "problem": None})
        except AudioError as e:
            rows.append({"path": str(p), "file": Path(p).name, "problem": e.problem})
    columns = list(_HEADER_COLUMNS) + (["problem"] if skip_bad else [])
    table = pd.DataFrame(rows, columns=columns)
    table["bits"] = table["bits"].astype("Int64")
    for col in ("samplerate", "channels", "frames", "size"):
        if skip_bad:
            table[col] = table[col].astype("Int64")
        else:
            table[col] = table[col].astype("int64")
    return table


def format_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Count the files of each format in a :func:`compute_format_table` result.

    Returns:
        DataFrame indexed by ``description`` with ``files`` and ``share`` (% of readable files),
        most common first.

    Used by notebook 1.
    """
    ok = table[table["problem"].isna()] if "problem" in table.columns else table
    counts = ok["description"].value_counts()
    # ties in alphabetical order, so the table is the same whatever pandas' sort does with ties
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    return pd.DataFrame({"files": counts, "share": (100.0 * counts / max(len(ok), 1)).round(1)})
