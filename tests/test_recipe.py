"""The recipe: defaults for the real data, the small preset on small datasets, where each value came
from, the optimizer's parameter groups, and a command line that builds without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from us8k_lib.cli.parser import build_parser
from us8k_lib.cli.training_flags import config_from_args
from us8k_lib.model import build_model
from us8k_lib.recipe import TrainConfig, recipe_line, sources_of
from us8k_lib.settings import PRESETS, choose
from us8k_lib.train import make_optimizer


def test_help_imports_no_torch() -> None:
    code = ("import sys\nfrom us8k_lib.cli.parser import build_parser\np = build_parser()\n"
            "for c in ('train', 'crossval'):\n    p.parse_args([c, '--epochs', '1'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'pandas')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_defaults_are_the_real_data_recipe_and_small_is_a_preset(tiny_root: Path, real_sample: Path,
                                                                       tmp_path: Path) -> None:
    d = TrainConfig()
    assert (d.epochs, d.batch_size, d.optimizer, d.scheduler, d.amp) == (30, 128, "adamw", "onecycle", False)
    assert PRESETS["full"] == {}
    assert choose("auto", tiny_root).name == "small" and choose("auto", real_sample).name == "small"
    real = tmp_path / "UrbanSound8K"
    (real / "metadata").mkdir(parents=True)  # any folder that is not generated: the real recipe
    assert choose("auto", real).name == "full"
    parser = build_parser()
    config, sources, note = config_from_args(parser.parse_args(["train", "--epochs", "3"]), tiny_root)
    assert (config.epochs, config.batch_size, config.lr) == (3, PRESETS["small"]["batch_size"], PRESETS["small"]["lr"])
    assert sources == {"epochs": "flag", "batch_size": "preset small", "lr": "preset small"}
    assert note.startswith("preset small: ")
    quick, _, _ = config_from_args(parser.parse_args(["train", "--preset", "quick"]), tiny_root)
    assert quick.epochs == 1
    config, sources, _ = config_from_args(parser.parse_args(["train", "--preset", "full"]), tiny_root)
    assert config == TrainConfig() and sources == {}
    base = TrainConfig(epochs=5, lr=1e-3)
    config, sources, note = config_from_args(parser.parse_args(["train", "--workers", "2"]), tiny_root, base=base)
    assert (config.epochs, config.lr, config.workers) == (5, 1e-3, 2) and sources["epochs"] == "checkpoint"
    assert sources["workers"] == "flag" and note.startswith("resumed")
    config, _, _ = config_from_args(parser.parse_args(["train", "--amp", "--data", "device", "--compile"]), tiny_root)
    assert (config.amp, config.data, config.compile) == (True, "device", True)
    assert config_from_args(parser.parse_args(["train", "--no-amp"]), tiny_root)[0].amp is False


def test_the_recipe_line_names_every_value_and_its_source() -> None:
    config = TrainConfig(epochs=8, batch_size=16, lr=5e-3, width=8)
    line = recipe_line(config, {"epochs": "preset small", "batch_size": "preset small", "lr": "flag"})
    assert line == ("Recipe: M5 (default) at width 8 (set), 8 epochs (preset small), batch 16 (preset small), "
                    "AdamW (default), lr 0.005 (flag), weight decay 0.01 (default), one-cycle schedule (default), "
                    "fp32 (default), seed 0 (default)")
    assert "bf16 autocast (set)" in recipe_line(TrainConfig(amp=True), amp=True)
    assert "fp32 (no native bf16 here) (set)" in recipe_line(TrainConfig(amp=True), amp=False)
    step = recipe_line(TrainConfig(scheduler="step", optimizer="adam"))
    assert "Adam with L2 (set)" in step and "step schedule (x0.1 every 20 epochs) (set, default)" in step
    assert sources_of(TrainConfig())["lr"] == "default"


def test_adamw_decays_weights_only_and_adam_decays_everything() -> None:
    model = build_model("m5", width=8)
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.05)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decayed["params"]} == {n for n, p in model.named_parameters()
                                                         if n.endswith("weight") and not n.startswith("bn")}
    assert all(n.endswith("bias") or n.startswith("bn") for n in (names[id(p)] for p in plain["params"]))
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    tutorial = make_optimizer(model, lr=1e-3, weight_decay=1e-4, kind="adam")
    assert type(tutorial) is torch.optim.Adam and tutorial.param_groups[0]["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
