"""Training, evaluation, checkpoints, resume, and the train/predict commands (on the tiny dataset)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from us8k_lib import cli
from us8k_lib.devices import choose_device, decide_amp
from us8k_lib.engine.batches import make_loader
from us8k_lib.engine.fit import fit
from us8k_lib.errors import CheckpointError
from us8k_lib.evaluate import evaluate
from us8k_lib.metadata import CLASSES
from us8k_lib.predict import predict_files
from us8k_lib.recipe import TrainConfig
from us8k_lib.runs.checkpoint import CHECKPOINT_NAME, load_checkpoint

pytestmark = pytest.mark.slow

LAST_LINE = re.compile(r"^test accuracy: (\d\.\d{3}) \(fold (\d+), (\d+) clips\)$")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preprocessing cache for this module's runs (kept out of the project's data folder)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Path:
    """Point the commands' data folder (and so their default cache) at a temporary folder."""
    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    # Reuse the module cache: same clips, same key, so the commands do not format them again.
    (tmp_path / "data" / "cache").symlink_to(cache_dir, target_is_directory=True)
    return tmp_path / "data"


# Small for testing: a narrow M5 (width=8 instead of 128) trains an epoch of tiny in seconds.
SMALL = dict(batch_size=16, lr=3e-3, width=8, seed=3)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_seconds(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="seconds")


# --------------------------------------------------------------------------------------------
# resume and checkpoints


class _Crash(Exception):
    pass


# The step schedule halves the rate right at the interruption; one-cycle changes it every batch.
@pytest.mark.parametrize("schedule", [dict(scheduler="step", step_size=2, gamma=0.5), dict(scheduler="onecycle")])
def test_interrupted_run_resumes_to_identical_weights_and_metrics(tiny_root: Path, cache_dir: Path,
                                                                   tmp_path: Path, schedule: dict) -> None:
    config = TrainConfig(epochs=3, **SMALL, **schedule)
    a = fit(config, tiny_root, tmp_path / "a", cache_dir=cache_dir, progress=False, verbose=False)
    if config.scheduler == "step":
        assert list(a.history["lr"]) == pytest.approx([3e-3, 3e-3, 1.5e-3])

    def crash_after_epoch_2(row: dict) -> None:
        if row["epoch"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        fit(config, tiny_root, tmp_path / "b", cache_dir=cache_dir, progress=False, verbose=False,
            callback=crash_after_epoch_2)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 2
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())) == 2

    b = fit(None, tiny_root, tmp_path / "b", resume=True, cache_dir=cache_dir, progress=False, verbose=False)
    assert b.config == config
    assert _same_weights(a.model, b.model)
    pd.testing.assert_frame_equal(_without_seconds(a.history), _without_seconds(b.history))
    assert a.evaluation.accuracy == b.evaluation.accuracy
    pd.testing.assert_frame_equal(a.evaluation.predictions, b.evaluation.predictions)
    ckpt_a = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    ckpt_b = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert ckpt_a["epoch"] == ckpt_b["epoch"] == 3
    assert all(torch.equal(ckpt_a["model"][k], ckpt_b["model"][k]) for k in ckpt_a["model"])
    metrics_a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    metrics_b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics_a["test"] == metrics_b["test"]

    # Resuming a different recipe is refused (it could not reproduce the run), naming the file.
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: cannot resume .*epochs=5"):
        fit(dataclasses.replace(config, epochs=5), tiny_root, tmp_path / "b", resume=True,
            cache_dir=cache_dir, progress=False, verbose=False)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tiny_root: Path, cache_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save
    calls = []

    def save_then_die(obj, f, *args, **kwargs):  # torch.save's signature
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half a checkpoint")
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_die)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        fit(TrainConfig(epochs=2, **SMALL), tiny_root, run, cache_dir=cache_dir, progress=False, verbose=False)
    monkeypatch.setattr(torch, "save", real_save)

    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 1
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "history.json", "metrics.json",
                                                     "predictions.csv"]  # no temporary left behind
    # The surviving checkpoint is good enough to continue from.
    resumed = fit(None, tiny_root, run, resume=True, cache_dir=cache_dir, progress=False, verbose=False)
    assert list(resumed.history["epoch"]) == [1, 2]


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(junk))}: not a checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(other))}: not a checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------
# learning, and evaluation


