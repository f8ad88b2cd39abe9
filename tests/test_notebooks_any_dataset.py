"""The training notebooks run to their end on a dataset that is not the generated one.

``pytest --nbval`` re-runs every notebook on the generated mini dataset, where the accuracy checks
were calibrated. A learner's real UrbanSound8K is another dataset: here notebooks 5-8 are executed
from top to bottom on the tiny dataset copied *without* its ``MINI_DATASET.txt`` marker (so
nothing treats it as generated), with ``US8K_ROOT`` pointing at it. Each notebook's settings
cell reads ``US8K_NOTEBOOK_SETTINGS``; these runs set it to ``quick`` (one epoch, two folds) to
keep them to seconds each. ``US8K_NOTEBOOK_TEST_SETTINGS=small`` (or ``auto``, ``full``) runs them
with another set instead. The copies run in a temporary folder, so their run folders and caches
never touch ``notebooks/runs`` or ``data/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from us8k_lib.datasets.mini import MARKER_NAME
from us8k_lib.paths import is_mini

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
TRAINING_NOTEBOOKS = ["05-train-and-test", "06-evaluate-like-a-paper", "07-augment", "08-raw-or-spectrogram"]
#: The set of sizes these runs use (see the module docstring).
SETTINGS = os.environ.get("US8K_NOTEBOOK_TEST_SETTINGS", "quick")


@pytest.fixture(scope="module")
def unmarked_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset copied without its marker: in the layout of UrbanSound8K, not known as generated."""
    root = tmp_path_factory.mktemp("unmarked") / "UrbanSound8K"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns(MARKER_NAME))
    assert not is_mini(root)
    return root


def _outputs_text(nb: nbformat.NotebookNode) -> str:
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


@pytest.mark.parametrize("stem", TRAINING_NOTEBOOKS)
def test_notebook_runs_to_the_end_on_a_dataset_that_is_not_generated(stem, unmarked_root, tmp_path, monkeypatch):
    monkeypatch.setenv("US8K_ROOT", str(unmarked_root))
    # one cache for the four notebooks, not in the checkout
    monkeypatch.setenv("US8K_DATA_DIR", str(unmarked_root.parent / "data"))
    monkeypatch.setenv("US8K_NOTEBOOK_SETTINGS", SETTINGS)
    nb = nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)
    if stem == "05-train-and-test":  # what its training loop produced, to compare with the command line's
        nb.cells.append(nbformat.v4.new_code_cell(
            'import json\nprint(json.dumps({"history": history, "sizes": use.sizes}))'))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    text = _outputs_text(nb)
    assert f"Settings: {SETTINGS}. Why: " in text, "the settings cell did not say which set it used"
    assert "Cost: " in text and "US8K_NOTEBOOK_SETTINGS" in text, \
        "the settings cell did not say its cost and how to change it"
    # the checks calibrated on the generated dataset said that they did not run here
    assert "not checked" in text or stem == "06-evaluate-like-a-paper", \
        "a generated-only check did not say it was skipped"
    # the run folders of 6-8 are relative to where they run, and named after the dataset and the settings
    kept = {"06-evaluate-like-a-paper": f"06-crossval-m5-UrbanSound8K-{SETTINGS}/fold01",
            "07-augment": f"07-augment-UrbanSound8K-{SETTINGS}/none/fold01",
            "08-raw-or-spectrogram": f"08-front-ends-UrbanSound8K-{SETTINGS}/logmel/fold01"}
    if stem in kept:
        assert (tmp_path / "runs" / kept[stem] / "metrics.json").is_file(), sorted((tmp_path / "runs").rglob("*"))
    if stem == "05-train-and-test":
        _same_as_the_train_command(nb, unmarked_root, tmp_path / "command-line-run")


def _same_as_the_train_command(nb: nbformat.NotebookNode, root: Path, out: Path) -> None:
    """Notebook 5's own loop and ``python -m us8k_lib train`` with the same sizes give the same
    history, bit for bit (same machine, same threads): one training step and one epoch function."""
    from us8k_lib.cli import main

    ran = json.loads(nb.cells[-1]["outputs"][0]["text"])
    sizes = ran["sizes"]
    args = ["train", "--root", str(root), "--test-fold", "10", "--epochs", str(sizes["epochs"]),
            "--batch-size", str(sizes["batch_size"]), "--lr", repr(sizes["lr"]), "--seed", "0", "--out", str(out)]
    assert main(args + (["--width", str(sizes["width"])] if sizes["width"] else [])) == 0
    command = json.loads((out / "history.json").read_text())
    keys = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert [{k: row[k] for k in keys} for row in ran["history"]] == [{k: row[k] for k in keys} for row in command]
