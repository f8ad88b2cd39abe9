"""Validation-fold model selection and cross-validation over the official folds (on the tiny dataset)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from us8k_lib.cli.flags import parse_folds
from us8k_lib.crossval import crossval
from us8k_lib.engine.fit import fit
from us8k_lib.engine.jobs import SideBySide
from us8k_lib.folds import fold_roles
from us8k_lib.recipe import TrainConfig
from us8k_lib.runs.checkpoint import BEST_NAME, load_checkpoint
from us8k_lib.runs.folder import SUMMARY_CSV, SUMMARY_JSON, fold_dir
from us8k_lib.runs.results import METRICS_NAME

pytestmark = pytest.mark.slow

# Small for testing: a narrow M5 (8 channels) and 3 epochs train a fold of tiny in seconds.
SMALL = dict(epochs=3, batch_size=16, lr=3e-3, width=8, seed=1)
LAST_LINE = re.compile(r"^cross-validation accuracy: (\d\.\d{3}) ± (\d\.\d{3}) \((\d+) folds, model (\S+), "
                       r"selected on validation folds\)$")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cv-cache")


def test_parse_folds() -> None:
    assert parse_folds("1-3") == [1, 2, 3]
    assert parse_folds("1,4,7") == [1, 4, 7]
    assert parse_folds("9-10,1") == [1, 9, 10]
    assert parse_folds(None) is None
    for bad in ("0-2", "3-1", "a", "11", ""):
        with pytest.raises(ValueError, match="--folds"):
            parse_folds(bad)


def test_validation_fold_is_the_previous_fold_cyclically() -> None:
    assert fold_roles(range(1, 11), 1) == (10, [2, 3, 4, 5, 6, 7, 8, 9])
    assert fold_roles(range(1, 11), 5) == (4, [1, 2, 3, 6, 7, 8, 9, 10])
    assert fold_roles([1, 3, 5, 7, 9], 3) == (1, [5, 7, 9])  # a dataset with only some folds
    with pytest.raises(ValueError, match="at least 3 folds"):
        fold_roles([1, 2], 1)


def test_config_keeps_the_test_fold_out_of_selection() -> None:
    with pytest.raises(ValueError, match="val_fold 10 is also the test fold"):
        TrainConfig(test_fold=10, val_fold=10)
    with pytest.raises(ValueError, match="val_fold 3 is also a training fold"):
        TrainConfig(test_fold=10, val_fold=3, train_folds=(1, 2, 3))
    assert TrainConfig(test_fold=10, val_fold=9).folds_to_train == (1, 2, 3, 4, 5, 6, 7, 8)


def test_run_with_validation_fold_keeps_the_epoch_validation_picked(tiny_root: Path, cache_dir: Path,
                                                                    tmp_path: Path) -> None:
    config = TrainConfig(test_fold=10, val_fold=9, **SMALL)
    result = fit(config, tiny_root, tmp_path, cache_dir=cache_dir, progress=False, verbose=False)
    history = result.history
    chosen = int(history.loc[history["val_acc"].idxmax(), "epoch"])  # earliest best, as fit breaks ties
    assert result.selected_epoch == chosen
    # best.pt holds that epoch's weights: evaluating them again gives that epoch's logged test accuracy
    assert result.selected.accuracy == pytest.approx(history.loc[chosen - 1, "test_acc"], abs=1e-12)
    assert result.evaluation.accuracy == pytest.approx(history["test_acc"].iloc[-1], abs=1e-12)
    assert load_checkpoint(tmp_path / BEST_NAME)["epoch"] == chosen
    metrics = json.loads((tmp_path / METRICS_NAME).read_text())
    assert metrics["folds"] == {"train": [1, 2, 3, 4, 5, 6, 7, 8], "validation": 9, "test": 10}
    assert metrics["selected"]["epoch"] == chosen
    assert metrics["selected"]["test"]["accuracy"] == result.selected.accuracy
    assert metrics["test"]["accuracy"] == result.evaluation.accuracy
    # the validation and test folds never leak into training
    assert set(result.selected.predictions["fold"]) == {10}
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert predictions["correct"].mean() == pytest.approx(result.selected.accuracy)


def test_interrupted_selection_run_resumes_to_the_same_choice(tiny_root: Path, cache_dir: Path,
                                                              tmp_path: Path) -> None:
    config = TrainConfig(test_fold=10, val_fold=9, **SMALL)
    whole = fit(config, tiny_root, tmp_path / "whole", cache_dir=cache_dir, progress=False, verbose=False)

    def stop_after_two(row: dict) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, tmp_path / "cut", cache_dir=cache_dir, progress=False, verbose=False,
            callback=stop_after_two)
    resumed = fit(None, tiny_root, tmp_path / "cut", resume=True, cache_dir=cache_dir, progress=False,
                  verbose=False)
    assert resumed.selected_epoch == whole.selected_epoch
    assert resumed.selected.accuracy == whole.selected.accuracy
    pd.testing.assert_frame_equal(resumed.history.drop(columns="seconds"), whole.history.drop(columns="seconds"))


def test_crossval_reports_selected_and_last_epochs_and_skips_finished_folds(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(**SMALL)
    result = crossval(config, tiny_root, folds=[1, 2], out=tmp_path, cache_dir=cache_dir, progress=False)
    folds = result.folds.set_index("test_fold")
    assert list(folds.index) == [1, 2] and list(folds["val_fold"]) == [10, 1]
    for test_fold, row in folds.iterrows():
        history = pd.DataFrame(json.loads((fold_dir(tmp_path, test_fold) / "history.json").read_text()))
        picked = int(history.loc[history["val_acc"].idxmax(), "epoch"])
        assert row["selected_epoch"] == picked
        assert row["test_acc"] == pytest.approx(history.loc[picked - 1, "test_acc"])
        assert row["test_acc_last"] == pytest.approx(history["test_acc"].iloc[-1])
        assert row["best_test_acc"] == pytest.approx(history["test_acc"].max())
        assert row["n_test"] == 10
    assert result.mean == pytest.approx(folds["test_acc"].mean())
    assert result.std == pytest.approx(folds["test_acc"].std(ddof=1))
    assert result.confusion.sum() == 20  # every test clip of both folds, counted once
    summary = json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert summary["mean"] == pytest.approx(result.mean) and summary["n_folds"] == 2
    assert summary["missing_official_folds"] == []
    csv = pd.read_csv(tmp_path / SUMMARY_CSV, dtype={"test_fold": str})
    assert list(csv["test_fold"]) == ["1", "2", "mean", "std"]
    assert csv.loc[2, "test_acc"] == pytest.approx(result.mean)
    assert "acc_siren" in csv.columns

    capsys.readouterr()
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = crossval(config, tiny_root, folds=[1, 2], out=tmp_path, cache_dir=cache_dir, progress=False)
    assert capsys.readouterr().out.count("already done") == 2
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == mtimes
    pd.testing.assert_frame_equal(again.folds, result.folds)
    # the training time is the one recorded when the folds trained, not this call's (which trained nothing)
    recorded = sum(row["seconds"] for f in (1, 2)
                   for row in json.loads((fold_dir(tmp_path, f) / "history.json").read_text()))
    assert again.training_seconds == pytest.approx(recorded) and recorded > 0


def test_crossval_command_on_a_dataset_with_some_folds(real_sample: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The bundled real sample has folds 1, 3, 5, 7 and 9: cross-validate over those, and say so."""
    from us8k_lib import cli

    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "data"))  # its cache, away from the project's
    code = cli.main(["crossval", "--root", str(real_sample), "--folds", "1,3", "--epochs", "1", "--width", "8",
                     "--out", str(tmp_path / "cv")])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.strip().splitlines()
    assert "not all ten official ones" in out.out and "not the official 10-fold protocol" in out.out
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    assert match.group(3) == "2" and match.group(4) == "M5"
    summary = json.loads((tmp_path / "cv" / SUMMARY_JSON).read_text())
    assert summary["dataset_folds"] == [1, 3, 5, 7, 9]
    assert [r["val_fold"] for r in summary["folds"]] == [9, 1]
    assert float(match.group(1)) == pytest.approx(np.mean([r["test_acc"] for r in summary["folds"]]), abs=5e-4)


