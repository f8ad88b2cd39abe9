"""The mini UrbanSound8K: real metadata rows, synthesized audio, the real dataset's mix of WAV formats.

The real dataset (6 GB) cannot be fetched everywhere, so :func:`make_mini` writes a small one in
the exact real layout (``UrbanSound8K/metadata/UrbanSound8K.csv``, ``UrbanSound8K/audio/foldN/``):

* **Rows** are a real subset of the shipped original CSV (file names, fsIDs, folds, start/end,
  salience), copied byte for byte, picked recording by recording so that a recording's slices stay
  together in its fold, as in the real data.
* **Audio** is synthesized for each row's duration (``end - start``) by :mod:`us8k_lib.datasets.synth`. Each class
has its own
  synthesizer with a recognisable signature (a siren's pitch sweep, a jackhammer's rapid hits, an
  idling engine's low pulsing, ...), varied per recording and per slice in pitch, timing and
  loudness, over a background noise bed; salience 2 rows have the foreground quieter than the
  background. Slices of one recording share a sound source and a background, as in the real data.
* **Formats** follow the real mix (16-bit 44.1 kHz stereo most, 24-bit WAVE_FORMAT_EXTENSIBLE,
  float, 8-bit, ADPCM, 8-96 kHz, mono and stereo) and are drawn per recording from their own random
  stream, independently of the class, so no format artifact gives a label away.

Everything is byte-for-byte deterministic for a seed. Used by notebook 1 (and by
:func:`us8k_lib.paths.resolve_root`, which generates it on first use).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import struct
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from us8k_lib.datasets.layout import DATASET_DIRNAME, MARKER_NAME, METADATA_RELPATH, read_marker
from us8k_lib.datasets.synth import (  # noqa: F401 - synthesize and the synthesizers are used through this module too
    _STREAM_FORCE,
    _STREAM_FORMAT,
    _STREAM_SELECT,
    SYNTHESIZERS,
    _active_level,
    _check_seed,
    _frames,
    _render,
    _rng,
    synthesize,
)
from us8k_lib.errors import US8KError
from us8k_lib.folds import DEFAULT_TEST_FOLD, FOLDS
from us8k_lib.metadata import CLASSES, load_metadata, reference_metadata_path

#: Bumped whenever the synthesis or selection changes, so an old dataset is not taken for a new one.
GENERATOR_VERSION = 2
#: The fold the sizes give more clips to: the tutorial's test fold.
TEST_FOLD = DEFAULT_TEST_FOLD

_TMP_PREFIX = f".{DATASET_DIRNAME}.tmp-"
_OLD_PREFIX = f".{DATASET_DIRNAME}.old-"
_STALE_SECONDS = 3600


@dataclass(frozen=True)
class MiniSize:
    """How many clips a size has.

    Attributes:
        per_class_fold: clips per (class, fold) in folds 1-9.
        per_class_test: clips per class in fold 10 (more, so test accuracy is less noisy).
        max_slices_per_recording: at most this many consecutive slices are taken from one
            recording (more only where a (class, fold) has too few recordings).
        purpose: what the size is for.
    """

    per_class_fold: int
    per_class_test: int
    max_slices_per_recording: int
    purpose: str

    @property
    def n_clips(self) -> int:
        """Total number of clips."""
        return len(CLASSES) * (9 * self.per_class_fold + self.per_class_test)


#: The sizes ``make_mini`` can write.
SIZES: dict[str, MiniSize] = {
    "tiny": MiniSize(1, 2, 2, "unit tests (110 clips, ~60 MB)"),
    "mini": MiniSize(4, 10, 2, "default: notebooks and the training command (460 clips, ~270 MB)"),
    "medium": MiniSize(8, 20, 3, "more training data (920 clips, ~550 MB)"),
}


@dataclass(frozen=True)
class WavFormat:
    """One audio file format of the real dataset, with its share of the real files.

    Attributes:
        container: soundfile ``format``: ``"WAV"`` or ``"WAVEX"`` (WAVE_FORMAT_EXTENSIBLE header).
        subtype: soundfile ``subtype`` (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ``"PCM_U8"``,
            ``"MS_ADPCM"``, ``"IMA_ADPCM"``).
        samplerate: Hz.
        channels: 1 or 2.
        weight: share (percent) in a 422-file sample of the real dataset.
    """

    container: str
    subtype: str
    samplerate: int
    channels: int
    weight: float

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``"WAVEX PCM_24 stereo 96k"``."""
        khz = f"{self.samplerate / 1000:g}k"
        return f"{self.container} {self.subtype} {'stereo' if self.channels == 2 else 'mono'} {khz}"


