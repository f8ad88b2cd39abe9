"""Colab and Kaggle: platform detection, the install the first cell runs there (built, never run
here), the GPU advice, and a dataset attached to a Kaggle notebook in the flat layout, read-only."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from us8k_lib import cli, hosted, paths
from us8k_lib.datasets.layout import FLAT_METADATA, METADATA_RELPATH
from us8k_lib.datasets.validate import validate_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def on(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be on a platform: ``on("colab")``, ``on("kaggle")`` or ``on(None)`` (a learner's machine)."""
    def pretend(where: str | None) -> None:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
        monkeypatch.delitem(sys.modules, "kaggle_secrets", raising=False)
        monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
        if where == "colab":
            monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        elif where == "kaggle":
            monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")

    return pretend


@pytest.mark.parametrize("where", ["colab", "kaggle", None])
def test_platform_is_told_by_what_each_platform_sets(on, where) -> None:
    on(where)
    assert hosted.platform() == where


def test_setup_installs_nothing_on_a_learners_machine(on, capsys) -> None:
    on(None)
    calls = []
    hosted.setup(run=calls.append)
    assert calls == []
    out = capsys.readouterr().out
    assert out.startswith("Not on Colab or Kaggle: nothing to install") and out.count("\n") == 1


def test_the_install_is_the_packages_own_pins_with_the_lock_and_no_notebook_server() -> None:
    command = hosted.install_command()
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert command[command.index("-c") + 1] == hosted.constraints_url()
    assert hosted.constraints_url() == (f"https://raw.githubusercontent.com/{hosted.REPOSITORY}/{hosted.BRANCH}"
                                        "/constraints.txt")
    wanted = hosted.requirements()
    names = {r.split("=")[0].split(">")[0].split("<")[0].lower() for r in wanted}
    assert "torch==2.14.1" in wanted and "torchaudio==2.11.1" in wanted  # pyproject's exact pins
    assert {"numpy", "pandas", "soundfile", "ipywidgets", "matplotlib", "tqdm"} <= names
    assert "jupyterlab" not in names, "replacing the platform's Jupyter server would cut the session off"
    assert not names & {"pytest", "nbval", "ruff", "playwright"}, "extras are not for a hosted notebook"
    assert all(part in command for part in wanted)


@pytest.mark.parametrize("where", ["colab", "kaggle"])
def test_setup_on_a_platform_runs_the_install_once_and_reports_it(on, where, capsys) -> None:
    on(where)
    calls = []
    hosted.setup(run=calls.append, check_gpu=lambda: None)
    assert calls == [hosted.install_command()]
    out = capsys.readouterr().out
    assert out.startswith(f"On {where.title()}: installed the pinned dependencies in ")
    import torch

    assert f"torch {torch.__version__.split('+')[0]}" in out


def test_a_gpu_the_installed_torch_cannot_use_is_reported_not_hidden(on, monkeypatch, capsys) -> None:
    on("colab")
    hosted.setup(run=lambda command: None, check_gpu=lambda: "the driver is too old")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("On Colab: installed") and lines[1] == "Warning: the driver is too old."
    hosted.setup(run=lambda command: None, check_gpu=lambda: None)
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize(("nvidia_smi", "probe", "says"), [
    (None, "", None),  # no NVIDIA GPU: nothing to ask
    ("/usr/bin/nvidia-smi", "True 13.0", None),
    ("/usr/bin/nvidia-smi", "False 13.0", "built for CUDA 13.0"),
    ("/usr/bin/nvidia-smi", "", "built for CUDA unknown"),  # torch did not even import
])
def test_whether_torch_can_use_the_gpu_is_asked_in_a_fresh_process(nvidia_smi, probe, says, monkeypatch) -> None:
    asked = []

    def fake_run(command, **kwargs):
        asked.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=probe + "\n", stderr="")

    monkeypatch.setattr(hosted.shutil, "which", lambda name: nvidia_smi if name == "nvidia-smi" else None)
    monkeypatch.setattr(hosted.subprocess, "run", fake_run)
    problem = hosted.gpu_unreachable()
    assert (problem is None) == (says is None) and (says is None or says in problem)
    assert [c[0] for c in asked] == ([] if nvidia_smi is None else [sys.executable])


@pytest.mark.parametrize(("where", "menu"), [("colab", "Runtime > Restart session"),
                                             ("kaggle", "Run > Restart & clear cell outputs")])
def test_a_module_replaced_under_the_kernel_asks_for_a_restart(on, where, menu, monkeypatch) -> None:
    import tqdm

    on(where)
    monkeypatch.setattr(tqdm, "__version__", "0.0.1")  # what the kernel loaded before the install replaced it
    with pytest.raises(hosted.RestartNeeded, match=rf"replaced tqdm, already loaded.*{menu.replace('>', '.')}"):
        hosted.setup(run=lambda command: None, check_gpu=lambda: None)