def test_broken_labels_do_not_learn_what_real_labels_do(tiny_root: Path, cache_dir: Path) -> None:
    # Small for testing: 32-channel M5, 6 epochs on tiny (90 training clips, 20 test clips).
    config = TrainConfig(epochs=6, batch_size=16, lr=3e-3, scheduler="step", step_size=4, width=32, seed=0)
    real = fit(config, tiny_root, cache_dir=cache_dir, progress=False, verbose=False)
    broken = fit(dataclasses.replace(config, permute_labels=True), tiny_root, cache_dir=cache_dir,
                 progress=False, verbose=False)
    # Thresholds from measurements (20 test clips, chance 0.10): this config reached 0.70 with real
    # labels and 0.05 with permuted ones; seeds 1 and 2 gave 0.65 / 0.50 real, 0.10 / 0.05 permuted
    # (earlier mini generators and learning rates: real 0.45-0.60, permuted 0.00-0.25).
    # 0.4 is 4.5 binomial standard deviations above chance; 0.3 grants the broken run 3 of them.
    assert real.test_accuracy >= 0.4
    assert broken.test_accuracy <= 0.3
    assert real.history["train_loss"].iloc[-1] < real.history["train_loss"].iloc[0]


def test_evaluate_outputs_agree_with_each_other(tiny_root: Path, cache_dir: Path) -> None:
    from us8k_lib.dataset import US8KDataset

    ds = US8KDataset(tiny_root, [10], cache_dir=cache_dir, progress=False)
    torch.manual_seed(0)
    from us8k_lib.model import build_model

    model = build_model("m5", width=8)
    result = evaluate(model, ds, batch_size=7)
    n = len(ds)
    assert result.n_clips == n == int(result.confusion.sum())
    assert result.confusion.shape == (10, 10)
    pred = result.predictions
    assert list(pred["file"]) == list(ds.table["slice_file_name"])
    assert list(pred["fold"]) == [10] * n
    assert list(pred["true"]) == list(ds.table["class"])
    assert result.accuracy == pytest.approx(pred["correct"].mean())
    assert result.accuracy == pytest.approx(np.trace(result.confusion) / n)
    counts = pred["true"].value_counts().reindex(list(CLASSES), fill_value=0)
    assert list(result.per_class["clips"]) == list(counts)
    by_class = pred.groupby("true")["correct"].mean()
    for name, acc in result.per_class["accuracy"].items():
        assert acc == pytest.approx(by_class[name]) if name in by_class else np.isnan(acc)
    for i, name in enumerate(CLASSES):  # confusion row i = clips of class i, by predicted class
        row = pred[pred["true"] == name]["predicted"].value_counts()
        assert [result.confusion[i, j] for j in range(10)] == [int(row.get(c, 0)) for c in CLASSES]
    # Predictions and probabilities are the model's own argmax and softmax.
    x = torch.stack([ds[i][0] for i in range(n)])
    with torch.no_grad():
        p = model(x).softmax(dim=1)
    assert list(pred["predicted"]) == [CLASSES[i] for i in p.argmax(dim=1).tolist()]
    np.testing.assert_allclose(pred["probability"], p.max(dim=1).values.numpy(), rtol=1e-5)
    # A shuffled loader would mismatch the table: refused.
    with pytest.raises(ValueError, match="without shuffling"):
        evaluate(model, DataLoader(ds, batch_size=4, shuffle=True))


# --------------------------------------------------------------------------------------------
# device and mixed precision


def test_device_choice_and_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device() == torch.device("cuda")
    loader = make_loader(list(range(10)), 4, shuffle=False, device=choose_device())
    assert loader.pin_memory is True and loader.num_workers > 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert choose_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert choose_device() == torch.device("cpu")
    loader = make_loader(list(range(10)), 4, shuffle=False, device=torch.device("cpu"))
    assert loader.pin_memory is False and loader.num_workers == 0
    assert choose_device("cpu") == torch.device("cpu")


def test_amp_only_where_bf16_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": False})
    assert decide_amp(cpu) is False  # emulated bf16: slower than fp32
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": True})
    assert decide_amp(cpu) is True
    assert decide_amp(cpu, requested=False) is False  # --no-amp
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    assert decide_amp(cpu) is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert decide_amp(torch.device("cuda")) is True
    assert decide_amp(torch.device("cuda"), requested=False) is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert decide_amp(torch.device("cuda")) is False
    assert decide_amp(torch.device("mps")) is False