#: The real dataset's format mix (shared/README.md table); every one appears in every size.
FORMATS: tuple[WavFormat, ...] = (
    WavFormat("WAV", "PCM_16", 44100, 2, 41.0),
    WavFormat("WAVEX", "PCM_24", 44100, 2, 7.0),
    WavFormat("WAVEX", "PCM_24", 44100, 1, 4.0),
    WavFormat("WAVEX", "PCM_24", 48000, 2, 5.0),
    WavFormat("WAVEX", "PCM_24", 48000, 1, 3.0),
    WavFormat("WAVEX", "PCM_24", 96000, 2, 3.0),
    WavFormat("WAVEX", "PCM_24", 96000, 1, 2.0),
    WavFormat("WAV", "PCM_16", 48000, 2, 8.0),
    WavFormat("WAV", "FLOAT", 48000, 2, 8.0),
    WavFormat("WAV", "PCM_16", 24000, 2, 7.0),
    WavFormat("WAV", "PCM_16", 44100, 1, 6.0),
    WavFormat("WAV", "PCM_U8", 11025, 1, 2.0),
    WavFormat("WAV", "PCM_16", 8000, 2, 1.0),
    WavFormat("WAV", "PCM_16", 11025, 1, 1.0),
    WavFormat("WAV", "PCM_16", 22050, 2, 1.0),
    WavFormat("WAV", "PCM_16", 48000, 1, 1.0),
    WavFormat("WAV", "MS_ADPCM", 44100, 1, 0.5),
    WavFormat("WAV", "IMA_ADPCM", 44100, 1, 0.5),
)


def _size_spec(size: str) -> MiniSize:
    if size not in SIZES:
        raise US8KError(f"unknown mini dataset size {size!r}: choose one of {', '.join(SIZES)}")
    return SIZES[size]


# --------------------------------------------------------------------------------------------
# Rows and formats


def _name_parts(names: pd.Series) -> pd.DataFrame:
    parts = names.str.extract(r"^(\d+)-(\d+)-(\d+)-(\d+)\.wav$").astype("int64")
    parts.columns = ["fsID", "classID", "occurrence", "slice"]
    return parts