@pytest.mark.parametrize("model", ["m3", "m5", "m11", "m18", "m34res", "logmel"])
def test_every_model_of_the_family_trains_on_the_tiny_dataset(model: str, tiny_root: Path, cache_dir: Path,
                                                              tmp_path: Path) -> None:
    """Chosen by name, each model trains through fit with a validation fold and writes a usable run."""
    # Small for testing: 4 channels in the first stage, 2 epochs.
    config = TrainConfig(model=model, epochs=2, batch_size=16, lr=3e-3, width=4, seed=0, test_fold=10,
                         val_fold=9)
    result = fit(config, tiny_root, tmp_path, cache_dir=cache_dir, progress=False, verbose=False)
    assert len(result.history) == 2 and result.history["train_loss"].notna().all()
    assert result.selected is not None and result.selected.n_clips == 20
    ckpt = load_checkpoint(tmp_path / BEST_NAME)
    assert ckpt["model_config"]["name"] == model and ckpt["config"]["model"] == model


def test_two_models_over_the_same_folds_are_compared_side_by_side(tiny_root: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from us8k_lib import cli
    from us8k_lib.crossval import COMPARISON_CSV

    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "data"))
    code = cli.main(["crossval", "--root", str(tiny_root), "--model", "m5,logmel", "--folds", "1-2", "--epochs", "1",
                     "--width", "4", "--out", str(tmp_path / "cmp")])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.strip().splitlines()
    first, second = (LAST_LINE.match(line) for line in lines[-2:])
    assert first and second, lines[-2:]
    assert (first.group(4), second.group(4)) == ("M5", "LogMel-CNN") and first.group(3) == second.group(3) == "2"
    # each model ran as if alone, in its own folder; the table holds both, fold by fold
    a = json.loads((tmp_path / "cmp" / "m5" / SUMMARY_JSON).read_text())
    b = json.loads((tmp_path / "cmp" / "logmel" / SUMMARY_JSON).read_text())
    assert (a["model"], b["model"]) == ("m5", "logmel") and a["dataset"] == b["dataset"]
    table = pd.read_csv(tmp_path / "cmp" / COMPARISON_CSV, index_col=0)
    assert list(table.index) == ["1", "2", "mean", "std"]
    assert list(table.columns) == ["M5 acc", "M5 epoch", "LogMel-CNN acc", "LogMel-CNN epoch", "difference"]
    for fold, row in zip((1, 2), table.iloc[:2].itertuples()):
        assert row[1] == pytest.approx(a["folds"][fold - 1]["test_acc"])
        assert row[3] == pytest.approx(b["folds"][fold - 1]["test_acc"])
        assert row[5] == pytest.approx(row[3] - row[1])
    assert table.loc["mean", "M5 acc"] == pytest.approx(a["mean"])
    assert "side by side" in out.out and str(tmp_path / "cmp" / COMPARISON_CSV) in out.out


