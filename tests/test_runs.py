"""Run folders on two different datasets: a run is never resumed, skipped or reported as another
dataset's; best.pt is the run's own and says which epoch it holds; predict takes a run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from us8k_lib import cli
from us8k_lib.crossval import SUMMARY_JSON, crossval
from us8k_lib.engine.fit import fit
from us8k_lib.errors import CheckpointError, RunMismatchError
from us8k_lib.predict import Classifier
from us8k_lib.recipe import TrainConfig
from us8k_lib.runs.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from us8k_lib.runs.folder import RESUMABLE_CHANGES, config_differences, default_run_dir, run_status
from us8k_lib.runs.identity import dataset_identity
from us8k_lib.runs.results import METRICS_NAME, load_best, weights_file

pytestmark = pytest.mark.slow

# Small for testing: a narrow M5 trains an epoch of tiny in about a second.
SMALL = dict(epochs=2, batch_size=16, lr=3e-3, width=8, seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs-cache")


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_two_datasets_differ_and_their_runs_get_their_own_folders(tiny_root: Path, other_tiny_root: Path) -> None:
    from us8k_lib.engine.cache import cache_key
    from us8k_lib.metadata import load_metadata

    a = dataset_identity(tiny_root, load_metadata(tiny_root), cache_key(tiny_root, load_metadata(tiny_root)))
    b = dataset_identity(other_tiny_root, load_metadata(other_tiny_root),
                         cache_key(other_tiny_root, load_metadata(other_tiny_root)))
    assert (a.name, b.name) == ("mini-tiny", "mini-tiny-seed1")
    assert a.differences(b) == ["folder", "metadata rows", "clip files or formatting"]
    assert a.differences(a) == []
    assert default_run_dir("crossval", "m5", tiny_root) == Path("runs/crossval-m5-mini-tiny")
    assert default_run_dir("crossval", "m5", other_tiny_root) == Path("runs/crossval-m5-mini-tiny-seed1")
    assert default_run_dir("train", "m18", tiny_root, 10) == Path("runs/m18-mini-tiny-fold10")


def test_crossval_into_another_datasets_folder_stops_and_names_both(
        tiny_root: Path, other_tiny_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    """The issue's repro: A then B into one --out. B must not get A's numbers back."""
    config = TrainConfig(**SMALL)
    out = tmp_path / "cv"
    a = crossval(config, tiny_root, folds=[1], out=out, cache_dir=cache_dir, progress=False, verbose=False)
    before = (out / "fold01" / METRICS_NAME).read_text()
    with pytest.raises(RunMismatchError) as err:
        crossval(config, other_tiny_root, folds=[1], out=out, cache_dir=cache_dir, progress=False, verbose=False)
    message = str(err.value)
    assert str(out / "fold01") in message
    assert str(tiny_root) in message and str(other_tiny_root) in message
    assert "mini-tiny at" in message and "mini-tiny-seed1 at" in message
    assert (out / "fold01" / METRICS_NAME).read_text() == before  # nothing overwritten
    assert json.loads((out / SUMMARY_JSON).read_text())["dataset"]["root"] == str(tiny_root)
    # On its own folder, B trains and reports its own numbers; A's rerun is skipped as finished.
    b = crossval(config, other_tiny_root, folds=[1], out=tmp_path / "cv-b", cache_dir=cache_dir, progress=False,
                 verbose=False)
    assert b.dataset.root == str(other_tiny_root) and a.dataset.root == str(tiny_root)
    metrics_b = json.loads((tmp_path / "cv-b" / "fold01" / METRICS_NAME).read_text())
    assert metrics_b["dataset"] == b.dataset.to_dict() and metrics_b["dataset"] != a.dataset.to_dict()
    assert run_status(out / "fold01", crossval_fold_config(config, 1), a.dataset) == "finished"


def crossval_fold_config(config: TrainConfig, test_fold: int) -> dict:
    import dataclasses

    from us8k_lib.crossval import fold_roles

    val, train = fold_roles(range(1, 11), test_fold)
    return dataclasses.replace(config, test_fold=test_fold, val_fold=val, train_folds=tuple(train)).to_dict()


def test_an_unfinished_fold_of_another_dataset_is_not_resumed(tiny_root: Path, other_tiny_root: Path,
                                                              cache_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(**SMALL)

    def stop(row: dict) -> None:
        raise KeyboardInterrupt

    run = tmp_path / "cv" / "fold01"
    fold = TrainConfig.from_dict(crossval_fold_config(config, 1))
    with pytest.raises(KeyboardInterrupt):
        fit(fold, tiny_root, run, cache_dir=cache_dir, progress=False, verbose=False, callback=stop)
    assert load_checkpoint(run / CHECKPOINT_NAME)["epoch"] == 1
    with pytest.raises(RunMismatchError, match="holds a run on another dataset"):
        crossval(config, other_tiny_root, folds=[1], out=tmp_path / "cv", cache_dir=cache_dir, progress=False,
                 verbose=False)
    # the same dataset resumes it
    result = crossval(config, tiny_root, folds=[1], out=tmp_path / "cv", cache_dir=cache_dir, progress=False,
                      verbose=False)
    assert load_checkpoint(run / CHECKPOINT_NAME)["epoch"] == 2 and len(result.folds) == 1


def test_train_resume_on_another_dataset_is_refused(tiny_root: Path, other_tiny_root: Path, cache_dir: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(**SMALL)

    def stop(row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, tmp_path, cache_dir=cache_dir, progress=False, verbose=False, callback=stop)
    with pytest.raises(RunMismatchError) as err:
        fit(None, other_tiny_root, tmp_path, resume=True, cache_dir=cache_dir, progress=False, verbose=False)
    assert str(tiny_root) in str(err.value) and str(other_tiny_root) in str(err.value)
    # From the command line too: exit 1, both datasets named, the checkpoint untouched.
    monkeypatch.setenv("US8K_DATA_DIR", str(cache_dir.parent / "data-for-cli"))
    code = cli.main(["train", "--root", str(other_tiny_root), "--out", str(tmp_path), "--resume"])
    assert code == 1
    printed = capsys.readouterr().err
    assert "holds a run on another dataset" in printed and str(tiny_root) in printed
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1


def test_only_settings_that_change_no_number_may_differ_on_resume() -> None:
    saved = TrainConfig(**SMALL).to_dict()
    assert set(RESUMABLE_CHANGES) == {"workers", "data"}
    assert config_differences(saved, {**saved, "workers": 2, "data": "device"}) == []
    assert config_differences(saved, {**saved, "lr": 1.0}) == ["lr=1.0 (saved: 0.003)"]


def test_best_pt_holds_the_selected_epoch_and_a_new_run_removes_an_old_one(
        tiny_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(val_fold=9, **{**SMALL, "epochs": 3})
    result = fit(config, tiny_root, tmp_path, cache_dir=cache_dir, progress=False, verbose=False)
    best = load_checkpoint(tmp_path / BEST_NAME)
    history = result.history.to_dict("records")
    assert best["selected"] == {"epoch": result.selected_epoch,
                                "val_acc": history[result.selected_epoch - 1]["val_acc"], "val_fold": 9}
    assert best["epoch"] == result.selected_epoch and result.reported_weights == tmp_path / BEST_NAME
    assert load_best(tmp_path, history, result.dataset)["epoch"] == result.selected_epoch
    metrics = json.loads((tmp_path / METRICS_NAME).read_text())
    assert metrics["reported"] == {"weights": BEST_NAME, "epoch": result.selected_epoch}
    # A history that selects another epoch is not this best.pt's run.
    other = [dict(row, val_acc=(1.0 if row["epoch"] != result.selected_epoch else 0.0)) for row in history]
    with pytest.raises(CheckpointError, match="not this run's best.pt"):
        load_best(tmp_path, other, result.dataset)
    # A run without validation in the same folder, asked to overwrite, starts by removing the old best.pt.
    plain = fit(TrainConfig(**SMALL), tiny_root, tmp_path, overwrite=True, cache_dir=cache_dir, progress=False,
                verbose=False)
    assert not (tmp_path / BEST_NAME).exists() and plain.reported_weights == tmp_path / CHECKPOINT_NAME


def test_resume_repairs_a_best_pt_that_does_not_match_the_history(tiny_root: Path, cache_dir: Path,
                                                                  tmp_path: Path) -> None:
    config = TrainConfig(val_fold=9, **{**SMALL, "epochs": 3})
    whole = fit(config, tiny_root, tmp_path / "whole", cache_dir=cache_dir, progress=False, verbose=False)

    def stop(row: dict) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, cut, cache_dir=cache_dir, progress=False, verbose=False, callback=stop)
    # As if the process died between writing checkpoint.pt and best.pt: best.pt of another epoch.
    stale = load_checkpoint(cut / BEST_NAME)
    stale["selected"] = {**stale["selected"], "epoch": 99}
    save_checkpoint(cut / BEST_NAME, stale)
    resumed = fit(None, tiny_root, cut, resume=True, cache_dir=cache_dir, progress=False, verbose=False)
    assert resumed.selected_epoch == whole.selected_epoch
    assert load_checkpoint(cut / BEST_NAME)["selected"]["epoch"] == whole.selected_epoch
    assert _same_weights(load_checkpoint(cut / BEST_NAME)["model"],
                         load_checkpoint(tmp_path / "whole" / BEST_NAME)["model"])


def test_predict_takes_a_run_folder_and_says_which_weights(tiny_root: Path, cache_dir: Path, tmp_path: Path,
                                                           real_sample: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    fit(TrainConfig(val_fold=9, **SMALL), tiny_root, tmp_path / "val", cache_dir=cache_dir, progress=False,
        verbose=False)
    fit(TrainConfig(**SMALL), tiny_root, tmp_path / "plain", cache_dir=cache_dir, progress=False, verbose=False)
    assert weights_file(tmp_path / "val")[0] == tmp_path / "val" / BEST_NAME
    assert weights_file(tmp_path / "plain")[0] == tmp_path / "plain" / CHECKPOINT_NAME
    with pytest.raises(CheckpointError, match="not a run folder"):
        weights_file(tmp_path)
    clip = real_sample / "audio" / "fold1" / "157867-8-0-27.wav"
    assert cli.main(["predict", str(tmp_path / "val"), str(clip)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"weights: {tmp_path / 'val' / BEST_NAME}: the epoch validation selected")
    assert cli.main(["predict", str(tmp_path / "plain"), str(clip)]) == 0
    assert "checkpoint.pt: the last epoch" in capsys.readouterr().out.splitlines()[0]
    best = Classifier.from_checkpoint(tmp_path / "val")
    assert _same_weights(best.model.state_dict(), load_checkpoint(tmp_path / "val" / BEST_NAME)["model"])


def test_a_finished_fold_is_skipped_whatever_its_workers(tiny_root: Path, cache_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(**SMALL)
    crossval(config, tiny_root, folds=[2], out=tmp_path, cache_dir=cache_dir, progress=False, verbose=False)
    shutil.copy(tmp_path / "fold02" / METRICS_NAME, tmp_path / "before.json")
    crossval(TrainConfig(**SMALL, workers=2), tiny_root, folds=[2], out=tmp_path, cache_dir=cache_dir,
             progress=False)
    assert "already done" in capsys.readouterr().out
    assert (tmp_path / "fold02" / METRICS_NAME).read_text() == (tmp_path / "before.json").read_text()