def select_rows(seed: int = 0, size: str = "mini", metadata: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pick the mini dataset's rows from the real metadata, recording by recording.

    For each (class, fold) the recordings are shuffled and a run of 1..``max_slices_per_recording``
    consecutive slices is taken from each until the size's count is reached, so several slices of
    one recording sit together in their fold. Where a (class, fold) has too few recordings for
    that, the runs are lengthened evenly. Recordings whose rows span two folds (5 in the real CSV,
    for different classes) are left out so that no fsID spans folds in the mini dataset.

    Args:
        seed: random seed (the same seed gives the same rows).
        size: a key of :data:`SIZES`.
        metadata: the real metadata (default: the shipped CSV via ``load_metadata()``).

    Returns:
        The chosen rows with the metadata's columns, in the real CSV's order (fresh index).
        Used by :func:`plan_mini`.
    """
    spec, seed = _size_spec(size), _check_seed(seed)
    df = load_metadata() if metadata is None else metadata
    folds_per_recording = df.groupby("fsID")["fold"].nunique()
    usable = df[df["fsID"].map(folds_per_recording) == 1]
    usable = usable.join(_name_parts(usable["slice_file_name"])[["occurrence", "slice"]])
    chosen: list[int] = []
    for (class_id, fold), unsorted in usable.groupby(["classID", "fold"], sort=True):
        want = spec.per_class_test if fold == TEST_FOLD else spec.per_class_fold
        rng = _rng(seed, _STREAM_SELECT, class_id, fold)
        group = unsorted.sort_values(["fsID", "occurrence", "start", "slice"])
        recordings = [list(g.index) for _, g in group.groupby("fsID", sort=True)]
        order = rng.permutation(len(recordings))
        counts = np.zeros(len(recordings), dtype=int)
        for i in order:  # a run of 1..max slices from each recording until there are enough
            if counts.sum() >= want:
                break
            counts[i] = min(int(rng.integers(1, spec.max_slices_per_recording + 1)), want - counts.sum(),
                            len(recordings[i]))
        while 0 < counts.sum() < want:  # too few recordings: lengthen the runs one slice at a time
            grown = False
            for i in order:
                if counts.sum() < want and 0 < counts[i] < len(recordings[i]):
                    counts[i] += 1
                    grown = True
            if not grown:
                break
        picked: list[int] = []
        for i in order:
            if counts[i]:
                first = int(rng.integers(0, len(recordings[i]) - counts[i] + 1))
                picked += recordings[i][first:first + counts[i]]
        if len(picked) < want:
            raise US8KError(f"the metadata has only {len(picked)} usable rows of class {class_id} in fold {fold}, "
                            f"size {size!r} needs {want}")
        chosen += picked
    found = {(c, f) for c, f in usable.loc[chosen, ["classID", "fold"]].itertuples(index=False)}
    missing = [(c, f) for c in range(len(CLASSES)) for f in FOLDS if (c, f) not in found]
    if missing:
        raise US8KError(f"the metadata has no usable rows for (classID, fold) {missing[:5]}")
    return df.loc[sorted(chosen)].reset_index(drop=True)


def assign_formats(fsids: Sequence[int], seed: int = 0) -> dict[int, int]:
    """Draw a WAV format for each recording, independently of its class.

    Every recording gets one format (its slices share it, as the real files cut from one
    freesound upload do), drawn with the real shares from a stream keyed by (seed, fsID) only.
    Formats that no recording drew are then forced in, each replacing the format of one random
    recording of the currently commonest format, so every format of :data:`FORMATS` appears.

    Returns:
        ``{fsID: index into FORMATS}``. Used by :func:`plan_mini`.
    """
    seed = _check_seed(seed)
    weights = np.array([f.weight for f in FORMATS])
    weights = weights / weights.sum()
    recordings = sorted({int(f) for f in fsids})
    fmt = {fs: int(_rng(seed, _STREAM_FORMAT, fs).choice(len(FORMATS), p=weights)) for fs in recordings}
    force = _rng(seed, _STREAM_FORCE)
    for missing in range(len(FORMATS)):
        counts = Counter(fmt.values())
        if missing in counts:
            continue
        commonest = max(counts, key=lambda i: (counts[i], -i))
        if counts[commonest] < 2:
            break  # fewer recordings than formats: nothing left to give away
        pool = [fs for fs in recordings if fmt[fs] == commonest]
        fmt[pool[int(force.integers(len(pool)))]] = missing
    return fmt


def plan_mini(seed: int = 0, size: str = "mini") -> pd.DataFrame:
    """Return what :func:`make_mini` writes, without synthesizing anything.

    Returns:
        The rows of :func:`select_rows` plus ``format`` (index into :data:`FORMATS`),
        ``format_label``, ``samplerate``, ``channels`` and ``frames`` (``round((end - start) *
        samplerate)``; ADPCM files are longer by up to one block, see :func:`make_mini`).
        Used by the ``make-mini`` summary.
    """
    rows = select_rows(seed, size)
    fmt = assign_formats(rows["fsID"].tolist(), seed)
    rows["format"] = rows["fsID"].map(fmt).astype("int64")
    rows["format_label"] = [FORMATS[i].label for i in rows["format"]]
    rows["samplerate"] = [FORMATS[i].samplerate for i in rows["format"]]
    rows["channels"] = [FORMATS[i].channels for i in rows["format"]]
    rows["frames"] = [_frames(e - s, sr) for s, e, sr in zip(rows["start"], rows["end"], rows["samplerate"])]
    return rows


# --------------------------------------------------------------------------------------------
# Writing WAV files deterministically


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise US8KError("internal error: soundfile did not write a RIFF/WAVE file")
    out, i = [], 12
    while i + 8 <= len(data):
        cid, size = data[i:i + 4], struct.unpack_from("<I", data, i + 4)[0]
        out.append((cid, data[i + 8:i + 8 + size]))
        i += 8 + size + (size & 1)
    return out


def _riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WAVE" + b"".join(cid + struct.pack("<I", len(b)) + b + (b"\0" if len(b) & 1 else b"") for cid, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@cache
def _adpcm_block_frames(fmt: WavFormat) -> int:
    """Frames per ADPCM block as libsndfile writes it (it depends on the rate and channels)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((16, fmt.channels), np.float32), fmt.samplerate, format=fmt.container, subtype=fmt.subtype)
    fmt_body = dict(_chunks(buf.getvalue()))[b"fmt "]
    return struct.unpack_from("<H", fmt_body, 18)[0]