def test_folds_side_by_side_give_the_sequential_numbers(tiny_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    """SideBySide(2): two processes train a fold each at once; every number equals the one-at-a-time run's."""
    import torch

    config = TrainConfig(**{**SMALL, "epochs": 2})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of the two jobs gets on this machine's cores, for equal rounding
    try:
        one = crossval(config, tiny_root, folds=[1, 2], out=tmp_path / "one", cache_dir=cache_dir, progress=False,
                       verbose=False)
    finally:
        torch.set_num_threads(threads)
    two = crossval(config, tiny_root, folds=[1, 2], out=tmp_path / "two", cache_dir=cache_dir, progress=False,
                   verbose=False, runner=SideBySide(2))
    pd.testing.assert_frame_equal(one.folds, two.folds)
    np.testing.assert_array_equal(one.confusion, two.confusion)
    for fold in ("fold01", "fold02"):
        a = load_checkpoint(tmp_path / "one" / fold / BEST_NAME)["model"]
        b = load_checkpoint(tmp_path / "two" / fold / BEST_NAME)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), fold
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        SideBySide(0)


def _result(model: str, accs: list[float], epochs: list[int]) -> object:
    from us8k_lib.crossval import FOLD_COLUMNS, CrossValResult

    folds = pd.DataFrame([{"test_fold": f, "val_fold": f - 1 or 10, "n_test": 40, "selected_epoch": e,
                           "val_acc": a, "test_acc": a, "test_acc_last": a, "best_test_epoch": e,
                           "best_test_acc": a} for f, (a, e) in enumerate(zip(accs, epochs), start=1)],
                         columns=FOLD_COLUMNS)
    return CrossValResult(model=model, folds=folds, per_class=pd.DataFrame(), per_class_by_fold=pd.DataFrame(),
                          confusion=np.zeros((10, 10), dtype=np.int64), dataset_folds=list(range(1, 11)), out=Path("x"))


