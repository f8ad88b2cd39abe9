"""The run folder's lock: one run at a time in a folder, and a killed run never blocks the next.

:class:`RunLock` holds an OS lock on ``folder/.lock`` (``fcntl.flock`` on Linux and macOS,
``msvcrt.locking`` on Windows), released by the OS when its process dies; the file names its
holder for the message a second run gets. :func:`locked` takes it for a run (and for every
torchrun rank of one run together). Used by :mod:`us8k_lib.runs.folder` and ``crossval``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from us8k_lib.errors import RunInUseError, US8KError, setting
from us8k_lib.runs.files import sweep_temporaries

#: Held (an OS lock) for the life of a run; names the holder. Removed when the run ends.
LOCK_NAME = ".lock"


class RunLock:
    """An OS lock on ``folder/.lock`` for the life of a run: released by the OS when its process
    dies, so a killed run never blocks the next one (``fcntl.flock`` on Linux and macOS,
    ``msvcrt.locking`` on Windows). The file names its holder (pid and host) for the message a
    second run gets. A folder the lock made is removed again on release if the run wrote nothing
    there (a run refused before its first write leaves no empty folder behind)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made_folder = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunInUseError` at once naming the folder and the holder."""
        self._made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            # O_BINARY on Windows: the holder's line is written as bytes, never as translated text
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
            try:
                _lock(fd)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunInUseError(f"{self.folder}: in use by another run ({holder}); wait for it to finish, "
                                    f"or choose another run folder ({setting('out')})") from None
            try:  # the holder may have removed the file between our open and our lock: retry on the new one
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            _unlock(fd)
            os.close(fd)
        os.lseek(fd, 0, os.SEEK_SET)  # Windows locked a byte far out, leaving the file position there
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if sys.platform != "win32":  # unlinked while still held: nobody can lock the old file after us
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass  # a folder that became read-only: a lock file left there blocks nobody, and the error
                # that ended the run (raised on) is the one to report
        _unlock(fd)
        os.close(fd)
        if sys.platform == "win32":  # an open file cannot be removed there; another run may have it open
            try:
                self.path.unlink(missing_ok=True)
            except PermissionError:
                pass
        if self._made_folder:
            try:
                self.folder.rmdir()  # only if empty: anything the run wrote stays
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: Windows locks byte ranges; the lock byte lies beyond the holder's line so the line stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 20


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode(errors="replace").strip()
    return text or "a process that is just starting"


@contextmanager
def locked(folder: Path | None, writer: bool = True, *, ranks_together: bool = False) -> Iterator[None]:
    """Hold ``folder``'s :class:`RunLock` (in the ``writer`` process) and sweep the temporaries of
    killed writes there; release the lock on exit. A second run stops here, naming the holder.

    ``ranks_together``: every torchrun rank calls this for the same folder (one DDP training, or
    ``crossval``'s own folder); rank 0 is the writer and every rank learns whether it got the
    lock, so all stop together. Used by :func:`open_run` and ``crossval``.
    """
    from us8k_lib.engine import distributed

    lock = RunLock(folder) if folder is not None and writer else None
    problem = None
    if lock is not None:
        try:
            lock.acquire()
            sweep_temporaries(lock.folder)
        except (US8KError, OSError) as exc:
            problem = exc
    if ranks_together:
        problem = next((p for p in distributed.all_gather_objects(problem) if p is not None), None)
    if problem is not None:
        if lock is not None:
            lock.release()
        raise problem
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