def write_wav(path: str | Path, audio: np.ndarray, fmt: WavFormat) -> None:
    """Write (frames, channels) float audio to ``path`` as a WAV file in ``fmt``, reproducibly.

    libsndfile stamps float files with a PEAK chunk holding the current time; it is dropped (it is
    optional), so the same audio always gives the same bytes. ADPCM is written in whole blocks:
    the audio is padded with silence to a whole number of blocks, so such files are longer than
    ``audio`` by less than one block (the real dataset's ADPCM file is block-aligned too).
    Used by :func:`make_mini`.
    """
    if fmt.subtype.endswith("ADPCM"):
        block = _adpcm_block_frames(fmt)
        pad = -audio.shape[0] % block
        audio = np.concatenate([audio, np.zeros((pad, audio.shape[1]), audio.dtype)]) if pad else audio
    sf.write(path, audio, fmt.samplerate, format=fmt.container, subtype=fmt.subtype)
    if fmt.subtype in ("FLOAT", "DOUBLE"):
        chunks = _chunks(Path(path).read_bytes())
        if any(cid == b"PEAK" for cid, _ in chunks):
            Path(path).write_bytes(_riff([c for c in chunks if c[0] != b"PEAK"]))


# --------------------------------------------------------------------------------------------
# The dataset folder


def _marker_text(seed: int, size: str, plan: pd.DataFrame) -> str:
    return (
        "UrbanSound8K mini dataset, generated by us8k_lib.datasets.mini (python -m us8k_lib make-mini).\n"
        f"seed: {seed}\n"
        f"size: {size}\n"
        f"generator: {GENERATOR_VERSION}\n"
        f"clips: {len(plan)}\n"
        "\n"
        "THE AUDIO IS SYNTHETIC: every clip was synthesized by us8k_lib.datasets.mini to imitate its class;\n"
        "none is a recording. The metadata rows (metadata/UrbanSound8K.csv) are a real subset of the\n"
        "original UrbanSound8K metadata, copied line for line; the file formats imitate the real\n"
        "dataset's mix. Results on this dataset say nothing about results on the real one.\n"
        "\n"
        "UrbanSound8K: J. Salamon, C. Jacoby and J. P. Bello, \"A Dataset and Taxonomy for Urban Sound\n"
        "Research\", 22nd ACM International Conference on Multimedia (ACM-MM'14), Orlando, 2014.\n"
        "https://urbansounddataset.weebly.com/urbansound8k.html\n"
        "Its metadata is licensed under Creative Commons Attribution-NonCommercial 3.0 (CC BY-NC 3.0):\n"
        "https://creativecommons.org/licenses/by-nc/3.0/\n"
    )


def _same(marker: dict[str, str] | None, seed: int, size: str) -> bool:
    return marker is not None and marker.get("seed") == str(seed) and marker.get("size") == size \
        and marker.get("generator") == str(GENERATOR_VERSION)


def _describe(marker: dict[str, str]) -> str:
    return f"seed {marker.get('seed', '?')}, size {marker.get('size', '?')!r}, generator {marker.get('generator', '?')}"


def _csv_lines() -> tuple[bytes, dict[str, bytes]]:
    """The real CSV's header line and its data lines by file name, byte for byte."""
    lines = reference_metadata_path().read_bytes().splitlines(keepends=True)
    return lines[0], {line.split(b",", 1)[0].decode("utf-8"): line for line in lines[1:] if line.strip()}


def _remove_stale(parent: Path) -> None:
    """Remove temp folders that a crashed run left behind (only ones well older than any run)."""
    now = time.time()
    for p in parent.iterdir():
        if p.name.startswith((_TMP_PREFIX, _OLD_PREFIX)) and p.is_dir():
            try:
                if now - p.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def _write_row(folder: Path, row: dict, seed: int) -> None:
    fmt = FORMATS[row["format"]]
    audio = _render(row, fmt.samplerate, fmt.channels, seed, frames=row["frames"])
    write_wav(folder / "audio" / f"fold{row['fold']}" / row["slice_file_name"], audio, fmt)


def _write_dataset(folder: Path, plan: pd.DataFrame, seed: int, size: str, progress: bool, workers: int) -> None:
    header, lines = _csv_lines()
    (folder / METADATA_RELPATH.parent).mkdir(parents=True)
    (folder / METADATA_RELPATH).write_bytes(header + b"".join(lines[name] for name in plan["slice_file_name"]))
    for fold in FOLDS:
        (folder / "audio" / f"fold{fold}").mkdir(parents=True)
    records = plan.to_dict("records")
    bar = tqdm(total=len(records), desc=f"make-mini ({size})", unit="clip", disable=not progress)
    # Threads: numpy's FFTs and ufuncs and libsndfile release the GIL, and every row has its own
    # random streams and file, so the result does not depend on the order rows finish in.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_write_row, folder, row, seed) for row in records]
        try:
            for future in as_completed(futures):
                future.result()
                bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()
    # The marker goes last: a folder with a marker is complete.
    (folder / MARKER_NAME).write_text(_marker_text(seed, size, plan), encoding="utf-8")