def test_gpu_advice_only_where_a_gpu_can_be_switched_on_and_is_off(on) -> None:
    on(None)
    assert hosted.gpu_advice(False) is None
    on("colab")
    assert hosted.gpu_advice(True) is None and hosted.gpu_advice(None) is None
    assert "Runtime > Change runtime type" in hosted.gpu_advice(False)
    on("kaggle")
    advice = hosted.gpu_advice(False)
    assert "Accelerator > GPU" in advice and "docs/colab-kaggle.md" in advice


def test_the_first_cell_is_valid_python_once_ipython_reads_its_pip_line() -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    source = hosted.first_cell()
    assert f"git+https://github.com/{hosted.REPOSITORY}@{hosted.BRANCH}" in source
    compile(TransformerManager().transform_cell(source), "first cell", "exec")


def test_the_links_everywhere_follow_the_one_repository_setting() -> None:
    spec = importlib.util.spec_from_file_location("_tools_hosted_links", ROOT / "tools" / "hosted_links.py")
    links = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(links)
    assert links.main(["--check"]) == 0
    notebook = links.NOTEBOOKS[0]
    before, after = links._notebook(notebook)
    assert before == after
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hosted, "REPOSITORY", "someone/fork")
        before, after = links._notebook(notebook)
        assert before != after and "someone/fork" in after and hosted.REPOSITORY not in before
        assert links.main(["--check"]) == 1


# ---------------------------------------------------------------------------------------------
# A dataset attached to a Kaggle notebook: flat layout, read-only


def _flat_copy(root: Path, dest: Path) -> Path:
    """Copy dataset ``root`` into the flat layout Kaggle's UrbanSound8K uploads use."""
    dest.mkdir(parents=True)
    shutil.copy(root / METADATA_RELPATH, dest / FLAT_METADATA)
    for fold in sorted((root / "audio").glob("fold*")):
        shutil.copytree(fold, dest / fold.name)
    return dest


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_an_attached_dataset_is_found_in_either_layout(tmp_path: Path, real_sample: Path) -> None:
    assert hosted.attached_dataset(tmp_path / "absent") is None
    assert hosted.attached_dataset(tmp_path) is None
    flat = _flat_copy(real_sample, tmp_path / "input" / "urbansound8k")
    assert hosted.attached_dataset(tmp_path / "input") == flat
    official = tmp_path / "input2" / "us8k" / "UrbanSound8K"
    shutil.copytree(real_sample, official)
    assert hosted.attached_dataset(tmp_path / "input2") == official
    stray = tmp_path / "input3" / "notes"
    stray.mkdir(parents=True)
    (stray / FLAT_METADATA).write_text("not a dataset: no fold folders beside it\n")
    assert hosted.attached_dataset(tmp_path / "input3") is None


def test_a_flat_copy_of_real_clips_passes_the_checksum_check(tmp_path: Path, real_sample: Path) -> None:
    flat = _flat_copy(real_sample, tmp_path / "urbansound8k")
    report = validate_dataset(flat, checksums=True, progress=False)
    assert report.ok, report
    first = next(flat.glob("fold*/*.wav"))
    first.write_bytes(first.read_bytes()[:-2] + b"\x00\x01")  # same size, other audio
    report = validate_dataset(flat, checksums=True, progress=False)
    assert not report.ok and first.name in str(report)


def test_on_kaggle_the_attached_dataset_is_chosen_when_none_is_downloaded(tmp_path: Path, real_sample: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    flat = _flat_copy(real_sample, tmp_path / "input" / "urbansound8k")
    monkeypatch.setattr(hosted, "KAGGLE_INPUT", tmp_path / "input")
    monkeypatch.delenv("US8K_ROOT", raising=False)
    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "data"))
    found, why = paths.choose_root()
    assert found == flat and "attached to this Kaggle notebook" in why
    (tmp_path / "data" / "UrbanSound8K" / "metadata").mkdir(parents=True)
    shutil.copy(real_sample / METADATA_RELPATH, tmp_path / "data" / METADATA_RELPATH.parent.parent / "UrbanSound8K"
                / METADATA_RELPATH)
    assert paths.choose_root()[0] == (tmp_path / "data" / "UrbanSound8K").resolve()  # a download wins


def test_a_flat_read_only_dataset_validates_trains_and_cross_validates_without_a_write_inside(
        tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    flat = _flat_copy(tiny_root, tmp_path / "input" / "urbansound8k")
    before = _listing(flat)
    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    report = validate_dataset(flat, progress=False)
    assert report.ok, report
    small = ["--width", "8", "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    assert cli.main(["train", "--root", str(flat), "--out", "run", *small]) == 0
    assert cli.main(["crossval", "--root", str(flat), "--folds", "1-2", "--out", "cv", *small]) == 0
    assert _listing(flat) == before, "something was written inside the attached (read-only) dataset"
    assert any((tmp_path / "data" / "cache").iterdir()), "the cache belongs in the data folder"
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 1
    assert (tmp_path / "cv" / "summary.json").is_file()
    capsys.readouterr()
