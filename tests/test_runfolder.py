"""The run folder's rules: one run at a time (a lock that dies with its process), nothing finished
replaced unasked, killed writes swept, and messages that name the file (on the tiny dataset)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from us8k_lib import cli
from us8k_lib.crossval import SUMMARY_JSON, crossval, fold_dir
from us8k_lib.engine.fit import fit
from us8k_lib.errors import CheckpointError, RunExistsError, RunInUseError
from us8k_lib.predict import Classifier
from us8k_lib.recipe import TrainConfig
from us8k_lib.runs.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model, save_checkpoint
from us8k_lib.runs.lock import LOCK_NAME, RunLock
from us8k_lib.runs.results import HISTORY_NAME, METRICS_NAME

pytestmark = pytest.mark.slow

# Small for testing: a narrow M5 trains an epoch of tiny in about a second.
SMALL = dict(epochs=1, batch_size=16, lr=3e-3, width=8, seed=0)
FLAGS = ["--epochs", "1", "--batch-size", "16", "--lr", "3e-3", "--width", "8", "--seed", "0", "--preset", "small"]
QUIET = dict(progress=False, verbose=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runfolder-data")


@pytest.fixture()
def cache_dir(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The commands' cache (their data folder is the module's), which the fit calls share: formatted once."""
    monkeypatch.setenv("US8K_DATA_DIR", str(data_dir))
    return data_dir / "cache"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Start a process that holds ``folder``'s lock (as a run in progress does) until it is killed."""
    code = ("import sys, time\nfrom us8k_lib.runs.lock import RunLock\nRunLock(sys.argv[1]).acquire()\n"
            "print('locked', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_two_trainings_into_one_folder_the_second_stops_naming_folder_and_holder(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The repro: a training runs in --out (paused after its first epoch) while a second starts there."""
    out, go = tmp_path / "same", tmp_path / "go"
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom us8k_lib.engine.fit import fit\nfrom us8k_lib.recipe import "
        "TrainConfig\n"
        "def wait(row):\n    Path(sys.argv[3] + '-paused').touch()\n"
        "    while not Path(sys.argv[3]).exists():\n        time.sleep(0.05)\n"
        "fit(TrainConfig(epochs=2, batch_size=16, lr=3e-3, width=8, seed=0), sys.argv[1], sys.argv[2],"
        " cache_dir=sys.argv[4], progress=False, verbose=False, callback=wait)\n")
    first = subprocess.Popen([sys.executable, "-c", code, str(tiny_root), str(out), str(go),
                              str(cache_dir)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not Path(f"{go}-paused").exists():  # its first epoch saved, the run still going
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run wrote no epoch in time"
            time.sleep(0.1)
        before = _snapshot(out)
        code = cli.main(["train", "--root", str(tiny_root), *FLAGS[:-4], "--seed", "1", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 1
        assert err.startswith(f"error: {out}: in use by another run (process {first.pid} on {socket.gethostname()})")
        assert _snapshot(out) == before  # the second wrote nothing
    finally:
        go.touch()
    assert first.wait(timeout=300) == 0, first.stderr.read()
    metrics = json.loads((out / METRICS_NAME).read_text())
    assert metrics["config"]["seed"] == 0 and metrics["epoch"] == 2  # the first run's files, whole
    assert not (out / LOCK_NAME).exists()


def test_a_killed_holder_never_blocks_and_its_stale_temporary_is_swept(
        tiny_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _hold_lock(out)
    with pytest.raises(RunInUseError, match=rf"in use by another run \(process {holder.pid} on "):
        fit(TrainConfig(**SMALL), tiny_root, out, cache_dir=cache_dir, **QUIET)
    _kill(holder)  # as a run killed mid-write: its lock file and a temporary stay behind
    stale = out / f".{CHECKPOINT_NAME}.tmp-{holder.pid}"
    stale.write_bytes(b"half a checkpoint")
    assert (out / LOCK_NAME).exists()
    result = fit(TrainConfig(**SMALL), tiny_root, out, cache_dir=cache_dir, **QUIET)
    assert result.history["epoch"].tolist() == [1]
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT_NAME, HISTORY_NAME, METRICS_NAME, "predictions.csv"]


def test_the_lock_is_released_and_taken_again_in_one_process(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        assert (tmp_path / LOCK_NAME).read_text() == f"process {os.getpid()} on {socket.gethostname()}\n"
        with pytest.raises(RunInUseError, match=str(tmp_path)):
            RunLock(tmp_path).acquire()  # another open file description: refused as another process is
    assert not lock.path.exists()
    with RunLock(tmp_path):
        pass


def test_train_twice_into_one_folder(tiny_root: Path, cache_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--root", str(tiny_root), *FLAGS, "--out", str(out)]
    assert cli.main(args) == 0
    first = capsys.readouterr().out.strip().splitlines()
    before = _snapshot(out)
    (out / f".{METRICS_NAME}.tmp-999999").write_text("{")  # a write a killed process left

    # The same settings and dataset: finished, reported again, nothing trained or rewritten.
    assert cli.main(args) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert any("holds this run, finished" in line for line in again)
    assert not any(line.startswith("epoch 1/1  loss") and line not in first for line in again)
    assert again[-1] == first[-1]  # the same test accuracy line
    assert _snapshot(out) == before  # and the stale temporary is gone

    # Other settings: refused before any work, naming the choices; the run is untouched.
    assert cli.main([*args, "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    assert f"{out}: holds a finished run with other settings (epochs=2 (saved: 1))" in err
    assert "--out" in err and "--overwrite" in err
    assert _snapshot(out) == before

    # Asked to: replaced.
    assert cli.main([*args, "--epochs", "2", "--overwrite"]) == 0
    capsys.readouterr()
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 2


def _interrupted_after_one_epoch(tiny_root: Path, cache_dir: Path, run: Path) -> TrainConfig:
    config = TrainConfig(**{**SMALL, "epochs": 2})

    def stop(row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, run, cache_dir=cache_dir, callback=stop, **QUIET)
    return config


def test_an_unfinished_run_continues_only_when_asked(tiny_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    config = _interrupted_after_one_epoch(tiny_root, cache_dir, tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(RunExistsError, match=r"unfinished run of these settings \(epoch 1 of 2\)\. Continue it "
                                             r"with resume=True"):
        fit(config, tiny_root, tmp_path, cache_dir=cache_dir, **QUIET)
    with pytest.raises(RunExistsError, match="unfinished run with other settings"):
        fit(TrainConfig(**{**SMALL, "epochs": 2, "seed": 5}), tiny_root, tmp_path, cache_dir=cache_dir, **QUIET)
    assert _snapshot(tmp_path) == before
    with pytest.raises(ValueError, match="exclude each other"):
        fit(config, tiny_root, tmp_path, resume=True, overwrite=True, cache_dir=cache_dir, **QUIET)
    resumed = fit(config, tiny_root, tmp_path, resume=True, cache_dir=cache_dir, **QUIET)
    assert resumed.history["epoch"].tolist() == [1, 2]


def test_two_crossvals_into_one_folder(tiny_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    config = TrainConfig(**SMALL)
    crossval(config, tiny_root, folds=[1], out=out, cache_dir=cache_dir, **QUIET)
    before = _snapshot(fold_dir(out, 1))
    summary = (out / SUMMARY_JSON).read_text()

    # While another cross-validation holds the folder: stopped at once, the holder named.
    holder = _hold_lock(out)
    try:
        with pytest.raises(RunInUseError, match=rf"^{out}: in use by another run \(process {holder.pid} on "):
            crossval(config, tiny_root, folds=[1, 2], out=out, cache_dir=cache_dir, **QUIET)
    finally:
        _kill(holder)
    # A fold a train command holds stops it too (the folds are locked one by one, as --jobs runs them).
    holder = _hold_lock(fold_dir(out, 2))
    try:
        with pytest.raises(RunInUseError, match=f"{fold_dir(out, 2)}: in use by another run"):
            crossval(config, tiny_root, folds=[1, 2], out=out, cache_dir=cache_dir, **QUIET)
    finally:
        _kill(holder)

    # Other settings: refused before any fold trains, the choices named.
    with pytest.raises(RunExistsError, match=rf"{fold_dir(out, 1)}: holds a finished run with other settings "
                                             r"\(epochs=2 \(saved: 1\)\).*another run folder "
                                             r"\(out\).*\(overwrite=True\)"):
        crossval(TrainConfig(**{**SMALL, "epochs": 2}), tiny_root, folds=[2, 1], out=out, cache_dir=cache_dir,
                 **QUIET)
    assert not (fold_dir(out, 2) / CHECKPOINT_NAME).exists()  # fold 2 came first, and still did not train
    assert _snapshot(fold_dir(out, 1)) == before and (out / SUMMARY_JSON).read_text() == summary
    # The same settings: fold 1 skipped; asked to overwrite: trained again with the new settings.
    crossval(config, tiny_root, folds=[1], out=out, cache_dir=cache_dir, **QUIET)
    assert _snapshot(fold_dir(out, 1)) == before
    result = crossval(TrainConfig(**{**SMALL, "epochs": 2}), tiny_root, folds=[1], out=out, overwrite=True,
                      cache_dir=cache_dir, **QUIET)
    assert load_checkpoint(fold_dir(out, 1) / CHECKPOINT_NAME)["epoch"] == 2 and len(result.folds) == 1
    assert not (out / LOCK_NAME).exists() and not (fold_dir(out, 1) / LOCK_NAME).exists()


def test_a_truncated_checkpoint_is_called_damaged_and_misfitting_weights_name_the_file(
        tiny_checkpoint: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"^{cut}: damaged or incomplete checkpoint"):
        load_checkpoint(cut)
    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt["model"] = {k: torch.zeros(1) for k in ckpt["model"]}
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, ckpt)
    with pytest.raises(CheckpointError, match=rf"^{wrong}: its weights do not fit"):
        Classifier.from_checkpoint(wrong)
    with pytest.raises(CheckpointError, match=rf"^{wrong}: its weights do not fit"):
        load_model(ckpt, path=wrong)


def test_run_files_without_their_checkpoint_are_never_replaced_unasked(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finished run whose checkpoint.pt was deleted still holds its results: a new run into the
    folder (train or crossval, any settings) is refused, naming the files, until asked to overwrite."""
    out = tmp_path / "cv"
    crossval(TrainConfig(**SMALL), tiny_root, folds=[1], out=out, cache_dir=cache_dir, **QUIET)
    fold = fold_dir(out, 1)
    (fold / CHECKPOINT_NAME).unlink()
    before = _snapshot(fold)
    with pytest.raises(RunExistsError, match=rf"^{fold}: holds run files \(best\.pt, history\.json, metrics\.json, "
                                             r"predictions\.csv\) but no checkpoint\.pt.*another run folder "
                                             r"\(out\).*\(overwrite=True\)"):
        crossval(TrainConfig(**SMALL), tiny_root, folds=[1], out=out, cache_dir=cache_dir, **QUIET)
    assert _snapshot(fold) == before

    args = ["train", "--root", str(tiny_root), *FLAGS, "--out", str(fold)]
    for other in ([], ["--seed", "1"]):  # the same settings or others: refused alike
        assert cli.main([*args, *other]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {fold}: holds run files (best.pt, history.json, metrics.json, "
                              "predictions.csv) but no checkpoint.pt")
        assert "--out" in err and "--overwrite" in err and err.count("\n") == 1
        assert _snapshot(fold) == before
    assert cli.main([*args, "--seed", "1", "--overwrite"]) == 0
    capsys.readouterr()
    assert load_checkpoint(fold / CHECKPOINT_NAME)["config"]["seed"] == 1
    assert not (fold / "best.pt").exists()  # the old run's, removed with it


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file's inode and modification time: an atomic rewrite changes both, even to the same bytes."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def _results(run: Path) -> tuple[str, str, list[dict]]:
    """What a finished run reports: metrics.json and predictions.csv as written, history.json without its times."""
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in json.loads((run / HISTORY_NAME).read_text())]
    return (run / METRICS_NAME).read_text(), (run / "predictions.csv").read_text(), history


@pytest.mark.parametrize("val_fold, killed, nth", [
    (None, METRICS_NAME, 2),  # without validation: between checkpoint.pt and metrics.json of the last epoch
    (9, METRICS_NAME, 3),  # with validation: in the final save of the selected epoch's results
    (9, "predictions.csv", 3),
], ids=["last-epoch-metrics", "selected-metrics", "selected-predictions"])
def test_a_run_killed_while_writing_its_last_files_is_repaired_and_a_finished_one_left_alone(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        val_fold: int | None, killed: str, nth: int) -> None:
    import us8k_lib.runs.files as runfolder

    config = TrainConfig(**{**SMALL, "epochs": 2, "val_fold": val_fold})
    fit(config, tiny_root, tmp_path / "whole", cache_dir=cache_dir, **QUIET)
    whole = _stamps(tmp_path / "whole")
    again = fit(config, tiny_root, tmp_path / "whole", cache_dir=cache_dir, **QUIET)
    assert again.finished_before and _stamps(tmp_path / "whole") == whole  # finished: no file written again

    real, writes = runfolder.write_atomic, []

    def write_atomic(path: Path, *args: object, **kwargs: object) -> None:
        writes.append(Path(path).name)
        if writes.count(killed) == nth and Path(path).name == killed:
            raise KeyboardInterrupt  # the process killed before this file is written
        real(path, *args, **kwargs)

    monkeypatch.setattr(runfolder, "write_atomic", write_atomic)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, tmp_path / "killed", cache_dir=cache_dir, **QUIET)
    monkeypatch.setattr(runfolder, "write_atomic", real)
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT_NAME)["epoch"] == 2

    reopened = fit(config, tiny_root, tmp_path / "killed", cache_dir=cache_dir, **QUIET)
    assert reopened.finished_before
    assert _results(tmp_path / "killed") == _results(tmp_path / "whole")  # repaired: the uninterrupted run's
    repaired = _stamps(tmp_path / "killed")
    fit(config, tiny_root, tmp_path / "killed", cache_dir=cache_dir, **QUIET)
    assert _stamps(tmp_path / "killed") == repaired


def test_a_write_that_fails_for_lack_of_room_names_the_file(tmp_path: Path) -> None:
    """A full disk (here a file size limit: EFBIG, as ENOSPC is raised) makes the write itself fail,
    an OSError without a file name: the command line reports it as one line naming the file, and
    no temporary stays behind, for a checkpoint and a JSON file alike."""
    code = (
        "import resource, signal, sys\nfrom pathlib import Path\nimport torch\n"
        "from us8k_lib.cli import data, main\nfrom us8k_lib.runs.checkpoint import save_checkpoint\nfrom "
        "us8k_lib.runs.files import write_json\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "out = Path(sys.argv[1])\n"
        "def work(args):\n"
        "    if sys.argv[2] == 'checkpoint':\n"
        "        save_checkpoint(out / 'checkpoint.pt', {'model': torch.zeros(100_000)})\n"
        "    write_json(out / 'metrics.json', list(range(10_000)))\n"
        "data.validate_command = work\nsys.exit(main(['validate']))\n")
    for what, name in (("checkpoint", CHECKPOINT_NAME), ("json", METRICS_NAME)):
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path), what], capture_output=True, text=True,
                              timeout=120)
        assert (done.returncode, done.stderr) == (1, f"error: {tmp_path / name}: File too large\n")
        assert list(tmp_path.iterdir()) == []


def test_the_windows_lock_names_its_holder_in_a_one_line_file(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows locks a byte range from the file position (msvcrt.locking), which the lock moves far
    out: the holder's line must still be written at the start. A fake msvcrt on flock (which, like
    Windows, refuses a second lock from the same process) stands in for the real one."""
    import fcntl
    import types

    import us8k_lib.runs.lock as runfolder

    def locking(fd: int, mode: int, nbytes: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN if mode == msvcrt.LK_UNLCK else fcntl.LOCK_EX | fcntl.LOCK_NB)

    msvcrt = types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking)
    monkeypatch.setitem(sys.modules, "msvcrt", msvcrt)
    monkeypatch.setattr(runfolder, "sys", types.SimpleNamespace(platform="win32"))
    holder = f"process {os.getpid()} on {socket.gethostname()}"
    with RunLock(tmp_path) as lock:
        assert lock.path.read_bytes() == f"{holder}\n".encode()
        with pytest.raises(RunInUseError, match=rf"in use by another run \({holder}\)"):
            RunLock(tmp_path).acquire()
    assert not lock.path.exists()


def test_a_metrics_file_with_an_incomplete_dataset_record_is_named_not_a_traceback(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    fit(TrainConfig(**SMALL), tiny_root, out, cache_dir=cache_dir, **QUIET)
    metrics = json.loads((out / METRICS_NAME).read_text())
    del metrics["dataset"]["cache_key"]  # as an older or foreign metrics.json has it
    (out / METRICS_NAME).write_text(json.dumps(metrics))
    before = _snapshot(out)
    assert cli.main(["train", "--root", str(tiny_root), *FLAGS, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / METRICS_NAME}: damaged, or not written by this version of train: its "
                          "dataset record lacks cache_key") and err.count("\n") == 1
    assert "--out" in err and "--overwrite" in err and _snapshot(out) == before


def test_a_folder_that_cannot_be_written_is_refused_before_an_epoch_is_trained(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """As a read-only folder or disk does (root writes anywhere, so the refusal is simulated at the
    one call that creates the probe file)."""
    import errno

    import us8k_lib.runs.files as files

    run = tmp_path / "run"
    _interrupted_after_one_epoch(tiny_root, cache_dir, run)
    before = _snapshot(run)
    real_open = os.open

    def read_only(path, flags, *args):
        if ".write-test" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(files.os, "open", read_only)
    trained = []
    with pytest.raises(OSError, match="Permission denied") as caught:
        fit(TrainConfig(**{**SMALL, "epochs": 2}), tiny_root, run, resume=True, cache_dir=cache_dir,
            callback=trained.append, **QUIET)
    assert caught.value.filename == str(run) and trained == []
    assert cli.main(["train", "--root", str(tiny_root), *FLAGS, "--epochs", "2", "--out", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert f"error: {run}: Permission denied" in err and "epoch 2/2" not in err
    assert _snapshot(run) == before
    assert not (run / LOCK_NAME).exists() or (run / LOCK_NAME).read_text() == ""


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into a read-only folder")
def test_a_read_only_folder_is_refused_before_an_epoch_is_trained(tiny_root: Path, cache_dir: Path,
                                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = _interrupted_after_one_epoch(tiny_root, cache_dir, run)
    run.chmod(0o555)
    try:
        trained = []
        with pytest.raises(OSError, match="Permission denied"):
            fit(config, tiny_root, run, resume=True, cache_dir=cache_dir, callback=trained.append, **QUIET)
        assert trained == []
    finally:
        run.chmod(0o755)


def test_resume_reads_the_checkpoint_once(tiny_root: Path, cache_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _interrupted_after_one_epoch(tiny_root, cache_dir, run)
    real_load, reads = torch.load, []

    def counting_load(f, *args, **kwargs):
        reads.append(Path(f).name if isinstance(f, str | os.PathLike) else "?")
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert cli.main(["train", "--root", str(tiny_root), *FLAGS, "--epochs", "2", "--out", str(run), "--resume"]) == 0
    capsys.readouterr()
    assert reads.count(CHECKPOINT_NAME) == 1, reads


def test_a_hand_edited_result_file_is_rewritten_from_the_checkpoint(tiny_root: Path, cache_dir: Path,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--root", str(tiny_root), *FLAGS, "--out", str(out)]
    assert cli.main(args) == 0
    capsys.readouterr()
    true = json.loads((out / METRICS_NAME).read_text())
    assert true["test"]["accuracy"] != 0.99
    edited = {**true, "test": {**true["test"], "accuracy": 0.99}}
    (out / METRICS_NAME).write_text(json.dumps(edited))
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert f"test accuracy: {true['test']['accuracy']:.3f}" in printed and "0.990" not in printed
    assert "rewrote" in printed or "rewritten" in printed, printed
    assert json.loads((out / METRICS_NAME).read_text())["test"] == true["test"]
    predictions = (out / "predictions.csv").read_text().splitlines()
    (out / "predictions.csv").write_text("\n".join(predictions[:-3]) + "\n")  # clips dropped by hand
    assert cli.main(args) == 0
    capsys.readouterr()
    assert (out / "predictions.csv").read_text().splitlines() == predictions


def test_predict_refuses_a_best_checkpoint_copied_from_another_run_and_says_when_a_run_is_unfinished(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, real_sample: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from us8k_lib.runs.checkpoint import BEST_NAME

    clip = next((real_sample / "audio").rglob("*.wav"))
    config = TrainConfig(**{**SMALL, "epochs": 2, "val_fold": 9})
    for name, seed in (("a", 0), ("b", 1)):
        fit(TrainConfig(**{**config.to_dict(), "seed": seed}), tiny_root, tmp_path / name, cache_dir=cache_dir,
            **QUIET)
    assert cli.main(["predict", str(tmp_path / "a"), str(clip)]) == 0
    assert "weights: " in capsys.readouterr().out
    shutil.copy(tmp_path / "b" / BEST_NAME, tmp_path / "a" / BEST_NAME)
    assert cli.main(["predict", str(tmp_path / "a"), str(clip)]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'a' / BEST_NAME}: " in err
    assert "is not the history's" in err  # here the copy's accuracy differs; below, only its history
    copied = load_checkpoint(tmp_path / "b" / BEST_NAME)
    own = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    chosen = own["best"]["epoch"]
    copied.update(epoch=chosen, selected={**copied["selected"], "epoch": chosen,
                                          "val_acc": own["history"][chosen - 1]["val_acc"]})
    save_checkpoint(tmp_path / "a" / BEST_NAME, copied)
    assert cli.main(["predict", str(tmp_path / "a"), str(clip)]) == 1
    assert "its training history is not this run's up to epoch" in capsys.readouterr().err

    def stop(row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, tmp_path / "c", cache_dir=cache_dir, callback=stop, **QUIET)
    assert cli.main(["predict", str(tmp_path / "c"), str(clip)]) == 0
    assert "the run is unfinished (epoch 1 of 2), so these are not its final weights" in capsys.readouterr().out
