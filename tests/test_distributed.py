"""torchrun on CPU (gloo, 2 processes): folds spread over ranks, DDP training, and resuming a killed DDP run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from us8k_lib.crossval import SUMMARY_JSON
from us8k_lib.engine.distributed import shard
from us8k_lib.runs.checkpoint import CHECKPOINT_NAME, load_checkpoint

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
# Small for testing: narrow M5, tiny dataset.
SMALL_FLAGS = ["--epochs", "3", "--width", "8", "--batch-size", "16", "--lr", "3e-3", "--seed", "0", "--device", "cpu"]


def _torchrun(nproc: int, args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One thread per process (as torchrun sets for several), and a private data folder for the cache."""
    data = tmp_path_factory.mktemp("data")
    return dict(os.environ, OMP_NUM_THREADS="1", US8K_DATA_DIR=str(data), PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def ddp_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """One uninterrupted DDP training on 2 ranks (tests/ddp_worker.py).

    Returns its run folder; each rank's weights are in dump/ beside it."""
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "dump").mkdir()
    proc = _torchrun(2, [str(HERE / "ddp_worker.py"), str(tiny_root), str(tmp / "run"), str(tmp / "cache"),
                         str(tmp / "dump")], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def test_shard_covers_every_index_once() -> None:
    assert list(shard(7)) == list(range(7))  # one process: everything


def test_crossval_over_two_ranks_matches_one(tiny_root: Path, tmp_path: Path, env: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Each fold trains on its own rank exactly as in one plain process without torchrun (one thread each)."""
    from us8k_lib import cli

    args = ["crossval", "--root", str(tiny_root), "--folds", "1-2", *SMALL_FLAGS]
    two = _torchrun(2, ["-m", "us8k_lib", *args, "--out", str(tmp_path / "two")], env)
    assert two.returncode == 0, two.stderr[-3000:]
    # The reference runs in this process, as `python -m us8k_lib crossval` would, with the one
    # thread torchrun gives each rank (another thread count may round differently).
    monkeypatch.setenv("US8K_DATA_DIR", env["US8K_DATA_DIR"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    one_stdout = capsys.readouterr().out
    a = json.loads((tmp_path / "one" / SUMMARY_JSON).read_text())
    b = json.loads((tmp_path / "two" / SUMMARY_JSON).read_text())
    assert a["folds"] == b["folds"] and a["mean"] == b["mean"] and a["confusion"] == b["confusion"]
    # the summary line is printed once, by rank 0, as the last line, exactly as one process prints it
    assert two.stdout.count("cross-validation accuracy:") == 1
    assert two.stdout.strip().splitlines()[-1] == one_stdout.strip().splitlines()[-1]
    assert one_stdout.strip().splitlines()[-1].startswith("cross-validation accuracy:")
    # each rank trained its own fold: both fold folders exist, with one run each
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.is_dir()) == ["fold01", "fold02"]


def test_ddp_training_formats_every_clip_once(ddp_run: Path, tiny_root: Path) -> None:
    """Rank 0 builds the cache while the other rank waits, then both read it."""
    n_clips = len(list((tiny_root / "audio").glob("fold*/*.wav")))
    formatted = {p.name: p.read_text().splitlines() for p in (ddp_run / "dump").glob("formatted-rank*.txt")}
    assert list(formatted) == ["formatted-rank0.txt"]  # rank 1 formatted nothing
    assert len(formatted["formatted-rank0.txt"]) == len(set(formatted["formatted-rank0.txt"])) == n_clips


def test_ddp_training_keeps_ranks_identical_and_learns(ddp_run: Path) -> None:
    dump = ddp_run / "dump"
    r0, r1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), f"{k} differs between ranks"
    # every test clip of fold 10 counted once (20 clips; DistributedSampler would pad to an even split)
    assert r0["n_test"] == r1["n_test"] == 20
    assert r0["accuracy"] == r1["accuracy"]
    losses = r0["history"]["train_loss"]
    assert losses[-1] < losses[0] and r0["history"]["train_acc"][-1] > 0.3  # learns (10 classes: chance 0.1)
    # rank 0 alone wrote the run folder, and its checkpoint holds the shared weights
    ckpt = load_checkpoint(ddp_run / "run" / CHECKPOINT_NAME)
    assert all(torch.equal(ckpt["model"][k], r0["state"][k]) for k in ckpt["model"])


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (read from /proc: the ranks are not in its group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, i = [pid], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_killed_ddp_run_resumes_to_the_uninterrupted_result(tiny_root: Path, tmp_path: Path, ddp_run: Path,
                                                            env: dict[str, str]) -> None:
    """Killed mid-run with SIGKILL and resumed from the command line, it ends as ddp_run did (same settings)."""
    base = ["-m", "us8k_lib", "train", "--root", str(tiny_root), *SMALL_FLAGS]

    run = tmp_path / "cut"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *base,
           "--out", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (run / "history.json").exists() or len(json.loads((run / "history.json").read_text())) < 1:
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.2)
    _kill_tree(proc.pid)  # the launcher and both ranks (torchrun starts each in a session of its own), mid-epoch 2
    proc.wait(timeout=60)
    assert load_checkpoint(run / CHECKPOINT_NAME)["epoch"] < 3

    resumed = _torchrun(2, base + ["--out", str(run), "--resume"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming" in resumed.stdout
    a, b = load_checkpoint(ddp_run / "run" / CHECKPOINT_NAME), load_checkpoint(run / CHECKPOINT_NAME)
    assert a["config"] == b["config"], "the worker and the command must train the same configuration"
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resume"
    assert [r["test_acc"] for r in a["history"]] == [r["test_acc"] for r in b["history"]]
    last = resumed.stdout.strip().splitlines()[-1]
    assert last == f"test accuracy: {a['history'][-1]['test_acc']:.3f} (fold 10, 20 clips)"


def test_each_torchrun_process_takes_its_own_gpu_and_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU paths, checked on a CPU machine: LOCAL_RANK picks the GPU, NCCL is the GPU backend."""
    from us8k_lib.devices import choose_device
    from us8k_lib.engine.distributed import backend_for, launched_by_torchrun

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not launched_by_torchrun()
    assert choose_device() == torch.device("cuda")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_by_torchrun()
    assert choose_device() == torch.device("cuda", 1)
    assert choose_device("cuda") == torch.device("cuda", 1)
    assert choose_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert choose_device("cpu") == torch.device("cpu")
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


def test_global_batch_must_split_evenly_over_ranks(monkeypatch: pytest.MonkeyPatch, tiny_root: Path) -> None:
    from us8k_lib.engine import fit as train

    monkeypatch.setattr(train, "dist_is_active", lambda: True)
    monkeypatch.setattr(train, "dist_is_main", lambda: True)
    monkeypatch.setattr(train, "dist_world_size", lambda: 3)
    monkeypatch.setattr(train, "dist_rank", lambda: 0)
    with pytest.raises(ValueError, match="batch_size 16 does not split evenly over 3 ranks"):
        train.fit(train.TrainConfig(batch_size=16, epochs=1), tiny_root, verbose=False, progress=False)
