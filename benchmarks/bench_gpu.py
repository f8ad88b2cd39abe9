"""Training speed of each model of the family, and what an epoch and a 10-fold cross-validation cost.

    python benchmarks/bench_gpu.py [--epochs 30] [--batch 128] [--steps N] [--models m5,m18]
                                   [--device auto] [--workers N] [--quick] [--json results.json]
    python benchmarks/bench_gpu.py --protocol [--quick] [--jobs N] [--compile] [--amp]

(run from the project root with the package installed, or with ``PYTHONPATH=.``)

For each model of Dai et al. (2017), built as ``train`` builds it (``build_model``, unit-RMS
input scaling on, AdamW with train's learning rate and weight decay, ``make_optimizer``), on the device ``train``
would choose:

  train fp32, train bf16   training clips/s through the library's own epoch loop
                           (``us8k_lib.train.train_one_epoch``) fed by its own loader
                           (``us8k_lib.engine.batches.make_loader``: on CUDA pinned memory, non-blocking
                           copies and its default worker processes), at batch 128. The first pass
                           over the loader warms up (cuDNN autotuning with ``cudnn.benchmark`` as
                           train sets it, worker start, memory pools); the second is timed, between
                           two CUDA synchronisations. bf16 means bf16 autocast, measured even where
                           train would not use it (CPUs without native bf16, where it is slower).
  alone fp32, alone bf16   the same epoch loop on one batch already on the device, reused: the
                           model and optimizer alone, without the loader. Where "train" is well
                           below "alone", the loader limits training; the loader's own rate (to
                           the device, no model) is printed before the table.
  eval fp32, eval bf16     evaluation clips/s through ``us8k_lib.evaluate.evaluate`` (batch 64, as
                           train evaluates), timed on its second call.
  epoch                    one epoch of ``train``'s default split of the full dataset: the 7,895
                           clips of folds 1-9 trained (at the "train" rate), the 837 of fold 10
                           evaluated, in the precision train uses on this device.
  10-fold                  ``crossval``'s default protocol: for each of the 10 test folds, its 8
                           training folds trained and its validation and test folds evaluated,
                           every epoch, for ``--epochs`` epochs.

The clips are synthetic: random 4 s, 8 kHz clips (32 000 samples) held in memory and served a
batch at a time as the preprocessing cache serves them (one memory copy per batch, into shared
memory in a loader worker). Fold sizes are those of the shipped UrbanSound8K metadata. Epoch and
cross-validation times are computed from measured throughput, not measured end to end: they leave
out the one-time cache build, start-up and checkpoint writes. ``--quick`` (for CI, on a CPU) times
one small batch per model and precision, with the models narrowed to width 8: it checks that
everything runs, its numbers mean little. The last line gives bf16's speed-up over fp32 for each
model, through the loader and for the model alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, get_worker_info

from us8k_lib.crossval import fold_roles
from us8k_lib.dataset import ClipBatch
from us8k_lib.devices import choose_device, cpu_has_native_bf16, cpu_name, decide_amp
from us8k_lib.engine.allocator import reuse_freed_memory
from us8k_lib.engine.batches import EpochSampler, make_loader
from us8k_lib.evaluate import evaluate
from us8k_lib.metadata import CLASSES, load_metadata
from us8k_lib.model import MODEL_NAMES, build_model, count_parameters, parse_model_name
from us8k_lib.recipe import TrainConfig
from us8k_lib.runs.files import write_json
from us8k_lib.train import make_optimizer, train_one_epoch

LENGTH = 32000  # 4 s at 8 kHz, what the cache holds
EVAL_BATCH = 64  # evaluate's default (train.fit evaluates at its training batch size instead)


class SyntheticClips(Dataset):
    """``n`` random clips with random labels, served like :class:`us8k_lib.dataset.US8KDataset`.

    Only ``distinct`` different waveforms are kept (index modulo), so a full-size set needs no
    gigabyte of memory; every batch is still a fresh copy, as from the cache.
    """

    def __init__(self, n: int, length: int = LENGTH, distinct: int = 256, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.waveforms = 0.1 * torch.randn(min(n, distinct), 1, length, generator=gen)
        self.labels = torch.randint(0, len(CLASSES), (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.waveforms[i % len(self.waveforms)], int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> ClipBatch:
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        n, length = len(idx), self.waveforms.shape[-1]
        if get_worker_info() is not None:
            # In shared memory from the start, as US8KDataset allocates it (the same call), so
            # handing the batch to the main process copies nothing more than train's loader does.
            storage = torch.UntypedStorage._new_shared(n * length * 4)
            out = torch.empty(0, dtype=torch.float32).set_(storage).view(n, 1, length)
        else:
            out = torch.empty((n, 1, length), dtype=torch.float32)
        torch.index_select(self.waveforms, 0, idx % len(self.waveforms), out=out)
        return ClipBatch(out, self.labels[idx])


@dataclass
class Settings:
    """How much to time: batch sizes, timed training steps, evaluated clips, warm-up on or off."""

    batch: int
    batch_bf16: int
    steps: int
    eval_clips: int
    warmup: bool
    width: int | None = None
    workers: int | None = None


@dataclass
class Result:
    """One model's measurements (clips/s) and the costs computed from them (seconds)."""

    model: str
    title: str
    width: int | None
    parameters: int
    train_fp32: float
    train_bf16: float
    compute_fp32: float
    compute_bf16: float
    eval_fp32: float
    eval_bf16: float
    precision: str
    epoch_s: float
    crossval_s: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled_rate(name: str, device: torch.device, s: Settings, mode: str) -> tuple[float, float]:
    """Return (training clips/s, seconds of the first two steps) of model ``name`` compiled with
    ``torch.compile(mode=mode)`` on one batch kept on the device (the model and optimizer alone),
    in fp32: "default" fuses kernels, "reduce-overhead" also replays the step's kernels as CUDA
    graphs (no launch overhead), "max-autotune" searches kernel configurations as well."""
    config = TrainConfig(model=name)
    torch.manual_seed(0)
    model = build_model(name, n_classes=len(CLASSES), width=s.width, normalize=config.normalize).to(device)
    step_model = torch.compile(model, mode=mode)
    optimizer = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay, kind=config.optimizer)
    data = SyntheticClips(s.batch)
    x, y = data.__getitems__(range(s.batch)).waveforms.to(device), data.labels[: s.batch].to(device)
    t0 = time.perf_counter()
    train_one_epoch(step_model, [(x, y)] * 2, optimizer, device=device, progress=False)
    _sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_one_epoch(step_model, [(x, y)] * s.steps, optimizer, device=device, progress=False)
    _sync(device)
    return s.batch * s.steps / (time.perf_counter() - t0), warm


