"""benchmarks/bench_gpu.py runs on a CPU in --quick mode and reports every model of the family."""

from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from us8k_lib.metadata import load_metadata
from us8k_lib.model import MODEL_NAMES, build_model, count_parameters

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    # One torch thread: on a busy 2-core machine two threads wait on each other (10x slower).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--epochs", "7",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_quick_run_reports_every_model_with_positive_rates(quick_run: tuple[str, dict]) -> None:
    stdout, report = quick_run
    results = report["results"]
    assert [r["model"] for r in results] == list(MODEL_NAMES)
    for r in results:
        rates = [r[f"{kind}_{precision}"] for kind in ("train", "compute", "eval") for precision in ("fp32", "bf16")]
        assert all(math.isfinite(v) and v > 0 for v in rates), r
        assert r["parameters"] == count_parameters(build_model(r["model"], width=r["width"]))
        assert r["precision"] == report["train_precision"]
        assert r["epoch_s"] > 0 and r["crossval_s"] > r["epoch_s"]
    assert report["device"] == "cpu" and report["epochs"] == 7
    assert math.isfinite(report["loader_clips_per_s"]) and report["loader_clips_per_s"] > 0
    lines = stdout.splitlines()
    assert any(line.startswith("torch ") and "torchaudio" in line for line in lines)
    for r in results:  # one table row per model, starting with the paper's name
        assert any(line.split()[:1] == [r["title"]] for line in lines), r["title"]
    last = lines[-1]
    assert last.startswith("bf16/fp32 training speed-up on ")
    for r in results:
        assert f"{r['title']} {r['train_bf16'] / r['train_fp32']:.2f}x" in last
    alone = last.split("(model alone: ")[1]
    assert alone.rstrip(")").split(", ") == [f"{r['compute_bf16'] / r['compute_fp32']:.2f}x" for r in results]


def test_epoch_and_crossval_costs_follow_the_measured_rates(quick_run: tuple[str, dict]) -> None:
    _, report = quick_run
    sizes = load_metadata()["fold"].value_counts().to_dict()
    assert {int(k): v for k, v in report["fold_sizes"].items()} == sizes
    total = sum(sizes.values())
    for r in report["results"]:
        train, ev = r[f"train_{r['precision']}"], r[f"eval_{r['precision']}"]
        # train's default: folds 1-9 trained, fold 10 evaluated.
        assert r["epoch_s"] == pytest.approx((total - sizes[10]) / train + sizes[10] / ev)
        # crossval's default: each fold tested once, the previous fold (cyclically) validating.
        per_epoch = sum((total - sizes[t] - sizes[t - 1 if t > 1 else 10]) / train
                        + (sizes[t] + sizes[t - 1 if t > 1 else 10]) / ev for t in range(1, 11))
        assert r["crossval_s"] == pytest.approx(7 * per_epoch)


def test_bad_arguments_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    main = runpy.run_path(str(SCRIPT))["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--models", "m5,m7"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'm7'" in err and "m34res" in err
    with pytest.raises(SystemExit):
        main(["--quick", "--batch", "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_the_protocol_runs_the_real_crossval_command_end_to_end(tmp_path: Path) -> None:
    """--protocol --quick: the same path as on a GPU (dataset, cache, the crossval command), on a CPU."""
    out = tmp_path / "protocol.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--protocol", "--quick", "--device", "cpu", "--models", "m5",
                           "--protocol-dir", str(tmp_path / "work"), "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())["protocol"]
    assert result["model"] == "m5" and result["folds"] == 2 and result["epochs"] == 1
    # 10 clips per fold: each of the two test folds trains on 8 folds
    assert result["clip_steps"] == 2 * 8 * 10
    assert result["clips_per_s"] == pytest.approx(result["clip_steps"] / result["seconds"])
    assert result["last_line"].startswith("cross-validation accuracy: ") and "(2 folds, model M5" in result["last_line"]
    summary = json.loads((tmp_path / "work" / "runs" / "m5" / "summary.json").read_text())
    assert summary["dataset"]["n_clips"] == 100 and summary["config"]["width"] == 8
    lines = done.stdout.splitlines()
    assert any(line.startswith("protocol dataset: 100 clips in 10 folds") for line in lines)
    assert lines[-1].startswith("protocol: M5 ")


def test_training_flops_of_m5_are_the_issues_figure() -> None:
    """About 1.7 GFLOP per clip for a training step of M5 (forward and backward)."""
    protocol = runpy.run_path(str(ROOT / "benchmarks" / "protocol.py"))
    assert protocol["training_flops"]("m5") == pytest.approx(1.66e9, rel=0.01)
