"""Test helpers: a real HTTP server on 127.0.0.1 that serves an archive, and archive builders.

Used by test_download.py and test_bad_input.py. The server honours ``Range`` requests itself and
can misbehave on purpose: drop the connection after some bytes, ignore ``Range``, or serve wrong
bytes. It records every request so tests can see a resume happen (or no request at all).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ARCHIVE_PATH = "/UrbanSound8K.tar.gz"


@dataclass
class Behaviour:
    """How the server misbehaves.

    Attributes:
        drop_after: close the connection after sending this many body bytes...
        drops: ...on this many responses (then serve normally).
        stall: instead of closing after ``drop_after`` bytes, go silent (until the server stops,
            at most 5 s), so the client's read times out.
        ignore_range: answer every request with 200 and the whole file.
        corrupt: flip one byte in the middle of what is served (same size, wrong md5).
    """

    drop_after: int | None = None
    drops: int = 0
    stall: bool = False
    ignore_range: bool = False
    corrupt: bool = False


@dataclass
class Request:
    """One request the server received."""

    path: str
    range: str | None
    status: int
    sent: int = 0


@dataclass
class ArchiveServer:
    """Serve ``payload`` at ``url`` until ``stop``; use as a context manager."""

    payload: bytes
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        served = bytearray(self.payload)
        if self.behaviour.corrupt:
            served[len(served) // 2] ^= 0xFF
        self._served = bytes(served)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{ARCHIVE_PATH}"

    def __enter__(self) -> ArchiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # http.server's naming
                server._serve(self)

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        data, b = self._served, self.behaviour
        rng = h.headers.get("Range")
        req = Request(h.path, rng, 200)
        with self._lock:
            self.requests.append(req)
            drop = b.drop_after is not None and b.drops > 0
            if drop:
                b.drops -= 1
        if h.path != ARCHIVE_PATH:
            req.status = 404
            h.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not b.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                req.status = 416
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            req.status = 206
        body = data[start:]
        h.send_response(req.status)
        h.send_header("Content-Type", "application/gzip")
        h.send_header("Content-Length", str(len(body)))
        if req.status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if drop:
            body = body[: b.drop_after]
        h.wfile.write(body)
        h.wfile.flush()
        req.sent = len(body)
        if drop and b.stall:
            self._stopping.wait(timeout=5)
        if drop:
            h.close_connection = True


def md5(data: bytes) -> str:
    """Return the md5 hex digest of ``data``."""
    return hashlib.md5(data).hexdigest()


def small_dataset(source: Path, dest: Path, n_clips: int) -> Path:
    """Copy the first ``n_clips`` rows of dataset ``source`` (and their files) into ``dest``; return it.

    Keeps tests fast: downloading, extracting and validating 12 clips exercises the same code as 110.
    """
    shutil.copytree(source / "metadata", dest / "metadata")
    for k in range(1, 11):
        (dest / "audio" / f"fold{k}").mkdir(parents=True)
    with open(source / "metadata" / "UrbanSound8K.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1 : n_clips + 1]
    with open(dest / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *body])
    fold = header.index("fold")
    for row in body:
        shutil.copy(source / "audio" / f"fold{row[fold]}" / row[0], dest / "audio" / f"fold{row[fold]}" / row[0])
    return dest


def dataset_tarball(dataset: Path) -> bytes:
    """Return a .tar.gz of ``dataset`` (an UrbanSound8K folder) with ``UrbanSound8K/`` on top, as Zenodo's."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(dataset, arcname="UrbanSound8K")
    return buf.getvalue()


#: Kinds of malicious member :func:`evil_tarball` can add.
EVIL_KINDS = ("dotdot", "absolute", "symlink", "symlink_inside", "hardlink", "device", "fifo")
#: The reason the extractor must give for each kind.
EVIL_REASONS = {
    "dotdot": "path goes outside the target folder ('..')",
    "absolute": "absolute path",
    "symlink": "symbolic link",
    "symlink_inside": "symbolic link",  # harmless-looking, but links are refused outright
    "hardlink": "hard link",
    "device": "device file",
    "fifo": "named pipe (fifo)",
}


def evil_tarball(kind: str, outside: Path) -> tuple[bytes, str]:
    """Return (a .tar.gz with a plausible UrbanSound8K/ and one malicious member, that member's name).

    ``outside`` is a folder beside the download root: the malicious member would write into it
    (or link to it) if extraction were unsafe.
    """
    buf = io.BytesIO()

    def add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes = b"") -> None:
        info.size = len(data) if info.isfile() else 0
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)

    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for d in ("UrbanSound8K", "UrbanSound8K/metadata", "UrbanSound8K/audio"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            add(tar, info)
        add(tar, tarfile.TarInfo("UrbanSound8K/metadata/UrbanSound8K.csv"), b"slice_file_name,fsID\n")
        if kind == "dotdot":
            name = "UrbanSound8K/../../../outside/evil.txt"
            info = tarfile.TarInfo(name)
            add(tar, info, b"pwned")
        elif kind == "absolute":
            name = str(outside / "evil.txt")
            add(tar, tarfile.TarInfo(name), b"pwned")
        elif kind == "symlink":
            name = "UrbanSound8K/audio/fold1"
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, str(outside)
            add(tar, info)
            # A later member written through the link would land outside.
            add(tar, tarfile.TarInfo("UrbanSound8K/audio/fold1/evil.txt"), b"pwned")
        elif kind == "symlink_inside":
            # tarfile's "data" filter would allow this one; the stricter check refuses every link.
            name = "UrbanSound8K/audio/fold1"
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "../metadata"
            add(tar, info)
        elif kind == "hardlink":
            name = "UrbanSound8K/evil-hardlink"
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, str(outside / "victim.txt")
            add(tar, info)
        elif kind == "device":
            name = "UrbanSound8K/evil-device"
            info = tarfile.TarInfo(name)
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            add(tar, info)
        elif kind == "fifo":
            name = "UrbanSound8K/evil-fifo"
            info = tarfile.TarInfo(name)
            info.type = tarfile.FIFOTYPE
            add(tar, info)
        else:
            raise ValueError(kind)
        # Something after the bad member, so a check that stopped early would still be caught.
        add(tar, tarfile.TarInfo("UrbanSound8K/after.txt"), b"after")
    return buf.getvalue(), name


def snapshot(folder: Path) -> dict[str, str]:
    """Return {relative path: content hash / link target / 'dir'} for everything under ``folder``."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link->" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "special"
    return out
