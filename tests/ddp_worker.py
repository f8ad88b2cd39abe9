"""Run by tests/test_distributed.py under torchrun: one DDP training, then each rank saves its weights.

Usage: torchrun --nproc-per-node=2 tests/ddp_worker.py ROOT OUT CACHE DUMP
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from us8k_lib.engine import cache as cache_module
from us8k_lib.engine import distributed
from us8k_lib.engine.fit import fit
from us8k_lib.recipe import TrainConfig


def count_formatting(dump: Path) -> None:
    """Record every clip this rank formats (one line each), to show the clips are formatted once."""
    real = cache_module._format_task

    def counted(path: str, sr: int, length: int):  # cache_module._format_task's signature
        with open(dump / f"formatted-rank{distributed.rank()}.txt", "a") as f:
            f.write(path + "\n")
        return real(path, sr, length)

    cache_module._format_task = counted


if __name__ == "__main__":
    root, out, cache, dump = sys.argv[1:5]
    # Small for testing: a narrow M5 on the tiny dataset; batch 16 is the global batch (8 per rank).
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, width=8, seed=0, device="cpu")
    with distributed.process_group(torch.device("cpu")) as active:
        assert active, "expected to run under torchrun with several ranks"
        count_formatting(Path(dump))
        result = fit(config, root, out, cache_dir=cache, progress=False, verbose=False)
        torch.save({"state": result.model.state_dict(), "history": result.history.to_dict("list"),
                    "n_test": result.evaluation.n_clips, "accuracy": result.evaluation.accuracy},
                   Path(dump) / f"rank{distributed.rank()}.pt")