def test_the_comparison_is_paired_and_its_verdict_says_no_more_than_the_numbers() -> None:
    from us8k_lib.crossval import comparison_table, comparison_verdict

    a = _result("m5", [0.80, 0.70, 0.90], [3, 4, 2])
    b = _result("logmel", [0.85, 0.80, 0.95], [2, 4, 4])
    table = comparison_table([a, b])
    assert list(table.index) == [1, 2, 3, "mean", "std"]
    assert list(table["difference"].iloc[:3].astype(float).round(3)) == [0.05, 0.10, 0.05]
    assert table.loc["mean", "LogMel-CNN acc"] == pytest.approx(0.8667, abs=1e-4)
    assert list(table["M5 epoch"].iloc[:3]) == [3, 4, 2]
    verdict = comparison_verdict([a, b])
    assert "+0.067 mean test accuracy" in verdict and "higher on 3 fold(s), lower on 0" in verdict
    assert "more than twice its standard error" in verdict  # 0.067 against a standard error of 0.017
    mixed = comparison_verdict([a, _result("logmel", [0.85, 0.65, 0.92], [1, 1, 1])])
    assert "cannot tell the two apart" in mixed
    assert "one number, not a result" in comparison_verdict([_result("m5", [0.8], [1]), _result("logmel", [0.9], [1])])
    with pytest.raises(ValueError, match="at least two"):
        comparison_table([a])


