"""Benchmark our data and training pipeline against the original tutorial's, side by side.

    python benchmarks/bench_pipeline.py [--clips N] [--quick]
    python benchmarks/bench_pipeline.py --only augment [--device cuda]

Generates N clips in the real dataset's dominant format (PCM 16-bit stereo 44.1 kHz, 4 s) into a
temporary folder, then measures in one run, on those same files:

  P1  epoch data throughput through a DataLoader (clips/s): the tutorial's per-item Dataset
      (decode every item with soundfile, downmix, zero-pad/crop to 160 000, keep every 5th
      sample, 1 worker, batch 128) vs our US8KDataset reading the cache, loaded the way ``fit``
      loads it (inside ``reuse_freed_memory``, epochs repeated for half a second per round, since
      one takes tens of milliseconds). Target >= 100x.
  P2  first-pass preprocessing (build_cache) clips/s vs the floor of bare
      ``soundfile.read(dtype="float32")`` of the same files with the same number of workers (the
      faster of a thread and a process pool; the sequential floor is printed too). Pending disk
      writes are flushed before each timed build. Target >= 0.5x.
  P3  M5 training clips/s, our training step (as ``train.fit`` runs it on a CPU: fp32, logits +
      cross-entropy, Adam, inside ``reuse_freed_memory``) vs the tutorial's fp32 loop
      (log_softmax + nll_loss, Adam lr 0.01, glibc's default allocator), each variant in a fresh
      process, alternating, on the same inputs: at batch 128 (the tutorial's; the P3 figure) and
      at fit's batch size; achieved GFLOP/s (torch's flop counter: convolutions and matmuls of
      forward + backward) as a share of this machine's fp32 matmul rate.
      ``--compile`` adds M5 under torch.compile. bf16 autocast is not timed: without AVX512-BF16
      or AMX it is emulated and about 5x slower than fp32 (train.py leaves it off there).
      Target >= 1.5x.
  P5  peak resident memory (VmHWM) of a training process going through an epoch over a
      full-size cache (8 732 x 32 000 float32 = 1.1 GB, written directly, not decoded from
      audio), in a fresh subprocess with fit's batch size and loader: first the data alone
      (every clip), then a few training steps (every step would take an hour here); then again
      with glibc's default allocator, to show what ``reuse_freed_memory`` costs in memory.
      Target <= 1.5 GB.

  AUG training clips/s with every augmentation on (``us8k_lib.augment``, the ``strong`` preset:
      shift, speed, mask, background noise, mixup, applied to each batch after it reaches the
      device, as ``fit`` does) vs off, fit's training step at fit's batch size, the two variants
      alternating in one process on the same batch; and the augmenter alone per preset (ms per
      batch), with the ratio the parts add up to (steadier on a busy machine). The data path is
      untouched by augmentation, so P1 does not change. Runs alone with
      ``--only augment`` (seconds; ``--device cuda`` times it on a GPU, also at batch 128).

Timings are best-of-N with the compared variants interleaved, so a noisy neighbour hurts both
sides alike; on a shared machine the absolute numbers still move between runs.
The last line sums up: ``P1 <x>x  P2 <x>x  P3 <x>x  P5 <GB> GB  AUG <x>x``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from us8k_lib import audio
from us8k_lib.dataset import US8KDataset, collate_clips
from us8k_lib.devices import cpu_name
from us8k_lib.engine import cache as cache_module
from us8k_lib.engine.allocator import reuse_freed_memory
from us8k_lib.engine.batches import make_loader
from us8k_lib.engine.cache import build_cache
from us8k_lib.metadata import load_metadata, reference_metadata_path
from us8k_lib.model import build_model
from us8k_lib.paths import clip_path
from us8k_lib.recipe import PRESETS, TrainConfig
from us8k_lib.train import make_optimizer, training_step

#: The recipe the rows measure 'fit' with: the mini preset (batch 16), which the notebooks and the
#: commands use on the small datasets (the real-data default, batch 128, is P3's headline batch).
FIT = TrainConfig(**PRESETS["mini"])

SR, CHANNELS, SECONDS = 44100, 2, 4.0
BATCH = 128  # the tutorial's batch size, used for P1 and P3


# --------------------------------------------------------------------------------------------
# The original tutorial, as it was (data pipeline and model), ported to soundfile


class TutorialDataset(Dataset):
    """The tutorial's per-item pipeline: every access decodes the file again."""

    def __init__(self, paths: list[str], labels: list[int]) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, _ = sf.read(self.paths[i], dtype="float32", always_2d=True)  # torchaudio.load gave float32
        sound = torch.from_numpy(x).mean(dim=1, keepdim=True)  # its DownmixMono: [frames, 1]
        temp = torch.zeros([160000, 1])  # pad/crop to 160 000 samples, assuming 44.1 kHz...
        n = min(sound.numel(), 160000)
        temp[:n] = sound[:n]
        formatted = torch.zeros([32000, 1])
        formatted[:32000] = temp[::5]  # ...and keep every 5th sample, no anti-alias filter
        return formatted.permute(1, 0), self.labels[i]


