"""Get the real UrbanSound8K: a resumable download, checksum verification and safe extraction.

``python -m us8k_lib download`` streams ``UrbanSound8K.tar.gz`` (6 GB, Zenodo record 1203745)
into ``<root>/UrbanSound8K.tar.gz.part``. A dropped connection is resumed with an HTTP ``Range``
request, both within one run (a few retries) and across runs (the ``.part`` file is kept).
The free disk space is checked before the first byte is written and again before extracting
(the archive, the extracted clips and the first training run's cache all need room: about 14 GB
for the official archive); a full disk is refused with the numbers, not found out halfway.
The size and md5 are checked before anything is extracted; a file that fails the check is deleted.
Extraction refuses absolute paths, ``..``, links and device files, writes into a hidden temporary
folder beside the target and renames it into place, so a half-extracted dataset never looks
complete. The downloaded archive is deleted once extracted (it would keep 6 GB for nothing: the
extracted folder is what every command reads); pass ``keep_archive=True`` to keep it.

The URL and md5 can be overridden (arguments, or ``US8K_URL`` / ``US8K_MD5``), which is how the
tests serve a small archive from a local HTTP server.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from us8k_lib.errors import DownloadError, UnsafeArchiveError, US8KError
from us8k_lib.folds import FOLDS
from us8k_lib.paths import DATASET_DIRNAME, METADATA_RELPATH, check_free_space, existing_ancestor, project_data_dir

#: The official archive (Zenodo record 1203745).
DEFAULT_URL = "https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz"
#: md5 of the official archive, as published with the record.
DEFAULT_MD5 = "9aa69802bbf37fb986f71ec1483a196e"
#: File name of the archive (and, with ``.part``, of the download in progress) inside the root.
ARCHIVE_NAME = "UrbanSound8K.tar.gz"
#: Seconds a connect or a single read may stall before the attempt counts as interrupted.
TIMEOUT = 60.0
#: Read size for streaming and hashing.
CHUNK = 1 << 20
#: Prefix of the temporary extraction folder (hidden, beside the target).
EXTRACT_PREFIX = f".{DATASET_DIRNAME}.extracting-"
#: What extracting an archive other than the official one is assumed to take, per byte of archive
#: (WAV audio barely compresses: the official 6 GB archive holds 7.1 GB of clips).
EXTRACT_RATIO = 1.25
#: The formatted cache of the whole dataset (8 732 clips x 32 000 float32 samples), which the first
#: training run writes into the data folder.
CACHE_BYTES = 8732 * 32000 * 4


def official_extracted_bytes() -> int:
    """Return the size of the official archive's contents: its 8 732 clips (from the shipped
    checksums) plus the metadata, about 7.1 GB."""
    import csv

    from us8k_lib.metadata import reference_metadata_path

    checksums = Path(__file__).resolve().parents[1] / "data" / "UrbanSound8K-checksums.csv"
    with open(checksums, newline="") as f:
        clips = sum(int(row["size"]) for row in csv.DictReader(f))
    return clips + reference_metadata_path().stat().st_size


def _same_disk(a: Path, b: Path) -> bool:
    try:
        return existing_ancestor(a).stat().st_dev == existing_ancestor(b).stat().st_dev
    except OSError:
        return True


def _space_needs(root: Path, md5: str, archive_bytes: int | None, download_bytes: int) -> list[tuple[str, int]]:
    """What ``download`` will write into ``root``'s disk from here on: the rest of the archive, the
    extracted dataset (the archive is deleted only after it), and the formatted cache if the data
    folder is on the same disk."""
    from us8k_lib.engine.cache import default_cache_dir

    needs = [("the rest of the archive", download_bytes)] if download_bytes else []
    if md5 == DEFAULT_MD5:
        needs.append(("the extracted dataset", official_extracted_bytes()))
    elif archive_bytes is not None:
        needs.append((f"the extracted dataset (estimated as {EXTRACT_RATIO:g} x the archive)",
                      int(EXTRACT_RATIO * archive_bytes)))
    if _same_disk(root, default_cache_dir()):
        needs.append(("the formatted cache the first training run writes", CACHE_BYTES))
    return needs


def _resolve(url: str | None, md5: str | None) -> tuple[str, str]:
    """Return the URL and md5 to use: argument, else environment variable, else the official one."""
    url = url or os.environ.get("US8K_URL") or DEFAULT_URL
    md5 = (md5 or os.environ.get("US8K_MD5") or DEFAULT_MD5).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise DownloadError(f"{md5!r}: not an md5 checksum (expected 32 hex digits)")
    return url, md5


def dataset_problem(target: str | Path) -> str | None:
    """Return why ``target`` is not a usable UrbanSound8K folder, or None if it is.

    A cheap check (metadata loads and validates, ``audio/fold1..10`` exist), not a full
    ``validate``: it decides whether ``download`` has anything to do.
    """
    from us8k_lib.metadata import load_metadata  # late import: pandas is only needed here

    target = Path(target)
    if not (target / METADATA_RELPATH).is_file():
        return f"no {METADATA_RELPATH.as_posix()}"
    try:
        load_metadata(target / METADATA_RELPATH)
    except US8KError as exc:
        return str(exc)
    absent = [f"audio/fold{k}" for k in FOLDS if not (target / "audio" / f"fold{k}").is_dir()]
    if absent:
        return "missing " + ", ".join(absent)
    return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL``; return (start, total), None if absent."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


class _Interrupted(Exception):
    """One attempt ended early (dropped connection, stall, short body); the .part file is kept."""


def _attempt(url: str, part: Path, *, progress: bool, timeout: float,
             before_writing: Callable[[int | None, int], None] | None = None) -> int | None:
    """Fetch the rest of ``url`` into ``part`` once, checking the size the server announced.

    ``before_writing(total, remaining)`` is called once the server has said how big the archive
    is and before the first byte is written (the free-space check).

    Returns:
        The archive's total size in bytes, or None if the server did not say.

    Raises:
        _Interrupted: the connection dropped or stalled (worth resuming).
        DownloadError: the server refused in a way resuming cannot fix.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "us8k-lib"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # The .part may already hold the whole archive (stopped before the check ran).
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == have:
                return total
            print(f"{part}: the server cannot resume from byte {have}; starting over")
            part.unlink()
            raise _Interrupted("range not satisfiable") from exc
        raise DownloadError(f"{url}: HTTP error {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _Interrupted(f"cannot connect: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:  # reset, timeout, garbled status line
        raise _Interrupted(f"cannot connect: {exc!r}") from exc

    with resp:
        status = resp.status or 200  # file:// URLs report no status
        if have and status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                # A range we did not ask for: appending it would corrupt the file.
                print(f"{part}: the server answered byte {start} instead of {have}; starting over")
                part.unlink()
                raise _Interrupted("unexpected range")
            mode = "ab"
        elif status == 200:
            if have:
                print(f"{part}: the server ignores resume requests; starting over from byte 0")
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status}")

        if before_writing is not None:
            before_writing(total, (total - have) if total is not None else 0)
        got = have
        # read1 returns what has arrived, so bytes received before a stall are kept for resuming.
        read = getattr(resp, "read1", resp.read)
        with open(part, mode) as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=ARCHIVE_NAME, disable=not progress,
        ) as bar:
            while True:
                try:
                    chunk = read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    # Only network errors are worth resuming; a failed write (disk full) propagates.
                    raise _Interrupted(f"connection lost after {got} bytes: {exc!r}") from exc
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    # http.client ends a body that closes early without an error, so compare with the total.
    if total is not None and got < total:
        raise _Interrupted(f"connection closed after {got} of {total} bytes")
    if total is not None and got > total:
        part.unlink()
        raise DownloadError(f"{url}: the server sent {got} bytes, more than the {total} it announced")
    return total