def generate(root: str | Path, seed: int, size: str, overwrite: bool, progress: bool,
             workers: int | None = None) -> tuple[Path, pd.DataFrame | None]:
    """Build the dataset unless it is there (see :func:`make_mini`); return its folder, and its plan
    (one row per clip) when this call wrote it, else None. Used by ``make-mini``."""
    _size_spec(size)
    seed = _check_seed(seed)
    parent = Path(root).expanduser()
    target = parent / DATASET_DIRNAME
    if parent.exists() and not parent.is_dir():
        raise US8KError(f"{parent}: is not a directory (make-mini writes UrbanSound8K/ into this folder)")

    def check_existing(after_build: bool) -> bool:
        """True if ``target`` already is the wanted dataset; raises if it must not be replaced."""
        if not target.exists() and not target.is_symlink():
            return False
        marker = read_marker(target)
        if _same(marker, seed, size):
            return not overwrite
        if marker is None:
            raise US8KError(f"{target}: exists but is not a generated mini dataset (no {MARKER_NAME}); "
                            "refusing to replace it. Choose another --root or move it away.")
        if marker.get("seed") == str(seed) and marker.get("size") == size:
            return False  # the same dataset by an older generator: stale, regenerated without asking
        if not overwrite:
            when = "was created meanwhile and holds" if after_build else "holds"
            raise US8KError(f"{target}: {when} a different mini dataset ({_describe(marker)}), not seed {seed}, "
                            f"size {size!r}, generator {GENERATOR_VERSION}. Pass overwrite=True "
                            "(make-mini --force) to replace it, or choose another root.")
        return False

    if check_existing(after_build=False):
        return target.resolve(), None
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent)
    plan = plan_mini(seed, size)
    tmp = parent / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_dataset(tmp, plan, seed, size, progress, workers or min(2, os.cpu_count() or 1))
        if check_existing(after_build=True):  # another process finished the same dataset first
            return target.resolve(), None
        old = None
        if target.exists() or target.is_symlink():
            old = parent / f"{_OLD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if _same(read_marker(target), seed, size):
                return target.resolve(), None
            if old is not None and not target.exists():
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target.resolve(), plan


def make_mini(root: str | Path, *, seed: int = 0, size: str = "mini", overwrite: bool = False,
              progress: bool = True, workers: int | None = None) -> Path:
    """Write the mini UrbanSound8K into ``root/UrbanSound8K`` and return that folder.

    The dataset is built in a temporary folder beside it and renamed into place only when
    complete, so an interrupted run never leaves a half dataset. If ``root/UrbanSound8K`` already
    holds the same dataset (same seed, size and generator version, per its ``MINI_DATASET.txt``),
    nothing is written; one with the same seed and size written by an older version of this
    generator (:data:`GENERATOR_VERSION`) is regenerated.

    Args:
        root: parent folder (created if needed), e.g. ``data/mini``.
        seed: random seed; the same seed gives byte-for-byte identical files.
        size: a key of :data:`SIZES` (``"tiny"``, ``"mini"``, ``"medium"``).
        overwrite: replace the mini dataset that is already there, even an identical one (e.g.
            after its files were edited); without it a different one is an error.
        progress: show a tqdm progress bar.
        workers: threads synthesizing clips (default: 2, or 1 on a single-core machine); the
            files do not depend on it.

    Returns:
        ``root/UrbanSound8K`` (resolved), holding ``metadata/UrbanSound8K.csv``,
        ``audio/fold1..10/*.wav`` and ``MINI_DATASET.txt``. Clip lengths are the rows'
        ``end - start`` rounded to whole samples; ADPCM files are padded with silence to a whole
        block (< 0.1 s). Used by :func:`us8k_lib.paths.resolve_root` (every notebook) and the tests.

    Raises:
        US8KError: unknown size, negative seed, ``root/UrbanSound8K`` holds a different mini
            dataset and ``overwrite`` is False, or it holds something that is not a mini dataset
            (never replaced, even with ``overwrite``).
    """
    return generate(root, seed, size, overwrite, progress, workers)[0]


