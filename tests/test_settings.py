"""The one table of sizes: which set the notebooks and the commands use on which dataset, what each
notebook changes in it, and the checks that run only where calibrated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from us8k_lib import settings as notebook_settings
from us8k_lib.datasets.mini import MARKER_NAME
from us8k_lib.recipe import TrainConfig


@pytest.fixture(scope="module")
def unmarked_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset's metadata and folders without its marker: a dataset in UrbanSound8K's layout."""
    root = tmp_path_factory.mktemp("unmarked-settings") / "UrbanSound8K"
    shutil.copytree(tiny_root / "metadata", root / "metadata")
    return root


def test_auto_is_small_on_the_generated_dataset_even_with_a_gpu(mini_root):
    use = notebook_settings.choose("auto", mini_root, gpu=True)
    assert (use.name, use.generated, use.calibrated) == ("small", True, True)
    assert use.sizes == {"epochs": 8, "batch_size": 16, "lr": 5e-3}  # the small preset, the command line's too


def test_the_checks_are_calibrated_on_the_default_mini_dataset_only(tiny_root, other_tiny_root):
    # a tiny dataset (or another seed) is generated too, but its folds of 10-20 clips score otherwise
    for root in (tiny_root, other_tiny_root):
        use = notebook_settings.choose("small", root, gpu=False)
        assert use.generated and not use.default_mini and not use.calibrated
        assert use.check(False, "boom", "that it holds").startswith("not checked")


def test_auto_is_the_full_recipe_on_other_data_with_a_gpu_and_small_without(unmarked_root):
    gpu = notebook_settings.choose("auto", unmarked_root, gpu=True, notebook=6)
    defaults = TrainConfig()
    assert gpu.name == "full" and not gpu.generated
    assert gpu.sizes == {"epochs": defaults.epochs, "batch_size": defaults.batch_size, "lr": defaults.lr,
                         "width": None, "folds": None}  # the recipe itself, at the paper's width, every fold
    cpu = notebook_settings.choose("auto", unmarked_root, gpu=False)
    assert cpu.name == "small" and "no GPU" in cpu.why and "'full'" in cpu.why
    command_line = notebook_settings.choose("auto", unmarked_root)  # gpu=None: the device does not decide
    assert command_line.name == "full" and command_line.sizes == {"epochs": 30, "batch_size": 128, "lr": 1e-3}


def test_the_bundled_sample_is_small_but_not_calibrated(real_sample):
    use = notebook_settings.choose("auto", real_sample, gpu=True)
    assert use.name == "small" and not use.calibrated


@pytest.mark.parametrize("asked", ["small", "full", "quick", " Quick "])
def test_an_explicit_choice_wins(asked, unmarked_root):
    use = notebook_settings.choose(asked, unmarked_root, gpu=False)
    assert use.name == asked.strip().lower() and "asked for" in use.why


def test_quick_is_one_epoch_of_the_small_set(tiny_root):
    use = notebook_settings.choose("quick", tiny_root, gpu=False, notebook=7)
    small = notebook_settings.choose("small", tiny_root, gpu=False, notebook=7)
    assert use.sizes["epochs"] == 1 and use.sizes["batch_size"] == small.sizes["batch_size"] == 16
    assert use.sizes["folds"] == [1, 2] and use.sizes["compare"] == small.sizes["compare"]
    assert not use.calibrated  # thresholds were set with the small settings, not after one epoch


def test_notebooks_6_to_8_train_one_small_m5_baseline() -> None:
    """The same small M5 (epochs, width, folds, batch, learning rate) in notebooks 6, 7 and 8, so a
    learner meets one M5 number across them."""
    sizes = [notebook_settings.sizes_for("small", n) for n in (6, 7, 8)]
    widths = [sizes[0]["width"], sizes[1]["width"], sizes[2]["width"]["m5"]]
    assert len({(s["epochs"], s["batch_size"], s["lr"], tuple(s["folds"])) for s in sizes}) == 1
    assert len(set(widths)) == 1