def fetch(url: str, part: str | Path, *, retries: int = 3, progress: bool = True, timeout: float = TIMEOUT,
          before_writing: Callable[[int | None, int], None] | None = None) -> Path:
    """Download ``url`` into ``part``, resuming what is already there; return ``part``.

    Args:
        url: http(s) URL (or file://) of the archive.
        part: the partial file; an existing one is continued with a ``Range`` request.
        retries: how many times a dropped or stalled connection is resumed within this call.
        progress: show a tqdm bar.
        timeout: seconds a connect or a read may stall.
        before_writing: called with (archive size or None, bytes still to fetch) before any byte
            is written (``download`` checks the free disk space there).

    Raises:
        DownloadError: retries exhausted (the partial file is kept so the next run resumes) or
            the server refused.
    """
    part = Path(part)
    last = ""
    for attempt in range(retries + 1):
        try:
            _attempt(url, part, progress=progress, timeout=timeout,  # checks the size it announced
                     before_writing=before_writing)
        except _Interrupted as exc:
            last = str(exc)
            if attempt < retries:
                print(f"{url}: {last}; trying again")
            continue
        return part
    kept = part.stat().st_size if part.exists() else 0
    if not kept:  # refused or dropped before the first byte: there is nothing to resume from
        raise DownloadError(f"{url}: download failed ({last}); nothing was downloaded, run the command again "
                            "when the server can be reached")
    raise DownloadError(
        f"{url}: download interrupted ({last}); {kept} bytes kept in {part}, run the command again to resume"
    )


