"""us8k_lib.engine.allocator: freed memory is reused inside the block (fast mode) or handed back at once (lean mode,
the default where memory is scarce), and glibc's defaults come back after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from us8k_lib.engine import allocator
from us8k_lib.engine.allocator import reuse_freed_memory

glibc_only = pytest.mark.skipif(not allocator.supported(), reason="needs Linux with glibc")

# Runs in a fresh process, so no earlier test's heap decides the outcome: the minor page faults
# of one allocate-fill-free cycle of 96 MB (above glibc's largest mmap threshold, 32 MB), with
# glibc's defaults and inside the block, after warm-up cycles (PyTorch's 64-byte-aligned blocks
# take a few cycles to settle into the heap).
_MEASURE = textwrap.dedent("""
    import json, resource, torch
    from us8k_lib.engine.allocator import reuse_freed_memory

    def faults_per_cycle(nbytes, warmup, measured=3):
        counts = []
        for i in range(warmup + measured):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = torch.empty(nbytes // 4)
            t.fill_(1.0)
            del t
            if i >= warmup:
                counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return min(counts)

    outside = faults_per_cycle(96 << 20, warmup=1)
    with reuse_freed_memory() as took:
        inside = faults_per_cycle(96 << 20, warmup=8)
    print(json.dumps({"outside": outside, "inside": inside, "took": took}))
""")


@glibc_only
def test_freed_blocks_are_reused_without_page_faults_inside_the_block() -> None:
    env = {**os.environ, allocator.MODE_VARIABLE: "fast"}
    out = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True, env=env)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    pages = (96 << 20) // 4096
    assert res["took"] is True
    assert res["outside"] > pages // 2  # glibc's default: a fresh mmap, every page faulted in again
    assert res["inside"] < pages // 20  # kept in the heap: the pages are already there


def test_settings_are_applied_once_and_restored_by_the_outermost_block(fake_libc,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.MODE_VARIABLE, "fast")
    libc = fake_libc
    with reuse_freed_memory() as took:
        assert took is True
        with reuse_freed_memory() as inner:
            assert inner is True
        assert libc.calls == [("mallopt", allocator._M_MMAP_MAX, 0),
                              ("mallopt", allocator._M_TRIM_THRESHOLD, allocator.KEEP_BYTES)]
    assert libc.calls[2:] == [("mallopt", allocator._M_MMAP_MAX, allocator._DEFAULT_MMAP_MAX),
                              ("mallopt", allocator._M_TRIM_THRESHOLD, allocator._DEFAULT_TRIM_THRESHOLD),
                              ("malloc_trim", 0)]
    assert allocator._depth == 0


def test_defaults_are_restored_when_the_block_raises(fake_libc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.MODE_VARIABLE, "fast")
    libc = fake_libc
    with pytest.raises(RuntimeError):
        with reuse_freed_memory():
            raise RuntimeError("training failed")
    assert libc.calls[-1] == ("malloc_trim", 0) and allocator._depth == 0


def test_disabled_or_unsupported_is_a_no_op(fake_libc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.MODE_VARIABLE, "fast")
    libc = fake_libc
    with reuse_freed_memory(enabled=False) as took:
        assert took is False
    assert libc.calls == []
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    with reuse_freed_memory() as took:
        assert took is False
    assert allocator._depth == 0


def test_lean_mode_hands_large_blocks_back_and_keeps_its_settings(fake_libc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.MODE_VARIABLE, "lean")
    with reuse_freed_memory() as kept:
        assert kept is False
        with reuse_freed_memory():
            pass
        assert fake_libc.calls == [("mallopt", allocator._M_MMAP_THRESHOLD, allocator.LEAN_BYTES),
                                   ("mallopt", allocator._M_TRIM_THRESHOLD, allocator.LEAN_BYTES)]
    # no fast-mode restore (glibc cannot turn its sliding threshold back on): just the trim
    assert fake_libc.calls[2:] == [("malloc_trim", 0)]
    assert allocator._depth == 0


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch, tmp_path) -> dict:
    """The machine as memory_limit_bytes sees it: cgroup files under tmp_path, MEM_LIMIT, the RAM."""
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(allocator, "CGROUP_LIMIT_FILES", (v2, v1))
    monkeypatch.delenv("MEM_LIMIT", raising=False)
    monkeypatch.delenv(allocator.MODE_VARIABLE, raising=False)
    ram = {"bytes": 16 << 30}
    monkeypatch.setattr(allocator, "_physical_memory", lambda: ram["bytes"])
    return {"v2": v2, "v1": v1, "ram": ram}


def test_the_memory_limit_is_the_least_of_cgroup_session_and_ram(limits, monkeypatch: pytest.MonkeyPatch) -> None:
    assert allocator.memory_limit_bytes() == 16 << 30  # nothing but the RAM says
    limits["v2"].write_text("max\n")  # cgroup v2 without a limit
    limits["v1"].write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    assert allocator.memory_limit_bytes() == 16 << 30
    limits["v1"].write_text(f"{3 << 30}\n")
    assert allocator.memory_limit_bytes() == 3 << 30
    limits["v2"].write_text(f"{2 << 30}\n")
    monkeypatch.setenv("MEM_LIMIT", str(1 << 30))  # a Binder session's
    assert allocator.memory_limit_bytes() == 1 << 30
    monkeypatch.setenv("MEM_LIMIT", "not a number")
    assert allocator.memory_limit_bytes() == 2 << 30
    limits["ram"]["bytes"] = None
    limits["v1"].unlink()
    limits["v2"].unlink()
    monkeypatch.delenv("MEM_LIMIT")
    assert allocator.memory_limit_bytes() is None


def test_memory_mode_is_lean_where_memory_is_scarce_and_fast_elsewhere(limits, monkeypatch: pytest.MonkeyPatch) -> None:
    assert allocator.memory_mode() == "fast"  # 16 GB of RAM, no limit
    monkeypatch.setenv("MEM_LIMIT", str(2 << 30))  # Binder
    assert allocator.memory_mode() == "lean"
    monkeypatch.delenv("MEM_LIMIT")
    limits["v2"].write_text(str(allocator.LEAN_BELOW_BYTES))  # a container at the threshold
    assert allocator.memory_mode() == "fast"
    limits["v2"].write_text(str(allocator.LEAN_BELOW_BYTES - 1))
    assert allocator.memory_mode() == "lean"
    limits["v2"].unlink()
    limits["ram"]["bytes"] = None  # nothing known: keep the speed
    assert allocator.memory_mode() == "fast"
    monkeypatch.setenv("MEM_LIMIT", str(1 << 30))
    monkeypatch.setenv(allocator.MODE_VARIABLE, "FAST")  # the variable overrides the rule
    assert allocator.memory_mode() == "fast"
    monkeypatch.setenv(allocator.MODE_VARIABLE, "small")
    with pytest.raises(ValueError, match="US8K_MEMORY='small': expected one of fast, lean"):
        allocator.memory_mode()


# A fresh process (no earlier test's heap): the resident-size peak of three M5-sized
# allocate-free cycles of 48 MB blocks interleaved with small ones, kept vs lean.
_PEAK = textwrap.dedent("""
    import json, os, sys, torch
    from us8k_lib.engine.allocator import reuse_freed_memory

    def hwm():
        return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) >> 10

    base = hwm()
    with reuse_freed_memory() as kept:
        for _ in range(3):
            big = [torch.ones(12 << 20) for _ in range(4)]   # 4 x 48 MB, like one step's activations
            small = [torch.ones(1 << 18) for _ in range(40)]  # 40 x 1 MB
            del big
            big = [torch.ones(12 << 20) for _ in range(2)]
            del big, small
    print(json.dumps({"kept": kept, "peak_mb": hwm() - base}))
""")


@glibc_only
def test_lean_mode_peaks_lower_than_keeping_freed_memory() -> None:
    peaks = {}
    for mode in ("fast", "lean"):
        env = {**os.environ, allocator.MODE_VARIABLE: mode}
        out = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, check=True, env=env)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["kept"] is (mode == "fast")
        peaks[mode] = res["peak_mb"]
    assert peaks["lean"] < peaks["fast"] - 40, peaks
