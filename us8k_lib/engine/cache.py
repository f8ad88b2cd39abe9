"""The formatting cache: every clip formatted once into a file that epochs are served from.

The original tutorial decoded every WAV on every access, so each epoch re-did the same work and
spent its time in the decoder, not the model. Here :func:`build_cache` runs
:func:`us8k_lib.audio.format_clip` (decode -> mono -> 8 kHz -> 4 s) once per clip, in parallel,
into one float32 array ``[N, length]`` (a memory-mappable ``.npy`` file) plus a JSON index.
:class:`US8KDataset` then copies rows of that file into each batch: after the first epoch the OS
keeps the file in its cache, so an epoch costs one memory copy per clip, and the training
process never holds the whole array (1.1 GB for the full dataset) in its own memory. Notebook 3
shows what it buys; its code is machinery a learner need not read.

Cache layout (``<cache_dir>/<key>/``)::

    waveforms.npy   float32 [N, length]; rows in (fold, slice_file_name) order
    index.json      rows (file, fold, classID, class), skipped clips, shape, byte size, checksums
    COMPLETE        written last: the sha256 of index.json (a cache without it was never finished)

The key hashes the dataset folder, the sorted file list with each file's size and mtime_ns, and the
formatting parameters (sample rate, length, :data:`FORMAT_VERSION`, the resampling filter and the
versions of the decoding and resampling libraries), so a changed clip or a changed recipe gets a
new cache; the cache it supersedes (same clips and parameters) is then removed, so
stale 1.1 GB copies do not pile up. A cache is built in a uniquely named temporary folder beside
its final place and renamed into place when finished; a partial or damaged one is reported and
rebuilt.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import mmap
import os
import shutil
import sys
import time
import uuid
import weakref
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from us8k_lib import audio
from us8k_lib.engine.allocator import reuse_freed_memory
from us8k_lib.errors import AudioError, CacheError
from us8k_lib.paths import check_free_space, clip_path, normalize_root, project_data_dir

#: Bump when format_clip's output changes for the same input and parameters (invalidates caches).
FORMAT_VERSION = 2  # 2: phase-expanded resampler (same filter, float rounding differs)
ARRAY_NAME = "waveforms.npy"
INDEX_NAME = "index.json"
COMPLETE_NAME = "COMPLETE"
_DTYPE = np.dtype("<f4")
#: Positional vectored reads (Linux, macOS, BSD); elsewhere rows are gathered from a memory map.
_HAVE_PREADV = hasattr(os, "preadv")
#: How build_cache runs format_clip in parallel: "thread" or "process". Threads, because decoding
#: (libsndfile via cffi) and resampling (torch) release the GIL: measured on 2 cores with 44.1 kHz
#: stereo clips, threads used ~25% less CPU per clip than a process pool (no fork, no pickling of
#: results) and were as fast or faster; they also need no fork-safety care and work the same on
#: every OS.
EXECUTOR = "thread"
_SKIP_HINT = " (to skip bad clips instead: skip_bad=True, or --skip-bad)"


def default_cache_dir() -> Path:
    """Return the folder caches go into by default: ``<project data dir>/cache``.

    It is outside the dataset folder, so a read-only dataset (e.g. a shared download) works.
    Used by :func:`build_cache`.
    """
    return project_data_dir() / "cache"


def _clip_list(df: pd.DataFrame) -> pd.DataFrame:
    """Rows to cache, one per clip, in the cache's row order: sorted by (fold, file name)."""
    missing = [c for c in ("slice_file_name", "fold") if c not in df.columns]
    if missing:
        raise ValueError(f"metadata table lacks column(s) {missing}; pass the table from load_metadata()")
    cols = [c for c in ("slice_file_name", "fold", "classID", "class") if c in df.columns]
    rows = df[cols].copy()
    rows["slice_file_name"] = rows["slice_file_name"].astype(str)
    rows["fold"] = rows["fold"].astype("int64")
    if "classID" in rows:
        rows["classID"] = rows["classID"].astype("int64")
    if "class" in rows:
        rows["class"] = rows["class"].astype(str)
    rows = rows.drop_duplicates(["fold", "slice_file_name"])
    return rows.sort_values(["fold", "slice_file_name"], kind="stable").reset_index(drop=True)


