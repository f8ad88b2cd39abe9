"""The paper's protocol timed end to end: ``python benchmarks/bench_gpu.py --protocol [--quick]``.

1. Writes a full-size synthetic UrbanSound8K: the 8 732 rows of the shipped metadata (real names,
   folds and classes, so the real fold sizes), each a 4 s, 8 kHz, 16-bit mono WAV of a
   class-dependent tone in noise, and formats it into a real cache with ``build_cache`` (timed
   and reported on its own: it is paid once per dataset).
2. Runs the real ``python -m us8k_lib crossval`` command on it (``--preset full``: the recipe for
   the real data) for each model, in a fresh process, and times the whole command: start-up,
   the copy of the cache to the device, every fold's training and evaluation, compile time with
   ``--compile``. M5 runs the full 10 folds x 30 epochs; the other models fewer epochs (``--epochs-other``),
   and their line gives the measured time and the time scaled to 30 epochs, labelled as such.
3. Prints one line per model: wall time, training clips/s (clip-steps of the whole protocol over
   its wall time) and the share of the device's dense TF32 (or bf16) peak that represents, with
   the peak's source (:data:`PEAKS`).

``--quick`` runs the same path on a CPU in seconds, for CI: 10 clips per fold, two test folds,
one epoch, models at width 8. Its numbers mean nothing; that the path works does.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from us8k_lib.crossval import fold_roles
from us8k_lib.engine.cache import build_cache
from us8k_lib.metadata import load_metadata
from us8k_lib.model import build_model, display_name

SR, SECONDS = 8000, 4
#: Dense (no sparsity) tensor-core peaks in FLOP/s: (TF32, bf16), from NVIDIA's data sheets
#: (H100/H200 SXM: 494.7 and 989.4 TFLOPS, half the "with sparsity" figures; A100: 156 and 312).
PEAKS: dict[str, tuple[float, float, str]] = {
    "H200": (494.7e12, 989.4e12, "NVIDIA H200 data sheet, dense"),
    "H100": (494.7e12, 989.4e12, "NVIDIA H100 SXM data sheet, dense"),
    "A100": (156e12, 312e12, "NVIDIA A100 data sheet, dense"),
}


def write_protocol_dataset(parent: Path, per_fold: int | None = None, seed: int = 0) -> Path:
    """Write the synthetic dataset into ``parent/UrbanSound8K`` and return that folder.

    ``per_fold``: keep only the first rows of each fold (``--quick``); None keeps all 8 732.
    Each clip is 4 s of a sine at a class-dependent frequency plus noise: enough for a model to
    learn something, and the same decoding and formatting path as real clips (8 kHz, so no
    resampling: the cost measured is training, not formatting).
    """
    rows = load_metadata()
    if per_fold is not None:
        rows = rows.groupby("fold", group_keys=False).head(per_fold)
    root = parent / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    rows.to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    rng = np.random.default_rng(seed)
    t = np.arange(SR * SECONDS) / SR
    for row in rows.itertuples():
        folder = root / "audio" / f"fold{row.fold}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / row.slice_file_name
        if path.exists():
            continue
        tone = 0.3 * np.sin(2 * np.pi * (150 + 300 * row.classID) * t + rng.uniform(0, 2 * np.pi))
        sf.write(path, (tone + 0.1 * rng.standard_normal(len(t))).astype(np.float32), SR, subtype="PCM_16")
    return root


def training_flops(name: str, width: int | None = None) -> float:
    """FLOPs of one training step per clip: 3x the forward's (backward about twice the forward),
    counting the multiply-adds of every convolution and linear layer (x2)."""
    model = build_model(name, width=width, normalize=True).eval()
    macs = 0

    def count(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            macs += out[0].numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            macs += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 1, SR * SECONDS))
    for h in hooks:
        h.remove()
    return 3 * 2 * macs


def clip_steps(sizes: dict[int, int], folds: list[int], epochs: int) -> int:
    """Training clips processed by crossval over ``folds``: each fold's training folds, every epoch."""
    total = 0
    for test_fold in folds:
        val, train = fold_roles(list(sizes), test_fold)
        total += sum(sizes[f] for f in train)
    return total * epochs


