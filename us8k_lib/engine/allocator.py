"""Keep the memory PyTorch frees inside the process while M5 trains on a CPU (glibc only).

Why this exists: PyTorch's CPU tensors come straight from ``malloc``. glibc serves every block
above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and gives it back with ``munmap``
when the tensor dies, so each training step asks the kernel for M5's activations again (the first
block's output alone is 65 MB at batch 16) and pays a page fault, and the zeroing of a page, for
every 4 KiB of them. On a 2-core AMD EPYC VM (AVX2), that kernel time was a third of a
training run. ``benchmarks/bench_pipeline.py`` (P3, batch 16) measured the tutorial's
loop with glibc's defaults at 30 clips/s and fit's step with freed memory kept at 47-49 clips/s;
the two run the same convolutions.

:func:`reuse_freed_memory` turns glibc's mmap path off and raises its trim threshold for the
duration of a ``with`` block, then restores glibc's defaults and asks glibc to return free memory
to the operating system (``malloc_trim``; pages glibc cannot release stay with the process until
it reuses them). The price: PyTorch's 64-byte-aligned blocks fragment the heap a little, so peak
memory is higher: the benchmark's P5 measures a training process both ways (1.56 vs 1.21 GB peak
RSS over a full-size cache, docs/performance.md). Elsewhere (macOS, Windows, musl) it does nothing: their allocators, or
PyTorch's, behave differently and were not measured.

The cache build (:func:`us8k_lib.engine.cache.build_cache`) uses it too: every clip's decode buffers
(about 1.4 MB for 4 s of 44.1 kHz stereo) were fresh mmaps, and two worker threads faulting pages
into one process contend for its memory map (measured 15-25% faster builds with it).

Memory mode. Keeping freed memory is a trade: speed for resident memory. Where memory is scarce
(Binder gives a whole session 1-2 GB) it is the wrong trade, so the process has a mode
(:func:`memory_mode`): ``"fast"`` keeps freed memory as described above; ``"lean"`` does the
opposite for the duration of the block: every block of 1 MiB or more is a fresh ``mmap`` handed
back the moment it is freed, and glibc's sliding mmap threshold, which otherwise moves large
blocks into a heap that does not shrink, is turned off. The mode is ``lean`` when the memory this
process may use (:func:`memory_limit_bytes`: its cgroup's limit, JupyterHub's ``MEM_LIMIT``, the
machine's RAM, whichever is least) is under :data:`LEAN_BELOW_BYTES`, and ``fast`` otherwise; the
environment variable ``US8K_MEMORY=fast|lean`` overrides the rule. Measured for M5 (width 128) at
batch 16 on a 2-core EPYC, torch 2.14.1: one training step's peak above the resident size before
it 607 MB kept, 423 MB with glibc's defaults, 283 MB lean (``benchmarks/bench_memory.py``
measures whole notebooks); notebook 5 ran in 28 s fast and 43 s lean on the mini dataset (docs/binder.md).

Used by :func:`us8k_lib.train.train_one_epoch` (so by notebook 5's loop and every training run), by
:func:`us8k_lib.engine.fit.fit` around a whole run, by :func:`us8k_lib.engine.cache.build_cache`
(notebooks 3 and 5) and by the benchmarks.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

# mallopt(3) parameter numbers and glibc's documented defaults.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
#: Free memory at the top of the heap beyond this goes back to the OS even inside the block; the
#: largest value mallopt accepts (an int), far above what M5 frees per step.
KEEP_BYTES = 2**31 - 1
#: In lean mode, blocks from this size up are mmapped (and unmapped when freed), and free heap
#: memory above it at the top of the heap goes back to the OS. Setting it also turns off glibc's
#: sliding mmap threshold for the rest of the process (mallopt(3) has no way to turn it back on).
LEAN_BYTES = 1 << 20
#: The environment variable that chooses the memory mode (see :func:`memory_mode`).
MODE_VARIABLE = "US8K_MEMORY"
MODES = ("fast", "lean")
#: Under this much memory for the process the default mode is lean: Binder's 1-2 GB session must
#: hold the server and every open kernel; notebook 5's kernel peaks at 0.93 GB lean, 1.13 GB fast.
LEAN_BELOW_BYTES = 4 << 30
#: Where Linux states the process's memory limit (cgroup v2, then v1).
CGROUP_LIMIT_FILES = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
#: cgroup v1 writes "no limit" as a number near 2**63.
_UNLIMITED = 1 << 60

_depth = 0


@lru_cache(maxsize=1)
def _glibc() -> Any | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)  # the running process's own symbols, glibc's among them
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def supported() -> bool:
    """Return True where :func:`reuse_freed_memory` takes effect (Linux with glibc)."""
    return _glibc() is not None


def memory_mode() -> str:
    """Return ``"fast"`` or ``"lean"``: how :func:`reuse_freed_memory` treats freed memory here.

    ``US8K_MEMORY`` decides if set; otherwise ``"lean"`` when :func:`memory_limit_bytes` is under
    :data:`LEAN_BELOW_BYTES` (Binder, a small container), else ``"fast"`` (a laptop, a
    workstation, a GPU server). Used by every notebook that trains (5-8), through :func:`reuse_freed_memory`.

    Raises:
        ValueError: ``US8K_MEMORY`` is set to something other than ``fast`` or ``lean``.
    """
    value = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if value:
        if value not in MODES:
            raise ValueError(f"{MODE_VARIABLE}={os.environ[MODE_VARIABLE]!r}: expected one of {', '.join(MODES)}")
        return value
    limit = memory_limit_bytes()
    return "lean" if limit is not None and limit < LEAN_BELOW_BYTES else "fast"


def memory_limit_bytes() -> int | None:
    """Return the most memory this process may use, in bytes, or None where nothing says.

    The least of: the cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``; containers,
    Binder's pods), ``MEM_LIMIT`` (what JupyterHub and Binder set in a user's session) and the
    machine's physical memory. Used by :func:`memory_mode`.
    """
    limits = [_read_limit(path) for path in CGROUP_LIMIT_FILES]
    with suppress(ValueError):
        limits.append(int(os.environ.get("MEM_LIMIT", "")))
    limits.append(_physical_memory())
    known = [n for n in limits if n is not None and 0 < n < _UNLIMITED]
    return min(known) if known else None


def _read_limit(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())  # "max" (cgroup v2, no limit) is not a number
    except (OSError, ValueError):
        return None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name (macOS)
        return None


@contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, keep freed memory in the heap for the next allocation to reuse (``fast``
    mode), or hand every large block back to the OS as soon as it is freed (``lean`` mode, the
    default where memory is scarce; see :func:`memory_mode`).

    Args:
        enabled: False makes the block a no-op (to measure, or to rule it out).

    Yields:
        True if freed memory is being kept (fast mode, Linux with glibc and ``enabled``), else
        False. Nested blocks are fine: only the outermost one applies the settings and, at its
        end, restores glibc's defaults (fast mode; lean mode's settings stay, see
        :data:`LEAN_BYTES`) and calls ``malloc_trim`` to hand free heap memory back to the OS.

    Raises:
        ValueError: ``US8K_MEMORY`` holds an unknown mode.

    Used by :func:`us8k_lib.train.train_one_epoch` (notebooks 5-8), :func:`us8k_lib.engine.fit.fit`,
    :func:`us8k_lib.engine.cache.build_cache` and the benchmarks.
    """
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    mode = memory_mode()
    if _depth == 0:
        if mode == "fast":
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
        else:
            libc.mallopt(_M_MMAP_THRESHOLD, LEAN_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, LEAN_BYTES)
    _depth += 1
    try:
        yield mode == "fast"
    finally:
        _depth -= 1
        if _depth == 0:
            if mode == "fast":
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
