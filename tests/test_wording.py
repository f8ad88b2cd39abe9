"""What a reader meets first. The product speaks only of itself: the front page, the docs, the
package, the notebooks (cell sources and outputs) and the benchmarks must not read like a
development log; a hit names the file, the line and the rule it broke, so it can be reworded where
it stands. And the README stays a front page: short, linking every docs page, with links that
resolve and the supported Pythons of pyproject.toml in its first lines."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Text files of the package and the benchmarks that are prose or code (not data such as CSVs).
TEXT_SUFFIXES = {".py", ".md", ".txt", ".cfg", ".toml", ".yml", ".yaml"}

#: (name, pattern). Each catches a way a development log leaks into a product; each is anchored so
#: that ordinary words, HTML entities (``&#10004;``), colours (``#888888``) and another project's
#: issue reference written as ``owner/repo#581`` do not match.
RULES: list[tuple[str, re.Pattern[str]]] = [
    ("names a work session", re.compile(r"\bsessions?\b", re.IGNORECASE)),
    ("cites an issue number", re.compile(r"\b(?:issues?|PR|pull request)\s*#?\d+\b", re.IGNORECASE)),
    ("cites an issue as #N", re.compile(r"(?<![\w&/#])#\d{1,4}(?![\w])")),
    ("says a machine was lent", re.compile(r"\blent\b", re.IGNORECASE)),
    ("points at notes the reader lacks", re.compile(r"\breference notes\b", re.IGNORECASE)),
    ("reports what was not done",
     re.compile(r"\bwe (?:did not|didn't|have not|haven't) (?:read|check)", re.IGNORECASE)),
]

#: A Binder, Jupyter, Colab or Kaggle session is the reader's own, not the project's history.
SESSION_OK = re.compile(r"\b(?:Binder|Jupyter|JupyterLab|kernel|browser|Colab|Kaggle)\b", re.IGNORECASE)


def problems_in_line(line: str) -> list[str]:
    """Return the names of the rules a line of text breaks (empty if none)."""
    found = []
    for name, pattern in RULES:
        if pattern.search(line) and not (name == "names a work session" and SESSION_OK.search(line)):
            found.append(name)
    return found


def _notebook_texts(path: Path) -> Iterator[tuple[str, str]]:
    """Yield (where, text) for every cell source and every textual output of a notebook."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        yield f"cell {i} source", "".join(cell.get("source", ""))
        for output in cell.get("outputs", []):
            if "text" in output:
                yield f"cell {i} output", "".join(output["text"])
            for mime, data in output.get("data", {}).items():
                if mime.startswith("text/"):
                    yield f"cell {i} output ({mime})", "".join(data) if isinstance(data, list) else str(data)
            if "traceback" in output:
                yield f"cell {i} output (traceback)", "\n".join(output["traceback"])


def scan(path: Path) -> list[str]:
    """Return one message per offending line of a file: ``file:line: rule: text`` (notebooks name the cell)."""
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if path.suffix == ".ipynb":
        texts = list(_notebook_texts(path))
    else:
        texts = [("", path.read_text(encoding="utf-8"))]
    hits = []
    for where, text in texts:
        for number, line in enumerate(text.splitlines(), start=1):
            for rule in problems_in_line(line):
                place = f"{rel} {where} line {number}" if where else f"{rel}:{number}"
                hits.append(f"{place}: {rule}: {line.strip()[:160]}")
    return hits


def product_files() -> list[Path]:
    """Return every file a reader meets: README.md, docs/, us8k_lib/, notebooks/ and benchmarks/."""
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    files += sorted((ROOT / "notebooks").glob("*.ipynb"))
    for folder in ("us8k_lib", "benchmarks"):
        files += sorted(p for p in (ROOT / folder).rglob("*")
                        if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts)
    return files