class TutorialM5(nn.Module):
    """The tutorial's M5: same layers as ours, AvgPool1d(30) and log_softmax at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.pool1 = nn.Conv1d(1, 128, 80, 4), nn.BatchNorm1d(128), nn.MaxPool1d(4)
        self.conv2, self.bn2, self.pool2 = nn.Conv1d(128, 128, 3), nn.BatchNorm1d(128), nn.MaxPool1d(4)
        self.conv3, self.bn3, self.pool3 = nn.Conv1d(128, 256, 3), nn.BatchNorm1d(256), nn.MaxPool1d(4)
        self.conv4, self.bn4, self.pool4 = nn.Conv1d(256, 512, 3), nn.BatchNorm1d(512), nn.MaxPool1d(4)
        self.avgPool = nn.AvgPool1d(30)
        self.fc1 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool2(F.relu(self.bn2(self.conv2(x))))
        x = self.pool3(F.relu(self.bn3(self.conv3(x))))
        x = self.pool4(F.relu(self.bn4(self.conv4(x))))
        x = self.avgPool(x).permute(0, 2, 1)
        return F.log_softmax(self.fc1(x), dim=2)


# --------------------------------------------------------------------------------------------
# Helpers


def generate_clips(folder: Path, n: int) -> tuple[Path, pd.DataFrame]:
    """Write n 4-s 44.1 kHz stereo PCM_16 clips named after real metadata rows (all folds)."""
    meta = load_metadata(reference_metadata_path())
    rows = meta.groupby("fold", group_keys=False).head(-(-n // 10)).head(n).reset_index(drop=True)
    root = folder / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    rows.to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    rng = np.random.default_rng(0)
    frames = int(SR * SECONDS)
    # Band-limited noise with a slow envelope; each clip a different slice of one long buffer.
    base = rng.standard_normal((frames * 4, CHANNELS)).astype(np.float32)
    base = np.cumsum(base, axis=0)
    base -= np.convolve(base[:, 0], np.ones(64) / 64, mode="same")[:, None]
    base = (0.3 * base / np.abs(base).max()).astype(np.float32)
    for i, (fold, name) in enumerate(zip(rows["fold"], rows["slice_file_name"])):
        path = clip_path(root, fold, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        start = int(rng.integers(0, len(base) - frames))
        sf.write(path, base[start : start + frames] * (0.5 + (i % 7) / 10), SR, subtype="PCM_16")
    return root, rows


def _flush_writes() -> None:
    """Write dirty pages out before a timed build: otherwise the kernel throttles the build's
    cache writes while it flushes the generator's (or the last build's) hundreds of MB."""
    if hasattr(os, "sync"):
        os.sync()


def per_call_ms(fn: Callable[[], object], reps: int = 20) -> float:
    """Best of ``reps`` calls of ``fn``, in milliseconds, after one warm-up call."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * min(ts)


