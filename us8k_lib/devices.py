"""Where training runs: the device, and whether bf16 mixed precision pays off there.

Used by notebook 5 and by every training run (``train``, ``crossval``).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, NamedTuple

import torch

from us8k_lib.engine.distributed import launched_by_torchrun, local_rank


def choose_device(preference: str = "auto") -> torch.device:
    """Return the device to train on: CUDA if available, else Apple MPS, else CPU.

    ``preference`` other than ``"auto"`` (e.g. ``"cpu"``) is used as given. Under torchrun, CUDA
    means this process's GPU, ``cuda:LOCAL_RANK``. Used by notebook 5 and every training run.
    """
    if preference != "auto":
        device = torch.device(preference)
        if device.type == "cuda" and device.index is None and launched_by_torchrun():
            return torch.device("cuda", local_rank())  # one GPU per torchrun process
        return device
    if torch.cuda.is_available():
        # Under torchrun each process on a machine takes its own GPU.
        return torch.device("cuda", local_rank()) if launched_by_torchrun() else torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_name() -> str:
    """Return the processor's model name (from /proc/cpuinfo on Linux), for benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Return True if this CPU has bf16 arithmetic instructions (AVX512-BF16, AMX-BF16, ARM BF16).

    Without them PyTorch emulates bf16 and autocast is slower than fp32: M5 training on an
    AVX2-only 2-core AMD EPYC ran 29 clips/s in fp32 and 5 clips/s with bf16 autocast. Used by :func:`decide_amp`.
    """
    caps = torch.cpu.get_capabilities()
    return any(bool(caps.get(flag, False)) for flag in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))


def decide_amp(device: torch.device, requested: bool = True) -> bool:
    """Return whether to train with bf16 autocast on ``device``.

    Only where the hardware runs bf16 natively: CUDA GPUs that support it, CPUs per
    :func:`cpu_has_native_bf16`; never on MPS (not measured) or when ``requested`` is False.
    Used by :func:`place` (every training run).
    """
    if not requested:
        return False
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def autocast(device: torch.device, enabled: bool) -> Any:
    """Return a bf16 autocast context for ``device`` (a no-op when ``enabled`` is False)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class Placement(NamedTuple):
    """Where a run trains and in which precision: decided once per run (:func:`place`)."""

    device: torch.device
    amp: bool


def place(preference: str = "auto", amp: bool = False) -> Placement:
    """Decide a run's device (:func:`choose_device`) and precision (:func:`decide_amp`) once, and
    set the CUDA switches a run trains with. Used by ``engine.fit.fit`` and the ``train`` command."""
    device = choose_device(preference)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every batch has the same shape: tune once
        torch.backends.cuda.matmul.allow_tf32 = True  # "fp32" on CUDA: TF32 tensor cores, as cuDNN's default
    return Placement(device, decide_amp(device, amp))