def test_a_side_by_side_job_that_fails_says_so_in_one_line(tiny_root: Path, cache_dir: Path, tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """SideBySide(2) with one fold's folder in use by another run: that job prints one ``error: [fold N]``
    line (no multiprocessing traceback), the other fold trains, and the command says a job failed."""
    import subprocess
    import sys

    from us8k_lib.errors import US8KError

    out = tmp_path / "cv"
    code = ("import sys, time\nfrom us8k_lib.runs.lock import RunLock\nRunLock(sys.argv[1]).acquire()\n"
            "print('locked', flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(fold_dir(out, 2))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(US8KError, match=r"side-by-side fold job\(s\) failed: us8k-fold-job-1 \(exit code 1\)"):
            crossval(TrainConfig(**{**SMALL, "epochs": 1}), tiny_root, folds=[1, 2], out=out, cache_dir=cache_dir,
                     progress=False, verbose=False, runner=SideBySide(2))
    finally:
        holder.kill()
        holder.wait(timeout=30)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [
        f"error: [fold 2] {fold_dir(out, 2)}: in use by another run (process {holder.pid} on "
        f"{__import__('socket').gethostname()}); wait for it to finish, or choose another run folder (--out)"]
    assert (fold_dir(out, 1) / METRICS_NAME).exists()


def test_a_later_call_on_other_folds_keeps_the_earlier_folds_in_the_summary(
        tiny_root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(**{**SMALL, "epochs": 1})
    crossval(config, tiny_root, folds=[1, 2], out=tmp_path, cache_dir=cache_dir, progress=False, verbose=False)
    first = json.loads((tmp_path / SUMMARY_JSON).read_text())
    capsys.readouterr()
    result = crossval(config, tiny_root, folds=[3], out=tmp_path, cache_dir=cache_dir, progress=False)
    assert "The summary also counts test fold(s) [1, 2], finished before in" in capsys.readouterr().out
    summary = json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert summary["n_folds"] == 3 and sorted(r["test_fold"] for r in summary["folds"]) == [1, 2, 3]
    assert sorted(result.folds["test_fold"]) == [1, 2, 3]
    earlier = {r["test_fold"]: r["test_acc"] for r in first["folds"]}
    assert {r["test_fold"]: r["test_acc"] for r in summary["folds"] if r["test_fold"] < 3} == earlier


def test_one_training_run_and_a_cross_validation_never_share_a_folder(tiny_root: Path, cache_dir: Path,
                                                                      tmp_path: Path) -> None:
    from us8k_lib.errors import RunExistsError

    config = TrainConfig(**{**SMALL, "epochs": 1})
    fit(config, tiny_root, tmp_path / "run", cache_dir=cache_dir, progress=False, verbose=False)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(RunExistsError, match=r"run: holds the files of one training run \(.*checkpoint\.pt.*\), "
                                             r"not a cross-validation; it was left as it is"):
        crossval(config, tiny_root, folds=[1], out=tmp_path / "run", cache_dir=cache_dir, progress=False,
                 verbose=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    crossval(config, tiny_root, folds=[1], out=tmp_path / "cv", cache_dir=cache_dir, progress=False, verbose=False)
    with pytest.raises(RunExistsError, match=r"cv: holds a cross-validation \(fold01, summary\.json.*\), "
                                             r"not one training run"):
        fit(config, tiny_root, tmp_path / "cv", cache_dir=cache_dir, progress=False, verbose=False)
    assert not (tmp_path / "cv" / "checkpoint.pt").exists()


def _children(pid: int) -> list[int]:
    """The side-by-side fold jobs ``pid`` started (multiprocessing's spawned processes, not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # ended, not yet reaped
    except OSError:
        return True


def _free(folder: Path) -> bool:
    """True when a second run could take ``folder``'s lock (nobody holds it)."""
    from us8k_lib.errors import RunInUseError
    from us8k_lib.runs.lock import RunLock

    try:
        with RunLock(folder):
            return True
    except RunInUseError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the jobs through /proc (Linux)")
def test_killing_the_command_ends_its_side_by_side_jobs(tiny_root: Path, tmp_path: Path) -> None:
    """SIGKILL, which the command cannot catch: its jobs notice on their own and end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "cv"
    env = {**os.environ, "US8K_DATA_DIR": str(tmp_path / "data")}
    command = subprocess.Popen([sys.executable, "-m", "us8k_lib", "crossval", "--root", str(tiny_root), "--folds",
                                "1-2", "--jobs", "2", "--epochs", "2000", "--width", "8", "--device", "cpu",
                                "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not (len(jobs := _children(command.pid)) == 2
                   and all((fold_dir(out, f) / "checkpoint.pt").exists() for f in (1, 2))):
            assert command.poll() is None and time.monotonic() < deadline, "the jobs did not start training"
            time.sleep(0.2)
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not (all(_ended(pid) for pid in jobs) and all(_free(fold_dir(out, f)) for f in (1, 2))):
            assert time.monotonic() < deadline, "fold jobs still running after their command was killed"
            time.sleep(0.2)
    finally:
        command.kill()
        command.wait(timeout=30)
        for pid in jobs:  # whatever happened above, leave nothing running
            if not _ended(pid):
                os.kill(pid, signal.SIGKILL)