def test_the_product_speaks_only_of_itself() -> None:
    files = product_files()
    assert any(p.suffix == ".ipynb" for p in files) and any(p.parent.name == "us8k_lib" for p in files)
    hits = [hit for path in files for hit in scan(path)]
    assert not hits, "development-log wording in the product (reword it where it stands):\n" + "\n".join(hits)


@pytest.mark.parametrize("line", [
    "Measured on one NVIDIA H200 (lent to a development session)",
    "as quoted in this project's issue 11",
    "see #19 for the plan",
    "(the issue's repro, issue #24)",
    "a study quoted in this project's reference notes",
    "we did not read the paper's table",
    "We didn't check it on a GPU",
    "The next session with a GPU runs the benchmark",
    "the suite of the previous session took 2:57",
])
def test_the_rules_catch_log_wording(line: str) -> None:
    assert problems_in_line(line), line


@pytest.mark.parametrize("line", [
    "<span style='color:#1e8449'>&#10004; right</span>",
    'ax.plot(x, y, "x", color="#888888")',
    "removed from pytorch/tutorials in 2019 (pytorch/tutorials#581)",
    "A Binder session has 1-2 GB for the server and every kernel",
    "the test fold is never used to choose anything; 10 folds x 30 epochs",
    "the sample's silent clips are left out",
    "# 4 s clips at 8 kHz",
])
def test_the_rules_leave_ordinary_text_alone(line: str) -> None:
    assert not problems_in_line(line), problems_in_line(line)


def test_a_hit_names_file_line_and_notebook_cell(tmp_path: Path) -> None:
    md = tmp_path / "page.md"
    md.write_text("first line\nlent to a development session\n", encoding="utf-8")
    assert scan(md) == [f"{md}:2: names a work session: lent to a development session",
                        f"{md}:2: says a machine was lent: lent to a development session"]
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["clean\n"]},
        {"cell_type": "code", "source": ["print(1)\n"],
         "outputs": [{"output_type": "stream", "text": ["ok\n", "see issue 11\n"]}]},
    ]}), encoding="utf-8")
    assert scan(nb) == [f"{nb} cell 1 output line 2: cites an issue number: see issue 11"]


# ---------------------------------------------------------------------------------------------
# The front page

README_MAX_LINES = 180
#: A Markdown link's target: ``[text](target)``, without its ``#anchor``.
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def local_links(path: Path) -> list[str]:
    """Return the targets of a Markdown file's links that point inside the repository."""
    return [t for t in LINK.findall(path.read_text(encoding="utf-8")) if not re.match(r"^[a-z]+:", t)]


def test_readme_is_a_front_page_that_links_every_docs_page() -> None:
    readme = ROOT / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    linked = {(ROOT / t).resolve() for t in local_links(readme)}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    missing = [p.name for p in pages if p.resolve() not in linked]
    assert not missing, f"README.md does not link docs/{', docs/'.join(missing)}"
    indexed = {(ROOT / "docs" / t).resolve() for t in local_links(ROOT / "docs" / "README.md")}
    unindexed = [p.name for p in pages if p.name != "README.md" and p.resolve() not in indexed]
    assert not unindexed, f"docs/README.md does not list {', '.join(unindexed)}"


def test_every_local_link_in_readme_and_docs_resolves() -> None:
    broken = sorted({f"{path.relative_to(ROOT)}: {target}"
                     for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
                     for target in local_links(path) if not (path.parent / target).exists()})
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_readme_names_the_supported_pythons_in_its_first_lines() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest = re.search(r">=\s*3\.(\d+)", requires)
    assert lowest, f"pyproject.toml requires-python {requires!r} has no lower bound"
    head = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:10])
    named = re.search(r"Python\s+3\.(\d+)[–-]3\.(\d+)", head)
    assert named, "README.md's first 10 lines do not say which Pythons (e.g. 'Python 3.11–3.14')"
    assert int(named.group(1)) == int(lowest.group(1)), \
        f"README.md says Python 3.{named.group(1)}+ but pyproject.toml requires {requires}"