def train_rate(name: str, device: torch.device, amp: bool, s: Settings, batch: int, through_loader: bool) -> float:
    """Return training clips/s of model ``name``: train_one_epoch over ``s.steps`` batches, timed.

    ``through_loader``: batches come from make_loader as in train; otherwise one batch already on
    the device is reused, which times the model (and optimizer) alone.
    """
    config = TrainConfig(model=name)
    torch.manual_seed(0)
    model = build_model(name, n_classes=len(CLASSES), width=s.width, normalize=config.normalize).to(device)
    optimizer = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay, kind=config.optimizer)
    data = SyntheticClips(batch * s.steps)
    if through_loader:
        batches = make_loader(data, batch, device=device, workers=s.workers, sampler=EpochSampler(len(data), 0))
    else:
        x, y = data.__getitems__(range(batch)).waveforms.to(device), data.labels[:batch].to(device)
        batches = [(x, y)] * s.steps
    if s.warmup:
        train_one_epoch(model, batches, optimizer, device=device, amp=amp, progress=False)
    _sync(device)
    t0 = time.perf_counter()
    train_one_epoch(model, batches, optimizer, device=device, amp=amp, progress=False)
    _sync(device)
    seconds = time.perf_counter() - t0
    del model, optimizer, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return batch * s.steps / seconds