def file_md5(path: str | Path, *, progress: bool = False) -> str:
    """Return the md5 hex digest of a file, read in chunks (so 6 GB never sit in memory)."""
    path = Path(path)
    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
        desc="md5", disable=not progress,
    ) as bar:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


# tarfile's own "data" filter (Python 3.10.12+/3.11.4+) as a second line of defence; the checks in
# _member_problem are enough on their own for the older Pythons the package still supports.
_DATA_FILTER: dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Return why an archive member is refused, or None if it is a plain file or folder inside."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path goes outside the target folder ('..')"
    if member.issym():
        return f"symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "named pipe (fifo)"
    if not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


def safe_extract(archive: str | Path, dest: str | Path, *, progress: bool = True) -> None:
    """Extract ``archive`` into the existing folder ``dest``, refusing anything unsafe.

    Every member is checked before it is written: absolute paths, ``..``, symbolic and hard
    links, device files and fifos are refused (links are refused outright, so an earlier member
    can never redirect a later one). tarfile's ``filter="data"`` is applied as well. Members are
    checked and extracted in one pass over the archive (a second pass would decompress 6 GB
    twice), so the caller must extract into a folder it deletes on failure, as
    :func:`extract_dataset` does.

    Raises:
        UnsafeArchiveError: naming the archive and the refused member.
        DownloadError: the archive is corrupt.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar, tqdm(unit=" files", desc="extract", disable=not progress) as bar:
            for member in tar:
                problem = _member_problem(member)
                if problem:
                    raise UnsafeArchiveError(f"{archive}: refusing to extract member {member.name!r}: {problem}")
                try:
                    tar.extract(member, dest, **_DATA_FILTER)
                except tarfile.TarError as exc:
                    if _DATA_FILTER and isinstance(exc, tarfile.FilterError):
                        raise UnsafeArchiveError(
                            f"{archive}: refusing to extract member {member.name!r}: {exc}") from exc
                    raise
                bar.update(1)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # Other OSErrors (disk full) are not the archive's fault and propagate unchanged.
        # tarfile lists every compression it tried, one line each: one line is what the reader needs
        detail = " ".join(str(exc).split()) if not str(exc).startswith("file could not be opened") else (
            "not a tar archive, gzip-, bzip2- or xz-compressed or plain")
        raise DownloadError(f"{archive}: corrupt or unreadable archive: {detail}") from exc


def extract_dataset(archive: str | Path, root: str | Path, *, progress: bool = True) -> Path:
    """Extract the archive's ``UrbanSound8K/`` folder to ``root/UrbanSound8K``; return that path.

    Extraction goes into a hidden temporary folder inside ``root`` and is renamed into place only
    when complete and plausible, so an interrupted extraction never looks like a dataset. The
    temporary folder is removed whatever happens.

    Raises:
        UnsafeArchiveError, DownloadError: see :func:`safe_extract`; also when the archive has no
            ``UrbanSound8K/metadata/UrbanSound8K.csv`` or the target already exists.
    """
    archive, root = Path(archive), Path(root)
    target = root / DATASET_DIRNAME
    tmp = Path(tempfile.mkdtemp(prefix=EXTRACT_PREFIX, dir=root))
    try:
        safe_extract(archive, tmp, progress=progress)
        extracted = tmp / DATASET_DIRNAME
        if not (extracted / METADATA_RELPATH).is_file():
            raise DownloadError(f"{archive}: no {DATASET_DIRNAME}/{METADATA_RELPATH.as_posix()} in the archive")
        if os.path.lexists(target):
            raise DownloadError(f"{target}: appeared while extracting; left it alone")
        os.rename(extracted, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_dataset(
    root: str | Path | None = None,
    url: str | None = None,
    md5: str | None = None,
    *,
    progress: bool = True,
    keep_archive: bool = False,
    retries: int = 3,
    timeout: float = TIMEOUT,
) -> Path:
    """Download, verify and extract UrbanSound8K into ``root``; return ``root/UrbanSound8K``.

    Does nothing when ``root/UrbanSound8K`` already holds a dataset (a cheap check; run
    ``validate`` for a full one). Never touches an existing but incomplete ``UrbanSound8K``
    folder: it stops and says what is wrong with it. An ``UrbanSound8K.tar.gz`` already in
    ``root`` (from an earlier run or copied there by hand) is used instead of downloading, if its
    md5 matches.

    Args:
        root: folder to put ``UrbanSound8K/`` in (default: the project data folder). If ``root``
            itself holds ``metadata/UrbanSound8K.csv`` it is taken as the dataset folder.
        url: archive URL (default ``$US8K_URL``, else :data:`DEFAULT_URL`).
        md5: expected md5 of the archive (default ``$US8K_MD5``, else :data:`DEFAULT_MD5`).
        progress: show progress bars.
        keep_archive: keep ``UrbanSound8K.tar.gz`` after extracting (default: delete it, 6 GB).
        retries: resumptions of a dropped connection within this call.
        timeout: seconds a connect or read may stall.

    Raises:
        DownloadError: network failure (partial file kept for resuming), size or md5 mismatch (bad
            file removed), corrupt archive, or an incomplete dataset folder in the way.
        DiskSpaceError: the disk of ``root`` has no room for the archive, the extracted dataset
            and the first cache (checked before the first byte is written, and again before
            extracting; the message gives the sizes and the free space).
        UnsafeArchiveError: the archive tries to write outside the target or holds links/devices.
            An archive this call downloaded that cannot be extracted (unsafe or corrupt) is
            removed; nothing is left in ``root`` but what was there before.

    Used by ``python -m us8k_lib download``.
    """
    root = Path(root).expanduser() if root is not None else project_data_dir()
    if (root / METADATA_RELPATH).is_file():
        root, target = root.parent, root
    else:
        target = root / DATASET_DIRNAME
    if os.path.lexists(target):
        problem = dataset_problem(target)
        if problem is None:
            print(f"{target}: UrbanSound8K is already there; nothing to download "
                  "(a quick check of the metadata and fold folders, not of every clip).")
            return target
        raise DownloadError(
            f"{target}: exists but is not a complete UrbanSound8K ({problem.splitlines()[0]}); "
            "move it away or delete it, then run download again"
        )
    url, md5 = _resolve(url, md5)
    archive = root / ARCHIVE_NAME
    part = root / (ARCHIVE_NAME + ".part")

    downloaded = not archive.is_file()
    if not downloaded:
        print(f"{archive}: found an archive; checking its md5")
        got = file_md5(archive, progress=progress)
        if got != md5:
            # Not downloaded by this run (perhaps copied here by hand), so not ours to delete.
            raise DownloadError(f"{archive}: md5 mismatch: expected {md5}, got {got}; delete it to download afresh")
    else:
        if part.exists():
            print(f"{part}: resuming the download from byte {part.stat().st_size}")

        def room_for_everything(total: int | None, remaining: int) -> None:
            check_free_space(root, _space_needs(root, md5, total, remaining))
            root.mkdir(parents=True, exist_ok=True)  # only now: a refused download leaves no folder behind

        fetch(url, part, retries=retries, progress=progress, timeout=timeout, before_writing=room_for_everything)
        got = file_md5(part, progress=progress)
        if got != md5:
            part.unlink()
            raise DownloadError(
                f"{part}: md5 mismatch: expected {md5}, got {got} (downloaded from {url}); "
                "removed the bad file, run again to download it afresh"
            )
        os.replace(part, archive)  # verified: from now on it is a complete archive

    for stale in root.glob(EXTRACT_PREFIX + "*"):
        # Left by an extraction that was killed (up to 6 GB); never a complete dataset.
        print(f"{stale}: removing an interrupted extraction")
        shutil.rmtree(stale, ignore_errors=True)
    check_free_space(root, _space_needs(root, md5, archive.stat().st_size, 0))  # the archive is kept if not
    try:
        extracted = extract_dataset(archive, root, progress=progress)
    except (UnsafeArchiveError, DownloadError) as exc:
        # The archive itself is at fault: downloading it again would not help, so do not keep
        # 6 GB of it. (On other errors, e.g. a full disk, the verified archive is kept for a retry.)
        if downloaded and not os.path.lexists(target):
            archive.unlink(missing_ok=True)
            raise type(exc)(f"{exc} (removed the downloaded archive)") from exc
        raise
    if not keep_archive:
        archive.unlink()
    print(f"{extracted}: UrbanSound8K is ready" + (f" (archive kept: {archive})" if keep_archive else ""))
    return extracted


