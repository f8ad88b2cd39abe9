"""Check a dataset folder: the metadata and every clip, reported by problem.

``python -m us8k_lib validate`` finds what would otherwise stop training halfway: files the CSV
lists that are missing or sit in another fold's folder, WAV files the CSV does not list, files that
cannot be decoded (bad header, cut short, not a WAV, a directory or a broken link), clips whose
decoded duration disagrees with ``end - start`` in the CSV, silent clips, NaN/Inf samples, and,
with ``--checksums``, files whose size or md5 differ from the published ones.

Thresholds, and why:

* Duration: :data:`DURATION_TOLERANCE` = 0.1 s. The slices were cut from recordings at their own
  sample rates, so real files differ from ``end - start`` by a few milliseconds (up to 4.5 ms in a
  sample of real clips, e.g. 0.0500 s decoded against 0.0545 s listed; a relative tolerance would
  flag such short clips). ADPCM is stored in whole blocks, so an ADPCM file can be up to one block
  longer than its audio: 4 084 frames, 0.093 s, for libsndfile's blocks at 44.1 kHz (the mini
  dataset's ADPCM files are). A clip that was replaced or cut short is off by far more.
* Silence: peak below :data:`SILENCE_PEAK` = 1e-4 (-80 dBFS, about 3 steps of 16-bit audio). Real
  clips, even quiet background ones, peak far above that (0.12 to 1.0 in a sample of real clips);
  a peak below it means an all-zero or effectively empty file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from us8k_lib.audio import read_header, read_wav
from us8k_lib.datasets.layout import audio_dir, metadata_path
from us8k_lib.errors import AudioError, MetadataError
from us8k_lib.metadata import FOLDS, load_checksums, load_metadata
from us8k_lib.paths import is_mini, normalize_root

#: Problem kinds, in report order; each is a key of the JSON report holding a list of file names.
PROBLEM_KEYS: tuple[str, ...] = (
    "missing", "extra", "unreadable", "wrong_fold", "duration_mismatch", "non_finite", "silent",
    "checksum_mismatch",
)
#: Largest allowed difference (s) between a clip's decoded duration and ``end - start``.
DURATION_TOLERANCE = 0.1
#: A clip whose absolute peak is below this (-80 dBFS) counts as silent.
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class ClipProblem:
    """One problem with one file.

    Attributes:
        file: the file name (``slice_file_name`` for listed clips).
        fold: the fold the metadata gives it, or the fold folder an extra file sits in (None when
            an extra file is outside the fold folders).
        path: where the file is (or should be), relative to the dataset folder.
        problem: what is wrong, in words.
    """

    file: str
    fold: int | None
    path: str
    problem: str


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found.

    Attributes:
        root: the dataset folder checked.
        metadata_problems: violations in the metadata CSV (see ``metadata.load_metadata``).
        problems: for each of :data:`PROBLEM_KEYS`, the files with that problem, by fold and name.
        listed: clips listed in the metadata.
        checked: clip files opened (every listed clip that was found).
        decoded: of those, the files whose audio could be decoded (``checked`` less the
            ``unreadable`` ones).
        checksums: "checked", "not requested" or why they were skipped.
    """

    root: Path
    metadata_problems: list[str] = field(default_factory=list)
    problems: dict[str, list[ClipProblem]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KEYS})
    listed: int = 0
    checked: int = 0
    decoded: int = 0
    checksums: str = "not requested"

    @property
    def ok(self) -> bool:
        """True when neither the metadata nor any file has a problem."""
        return not self.metadata_problems and not any(self.problems.values())

    def files(self, key: str) -> list[str]:
        """Return the file names with problem ``key`` (one of :data:`PROBLEM_KEYS`)."""
        return [p.file for p in self.problems[key]]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data.

        Keys: ``root``, ``ok``, ``listed``, ``checked``, ``decoded``, ``checksums``, ``metadata_problems``
        (list of strings), one key per :data:`PROBLEM_KEYS` holding a list of file names, and
        ``details``: for each problem key, a list parallel to its file names of
        ``{"file", "fold", "path", "problem"}``. ``thresholds`` records the duration tolerance and
        silence peak used.
        """
        out: dict[str, Any] = {
            "root": str(self.root),
            "ok": self.ok,
            "listed": self.listed,
            "checked": self.checked,
            "decoded": self.decoded,
            "checksums": self.checksums,
            "metadata_problems": list(self.metadata_problems),
        }
        out.update({k: self.files(k) for k in PROBLEM_KEYS})
        out["details"] = {k: [asdict(p) for p in self.problems[k]] for k in PROBLEM_KEYS}
        out["thresholds"] = {"duration_tolerance_s": DURATION_TOLERANCE, "silence_peak": SILENCE_PEAK}
        return out

    def summary(self, first: int = 5) -> str:
        """Return a readable summary: counts per problem and the first offenders with fold and name."""
        failed = self.checked - self.decoded
        lines = [f"Validated {self.root}: {self.listed} clips listed, {self.decoded} decoded"
                 + (f" ({failed} could not be)" if failed else "") + f"; checksums {self.checksums}."]
        if self.metadata_problems:
            lines.append(f"metadata: {len(self.metadata_problems)} problem(s)")
            lines += [f"    {v}" for v in self.metadata_problems[:first]]
        for key in PROBLEM_KEYS:
            found = self.problems[key]
            lines.append(f"  {key:<18} {len(found)}")
            for p in found[:first]:
                fold = f"fold {p.fold}" if p.fold is not None else "no fold"
                lines.append(f"    {fold}: {p.file}: {p.problem}")
            if len(found) > first:
                lines.append(f"    ... and {len(found) - first} more (see --json)")
        total = len(self.metadata_problems) + sum(map(len, self.problems.values()))
        lines.append("OK: no problems found." if self.ok else f"FAILED: {total} problem(s) found.")
        return "\n".join(lines)


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_clip(
    path: str | Path, expected_duration: float | None = None, checksum: tuple[int, str] | None = None
) -> list[tuple[str, str]]:
    """Check one clip file; return ``(problem key, description)`` pairs (empty when fine).

    Reads the header, decodes every sample, compares the duration with ``expected_duration``
    (s), checks the peak for silence and, given ``checksum`` = (size, md5), the file's bytes.
    """
    path = Path(path)
    found: list[tuple[str, str]] = []
    if checksum is not None and path.is_file():
        size, md5 = checksum
        actual_size = path.stat().st_size
        if actual_size != size:
            found.append(("checksum_mismatch", f"size {actual_size} bytes, expected {size}"))
        else:
            actual_md5 = _file_md5(path)
            if actual_md5 != md5:
                found.append(("checksum_mismatch", f"md5 {actual_md5}, expected {md5}"))
    try:
        header = read_header(path)
        x, sr = read_wav(path)
    except AudioError as exc:
        # read_wav decodes NaN/Inf fine but refuses them; that is a problem of its own here.
        return found + [("non_finite" if "NaN/Inf" in exc.problem else "unreadable", exc.problem)]
    if x.shape[0] < header["frames"]:
        return found + [("unreadable", f"decoded {x.shape[0]} frames, the header declares {header['frames']}")]
    duration = x.shape[0] / sr
    if expected_duration is not None and abs(duration - expected_duration) > DURATION_TOLERANCE:
        found.append(("duration_mismatch",
                      f"decodes to {duration:.3f} s, the metadata says {expected_duration:.3f} s (end - start)"))
    peak = float(np.abs(x).max())
    if peak < SILENCE_PEAK:
        found.append(("silent", f"peak {peak:.2g} is below {SILENCE_PEAK:g} (-80 dBFS)"))
    return found


def _entries(folder: Path) -> dict[str, bool]:
    """Return {name: is a .wav name} of the visible entries of ``folder`` (empty if absent)."""
    try:
        with os.scandir(folder) as it:
            return {e.name: e.name.lower().endswith(".wav") for e in it if not e.name.startswith(".")}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _stray_wavs(audio: Path) -> Iterator[Path]:
    """Yield visible .wav files under ``audio`` that are not directly inside a fold folder."""
    folds = {f"fold{k}" for k in FOLDS}
    for dirpath, dirnames, filenames in os.walk(audio):
        # A folder named x.wav is reported as the entry itself, not walked into.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not d.lower().endswith(".wav")]
        rel = Path(dirpath).relative_to(audio)
        if len(rel.parts) == 1 and rel.parts[0] in folds:
            # Sub-folders of a fold folder are still walked; its own files are handled by fold.
            continue
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(".wav"):
                yield Path(dirpath) / name


def validate_dataset(
    root: str | Path, *, checksums: bool = False, workers: int | None = None, progress: bool = True
) -> ValidationReport:
    """Check the metadata and every clip of a dataset folder; return a :class:`ValidationReport`.

    Args:
        root: the ``UrbanSound8K`` folder or its parent.
        checksums: also compare each file's size and md5 with the shipped checksums of the real
            dataset (skipped, with a note, on a generated mini dataset: its audio is synthetic).
        workers: decoding threads (default: 2 per CPU core, at most 16; libsndfile and NumPy
            release the GIL, and reading files waits on the disk).
        progress: show a tqdm progress bar.

    Returns:
        The report; ``report.ok`` is True when nothing is wrong. Never modifies the dataset.

    Raises:
        DatasetNotFoundError: ``root`` or its metadata CSV does not exist.

    Used by ``python -m us8k_lib validate``.
    """
    root = normalize_root(root)
    report = ValidationReport(root=root)
    csv_path = metadata_path(root)
    try:
        df = load_metadata(csv_path)
    except MetadataError as exc:
        report.metadata_problems = list(exc.violations)
        try:  # the rows may still parse well enough to check the files they name
            df = load_metadata(csv_path, validate=False)
        except MetadataError:
            return report
    report.listed = len(df)

    table = None
    if checksums and is_mini(root):
        report.checksums = "skipped: this is a generated mini dataset (synthetic audio), not the real one"
        print(f"{root}: note: --checksums applies to the real UrbanSound8K only; skipped on the mini dataset.")
    elif checksums:
        table = load_checksums().set_index("slice_file_name")
        report.checksums = "checked"

    def add(key: str, name: str, fold: int | None, rel: str, problem: str) -> None:
        report.problems[key].append(ClipProblem(name, fold, rel, problem))

    audio = audio_dir(root)
    where_audio = audio.relative_to(root).as_posix()  # "audio", or "." in the flat layout

    def clip_rel(k: int, name: str) -> str:
        return (Path(where_audio) / f"fold{k}" / name).as_posix()

    present = {k: _entries(audio / f"fold{k}") for k in FOLDS}
    claimed: set[tuple[int, str]] = set()
    tasks: list[tuple[str, int, str, float, tuple[int, str] | None]] = []
    valid_fold = df["fold"].isin(FOLDS)
    for name in df.loc[~valid_fold, "slice_file_name"]:
        # The metadata problem already covers a row with fold 0 or 11; its file is not "extra" too.
        claimed.update((g, name) for g in FOLDS if name in present[g])
    rows = df[valid_fold].drop_duplicates("slice_file_name")
    for name, fold, start, end in zip(rows["slice_file_name"], rows["fold"].astype(int), rows["start"], rows["end"]):
        where = fold if name in present[fold] else next((g for g in FOLDS if name in present[g]), None)
        if where is None:
            add("missing", name, fold, clip_rel(fold, name), "listed in the metadata but not found in any fold folder")
            continue
        rel = clip_rel(where, name)
        if where != fold:
            add("wrong_fold", name, fold, rel, f"found in fold{where}, but the metadata says fold{fold}")
        claimed.add((where, name))
        checksum = None
        if table is not None:
            if name in table.index:
                checksum = (int(table.at[name, "size"]), str(table.at[name, "md5"]))
            else:
                add("checksum_mismatch", name, fold, rel,
                    "not one of the real UrbanSound8K clips (no published checksum)")
        tasks.append((name, fold, rel, float(end) - float(start), checksum))

    for k in FOLDS:
        for name, is_wav in present[k].items():
            if is_wav and (k, name) not in claimed:
                add("extra", name, k, clip_rel(k, name), "not listed in the metadata for this fold")
    for path in _stray_wavs(audio):
        rel = path.relative_to(root).as_posix()
        add("extra", path.name, None, rel, f"not directly inside a fold folder ({clip_rel(FOLDS[0], '')}..{FOLDS[-1]})")

    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(tasks), unit="clip", desc="validate", disable=not progress
    ) as bar:
        results = pool.map(lambda t: check_clip(root / t[2], t[3], t[4]), tasks)
        for (name, fold, rel, _, _), found in zip(tasks, results):
            for key, problem in found:
                add(key, name, fold, rel, problem)
            report.decoded += not any(key == "unreadable" for key, _ in found)
            bar.update(1)
    report.checked = len(tasks)
    for key in PROBLEM_KEYS:
        report.problems[key].sort(key=lambda p: (p.fold is None, p.fold or 0, p.path))
    return report