def test_config_rejects_leaky_or_invalid_settings() -> None:
    with pytest.raises(ValueError, match="also a training fold"):
        TrainConfig(test_fold=10, train_folds=(9, 10))
    with pytest.raises(ValueError, match="scheduler"):
        TrainConfig(scheduler="warp")
    c = TrainConfig(test_fold=3, train_folds=[2, 1])
    assert c.folds_to_train == (1, 2)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert TrainConfig(test_fold=4).folds_to_train == (1, 2, 3, 5, 6, 7, 8, 9, 10)


# --------------------------------------------------------------------------------------------
# commands


def _write_formats(folder: Path, x: np.ndarray, sr: int) -> list[Path]:
    """The same sound in several of UrbanSound8K's real WAV formats."""
    import torchaudio.functional as AF

    def at(rate: int) -> np.ndarray:
        return AF.resample(torch.from_numpy(x), sr, rate).numpy()

    files = {
        "pcm16_stereo_44k.wav": (np.stack([at(44100)] * 2, axis=1), 44100, "PCM_16"),
        "float32_stereo_48k.wav": (np.stack([at(48000)] * 2, axis=1), 48000, "FLOAT"),
        "pcm24_mono_96k.wav": (at(96000), 96000, "PCM_24"),
        "u8_mono_11k.wav": (at(11025), 11025, "PCM_U8"),
    }
    paths = []
    for name, (data, rate, subtype) in files.items():
        sf.write(folder / name, data, rate, subtype=subtype)
        paths.append(folder / name)
    return paths