def p2_details(path: str) -> list[tuple[str, str, str]]:
    """Single-thread costs behind P2: decoding one clip as float32 (libsndfile converts) or as
    int16 (format_clip's path for PCM_16), and resampling 4 s of mono audio to 8 kHz with
    torchaudio's Resample call or with audio.resample (the same kernel, more phases at once)."""
    import torchaudio

    rows = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each cache-build worker runs
    try:
        as_float = per_call_ms(lambda: sf.read(path, dtype="float32"))
        as_int16 = per_call_ms(lambda: sf.read(path, dtype="int16"))
        rows.append(("P2 detail", "decode one clip (1 thread): float32 via libsndfile vs int16",
                     f"{as_float:.2f} vs {as_int16:.2f} ms ({as_float / as_int16:.1f}x)"))
        for sr in (44100, 48000, 96000):
            x = np.random.default_rng(sr).uniform(-0.5, 0.5, sr * 4).astype(np.float32)
            reference = torchaudio.transforms.Resample(sr, audio.TARGET_SR, **audio.RESAMPLING)
            with torch.inference_mode():
                ta = per_call_ms(lambda reference=reference, x=x: reference(torch.from_numpy(x)))
            ours = per_call_ms(lambda x=x, sr=sr: audio.resample(x, sr, audio.TARGET_SR))
            rows.append(("P2 detail", f"resample 4 s, {sr // 1000} kHz -> 8 kHz (1 thread): torchaudio "
                         "Resample vs audio.resample", f"{ta:.2f} vs {ours:.2f} ms ({ta / ours:.1f}x)"))
    finally:
        torch.set_num_threads(before)
    return rows


def _read_float32(path: str) -> int:
    x, _ = sf.read(path, dtype="float32")
    return x.shape[0]


def _init_single_thread() -> None:
    torch.set_num_threads(1)


def read_floor(paths: list[str], workers: int, kind: str = "process") -> float:
    """Seconds to soundfile.read every file: sequentially (workers=1), or in a pool of
    ``workers`` threads or processes."""
    t0 = time.perf_counter()
    if workers <= 1:
        for p in paths:
            _read_float32(p)
        return time.perf_counter() - t0
    chunk = max(1, min(32, len(paths) // (8 * workers)))
    if kind == "process":
        ctx = mp.get_context("fork") if sys.platform.startswith("linux") else None
        ex: cf.Executor = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_single_thread)
    else:
        ex = cf.ThreadPoolExecutor(workers)
    with ex:
        list(ex.map(_read_float32, paths, chunksize=chunk))
    return time.perf_counter() - t0


def epoch_seconds(loader: DataLoader) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += x.shape[0]
    return time.perf_counter() - t0, n


def best(times: list[float]) -> float:
    return min(times)


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / best(ts) / 1e9


def training_flops(batch: int) -> float:
    """Matmul/conv FLOPs of one M5 forward + backward at this batch size (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model("m5")
    x, y = torch.randn(batch, 1, audio.TARGET_LENGTH), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops())


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------------------------
# P3: training steps, each variant in its own fresh process (runs as --p3-child)

P3_VARIANTS = {
    "tutorial": "tutorial fp32 (log_softmax + nll, Adam 0.01)",
    "ours": "ours: train.fit step (fp32 eager, freed memory reused)",
    "ours-compiled": "ours + torch.compile (inductor)",
}


def make_step(variant: str, batch: int) -> Callable[[], None]:
    """Return one optimisation step of ``variant`` on a fixed random batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, audio.TARGET_LENGTH, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    torch.manual_seed(0)
    if variant == "tutorial":
        tut = TutorialM5()
        tut_opt = torch.optim.Adam(tut.parameters(), lr=0.01, weight_decay=1e-4)

        def tutorial_step() -> None:
            tut_opt.zero_grad()
            output = tut(x).permute(1, 0, 2)
            loss = F.nll_loss(output[0], y)
            loss.backward()
            tut_opt.step()
            loss.item()

        return tutorial_step

    # The library's training step (us8k_lib.train.training_step), with no autocast (this CPU has
    # no native bf16); the caller runs it inside reuse_freed_memory(), as fit does.
    model = build_model("m5")
    forward = torch.compile(model) if variant == "ours-compiled" else model
    config = FIT
    opt = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay, kind=config.optimizer)
    cpu = torch.device("cpu")

    def step() -> None:
        loss, logits = training_step(forward, opt, x, y, device=cpu, amp=False)
        loss.item()
        (logits.argmax(dim=1) == y).sum().item()

    return step


