"""Runs spread over processes, GPUs and machines with ``torchrun`` (torch.distributed).

``torchrun`` starts one process per device and tells each its place through environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...). This module reads them, joins the
process group (``nccl`` on GPUs, ``gloo`` on CPUs) and offers the few collective steps the
commands need:

* ``train`` under torchrun trains one model with DistributedDataParallel: each rank sees a
  different part of every epoch (a ``DistributedSampler``), gradients are averaged, and the
  evaluation splits the clips over the ranks and gathers the predictions, so every clip is
  counted exactly once (``DistributedSampler`` would pad with repeated clips).
* ``crossval`` under torchrun runs different folds on different ranks, each an ordinary
  single-device training, and gathers the results on rank 0.

Without torchrun nothing here does anything: both commands run in one process.
Used by notebook 6 and by ``python -m us8k_lib train`` / ``crossval``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

#: How long a rank waits for the others in a collective step. Cross-validation ranks finish their
#: folds at different times and then meet to gather results, so this is generous.
TIMEOUT = timedelta(hours=72)


def launched_by_torchrun() -> bool:
    """Return True when this process was started by ``torchrun`` (it sets ``WORLD_SIZE`` and ``RANK``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "LOCAL_RANK" in os.environ


def local_rank() -> int:
    """Return this process's index on its machine (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun() else 0


def is_active() -> bool:
    """Return True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Return this process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Return the number of processes in the group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Return True on the process that logs and writes files (rank 0, or the only process)."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    """Return the collective backend for ``device``: ``nccl`` for CUDA, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(device: torch.device) -> Iterator[bool]:
    """Join torchrun's process group for the duration, if this process was started by torchrun.

    Yields True when a group of more than one process was joined. Without torchrun it yields
    False and does nothing, so a command runs exactly as in one process. On CUDA the process
    uses the GPU ``LOCAL_RANK`` (one device per rank).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield is_active()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {"backend": backend_for(device), "timeout": TIMEOUT}
    if device.type == "cuda":
        kwargs["device_id"] = device  # binds NCCL to this rank's GPU from the start
    dist.init_process_group(**kwargs)
    try:
        yield is_active()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op when not distributed)."""
    if is_active():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Return every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP averages gradients, so the weights stay identical, but each rank's BatchNorm layers
    update their running statistics from their own batches. Broadcasting them after each epoch
    leaves every rank with the same model (the one rank 0 saves and everybody evaluates).
    """
    if is_active():
        for b in module.buffers():
            dist.broadcast(b, src=0)


def shard(n: int) -> range:
    """Return the item indices this rank handles out of ``n`` (``rank, rank + world, ...``).

    Unlike ``DistributedSampler`` nothing is repeated to even the shards out, so gathering the
    shards counts every item exactly once.
    """
    return range(rank(), n, world_size())