def formatting_recipe() -> dict[str, Any]:
    """Return what, besides the clips, decides the formatted waveforms: :data:`FORMAT_VERSION`, the
    resampling filter's parameters (``audio.RESAMPLING``) and the versions of torchaudio (which
    computes the filter), soundfile and libsndfile (which decode). A change to any of them gives
    a new cache key (:func:`cache_key`), so a cache never outlives the code that made it.
    """
    import soundfile

    return {"format_version": FORMAT_VERSION, "resampling": dict(audio.RESAMPLING),
            "torchaudio": audio.torchaudio.__version__, "soundfile": soundfile.__version__,
            "libsndfile": soundfile.__libsndfile_version__}


def cache_key(root: str | Path, df: pd.DataFrame, *, sr: int = audio.TARGET_SR,
              length: int = audio.TARGET_LENGTH) -> str:
    """Return the hex key of the cache for these clips and formatting parameters.

    It hashes the resolved dataset folder, every clip's fold, name, size and mtime_ns (a missing
    file counts as size -1, so it cannot match a cache built while it existed), ``sr``,
    ``length``, and :func:`formatting_recipe`: :data:`FORMAT_VERSION`, the resampling filter
    (``audio.RESAMPLING``) and the versions of the libraries that decode and resample. Used by
    :func:`build_cache` and the runs' dataset identity.
    """
    root = Path(root).resolve()
    rows = _clip_list(df)
    h = hashlib.sha256()
    h.update(json.dumps({"format_version": FORMAT_VERSION, "sr": int(sr), "length": int(length),
                         "dtype": _DTYPE.str, "root": str(root), **formatting_recipe()}, sort_keys=True).encode())
    for fold, name in zip(rows["fold"].tolist(), rows["slice_file_name"].tolist()):
        try:
            st = os.stat(clip_path(root, fold, name))
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        h.update(f"\n{fold}/{name}\t{size}\t{mtime}".encode())
    return h.hexdigest()