def test_train_and_predict_commands(tiny_root: Path, data_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = cli.main(["train", "--root", str(tiny_root), "--epochs", "1", "--batch-size", "16", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    assert (match.group(2), match.group(3)) == ("10", "20")
    metrics = json.loads((out / "metrics.json").read_text())
    assert float(match.group(1)) == pytest.approx(metrics["test"]["accuracy"], abs=5e-4)
    assert metrics["config"]["epochs"] == 1 and metrics["config"]["batch_size"] == 16
    assert len(json.loads((out / "history.json").read_text())) == 1
    assert len(pd.read_csv(out / "predictions.csv")) == 20
    assert any(line.startswith("epoch 1/1") for line in lines)

    # Resuming a finished run with other settings is refused, with the checkpoint named.
    code = cli.main(["train", "--root", str(tiny_root), "--epochs", "2", "--out", str(out), "--resume"])
    assert code == 1
    assert str(out / CHECKPOINT_NAME) in capsys.readouterr().err

    # predict: a clip from the test fold in several formats, each gets a top-3.
    clip = next((tiny_root / "audio" / "fold10").glob("*.wav"))
    from us8k_lib.audio import format_clip

    wavs = _write_formats(tmp_path, format_clip(clip), 8000)
    assert cli.main(["predict", str(out / CHECKPOINT_NAME), *map(str, wavs)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed.pop(0) == f"weights: {out / CHECKPOINT_NAME}: the checkpoint given, epoch 1"
    assert len(printed) == 4 * len(wavs)
    for i, wav in enumerate(wavs):
        block = printed[4 * i: 4 * i + 4]
        assert block[0] == f"{wav}  (4.0 s, 1 window of 4 s)"
        ranks = [re.match(r"^  (\d)\. (\w+)\s+(\d\.\d{3})$", line) for line in block[1:]]
        assert all(ranks), block
        assert [int(m.group(1)) for m in ranks] == [1, 2, 3]
        assert all(m.group(2) in CLASSES for m in ranks)
        probs = [float(m.group(3)) for m in ranks]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.001
    table = predict_files(out / CHECKPOINT_NAME, wavs)
    assert list(table.columns) == ["file", "classified", "class_1", "probability_1", "class_2", "probability_2",
                                   "class_3", "probability_3"]
    # The formats decode to nearly the same clip, so the model ranks them alike.
    assert table["class_1"].nunique() == 1

    # A file that is not a checkpoint: exit 1, the error names it.
    assert cli.main(["predict", str(wavs[0]), str(wavs[0])]) == 1
    assert capsys.readouterr().err.startswith(f"error: {wavs[0]}: not a checkpoint")


def _damaged_copy(tiny_root: Path, parent: Path) -> tuple[Path, str]:
    """Tiny with one training clip replaced by random bytes (other clips symlinked, not copied)."""
    root = parent / "UrbanSound8K"
    shutil.copytree(tiny_root / "metadata", root / "metadata")
    bad = None
    for fold_dir in sorted((tiny_root / "audio").iterdir()):
        (root / "audio" / fold_dir.name).mkdir(parents=True)
        for wav in sorted(fold_dir.glob("*.wav")):
            if bad is None and fold_dir.name == "fold1":
                bad = wav.name
                (root / "audio" / fold_dir.name / wav.name).write_bytes(np.random.default_rng(0).bytes(5000))
            else:
                (root / "audio" / fold_dir.name / wav.name).symlink_to(wav)
    assert bad is not None
    return root, bad


def test_train_command_stops_on_a_bad_clip_or_skips_it_by_name(tiny_root: Path, data_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    root, bad = _damaged_copy(tiny_root, tmp_path / "damaged")
    args = ["train", "--root", str(root), "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert bad in err and "--skip-bad" in err
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()

    assert cli.main([*args, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"skipped bad clip {re.escape(bad)}: ", out)
    assert LAST_LINE.match(out.strip().splitlines()[-1])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [s["file"] for s in metrics["skipped"]] == [bad]


def test_fit_on_cpu_trains_with_freed_memory_kept(tiny_root: Path, cache_dir: Path, fake_libc) -> None:
    # fit must run its epochs inside allocator.reuse_freed_memory on a CPU (the speed-up P3 of
    # the benchmark measures) and restore glibc's defaults when it returns.
    from us8k_lib.engine import allocator

    depth_during_epochs = []
    fit(TrainConfig(epochs=1, **SMALL), tiny_root, cache_dir=cache_dir, progress=False, verbose=False,
        callback=lambda row: depth_during_epochs.append(allocator._depth))
    assert depth_during_epochs == [1]
    calls = fake_libc.calls
    assert calls[0] == ("mallopt", allocator._M_MMAP_MAX, 0) and calls[-1] == ("malloc_trim", 0)
    assert allocator._depth == 0


def test_fit_stays_a_loop_a_reader_follows() -> None:
    """fit reads top to bottom: at most 70 lines, docstring included (its parts live in engine.parts
    and runs)."""
    import inspect

    from us8k_lib.engine import fit

    assert len(inspect.getsource(fit.fit).splitlines()) <= 70


def test_a_run_is_continued_only_by_as_many_processes_as_trained_it(tiny_root: Path, cache_dir: Path,
                                                                     tmp_path: Path) -> None:
    """Each torchrun rank trains on its share of a batch: continued on another number of processes,
    a run would not end as the uninterrupted one, so it is refused (a finished one is still reported)."""
    from us8k_lib.errors import RunExistsError
    from us8k_lib.runs.checkpoint import save_checkpoint

    config = TrainConfig(epochs=2, **SMALL)
    with pytest.raises(_Crash):
        fit(config, tiny_root, tmp_path, cache_dir=cache_dir, progress=False, verbose=False,
            callback=lambda row: (_ for _ in ()).throw(_Crash()))
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["processes"] == 1  # recorded by every run
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {**ckpt, "processes": 2})  # as two torchrun ranks would
    with pytest.raises(RunExistsError, match=r"trained by 2 process\(es\) and this run has 1.*--nproc-per-node=2"):
        fit(None, tiny_root, tmp_path, resume=True, cache_dir=cache_dir, progress=False, verbose=False)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1  # nothing trained, nothing written

    save_checkpoint(tmp_path / CHECKPOINT_NAME, {**ckpt, "processes": 1})
    done = fit(None, tiny_root, tmp_path, resume=True, cache_dir=cache_dir, progress=False, verbose=False)
    assert len(done.history) == 2


def test_resume_keeps_the_checkpoints_test_fold_and_the_stop_hint_names_the_dataset(
        tiny_root: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--resume without --test-fold continues the run's own test fold (3 here, a crossval fold's 1
    with validation fold 10), and the command printed on Ctrl-C continues the run as it is."""
    import shlex

    import us8k_lib.cli.train as train_command
    from us8k_lib.crossval import crossval, fold_dir

    out = tmp_path / "run"
    args = ["train", "--root", str(tiny_root), "--epochs", "2", "--batch-size", "16", "--width", "8",
            "--test-fold", "3", "--out", str(out)]

    def stopped_after_epoch_1(*a: object, **kw: object) -> object:
        return fit(*a, **kw, callback=lambda row: (_ for _ in ()).throw(KeyboardInterrupt()))

    monkeypatch.setattr(train_command, "fit", stopped_after_epoch_1)
    assert cli.main(args) == 130
    hint = capsys.readouterr().err.splitlines()[-2]
    monkeypatch.setattr(train_command, "fit", fit)
    prefix = "Stopped; the last finished epoch is saved. Continue with: python -m us8k_lib "
    assert hint.startswith(prefix)
    again = shlex.split(hint.removeprefix(prefix))
    assert again == ["train", "--root", str(tiny_root), "--test-fold", "3", "--out", str(out), "--resume"]

    # The repro: resumed without --test-fold, it used to be refused as test_fold=10 (saved: 3).
    assert cli.main(["train", "--root", str(tiny_root), "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"Resuming {out} after epoch 1/2." in printed and LAST_LINE.match(printed.splitlines()[-1]).group(2) == "3"
    assert cli.main(again) == 0
    assert "holds this run, finished" in capsys.readouterr().out

    # A crossval fold folder (test fold 1, validation fold 10) continues as it is, rather than a traceback.
    cv = tmp_path / "cv"
    crossval(TrainConfig(epochs=1, **SMALL), tiny_root, folds=[1], out=cv, cache_dir=data_dir / "cache",
             progress=False, verbose=False)
    resume = ["train", "--root", str(tiny_root), "--out", str(fold_dir(cv, 1)), "--resume"]
    assert cli.main(resume) == 0
    captured = capsys.readouterr()
    assert "holds this run, finished" in captured.out
    assert captured.out.splitlines()[-1].startswith("test accuracy: ") and "(fold 1, " in captured.out.splitlines()[-1]
    # Flags that do not fit the checkpoint's folds: one line, the folds named, no --overwrite beside --resume.
    assert cli.main([*resume, "--val-fold", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --resume continues the checkpoint's settings (test fold 1, validation fold 10, ")
    assert "--val-fold 2 is also a training fold" in err and err.count("\n") == 1 and "Traceback" not in err
    assert cli.main([*resume, "--seed", "7"]) == 1
    err = capsys.readouterr().err
    assert "cannot resume with a different config: seed=7 (saved: 3)" in err
    assert "--overwrite instead of --resume" in err and "replace this one (--overwrite)" not in err


def test_a_diverging_run_stops_naming_the_epoch_before_saving_it(tiny_root: Path, data_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A learning rate and a weight decay far too high make the loss NaN: one error line naming the
    epoch and both settings (the weight decay too, being large enough to be the cause), and no
    checkpoint of NaN weights (nor a JSON error about NaN) left behind."""
    from us8k_lib.errors import US8KError

    wild = {**SMALL, "batch_size": 4, "lr": 10.0, "weight_decay": 10.0}  # the largest the settings allow
    with pytest.raises(US8KError, match=r"^epoch 1: the training loss is (nan|inf).*lower learning rate \(lr\) "
                                        r"than 10, e\.g\. 1, or a lower weight decay \(weight_decay\) than 10"):
        fit(TrainConfig(epochs=2, **wild, scheduler="constant"), tiny_root, tmp_path / "fit",
            cache_dir=data_dir / "cache", progress=False, verbose=False)
    assert not (tmp_path / "fit").exists()  # nothing written, so the folder the run made is gone again
    out = tmp_path / "run"
    code = cli.main(["train", "--root", str(tiny_root), "--epochs", "1", "--batch-size", "4", "--width", "8",
                     "--lr", "10", "--weight-decay", "10", "--scheduler", "constant", "--seed", "3", "--out", str(out)])
    err = capsys.readouterr().err.split("\r")[-1]  # after the progress bar, which clears its line
    assert code == 1 and err.startswith("error: epoch 1: the training loss is ") and err.count("\n") == 1, err
    assert "(--lr)" in err and "(--weight-decay)" in err
    assert not out.exists()