def loader_rate(device: torch.device, s: Settings) -> float:
    """Return clips/s of train's loader alone (batches copied to the device, no model)."""
    loader = make_loader(SyntheticClips(s.batch * s.steps), s.batch, device=device, workers=s.workers,
                         sampler=EpochSampler(s.batch * s.steps, 0))
    for _ in range(2 if s.warmup else 1):  # the last pass is the timed one
        _sync(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x.to(device, non_blocking=device.type == "cuda")
            y.to(device, non_blocking=device.type == "cuda")
        _sync(device)
        seconds = time.perf_counter() - t0
    return s.batch * s.steps / seconds


def eval_rate(name: str, device: torch.device, amp: bool, clips: int, warmup: bool,
              width: int | None = None) -> float:
    """Return evaluation clips/s of model ``name`` through :func:`us8k_lib.evaluate.evaluate`."""
    torch.manual_seed(0)
    model = build_model(name, n_classes=len(CLASSES), width=width, normalize=True).to(device)
    data = SyntheticClips(clips, seed=1)
    if warmup:
        evaluate(model, data, device=device, amp=amp, batch_size=EVAL_BATCH)
    _sync(device)
    t0 = time.perf_counter()
    evaluate(model, data, device=device, amp=amp, batch_size=EVAL_BATCH)
    _sync(device)
    seconds = time.perf_counter() - t0
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return clips / seconds


def fold_sizes() -> dict[int, int]:
    """Clips per fold in the shipped UrbanSound8K metadata (8,732 in all)."""
    return {int(f): int(n) for f, n in load_metadata()["fold"].value_counts().sort_index().items()}


def epoch_seconds(sizes: dict[int, int], train: float, evaluation: float) -> float:
    """One epoch of train's default split: folds 1-9 trained, fold 10 evaluated."""
    default = TrainConfig()
    return (sum(sizes[f] for f in default.folds_to_train) / train + sizes[default.test_fold] / evaluation)


def crossval_seconds(sizes: dict[int, int], train: float, evaluation: float, epochs: int) -> float:
    """crossval's default: every fold tested once, the previous one validating, the rest training."""
    total = 0.0
    for test_fold in sizes:
        val_fold, train_folds = fold_roles(list(sizes), test_fold)
        total += sum(sizes[f] for f in train_folds) / train + (sizes[val_fold] + sizes[test_fold]) / evaluation
    return epochs * total


def machine_lines(device: torch.device) -> list[str]:
    """What the numbers were measured on: device, library versions, precision settings."""
    try:
        import torchaudio

        audio_version = torchaudio.__version__
    except Exception as exc:  # a broken torchaudio must not stop the benchmark
        audio_version = f"not loadable ({type(exc).__name__})"
    lines = [f"torch {torch.__version__}, torchaudio {audio_version}, Python {platform.python_version()}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"GPU: {torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, "
                     f"{props.multi_processor_count} SMs, compute capability {props.major}.{props.minor}), "
                     f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                     f"bf16 supported: {torch.cuda.is_bf16_supported()}")
        lines.append(f"fp32 means PyTorch's defaults: cuDNN may use TF32 for convolutions "
                     f"(allow_tf32={torch.backends.cudnn.allow_tf32}), matmuls "
                     f"{'TF32' if torch.backends.cuda.matmul.allow_tf32 else 'full fp32'}")
    lines.append(f"CPU: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    return lines


def settings_for(device: torch.device, args: argparse.Namespace) -> Settings:
    """Default amounts of work: modest on a GPU, tiny in --quick mode, small on a CPU."""
    if args.quick:
        # On a 2-core CPU one step of the paper's M34-res at batch 2 took 2 s in fp32 and 7 s in
        # (emulated) bf16: --quick narrows the models instead, so all ten runs take seconds.
        emulated = device.type == "cpu" and not cpu_has_native_bf16()
        return Settings(batch=args.batch or 4, batch_bf16=args.batch or (2 if emulated else 4),
                        steps=args.steps or 1, eval_clips=4, warmup=False, width=args.width or 8,
                        workers=args.workers)
    batch = args.batch or 128
    steps = args.steps or (30 if device.type == "cuda" else 2)
    return Settings(batch=batch, batch_bf16=batch, steps=steps,
                    eval_clips=2048 if device.type == "cuda" else 2 * EVAL_BATCH, warmup=True,
                    width=args.width, workers=args.workers)


def measure(name: str, device: torch.device, s: Settings, sizes: dict[int, int], epochs: int,
            amp_in_train: bool) -> Result:
    """Time one model in both precisions and compute its epoch and cross-validation costs."""
    rates = {}
    for precision, amp, batch in (("fp32", False, s.batch), ("bf16", True, s.batch_bf16)):
        rates[f"train_{precision}"] = train_rate(name, device, amp, s, batch, through_loader=True)
        rates[f"compute_{precision}"] = train_rate(name, device, amp, s, batch, through_loader=False)
        rates[f"eval_{precision}"] = eval_rate(name, device, amp, s.eval_clips, s.warmup, s.width)
    precision = "bf16" if amp_in_train else "fp32"
    train, evaluation = rates[f"train_{precision}"], rates[f"eval_{precision}"]
    model = build_model(name, width=s.width)
    return Result(model=name, title=model.title, width=s.width, parameters=count_parameters(model), **rates,
                  precision=precision, epoch_s=epoch_seconds(sizes, train, evaluation),
                  crossval_s=crossval_seconds(sizes, train, evaluation, epochs))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_table(results: list[Result], s: Settings, epochs: int) -> None:
    head = ("model", "params", "train fp32", "train bf16", "bf16/fp32", "alone fp32", "alone bf16",
            "eval fp32", "eval bf16", "epoch", f"10-fold x {epochs} ep")
    rows = [(r.title, f"{r.parameters / 1e6:.2f} M" if r.parameters >= 100_000 else f"{r.parameters:,}",
             f"{r.train_fp32:,.0f}", f"{r.train_bf16:,.0f}", f"{r.train_bf16 / r.train_fp32:.2f}x",
             f"{r.compute_fp32:,.0f}", f"{r.compute_bf16:,.0f}", f"{r.eval_fp32:,.0f}", f"{r.eval_bf16:,.0f}",
             f"{_duration(r.epoch_s)} ({r.precision})", f"{_duration(r.crossval_s)} ({r.precision})")
            for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print()
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    print(f"(clips/s; training at batch {s.batch} fp32 / {s.batch_bf16} bf16, {s.steps} timed steps, "
          f"through train's loader or, 'alone', on one batch kept on the device (the model and optimizer alone); "
          f"evaluation at batch {EVAL_BATCH}, {s.eval_clips} clips"
          + (f"; models at width {s.width}, not the paper's" if s.width else "") + ")")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help="comma-separated models (default: all six)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="epochs per fold for the 10-fold estimate (default 30)")
    parser.add_argument("--batch", type=int, default=None, help="training batch size (default 128; --quick 4)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps per model and precision "
                             "(default 30 on a GPU, 2 on a CPU; --quick 1)")
    parser.add_argument("--device", default="auto", help="auto (as train chooses), cuda, cpu, ...")
    parser.add_argument("--width", type=int, default=None,
                        help="channels of each model's first stage (default: the paper's; --quick 8)")
    parser.add_argument("--quick", action="store_true",
                        help="one tiny batch per model and precision, models at width 8 (CI, CPU): a smoke test")
    parser.add_argument("--workers", type=int, default=None,
                        help="training loader workers (default: make_loader's, as train uses)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--compile-modes", default=None,
                        help="also time the model-alone step under torch.compile in these modes, e.g. "
                             "default,reduce-overhead (CUDA graphs),max-autotune (slow to compile on a CPU)")
    parser.add_argument("--protocol", action="store_true",
                        help="time the real crossval command end to end on a full-size synthetic dataset "
                             "(10 folds x --epochs for M5, --epochs-other for the others), see benchmarks/protocol.py")
    parser.add_argument("--epochs-other", type=int, default=10,
                        help="--protocol: epochs for the models other than M5, scaled to --epochs (default 10)")
    parser.add_argument("--protocol-dir", default=None,
                        help="--protocol: where the dataset and runs go (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=1, help="--protocol: crossval --jobs (folds side by side)")
    parser.add_argument("--compile", action="store_true", help="--protocol: crossval --compile")
    parser.add_argument("--amp", action="store_true", help="--protocol: crossval --amp (bf16 autocast)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or any(v is not None and v < 1 for v in (args.batch, args.steps, args.width)):
        parser.error("--epochs, --batch, --steps and --width must be >= 1")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be >= 0")
    try:
        names = [parse_model_name(n) for n in args.models.split(",") if n.strip()]
    except ValueError as exc:
        parser.error(str(exc))

    began = time.perf_counter()
    device = choose_device(args.device)
    if args.protocol:
        import protocol

        for line in machine_lines(device):
            print(line)
        results = protocol.main(args, device, names if args.models != parser.get_default("models")
                                else ["m5", "m18", "logmel"])
        if args.json is not None:
            write_json(args.json, {"machine": machine_lines(device), "device": str(device), "protocol": results})
        timed = ", ".join(f"{r['title']} {r['seconds']:.1f} s" for r in results)
        print(f"protocol: {timed}; total {time.perf_counter() - began:.0f} s")
        return 0
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train sets it: every batch has the same shape
    amp_in_train = decide_amp(device, TrainConfig().amp)
    s = settings_for(device, args)
    sizes = fold_sizes()
    for line in machine_lines(device):
        print(line)
    print(f"Device {device}; train uses {'bf16 autocast' if amp_in_train else 'fp32'} here. "
          f"{sum(sizes.values()):,} clips in {len(sizes)} folds (shipped metadata).", flush=True)

    data_rate = loader_rate(device, s)
    print(f"train's loader alone ({s.workers if s.workers is not None else 'default'} workers, "
          f"batch {s.batch}, to the device): {data_rate:,.0f} clips/s", flush=True)
    results = []
    # As fit runs: freed memory kept in the heap on a CPU.
    with reuse_freed_memory(device.type == "cpu"):
        for name in names:
            t0 = time.perf_counter()
            results.append(measure(name, device, s, sizes, args.epochs, amp_in_train))
            r = results[-1]
            print(f"{r.title}: train {r.train_fp32:,.0f} clips/s fp32, {r.train_bf16:,.0f} bf16 "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    print_table(results, s, args.epochs)
    compiled = []
    for mode in [m.strip() for m in (args.compile_modes or "").split(",") if m.strip()]:
        for r in results:
            rate, warm = compiled_rate(r.model, device, s, mode)
            compiled.append({"model": r.model, "mode": mode, "clips_per_s": rate, "compile_s": warm,
                             "vs_eager": rate / r.compute_fp32})
            print(f"{r.title} alone, torch.compile mode={mode}: {rate:,.0f} clips/s fp32 "
                  f"({rate / r.compute_fp32:.2f}x eager; first two steps {warm:.0f} s)", flush=True)
    default = TrainConfig()
    print(f"epoch = {sum(sizes[f] for f in default.folds_to_train):,} clips trained (folds 1-9) + "
          f"{sizes[default.test_fold]:,} evaluated (fold {default.test_fold}); 10-fold = crossval's default "
          f"(8 folds trained, the validation and test folds evaluated, every epoch); both computed from "
          f"the rates above, without the one-time cache build. Total {time.perf_counter() - began:.0f} s.")
    if args.json is not None:
        write_json(args.json, {
            "machine": machine_lines(device), "device": str(device), "train_precision":
            "bf16" if amp_in_train else "fp32", "settings": asdict(s), "epochs": args.epochs,
            "fold_sizes": sizes, "loader_clips_per_s": data_rate, "results": [asdict(r) for r in results],
            "compiled": compiled,
        })
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"bf16/fp32 training speed-up on {where}: "
          + ", ".join(f"{r.title} {r.train_bf16 / r.train_fp32:.2f}x" for r in results)
          + " (model alone: " + ", ".join(f"{r.compute_bf16 / r.compute_fp32:.2f}x" for r in results) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
