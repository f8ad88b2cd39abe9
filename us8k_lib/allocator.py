"""Keep the memory PyTorch frees inside the process while M5 trains on a CPU (glibc only).

Why this exists: PyTorch's CPU tensors come straight from ``malloc``. glibc serves every block
above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and gives it back with ``munmap``
when the tensor dies, so each training step asks the kernel for M5's activations again (the first
block's output alone is 65 MB at batch 16) and pays a page fault, and the zeroing of a page, for
every 4 KiB of them. On the 2-core machine this project is developed on, that kernel time was a
third of a training run. ``benchmarks/bench_pipeline.py`` (P3, batch 16) measured the tutorial's
loop with glibc's defaults at 30 clips/s and fit's step with freed memory kept at 47-49 clips/s;
the two run the same convolutions.

:func:`reuse_freed_memory` turns glibc's mmap path off and raises its trim threshold for the
duration of a ``with`` block, then restores glibc's defaults and asks glibc to return free memory
to the operating system (``malloc_trim``; pages glibc cannot release stay with the process until
it reuses them). The price: PyTorch's 64-byte-aligned blocks fragment the heap a little, so peak
memory is higher: the benchmark's P5 measures a training process both ways (1.30 vs 1.17 GB peak
RSS at batch 16). Elsewhere (macOS, Windows, musl) it does nothing: their allocators, or
PyTorch's, behave differently and were not measured.

The cache build (:func:`us8k_lib.dataset.build_cache`) uses it too: every clip's decode buffers
(about 1.4 MB for 4 s of 44.1 kHz stereo) were fresh mmaps, and two worker threads faulting pages
into one process contend for its memory map (measured 15-25% faster builds with it).

Used by :func:`us8k_lib.train.fit` (so by notebook 5 and ``python -m us8k_lib train``), by
:func:`us8k_lib.dataset.build_cache` (notebooks 3 and 5) and by the benchmark.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

# mallopt(3) parameter numbers and glibc's documented defaults.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
#: Free memory at the top of the heap beyond this goes back to the OS even inside the block; the
#: largest value mallopt accepts (an int), far above what M5 frees per step.
KEEP_BYTES = 2**31 - 1

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


@contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, keep freed memory in the heap for the next allocation to reuse.

    Args:
        enabled: False makes the block a no-op (to measure, or to rule it out).

    Yields:
        True if the setting took effect (Linux with glibc and ``enabled``), else False.
        Nested blocks are fine: only the outermost one restores glibc's defaults, then calls
        ``malloc_trim`` to hand free heap memory back to the operating system.

    Used by :func:`us8k_lib.train.fit` (notebook 5) and ``benchmarks/bench_pipeline.py``.
    """
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    if _depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