def test_a_misspelt_choice_names_the_variable_and_the_choices(tiny_root):
    with pytest.raises(ValueError, match=r"US8K_NOTEBOOK_SETTINGS.*'fast'.*auto, small, full, quick"):
        notebook_settings.choose("fast", tiny_root, gpu=False)


def test_check_asserts_only_where_calibrated(mini_root, unmarked_root):
    calibrated = notebook_settings.choose("small", mini_root, gpu=False)
    assert calibrated.check(True, "boom", "that it holds").startswith("checked that it holds")
    with pytest.raises(AssertionError, match="boom"):
        calibrated.check(False, "boom", "that it holds")
    # a raise, not an assert statement: the check holds under `python -O` too
    flag = subprocess.run([sys.executable, "-O", "-c", (
        "import sys; from us8k_lib import settings as n\n"
        f"use = n.choose('small', {str(mini_root)!r}, gpu=False)\n"
        "try:\n    use.check(False, 'boom', 'x')\nexcept AssertionError:\n    sys.exit(3)")], capture_output=True)
    assert flag.returncode == 3, flag.stderr.decode()
    elsewhere = notebook_settings.choose("small", unmarked_root, gpu=False)
    line = elsewhere.check(False, "boom", "that it holds")
    assert line.startswith("not checked that it holds") and "generated mini dataset" in line


def test_only_the_full_settings_show_progress(tiny_root, unmarked_root):
    assert notebook_settings.choose("auto", unmarked_root, gpu=True).shows_progress
    assert not notebook_settings.choose("auto", tiny_root, gpu=True).shows_progress
    assert not notebook_settings.choose("quick", unmarked_root, gpu=True).shows_progress


def test_report_says_the_set_the_sizes_the_cost_and_how_to_change_it(tiny_root):
    use = notebook_settings.choose("auto", tiny_root, gpu=False, notebook=6)
    text = use.report("a few seconds")
    assert text.startswith("Settings: small. Why: generated mini dataset")
    assert "EPOCHS = 3, BATCH_SIZE = 16, LR = 0.005, WIDTH = 16, FOLDS = [1, 2, 3]" in text
    assert "Cost: a few seconds" in text
    assert notebook_settings.ENV in text and "'quick'" in text and "Accuracy checks" in text
    assert "GPU" not in text.split("Accuracy checks")[1]  # on this machine: no advice on switching a GPU on


def test_training_cost_counts_the_clips_each_fold_trains_on(tiny_root):
    # the tiny dataset: 10 clips in each of folds 1-9, 20 in fold 10
    one = notebook_settings.training_cost(tiny_root, epochs=1, test_folds=[10], validation=False)
    assert one.startswith("90 training clip-passes (1 run(s) x 1 test fold(s) x 1 epoch(s))")
    # test fold 1 is validated on fold 10, test fold 2 on fold 1: 80 + 90 clips, times 3 epochs and 2 models
    two = notebook_settings.training_cost(tiny_root, epochs=3, test_folds=[1, 2], runs=2, full_width=False)
    assert two.startswith(f"{(80 + 90) * 3 * 2:,} training clip-passes") and "narrow models" in two
    assert "NVIDIA H200" in one and "a smaller GPU takes several times longer" in one  # the rate it assumes
    assert "computed from M5's measured full-width rates" in one  # an estimate, not a timing
    every = notebook_settings.training_cost(tiny_root, epochs=1, test_folds=None)
    assert every.startswith(f"{sum(110 - n - v for n, v in zip([10] * 9 + [20], [20] + [10] * 9)):,} training")


def test_the_marker_is_what_makes_a_dataset_generated(tiny_root, unmarked_root):
    assert (tiny_root / MARKER_NAME).is_file() and not (unmarked_root / MARKER_NAME).exists()
