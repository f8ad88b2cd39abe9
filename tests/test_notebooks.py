"""Static checks on the committed notebooks (``pytest --nbval`` re-runs them; this checks what a
reader sees without running anything): executed with outputs, no warnings, errors or machine paths
in any output, each opening with what you'll do/learn/need and which dataset, audio players set up
as WAV without autoplay or loop."""

from __future__ import annotations

import json
import re
from configparser import ConfigParser
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]-*.ipynb"))
EXPECTED = ["01-explore-metadata", "02-listen-to-clips", "03-format-the-data", "04-define-m5", "05-train-and-test",
            "06-evaluate-like-a-paper", "07-augment", "08-raw-or-spectrogram"]

#: Paths that would reveal the machine a notebook ran on (POSIX homes and temp dirs, Windows drives).
MACHINE_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|/Users/|/private/var/|/var/folders/|[A-Za-z]:\\\\)")
#: Text that means something went wrong while the notebook ran.
TROUBLE = re.compile(r"Warning|Traceback|Error\b|Exception\b")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def output_texts(output: dict) -> list[str]:
    """Every text a reader can see in one output (stream text, plain text, HTML, markdown)."""
    if output["output_type"] == "stream":
        return ["".join(output["text"])]
    if output["output_type"] == "error":
        return [output.get("ename", "") + ": " + output.get("evalue", ""), "Traceback"]
    texts = []
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime == "application/json":
            texts.append("".join(value) if isinstance(value, list) else str(value))
    return texts