def peak_for(device: torch.device) -> tuple[float, float, str] | None:
    """The device's (TF32, bf16) dense peak and its source, or None where not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def run_crossval(root: Path, model: str, epochs: int, folds: str | None, out: Path, extra: list[str],
                 env: dict[str, str]) -> tuple[float, str]:
    """Run the crossval command in a fresh process; return (wall seconds, its last line)."""
    cmd = [sys.executable, "-m", "us8k_lib", "crossval", "--root", str(root), "--preset", "full", "--model", model,
           "--epochs", str(epochs), "--out", str(out), *(["--folds", folds] if folds else []), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"crossval failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds, done.stdout.strip().splitlines()[-1]


def main(args: argparse.Namespace, device: torch.device, models: list[str]) -> list[dict[str, Any]]:
    """Run the protocol benchmark (see the module docstring); return one result per model."""
    quick = args.quick
    work = Path(args.protocol_dir or tempfile.mkdtemp(prefix="us8k-protocol-"))
    env = {**os.environ, "US8K_DATA_DIR": str(work / "data"), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    root = write_protocol_dataset(work, per_fold=10 if quick else None)
    written = time.perf_counter() - t0
    rows = load_metadata(root)
    sizes = {int(f): int(n) for f, n in rows["fold"].value_counts().sort_index().items()}
    t0 = time.perf_counter()
    os.environ["US8K_DATA_DIR"] = env["US8K_DATA_DIR"]
    cache = build_cache(root, rows, progress=False)
    built = time.perf_counter() - t0
    print(f"protocol dataset: {len(rows):,} clips in {len(sizes)} folds ({work}); written in {written:.0f} s, "
          f"formatted into a {cache.nbytes / 1e9:.2f} GB cache in {built:.1f} s "
          "(once per dataset, not in the times below)")
    folds = "1-2" if quick else None
    run_folds = [1, 2] if quick else sorted(sizes)
    extra = ["--device", str(device.type)]
    if quick:
        extra += ["--width", "8", "--batch-size", "16"]
    if args.jobs and args.jobs > 1:
        extra += ["--jobs", str(args.jobs)]
    if args.compile:
        extra += ["--compile"]
    if args.amp:
        extra += ["--amp"]
    peak = peak_for(device)
    results = []
    for name in models:
        epochs = 1 if quick else (args.epochs if name == "m5" else args.epochs_other)
        seconds, last = run_crossval(root, name, epochs, folds, work / "runs" / name, extra, env)
        steps = clip_steps(sizes, run_folds, epochs)
        rate = steps / seconds
        flops = training_flops(name, 8 if quick else None)
        share = None if peak is None else rate * flops / (peak[1] if args.amp else peak[0])
        scaled = seconds * args.epochs / epochs
        results.append({"model": name, "title": display_name(name), "epochs": epochs, "folds": len(run_folds),
                        "seconds": seconds, "seconds_at_full_epochs": scaled, "clip_steps": steps,
                        "clips_per_s": rate, "train_flops_per_clip": flops, "peak_share": share, "last_line": last})
        label = f"{len(run_folds)} folds x {epochs} epoch{'s' if epochs != 1 else ''}"
        scaled_text = (f" ({args.epochs} epochs would take {scaled:.0f} s: scaled, not measured)"
                       if epochs != args.epochs and not quick else "")
        share_text = (f"{share:.1%} of the {'bf16' if args.amp else 'TF32'} peak ({peak[2]})" if share is not None
                      else "peak unknown for this device")
        print(f"{display_name(name)}: {label}: {seconds:.1f} s wall{scaled_text}, {rate:,.0f} training clips/s, "
              f"{flops / 1e9:.2f} GFLOP per training clip, {share_text}; {last}", flush=True)
    return results
