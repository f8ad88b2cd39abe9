"""Classify audio files with a trained checkpoint: ``python -m us8k_lib predict``.

Used by notebook 5.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from us8k_lib.checkpoint import load_checkpoint, load_model


def predict_files(checkpoint: str | Path, paths: Sequence[str | Path], k: int = 3) -> pd.DataFrame:
    """Classify audio files with a trained checkpoint.

    Each file is formatted like the training clips (:func:`us8k_lib.audio.format_clip`: any WAV
    format -> mono, 8 kHz, 4 s).

    Returns:
        One row per file: ``file``, then ``class_1``, ``probability_1`` ... ``class_k``,
        ``probability_k`` (most likely first). Used by notebook 5 and ``predict``.

    Raises:
        CheckpointError: the checkpoint is not usable; AudioError: a file cannot be decoded.
    """
    from us8k_lib.audio import format_clip

    ckpt = load_checkpoint(checkpoint)
    model = load_model(ckpt)
    classes = list(ckpt["classes"])
    k = min(k, len(classes))
    sr, length = int(ckpt.get("sr", 8000)), int(ckpt.get("length", 32000))
    rows = []
    for path in paths:
        x = torch.from_numpy(format_clip(path, sr=sr, length=length)).view(1, 1, -1)
        with torch.no_grad():
            p = model(x).softmax(dim=1)[0]
        top_p, top = p.topk(k)
        row: dict[str, Any] = {"file": str(path)}
        for rank, (i, q) in enumerate(zip(top.tolist(), top_p.tolist()), start=1):
            row[f"class_{rank}"] = classes[i]
            row[f"probability_{rank}"] = q
        rows.append(row)
    return pd.DataFrame(rows)



def predict_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib predict CHECKPOINT FILE.wav ...``: print each file's top-3 classes."""
    table = predict_files(args.checkpoint, args.files, k=3)
    for _, row in table.iterrows():
        print(row["file"])
        rank = 1
        while f"class_{rank}" in row:
            print(f"  {rank}. {row[f'class_{rank}']:<17} {row[f'probability_{rank}']:.3f}")
            rank += 1
    return 0