def shows_source(output: dict) -> bool:
    """True for an output that displays the package's own code (``us8k_lib.source.show``)."""
    return "us8k_lib.source" in output.get("metadata", {})


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def widget_states(nb: dict) -> dict:
    return nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def test_the_eight_notebooks_are_there_in_order():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_code_cell_was_executed_in_order(path):
    cells = code_cells(load(path))
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, f"{path.name}: some cells were never run"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: not run top to bottom in one go"
    assert sum(len(c["outputs"]) for c in cells) >= 5, f"{path.name}: outputs were not saved"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_output_shows_an_error_a_warning_or_stderr(path):
    for i, cell in enumerate(code_cells(load(path))):
        for output in cell["outputs"]:
            if shows_source(output):  # the package's code, shown as text: its "raise ValueError" is no error
                continue
            assert output["output_type"] != "error", f"{path.name} code cell {i}: error output"
            assert output.get("name") != "stderr", f"{path.name} code cell {i}: stderr output {output.get('text')}"
            for text in output_texts(output):
                found = TROUBLE.search(text)
                assert not found, f"{path.name} code cell {i}: {found.group(0)!r} in output: {text[:300]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_output_or_widget_shows_a_machine_path(path):
    nb = load(path)
    for i, cell in enumerate(code_cells(nb)):
        for output in cell["outputs"]:
            for text in output_texts(output):
                found = MACHINE_PATH.search(text)
                assert not found, f"{path.name} code cell {i}: machine path {found.group(0)!r} in {text[:300]}"
    for model in widget_states(nb).values():
        state = {k: v for k, v in model.get("state", {}).items() if isinstance(v, str)}
        for key, value in state.items():
            found = MACHINE_PATH.search(value)
            assert not found, f"{path.name} widget {model['model_name']}.{key}: machine path in {value[:300]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_with_what_you_will_do_learn_need_and_which_dataset(path):
    first = load(path)["cells"][0]
    assert first["cell_type"] == "markdown"
    text = "".join(first["source"])
    assert text.startswith("# "), f"{path.name}: no title"
    for heading in ("What you'll do", "What you'll learn", "What you'll need", "Which dataset"):
        assert heading in text, f"{path.name}: the first cell lacks {heading!r}"
    assert "mini" in text or "real UrbanSound8K metadata" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_audio_players_are_wav_without_autoplay_or_loop(path):
    for model in widget_states(load(path)).values():
        if model["model_name"] == "AudioModel":
            state = model["state"]
            assert (state["format"], state["autoplay"], state["loop"]) == ("wav", False, False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stays_small_enough_to_render_online(path):
    assert path.stat().st_size < 5_000_000, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_displayed_widget_has_saved_state(path):
    # A widget output whose model is missing shows "Error displaying widget" when the notebook is opened.
    nb = load(path)
    states = widget_states(nb)
    for i, cell in enumerate(code_cells(nb)):
        for output in cell["outputs"]:
            view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view:
                assert view["model_id"] in states, f"{path.name} code cell {i}: widget state not saved"


def test_widget_notebooks_saved_their_widget_state():
    # Otherwise the committed players and browsers show nothing until the notebook is re-run.
    for stem in ("02-listen-to-clips", "05-train-and-test"):
        models = [m["model_name"] for m in widget_states(load(NOTEBOOKS_DIR / f"{stem}.ipynb")).values()]
        assert "AudioModel" in models, f"{stem}: no saved audio player"


def settings_cell(nb: dict) -> dict:
    """The code cell that chooses the notebook's settings (the one after the install cell)."""
    found = [c for c in code_cells(nb) if 'SETTINGS = os.environ.get("US8K_NOTEBOOK_SETTINGS", "auto")' in source(c)]
    assert len(found) == 1, "no single settings cell"
    return found[0]


def assert_sizes_are_named(settings_cell: dict, names: tuple[str, ...]) -> None:
    """Each size a learner scales is a named variable set in the notebook's settings cell."""
    settings = source(settings_cell)
    for name in names:
        assert re.search(rf"^(\w+, )*{name}( = |, )", settings, re.M), f"{name} is not set in the settings cell"


def test_training_notebook_names_its_sizes_and_asserts_its_accuracy():
    nb = load(NOTEBOOKS_DIR / "05-train-and-test.ipynb")
    cells = code_cells(nb)
    assert_sizes_are_named(settings_cell(nb), ("EPOCHS", "BATCH_SIZE", "WIDTH", "TEST_FOLD", "MIN_TEST_ACCURACY"))
    everything = "\n".join(source(c) for c in cells)
    # the threshold is checked where it was calibrated (the generated mini dataset, small settings)
    assert re.search(r"use\.check\(accuracy >= MIN_TEST_ACCURACY", everything)
    assert "choose_device" in everything
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "GPU" in markdown and "Dai" in markdown and "Salamon" in markdown


def test_evaluation_notebook_names_its_sizes_and_keeps_the_protocol():
    nb = load(NOTEBOOKS_DIR / "06-evaluate-like-a-paper.ipynb")
    cells = code_cells(nb)
    assert_sizes_are_named(settings_cell(nb), ("MODEL", "FOLDS", "EPOCHS", "WIDTH"))
    everything = "\n".join(source(c) for c in cells)
    assert "crossval.crossval(" in everything and "mean_best_on_test" in everything
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    # the published table says under which protocol each number was measured, as read from the paper
    assert "| protocol |" in markdown and "Table 2" in markdown and "100–400 epochs" in markdown
    assert "unverified" not in markdown
    assert "torchrun" in markdown and "fold 10" in markdown


def test_sanitizer_hides_figure_sizes_and_memory_addresses():
    config = ConfigParser()
    config.read(NOTEBOOKS_DIR / "nbval_sanitize.cfg")
    text = "<Figure size 1300x420 with 10 Axes> <torch._C.Generator at 0x7f4d37d05570>"
    for section in config.sections():
        text = re.sub(config[section]["regex"], config[section]["replace"], text)
    assert "1300x420" not in text and "0x7f4d37d05570" not in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbval_markers_stand_alone_on_their_line(path):
    # nbval only recognises a marker that is the whole comment line; text after it silently disables it
    for i, cell in enumerate(code_cells(load(path))):
        for line in source(cell).splitlines():
            if "NBVAL_" in line:
                assert re.fullmatch(r"\s*#\s*NBVAL_(IGNORE_OUTPUT|CHECK_OUTPUT|SKIP|RAISES_EXCEPTION)\s*", line), \
                    f"{path.name} code cell {i}: {line!r}"


def test_augmentation_notebook_names_its_sizes_and_checks_that_every_setting_learned():
    nb = load(NOTEBOOKS_DIR / "07-augment.ipynb")
    cells = code_cells(nb)
    assert_sizes_are_named(settings_cell(nb), ("FOLDS", "EPOCHS", "WIDTH", "COMPARE", "SEED"))
    everything = "\n".join(source(c) for c in cells)
    assert "crossval.crossval(" in everything and re.search(r"use\.check\(worst >= ", everything)


def test_front_end_notebook_compares_both_models_on_the_same_folds_and_cites_its_sources():
    nb = load(NOTEBOOKS_DIR / "08-raw-or-spectrogram.ipynb")
    cells = code_cells(nb)
    assert_sizes_are_named(settings_cell(nb), ("MODELS", "FOLDS", "EPOCHS", "WIDTH", "BATCH_SIZE", "LR", "SEED"))
    assert re.search(r'^MODELS = \["m5", "logmel"\]', source(settings_cell(nb)), re.M)
    everything = "\n".join(source(c) for c in cells)
    assert "crossval.crossval(" in everything and "comparison_table(" in everything
    assert "comparison_verdict(" in everything and re.search(r"use\.check\(worst >= ", everything)
    assert "compute_filter_responses(" in everything and "mel_filterbank()" in everything
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "| protocol |" in markdown and "Table 2" in markdown and "73 %" in markdown
    assert "unverified" not in markdown
    assert "torchrun" in markdown and "--model m5,logmel" in markdown


TRAINING_NOTEBOOKS = ["05-train-and-test", "06-evaluate-like-a-paper", "07-augment", "08-raw-or-spectrogram"]


@pytest.mark.parametrize("stem", TRAINING_NOTEBOOKS)
def test_training_notebook_takes_its_sizes_from_the_library_table(stem):
    """The settings cell chooses the set in the open and takes every size from the package's one
    table (no size written in the notebook), and what it printed is the table's small set."""
    from us8k_lib import settings as table

    nb = load(NOTEBOOKS_DIR / f"{stem}.ipynb")
    cell = settings_cell(nb)
    text = source(cell)
    number = int(stem[:2])
    assert "settings.choose(SETTINGS, root, gpu=" in text and f"notebook={number})" in text and "use.report(" in text
    for size in table.sizes_for("small", number):
        assert re.search(rf'use\.sizes\["{size}"\]', text), f"{stem}: {size} does not come from use.sizes"
    assert "use.pick(" not in text
    printed = "".join("".join(o.get("text", "")) for o in cell["outputs"])
    shown = ", ".join(f"{k.upper()} = {v!r}" for k, v in table.sizes_for("small", number).items())
    assert "Settings: small." in printed and shown in printed, f"{stem}: the committed sizes are not the table's"


@pytest.mark.parametrize("stem",
                         ["04-define-m5", "05-train-and-test", "06-evaluate-like-a-paper", "08-raw-or-spectrogram"])
def test_published_numbers_are_quoted_as_read_with_their_protocol(stem):
    nb = load(NOTEBOOKS_DIR / f"{stem}.ipynb")
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for vague in ("unverified", "see the paper", "often quoted", "we did not read"):
        assert vague not in markdown.lower(), f"{stem}: {vague!r}"
    assert "63.42" in markdown and "100–400" in markdown, f"{stem}: Dai et al.'s M5 figure or its epochs missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_opens_on_colab_and_kaggle_from_the_one_address(path):
    """The badges under the title and the install cell that opens every notebook are made from
    us8k_lib.hosted.REPOSITORY (``python tools/hosted_links.py`` writes them)."""
    from us8k_lib import hosted

    nb = load(path)
    assert hosted.badges(path.name) in "".join(nb["cells"][0]["source"])
    first = code_cells(nb)[0]
    assert source(first) == hosted.first_cell()
    printed = "".join("".join(o.get("text", "")) for o in first["outputs"])
    assert printed.startswith("Not on Colab or Kaggle: nothing to install")  # never pip on a learner's machine


@pytest.mark.parametrize(("stem", "shown"), [
    ("03-format-the-data", ["def __len__(self)", "def __getitem__(self, i: int)"]),
    ("04-define-m5", ["class M5(nn.Module):", "nn.Conv1d(", "nn.BatchNorm1d(", "nn.MaxPool1d(", "nn.Linear(",
                      "def forward(self"]),
    ("05-train-and-test", ["optimizer.zero_grad(", "loss.backward()", "optimizer.step()", "scheduler.step()",
                           "model.train()", "model.eval()", "torch.no_grad()"]),
])
def test_the_pytorch_a_notebook_teaches_is_on_its_page(stem, shown):
    """What a learner came to learn is on the page: in a code cell, or in the package's own source
    shown by the notebook (not a copy), as the committed output holds it."""
    nb = load(NOTEBOOKS_DIR / f"{stem}.ipynb")
    page = "\n".join(source(c) for c in code_cells(nb))
    page += "\n".join("".join(o["data"]["text/plain"]) for c in code_cells(nb) for o in c["outputs"] if shows_source(o))
    assert [s for s in shown if s not in page] == []