def p3_child(variant: str, batch: int, steps: int) -> None:
    """Time ``steps`` training steps after one warm-up step (which compiles, when compiling)."""
    with reuse_freed_memory(variant != "tutorial"):
        step = make_step(variant, batch)
        t0 = time.perf_counter()
        step()  # warm-up: allocator, oneDNN kernels (and the compilation)
        setup = time.perf_counter() - t0
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times, "setup": setup}))


def run_child(flag: str, *args: object) -> dict:
    """Run this script with ``flag`` and ``args`` in a fresh Python process; return its last
    stdout line, parsed as JSON."""
    proc = subprocess.run([sys.executable, __file__, flag, *map(str, args)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{flag} {' '.join(map(str, args))}: subprocess failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# P5: peak memory of an epoch over a full-size cache (runs in a subprocess)


def make_full_size_cache(folder: Path) -> tuple[Path, Path]:
    """Write a valid 8 732-clip cache whose rows are generated noise, not decoded audio.

    The real cache writer is used (build_cache), with format_clip replaced by a generator, so
    the files are exactly what a real build leaves; no WAV file exists.
    """
    meta = load_metadata(reference_metadata_path())
    root = folder / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    meta.to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    cache_dir = folder / "cache"
    rng = np.random.default_rng(1)
    block = (0.1 * rng.standard_normal((64, audio.TARGET_LENGTH))).astype(np.float32)
    counter = iter(range(10**9))

    def fake_format_clip(path, *, sr=audio.TARGET_SR, length=audio.TARGET_LENGTH):
        i = next(counter)
        return np.roll(block[i % 64], i)

    real = audio.format_clip
    audio.format_clip = fake_format_clip
    try:
        build_cache(root, meta, cache_dir=cache_dir, workers=1, progress=False)
    finally:
        audio.format_clip = real
    return root, cache_dir


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def p5_child(root: str, cache_dir: str, fwd_batches: int, keep_freed: bool = True) -> None:
    """An epoch over the full-size cache as fit loads it (training folds 1-9, then the test fold),
    then training steps on a few batches (all of them would take an hour on a CPU).

    Phase order matters: VmHWM only grows, so reading it after the data-only phase isolates what
    the data pipeline costs from what M5's activations cost."""
    with reuse_freed_memory(keep_freed):  # on, as fit runs on a CPU; off to show what it costs
        config = FIT
        meta = load_metadata(root)
        train = US8KDataset(root, config.folds_to_train, metadata=meta, cache_dir=cache_dir, progress=False)
        test = US8KDataset(root, [config.test_fold], metadata=meta, cache_dir=cache_dir, progress=False)
        device = torch.device("cpu")
        model = build_model("m5")
        opt = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay, kind=config.optimizer)
        start_kb = _status_kb("self", "VmRSS")
        t0 = time.perf_counter()
        # Phase 1: the whole epoch through the loader (data only), then the test pass.
        n = 0
        for _, y in make_loader(train, config.batch_size, shuffle=True, device=device, workers=config.workers,
                                generator=torch.Generator().manual_seed(0)):
            n += len(y)
        for _, y in make_loader(test, 64, shuffle=False, device=device, workers=config.workers):
            n += len(y)
        data_kb = _status_kb("self", "VmHWM")
        # Phase 2: training steps (forward + backward + Adam) on the first few batches of an epoch.
        model.train()
        for i, (x, y) in enumerate(make_loader(train, config.batch_size, shuffle=True, device=device,
                                               workers=config.workers, generator=torch.Generator().manual_seed(1))):
            if i == fwd_batches:
                break
            training_step(model, opt, x, y, device=device)
    print(json.dumps({
        "clips": n, "batch_size": config.batch_size, "workers": config.workers, "fwd_batches": fwd_batches,
        "start_rss_kb": start_kb, "data_hwm_kb": data_kb,
        "hwm_kb": _status_kb("self", "VmHWM"), "seconds": time.perf_counter() - t0,
        "cache_bytes": train.cache.nbytes,
    }))


def run_p5(folder: Path, fwd_batches: int) -> tuple[dict, dict]:
    """Return the P5 child's report as fit runs (freed memory kept), then with glibc's defaults."""
    root, cache_dir = make_full_size_cache(folder)
    return (run_child("--p5-child", root, cache_dir, fwd_batches, 1),
            run_child("--p5-child", root, cache_dir, fwd_batches, 0))


# --------------------------------------------------------------------------------------------
# AUG: training with every augmentation on vs off (alone: --only augment)


def augment_batch(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch shaped like real ones: every 6th clip a short event (1-3 s, zero-padded; 16 % of
    UrbanSound8K's clips are shorter than 4 s), the others a full 4 s."""
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(batch, 1, audio.TARGET_LENGTH, generator=g)
    for i in range(0, batch, 6):
        x[i, :, audio.TARGET_SR * (1 + i % 3):] = 0
    return x.to(device), torch.randint(0, 10, (batch,), generator=g).to(device)


def augment_rows(device: torch.device, batches: list[int], rounds: int,
                 steps: int) -> tuple[list[tuple[str, str, str]], float, float]:
    """Return the AUG rows, and the on/off ratio at the first batch size measured and from the parts.

    Both variants run fit's step (M5 logits, cross-entropy, Adam; bf16 autocast where fit turns it
    on; reuse_freed_memory on a CPU) on the same batch, alternating ``rounds`` times, ``steps``
    steps each; each variant's best round counts."""
    from us8k_lib.augment import AUGMENT_PRESETS, Augmenter
    from us8k_lib.devices import decide_amp

    amp = decide_amp(device, FIT.amp)  # as fit decides: fp32 unless --amp

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows: list[tuple[str, str, str]] = []
    ratios: list[float] = []
    from_parts: list[float] = []
    with reuse_freed_memory(device.type == "cpu"):
        for batch in batches:
            x, y = augment_batch(batch, device)
            torch.manual_seed(0)
            model = build_model("m5").to(device).train()
            opt = make_optimizer(model, lr=FIT.lr, weight_decay=FIT.weight_decay, kind=FIT.optimizer)
            strong = Augmenter(sr=audio.TARGET_SR, n_classes=10, device=device, seed=0, **AUGMENT_PRESETS["strong"])
            variants = {"off": None, "on": strong}

            def step(aug: Augmenter | None, x: torch.Tensor = x, y: torch.Tensor = y, model: torch.nn.Module = model,
                     opt: torch.optim.Optimizer = opt) -> None:
                xb, target = (x, y) if aug is None else aug(x, y)
                training_step(model, opt, xb, target, device=device, amp=amp)

            times: dict[str, list[float]] = {k: [] for k in variants}
            for aug in variants.values():
                step(aug)  # warm-up: kernels, allocator, the speed filters
            for _ in range(rounds):
                for name, aug in variants.items():
                    sync()
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        step(aug)
                    sync()
                    times[name].append((time.perf_counter() - t0) / steps)
            rate = {k: batch / best(t) for k, t in times.items()}
            ratios.append(rate["on"] / rate["off"])
            where = f"{device.type}, batch {batch}, {'bf16 autocast' if amp else 'fp32'}"
            rows.append(("AUG training", f"{where}: M5 training step, no augmentation", f"{rate['off']:.1f} clips/s"))
            rows.append(("AUG training", f"{where}: every augmentation on ('strong' preset)",
                         f"{rate['on']:.1f} clips/s"))
            rows.append(("AUG training", f"{where}: ratio on/off", f"{ratios[-1]:.2f}x"))
            for preset in ("light", "strong"):
                aug = Augmenter(sr=audio.TARGET_SR, n_classes=10, device=device, seed=0, **AUGMENT_PRESETS[preset])

                def call(aug: Augmenter = aug, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
                    aug(x, y)
                    sync()

                ms = per_call_ms(call, reps=10 if device.type == "cpu" else 50)
                rows.append(("AUG training", f"{where}: the augmenter alone, '{preset}' preset", f"{ms:.2f} ms per "
                                                                                                 f"batch"))
            # A cross-check that a noisy neighbour moves less: the parts' best times, added up.
            step_ms = 1e3 * best(times["off"])
            from_parts.append(step_ms / (step_ms + ms))
            rows.append(("AUG training", f"{where}: ratio from the parts, step / (step + 'strong' augmenter)",
                         f"{from_parts[-1]:.2f}x"))
    return rows, ratios[0], from_parts[0]


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[1]) for r in rows)
    print()
    print(f"{'measure':<15} {'variant':<{width}}  value")
    print(f"{'-' * 15} {'-' * width}  {'-' * 30}")
    for measure, variant, value in rows:
        print(f"{measure:<15} {variant:<{width}}  {value}")


def main_augment(device: torch.device, quick: bool) -> int:
    """``--only augment``: the AUG rows alone, then ``AUG <ratio>x`` (on/off at fit's batch size)."""
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load average {load_average()}"
          + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    began = time.perf_counter()
    batches = [FIT.batch_size] + ([128] if device.type == "cuda" else [])
    # Single steps, alternating, best of 8: on a shared CPU a step's time swings by 2x.
    rounds, steps = (3, 1) if quick else ((8, 1) if device.type == "cpu" else (5, 20))
    rows, ratio, parts = augment_rows(device, batches, rounds, steps)
    print_rows(rows)
    print(f"\nTotal {time.perf_counter() - began:.0f} s, load average at the end {load_average()}.")
    print(f"AUG {ratio:.2f}x ({device.type}, training clips/s with every augmentation on / off; "
          f"from the parts {parts:.2f}x)")
    return 0


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=None, help="generated clips (default 1024, --quick 256)")
    parser.add_argument("--quick", action="store_true", help="fewer clips and training steps")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="preprocessing workers for P2 (default: all cores)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps per variant (default 2, --quick 1)")
    parser.add_argument("--compile", action="store_true",
                        help="also time M5 under torch.compile in P3 (compiling takes minutes on 2 cores)")
    parser.add_argument("--only", choices=["augment"], default=None,
                        help="run one section alone: 'augment' = the AUG rows (seconds)")
    parser.add_argument("--device", default="cpu", help="device for --only augment (default cpu; e.g. cuda)")
    parser.add_argument("--p5-child", nargs=4, metavar=("ROOT", "CACHE", "FWD", "KEEP"), help=argparse.SUPPRESS)
    parser.add_argument("--p3-child", nargs=3, metavar=("VARIANT", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.p3_child:
        p3_child(args.p3_child[0], int(args.p3_child[1]), int(args.p3_child[2]))
        return 0
    if args.p5_child:
        p5_child(args.p5_child[0], args.p5_child[1], int(args.p5_child[2]), bool(int(args.p5_child[3])))
        return 0
    if args.only == "augment":
        return main_augment(torch.device(args.device), args.quick)

    n_clips = args.clips or (256 if args.quick else 1024)
    steps_n = args.steps or (1 if args.quick else 2)
    began = time.perf_counter()
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load average {load_average()} (other work on the "
          "machine slows both sides of each comparison; ratios are steadier than absolute figures)")
    rows: list[tuple[str, str, str]] = []  # (measure, variant, value)

    with tempfile.TemporaryDirectory(prefix="us8k-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        root, meta = generate_clips(tmp / "clips", n_clips)
        paths = [str(clip_path(root, f, n)) for f, n in zip(meta["fold"], meta["slice_file_name"])]
        size_mb = sum(os.path.getsize(p) for p in paths) / 1e6
        print(f"Generated {n_clips} clips (PCM_16 stereo 44.1 kHz, 4 s; {size_mb:.0f} MB) in "
              f"{time.perf_counter() - t0:.1f} s; files are in the OS cache for every measurement.")

        # ---- P2: first pass -------------------------------------------------------------
        w = max(1, args.workers)
        floor_seq, floor_proc, floor_thread, ours_build = [], [], [], []
        for _ in range(1 if args.quick else 2):
            floor_seq.append(read_floor(paths, 1))
            floor_proc.append(read_floor(paths, w, "process"))
            floor_thread.append(read_floor(paths, w, "thread"))
            cache_dir = tmp / f"cache-{len(ours_build)}"
            _flush_writes()
            t0 = time.perf_counter()
            build_cache(root, meta, cache_dir=cache_dir, workers=w, progress=False)
            ours_build.append(time.perf_counter() - t0)
        seq_rate, proc_rate, thread_rate, build_rate = (
            n_clips / best(t) for t in (floor_seq, floor_proc, floor_thread, ours_build))
        par_rate = max(proc_rate, thread_rate)  # the stricter floor
        p2 = build_rate / par_rate
        rows += [("P2 first pass", "floor: bare soundfile.read(float32), sequential", f"{seq_rate:,.0f} clips/s"),
                 ("P2 first pass", f"floor: bare soundfile.read(float32), {w} processes", f"{proc_rate:,.0f} clips/s"),
                 ("P2 first pass", f"floor: bare soundfile.read(float32), {w} threads", f"{thread_rate:,.0f} clips/s"),
                 ("P2 first pass", f"ours: build_cache ({w} {cache_module.EXECUTOR} workers, decode+mono+"
                                   "resample+pad, write)", f"{build_rate:,.0f} clips/s"),
                 ("P2 first pass",
                  f"ratio vs the faster {w}-worker floor (vs sequential: {build_rate / seq_rate:.2f}x)",
                  f"{p2:.2f}x  (target >= 0.5x)")]
        rows += p2_details(paths[0])
        print(f"P2 done ({time.perf_counter() - began:.0f} s)", flush=True)

        # ---- P1: epoch data throughput ------------------------------------------------------
        tut_ds = TutorialDataset(paths, meta["classID"].tolist())
        ds = US8KDataset(root, range(1, 11), metadata=meta, cache_dir=tmp / "cache-0", progress=False)
        gen = torch.Generator().manual_seed(0)
        cpu = torch.device("cpu")
        variants = {
            "tutorial: decode per item, [::5], 1 worker (started each epoch)": lambda: DataLoader(
                tut_ds, batch_size=BATCH, shuffle=True, num_workers=1, generator=gen),
            "ours: cache, as train.fit loads (0 workers, collate_clips)": lambda: make_loader(
                ds, BATCH, shuffle=True, device=cpu, workers=0, generator=gen),
            "ours: cache, 2 workers (started each epoch), collate_clips": lambda: DataLoader(
                ds, batch_size=BATCH, shuffle=True, num_workers=2, collate_fn=collate_clips, generator=gen),
            "ours: cache, 0 workers, default collate": lambda: DataLoader(
                ds, batch_size=BATCH, shuffle=True, num_workers=0, generator=gen),
        }
        rates: dict[str, list[float]] = {k: [] for k in variants}
        budget = time.perf_counter() + (3 if args.quick else 8)
        rounds = 0
        while rounds < 2 or (time.perf_counter() < budget and rounds < 10):
            for name, make in variants.items():
                ours = name.startswith("ours")
                # Ours takes tens of milliseconds an epoch: run epochs back to back for half a
                # second per round, inside one reuse_freed_memory block as fit's epochs are.
                with reuse_freed_memory(ours):
                    until = time.perf_counter() + (0.5 if ours else 0.0)
                    while True:
                        seconds, n = epoch_seconds(make())
                        rates[name].append(n / seconds)
                        if time.perf_counter() >= until:
                            break
            rounds += 1
        tut_rate = max(rates[next(iter(variants))])
        ours_name = list(variants)[1]
        for name in variants:
            rows.append(("P1 epoch data", name, f"{max(rates[name]):,.0f} clips/s"))
        p1 = max(rates[ours_name]) / tut_rate
        rows.append(("P1 epoch data", f"ratio, as fit loads (best variant: "
                     f"{max(max(v) for k, v in rates.items() if k.startswith('ours')) / tut_rate:,.0f}x)",
                     f"{p1:,.0f}x  (target >= 100x)"))
        print(f"P1 done ({time.perf_counter() - began:.0f} s, {rounds} rounds)", flush=True)

    # ---- P3: training ------------------------------------------------------------------------
    # Each variant runs in a fresh process, so the tutorial keeps glibc's default allocator and
    # neither side inherits the other's heap; the processes alternate, so a noisy neighbour hurts
    # both sides alike. Headline: the tutorial's batch size; then fit's own batch size.
    torch.manual_seed(0)
    mm = matmul_gflops()
    variants = ["tutorial", "ours"] + (["ours-compiled"] if args.compile else [])
    fit_batch = FIT.batch_size
    p3_by_batch: dict[int, float] = {}
    for batch in (BATCH, fit_batch):
        flops = training_flops(batch)
        n_steps = steps_n if batch == BATCH else max(4, steps_n * BATCH // batch // 4)
        times: dict[str, list[float]] = {k: [] for k in variants}
        setup: dict[str, float] = {}
        for _ in range(2):
            for v in variants:
                res = run_child("--p3-child", v, batch, n_steps)
                times[v] += res["times"]
                setup[v] = res["setup"]
        rate = {v: batch / best(t) for v, t in times.items()}
        for v in variants:
            gflops = flops / best(times[v]) / 1e9
            extra = f", compile {setup[v]:.0f} s once" if v == "ours-compiled" else ""
            rows.append(("P3 training", f"batch {batch}: {P3_VARIANTS[v]}",
                         f"{rate[v]:.1f} clips/s  {gflops:.0f} GFLOP/s = {gflops / mm:.0%} of matmul{extra}"))
        best_ours = max(variants[1:], key=rate.get)
        p3_by_batch[batch] = rate[best_ours] / rate["tutorial"]
        rows.append(("P3 training", f"batch {batch}: ratio, best of ours = "
                                    f"{P3_VARIANTS[best_ours].split(':')[-1].strip()}"
                     + (f" (fit as shipped: {rate['ours'] / rate['tutorial']:.2f}x)" if best_ours != "ours" else ""),
                     f"{p3_by_batch[batch]:.2f}x" + ("  (target >= 1.5x)" if batch == BATCH else "")))
        if batch == BATCH:
            rows.append(("P3 training", f"fp32 matmul rate of this machine (2048^2), M5 {flops / batch / 1e9:.2f} "
                         "GFLOP per clip (fwd+bwd)", f"{mm:.0f} GFLOP/s"))
    p3 = p3_by_batch[BATCH]
    print(f"P3 done ({time.perf_counter() - began:.0f} s)", flush=True)

    # ---- AUG: augmentation on vs off ---------------------------------------------------------
    aug_rows, aug, _ = augment_rows(torch.device("cpu"), [FIT.batch_size],
                                 *((3, 1) if args.quick else (8, 1)))
    rows += aug_rows
    print(f"AUG done ({time.perf_counter() - began:.0f} s)", flush=True)

    # ---- P5: memory ----------------------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="us8k-bench-p5-") as tmp_name:
        res, res_default = run_p5(Path(tmp_name), fwd_batches=3)
    p5 = res["hwm_kb"] * 1024 / 1e9
    gb = lambda kb: kb * 1024 / 1e9  # noqa: E731
    rows.append(("P5 memory", f"cache {res['cache_bytes'] / 1e9:.2f} GB, batch {res['batch_size']}, "
                 f"{res['workers'] or 0} workers (fit's defaults); after imports, datasets, M5, Adam",
                 f"RSS {gb(res['start_rss_kb']):.2f} GB"))
    rows.append(("P5 memory", f"peak after a data-only epoch + test pass ({res['clips']} clips)",
                 f"{gb(res['data_hwm_kb']):.2f} GB (+{gb(res['data_hwm_kb'] - res['start_rss_kb']):.2f} GB)"))
    rows.append(("P5 memory", f"peak RSS of the training process, after {res['fwd_batches']} training steps "
                 f"({res['seconds']:.0f} s in all)", f"{p5:.2f} GB  (target <= 1.5 GB)"))
    rows.append(("P5 memory", "the same with glibc's default allocator (what reuse_freed_memory costs)",
                 f"{gb(res_default['hwm_kb']):.2f} GB ({p5 - gb(res_default['hwm_kb']):+.2f} GB)"))

    print_rows(rows)
    print(f"\nTotal {time.perf_counter() - began:.0f} s, load average at the end {load_average()}.")
    print(f"P1 {p1:.0f}x  P2 {p2:.2f}x  P3 {p3:.2f}x  P5 {p5:.2f} GB  AUG {aug:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