@dataclass(eq=False)
class FormattedCache:
    """A finished cache: the formatted waveforms of a list of clips, in one ``.npy`` file.

    Attributes:
        path: the cache folder (holding waveforms.npy, index.json, COMPLETE).
        root: the dataset folder the clips came from.
        key: the cache key (see :func:`cache_key`).
        sr, length: formatting parameters (samples per second, samples per clip).
        table: one row per array row, in array order: slice_file_name, fold (and classID, class
            when the metadata had them, as they were at build time).
        skipped: ``(slice_file_name, problem)`` of clips that could not be formatted (their rows
            are zeros and must not be used); empty unless built with ``skip_bad=True``.

    ``array`` memory-maps the file for looking at it; :meth:`read_rows`, which the Dataset uses,
    copies rows straight from the file. Files and maps are opened lazily, once per process, and
    pickling drops them, so DataLoader worker processes open their own. What
    :class:`us8k_lib.dataset.US8KDataset` reads from (``dataset.cache``, notebook 3).
    """

    path: Path
    root: Path
    key: str
    sr: int
    length: int
    table: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _data_offset: int = 0
    _array: np.ndarray | None = field(default=None, repr=False)
    _array_pid: int = field(default=-1, repr=False)
    _fd: int | None = field(default=None, repr=False)
    _fd_pid: int = field(default=-1, repr=False)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def array_path(self) -> Path:
        """The ``.npy`` file holding the waveforms."""
        return self.path / ARRAY_NAME

    @property
    def nbytes(self) -> int:
        """Size of the waveform data in bytes."""
        return len(self.table) * self.length * _DTYPE.itemsize

    @property
    def array(self) -> np.ndarray:
        """Read-only ``[N, length]`` float32 memory map of the cache file (opened on first use per process).

        Pages you touch through it stay resident in this process (the OS may reclaim them);
        :meth:`read_rows` does not keep any.
        """
        if self._array is None or self._array_pid != os.getpid():
            with open(self.array_path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._array = np.ndarray((len(self.table), self.length), dtype=_DTYPE, buffer=mapped,
                                     offset=self._data_offset)
            self._array_pid = os.getpid()
        return self._array

    def _file(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():
            # After a fork the inherited descriptor shares its offset with the parent; positional
            # reads do not use it, but a process-owned descriptor keeps that reasoning local.
            fd = os.open(self.array_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            weakref.finalize(self, os.close, fd)
            self._fd, self._fd_pid = fd, os.getpid()
        return self._fd

    def read_rows(self, rows: Sequence[int] | np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """Copy the given rows into ``out`` (a contiguous float32 CPU tensor of ``len(rows) * length``
        elements, e.g. a batch ``[B, 1, length]``) or a new ``[len(rows), length]`` tensor; return it.

        Rows are read with positional reads (``preadv``) from the file straight into ``out``:
        measured on 2 cores, 2.5x faster than gathering from a memory map, and the data passes
        through the OS file cache without becoming part of this process's resident memory, so
        an epoch over the full 1.1 GB cache keeps RAM flat. Used by :class:`US8KDataset`.

        Raises:
            IndexError: a row is out of range.
            CacheError: the file is shorter than its index says (changed since it was opened).
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n, length = len(rows), self.length
        if n and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range for a cache of {len(self)} rows")
        if out is None:
            out = torch.empty((n, length), dtype=torch.float32)
        if (out.dtype != torch.float32 or out.device.type != "cpu" or not out.is_contiguous()
                or out.numel() != n * length):
            raise ValueError(f"out must be a contiguous float32 CPU tensor of {n * length} elements")
        if not _HAVE_PREADV:  # e.g. Windows: gather from the memory map instead
            np.take(self.array, rows, axis=0, out=out.numpy().reshape(n, length))
            return out
        fd, row_bytes = self._file(), length * _DTYPE.itemsize
        buf = memoryview(out.numpy()).cast("B")
        for j, r in enumerate(rows.tolist()):
            got = os.preadv(fd, [buf[j * row_bytes : (j + 1) * row_bytes]], self._data_offset + r * row_bytes)
            if got != row_bytes:
                raise CacheError(f"{self.array_path}: short read of row {r} ({got} of {row_bytes} bytes); "
                                 "the file changed after it was opened")
        return out

    def verify_data(self) -> None:
        """Recompute the checksum of the whole array file and compare it with the index.

        Raises:
            CacheError: naming the array file, if the data changed since it was written.
        """
        index = json.loads((self.path / INDEX_NAME).read_text())
        if _file_sha256(self.array_path) != index["array_sha256"]:
            raise CacheError(f"{self.array_path}: contents do not match the checksum in {INDEX_NAME}")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_array=None, _array_pid=-1, _fd=None, _fd_pid=-1)
        return state


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_existing(folder: Path, key: str, root: Path, sr: int, length: int, n_rows: int) -> FormattedCache:
    """Open a finished cache, checking every cheap invariant; raise CacheError saying what is wrong."""
    marker, index_path, array_path = folder / COMPLETE_NAME, folder / INDEX_NAME, folder / ARRAY_NAME
    if not marker.is_file():
        raise CacheError(f"{folder}: no {COMPLETE_NAME} marker (the build never finished)")
    try:
        index_bytes = index_path.read_bytes()
    except OSError as exc:
        raise CacheError(f"{index_path}: cannot read the index ({exc.strerror or exc})") from None
    if hashlib.sha256(index_bytes).hexdigest() != marker.read_text().strip():
        raise CacheError(f"{index_path}: index does not match the checksum in {COMPLETE_NAME}")
    try:
        index = json.loads(index_bytes)
        shape = tuple(index["shape"])
        rows = index["rows"]
        table = pd.DataFrame(rows)
        skipped = [(s["slice_file_name"], s["problem"]) for s in index["skipped"]]
        array_bytes = int(index["array_bytes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"{index_path}: unreadable index ({exc})") from None
    expected = {"key": key, "sr": sr, "length": length, "dtype": _DTYPE.str, "format_version": FORMAT_VERSION}
    for name, value in expected.items():
        if index.get(name) != value:
            raise CacheError(f"{index_path}: {name} is {index.get(name)!r}, expected {value!r}")
    if shape != (n_rows, length) or len(table) != n_rows:
        raise CacheError(f"{index_path}: describes {shape} / {len(table)} rows, expected ({n_rows}, {length})")
    try:
        size = array_path.stat().st_size
        with open(array_path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(f)  # (shape, fortran_order, dtype)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (OSError, ValueError) as exc:
        raise CacheError(f"{array_path}: unreadable array file ({exc})") from None
    if header[0] != shape or header[1] or np.dtype(header[2]) != _DTYPE:
        raise CacheError(f"{array_path}: array header says {header[0]} {header[2]}, expected {shape} {_DTYPE}")
    if size != array_bytes or size != offset + n_rows * length * _DTYPE.itemsize:
        raise CacheError(f"{array_path}: {size} bytes, expected {array_bytes} (truncated or overwritten)")
    return FormattedCache(path=folder, root=root, key=key, sr=sr, length=length, table=table,
                          skipped=skipped, _data_offset=offset)


def _remove_superseded(keep: Path, root: Path, rows: pd.DataFrame, sr: int, length: int) -> None:
    """Delete the other caches of exactly these clips and parameters, printing each one.

    A cache whose key differs for the same clips and parameters was built before a clip changed
    or before :data:`FORMAT_VERSION` did: it can never be used again, and on the full dataset
    each one is 1.1 GB. Caches of other datasets, other clip lists or other parameters stay.
    """
    names, folds = rows["slice_file_name"].tolist(), rows["fold"].tolist()
    for folder in keep.parent.iterdir():
        if folder == keep or folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            index = json.loads((folder / INDEX_NAME).read_text())
            same = (index["root"] == str(root) and index["sr"] == sr and index["length"] == length
                    and index["rows"]["fold"] == folds and index["rows"]["slice_file_name"] == names)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unfinished, damaged or not a cache: not ours to judge here
        if same:
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            trash = folder.parent / f".trash-{folder.name}-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(folder, trash)  # atomic: no half-deleted cache is ever visible
            except OSError:
                continue  # another process got there first
            shutil.rmtree(trash, ignore_errors=True)
            print(f"Removed the superseded cache {folder.name} ({size / 1e9:.2f} GB) of the same clips.")


def _remove_stale_temporaries(cache_dir: Path) -> None:
    """Delete leftovers of builds whose process is gone (a crash or kill mid-build)."""
    for p in cache_dir.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):  # this process's own builds clean up after themselves
            shutil.rmtree(p, ignore_errors=True)
    for p in cache_dir.glob(".trash-*"):
        shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _format_task(path: str, sr: int, length: int) -> tuple[bool, np.ndarray | str]:
    """Format one clip; return (True, waveform) or (False, problem).

    AudioError is returned, not raised: it does not survive pickling back from a worker process.
    """
    try:
        x = audio.format_clip(path, sr=sr, length=length)
    except AudioError as exc:
        return False, exc.problem
    x = np.ascontiguousarray(x, dtype=_DTYPE)
    if x.shape != (length,):
        return False, f"formatted to shape {x.shape}, expected ({length},)"
    return True, x


def _init_worker_process() -> None:
    # Each worker formats one clip at a time; torch's own threads would only oversubscribe the cores.
    torch.set_num_threads(1)


def _formatted(paths: list[str], sr: int, length: int,
               workers: int) -> Generator[tuple[bool, np.ndarray | str], None, None]:
    """Yield _format_task results in input order, running ``workers`` clips at a time."""
    if workers <= 1 or len(paths) < 2 * workers:
        with _torch_threads(1):
            for p in paths:
                yield _format_task(p, sr, length)
        return
    chunk = max(1, min(32, len(paths) // (8 * workers)))
    if EXECUTOR == "process":
        # forkserver/spawn would re-import torch per worker (seconds); fork is what DataLoader uses too.
        ctx = None
        if sys.platform.startswith("linux"):
            import multiprocessing as mp

            ctx = mp.get_context("fork")
        ex: cf.Executor = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker_process)
    else:
        ex = cf.ThreadPoolExecutor(workers)
    try:
        with _torch_threads(1 if EXECUTOR == "thread" else torch.get_num_threads()):
            yield from ex.map(_format_task, paths, [sr] * len(paths), [length] * len(paths), chunksize=chunk)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op threads: parallel clips, not parallel ops within one clip,
    use the cores without oversubscribing them (measured: 2 torch threads x 2 workers is slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build(folder: Path, key: str, root: Path, rows: pd.DataFrame, sr: int, length: int,
           workers: int, skip_bad: bool, progress: bool) -> None:
    """Format every clip into a temporary folder and rename it to ``folder`` when complete."""
    n = len(rows)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        array_path = tmp / ARRAY_NAME
        # A standard .npy file (np.load(mmap_mode="r") opens it too), sized up front; unwritten
        # (skipped) rows read as zeros.
        with open(array_path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(_DTYPE), "fortran_order": False, "shape": (n, length)})
            offset = f.tell()
            f.truncate(offset + n * length * _DTYPE.itemsize)
        paths = [str(clip_path(root, fo, na)) for fo, na in zip(rows["fold"], rows["slice_file_name"])]
        skipped: list[dict] = []
        row_bytes = length * _DTYPE.itemsize
        t0 = time.perf_counter()
        bar = tqdm(total=n, desc="Formatting clips (once)", unit="clip", disable=not progress)
        # Written with plain file writes, not through a writable map, so the builder's resident
        # memory stays small; results arrive in row order. A skipped row stays zeros.
        results = _formatted(paths, sr, length, workers)
        # reuse_freed_memory: each clip's decode buffers (about 1.4 MB) would otherwise be fresh
        # mmaps, and the worker threads' page faults contend for the process's memory map.
        with open(array_path, "r+b") as f, bar, closing(results), reuse_freed_memory():
            for i, (ok, payload) in enumerate(results):
                if ok:
                    f.seek(offset + i * row_bytes)
                    f.write(memoryview(payload))  # type: ignore[arg-type]
                else:
                    if not skip_bad:
                        raise AudioError(paths[i], f"{payload}{_SKIP_HINT}")
                    skipped.append({"row": i, "slice_file_name": rows["slice_file_name"][i],
                                    "fold": int(rows["fold"][i]), "problem": payload})
                    tqdm.write(f"skipped {paths[i]}: {payload}")
                bar.update(1)
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - t0
        index = {
            "format_version": FORMAT_VERSION, "recipe": formatting_recipe(), "key": key, "sr": sr,
            "length": length, "dtype": _DTYPE.str,
            "shape": [n, length], "root": str(root), "array_bytes": array_path.stat().st_size,
            "array_sha256": _file_sha256(array_path), "build_seconds": round(seconds, 3),
            "rows": {c: rows[c].tolist() for c in rows.columns}, "skipped": skipped,
        }
        index_bytes = json.dumps(index).encode()
        seal = hashlib.sha256(index_bytes).hexdigest().encode()
        for name, data in ((INDEX_NAME, index_bytes), (COMPLETE_NAME, seal)):
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if folder.exists():
            try:  # another process may have finished the same cache meanwhile: keep theirs
                _open_existing(folder, key, root, sr, length, n)
                return
            except CacheError:
                pass
            # A damaged cache: move it aside first, os.replace cannot overwrite a non-empty folder.
            trash = folder.parent / f".trash-{folder.name}-{uuid.uuid4().hex[:8]}"
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / COMPLETE_NAME).is_file():  # not just another process finishing first
                raise
        _fsync_dir(folder.parent)
        _remove_superseded(folder, root, rows, sr, length)
        if skipped:
            print(f"Skipped {len(skipped)} clip(s) that could not be formatted: "
                  + ", ".join(s["slice_file_name"] for s in skipped))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_cache(root: str | Path, df: pd.DataFrame, *, cache_dir: str | Path | None = None,
                workers: int | None = None, skip_bad: bool = False, progress: bool = True,
                sr: int = audio.TARGET_SR, length: int = audio.TARGET_LENGTH) -> FormattedCache:
    """Format every clip listed in ``df`` once (or reuse a valid cache) and return the cache.

    Args:
        root: the UrbanSound8K folder (or its parent).
        df: metadata rows (at least slice_file_name and fold), e.g. ``load_metadata(root)``.
        cache_dir: where caches live; default :func:`default_cache_dir`.
        workers: parallel formatting workers; default ``os.cpu_count()``.
        skip_bad: False: the first clip that cannot be formatted raises AudioError naming it.
            True: such clips are skipped, printed, and listed in ``.skipped``.
        progress: show a tqdm progress bar while formatting.
        sr, length: formatting parameters passed to :func:`us8k_lib.audio.format_clip`.

    Returns:
        A :class:`FormattedCache` with one row per clip in (fold, file name) order.

    Raises:
        AudioError: a clip cannot be formatted and ``skip_bad`` is False (also when a cache built
            with ``skip_bad=True`` holds skipped clips).

    Used by notebook 7, :class:`us8k_lib.dataset.US8KDataset` (notebook 3) and every training run.
    """
    root = normalize_root(root)
    rows = _clip_list(df)
    if rows.empty:
        raise ValueError(f"{root}: the metadata table has no clips to format")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(root, rows, sr=sr, length=length)
    folder = cache_dir / key[:24]
    cache: FormattedCache | None = None
    if folder.exists():
        try:
            cache = _open_existing(folder, key, root, sr, length, len(rows))
        except CacheError as exc:
            print(f"Cache unusable, rebuilding: {exc}")
    if cache is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(cache_dir)
        workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
        check_free_space(cache_dir, [("the formatted cache", len(rows) * length * _DTYPE.itemsize)],
                         remedy="point the data folder at a larger disk (US8K_DATA_DIR) or pass cache_dir")
        if progress:
            print(f"Formatting {len(rows)} clips once (decode, mono, {sr} Hz, {length} samples) into "
                  f"{folder} ({len(rows) * length * _DTYPE.itemsize / 1e9:.2f} GB), {workers} workers.")
        _build(folder, key, root, rows, sr, length, workers, skip_bad, progress)
        cache = _open_existing(folder, key, root, sr, length, len(rows))
    elif cache.skipped and skip_bad:  # reused: say again which clips are missing from the data
        print(f"Cache {folder} skips {len(cache.skipped)} clip(s) that could not be formatted: "
              + ", ".join(name for name, _ in cache.skipped))
    if cache.skipped and not skip_bad:
        name, problem = cache.skipped[0]
        fold = int(cache.table.loc[cache.table["slice_file_name"] == name, "fold"].iloc[0])
        raise AudioError(clip_path(root, fold, name), f"{problem}{_SKIP_HINT}")
    return cache


