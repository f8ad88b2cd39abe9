"""Folds trained side by side: ``crossval --jobs J`` runs J processes on this machine at once.

:class:`SideBySide` is a :data:`us8k_lib.crossval.Runner`: it hands fold k to job k mod J, each job a
fresh process (``spawn``: CUDA cannot be forked) that trains its folds one after the other with
:func:`us8k_lib.crossval.run_fold`, each fold's run folder locked by the job that trains it. With
several GPUs visible, job j gets GPU j mod count; on one GPU the jobs share it (small models leave
most of a large GPU idle). On a CPU the cores are shared out: each job gets 1/J of the threads
one process would use, so a fold's numbers differ from ``--jobs 1``'s by float rounding (CPU
kernels add in another order with another number of threads; with the same number of threads,
``OMP_NUM_THREADS=1`` for both, they are the same bit for bit, and a test checks it). Each fold's
``metrics.json`` records the threads it trained with.

A job ends with its parent: killed or stopped, the command takes its jobs with it (each watches
its parent's end), so a second run is never refused by folds still training under nobody.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from us8k_lib.errors import US8KError, failure_line, speaking_flags


class _Prefixed:
    """A text stream that starts every line with a prefix (the fold a side-by-side job trains)."""

    def __init__(self, stream: Any, prefix: str) -> None:
        self.stream, self.prefix, self.at_start = stream, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.at_start:
                self.stream.write(self.prefix)
            self.stream.write(piece)
            self.at_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _end_with_parent() -> None:
    """Exit this process as soon as the process that started it ends, however it ended."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's end of the pipe closes: it exited or was killed
        os._exit(1)

    threading.Thread(target=watch, name="us8k-parent-watch", daemon=True).start()


def _job(tasks: list[Any], source: Any, kwargs: dict[str, Any], threads: int) -> None:
    """One side-by-side job (a process of its own): train its folds one after the other.

    An expected failure (a fold folder in use, a file that cannot be written, Ctrl-C) ends the job
    with one ``error: [fold N] ...`` line on stderr and a non-zero exit code, as the command line
    words it, instead of multiprocessing's traceback; the parent then reports the failed job.
    """
    import torch

    from us8k_lib.crossval import run_fold

    _end_with_parent()
    torch.set_num_threads(threads)
    stdout = sys.stdout
    with speaking_flags():
        for task in tasks:
            fold = task.config.test_fold
            sys.stdout = _Prefixed(stdout, f"[fold {fold}] ")
            try:
                run_fold(task, source, **{**kwargs, "progress": False})
            except KeyboardInterrupt:
                print(f"error: [fold {fold}] interrupted", file=sys.stderr)
                sys.exit(130)
            except (US8KError, OSError) as exc:
                line = failure_line(exc)
                if line is None:
                    raise  # not the user's to fix: its traceback kept, as the command line does
                print(f"error: [fold {fold}] {line}", file=sys.stderr)
                sys.exit(1)
            finally:
                sys.stdout.flush()
                sys.stdout = stdout


@dataclass
class SideBySide:
    """A :data:`us8k_lib.crossval.Runner` that trains ``jobs`` folds at once, each job in its own process."""

    jobs: int

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")

    def __call__(self, tasks: list[Any], source: Any, kwargs: dict[str, Any]) -> None:
        """Run the folds (fold k in job k mod ``jobs``) and wait for every job.

        Raises:
            US8KError: naming the jobs that failed (their errors are printed above).
        """
        import torch

        from us8k_lib.devices import choose_device

        device = choose_device(tasks[0].config.device) if tasks else torch.device("cpu")
        gpus = torch.cuda.device_count() if device.type == "cuda" and device.index is None else 0
        threads = max(1, torch.get_num_threads() // self.jobs) if device.type == "cpu" else torch.get_num_threads()
        ctx = multiprocessing.get_context("spawn")
        processes = []
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            for j in range(min(self.jobs, len(tasks))):
                if gpus > 1:  # read by the child when it starts (the parent's own CUDA is unaffected)
                    os.environ["CUDA_VISIBLE_DEVICES"] = str(j % gpus)
                p = ctx.Process(target=_job, args=(tasks[j::self.jobs], source, kwargs, threads),
                                name=f"us8k-fold-job-{j}")
                p.start()
                processes.append(p)
        finally:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
        failed = []
        for p in processes:
            p.join()
            if p.exitcode != 0:
                failed.append(f"{p.name} (exit code {p.exitcode})")
        if failed:
            raise US8KError(f"side-by-side fold job(s) failed: {', '.join(failed)}; their errors are printed above. "
                            "Run the same command again: finished folds are skipped, interrupted ones resumed")
