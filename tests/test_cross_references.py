"""Cross-references that cannot rot: a docstring that says "Used by notebook N" of a function or class
is true only while notebook N's code names it.

Where a notebook reaches a thing only through another function, the docstring says so in other
words (or not at all); this test keeps the direct claims honest.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "us8k_lib"
CLAIM = re.compile(r"Used by (?:the )?notebooks? ((?:\d+(?:-\d+)?)(?:(?:, | and |, and |–|-)\d+)*)")


def notebook_code() -> dict[int, str]:
    """Return {notebook number: the text of its code cells}."""
    code = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code[int(path.name[:2])] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return code


def numbers(text: str) -> list[int]:
    """The notebooks a claim names: ``5``, ``2 and 3``, ``5-8`` (a range), ``4, 5 and 8``."""
    found = []
    for a, b in re.findall(r"(\d+)(?:[-–](\d+))?", text):
        found += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return found


def claims() -> list[tuple[str, str, int]]:
    """Every (place, name, notebook) a docstring of a function, method or class claims."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = " ".join((ast.get_docstring(node) or "").split())
                for match in CLAIM.finditer(doc):
                    place = f"{path.relative_to(ROOT).as_posix()}:{node.lineno}"
                    found += [(place, node.name, n) for n in numbers(match.group(1))]
    return found


def test_the_claim_finder_reads_every_way_a_claim_is_written() -> None:
    assert numbers("5") == [5] and numbers("2 and 3") == [2, 3] and numbers("5-8") == [5, 6, 7, 8]
    assert numbers("4, 5 and 8") == [4, 5, 8]
    doc = "Used by notebooks 4, 5 and 8 and every run. Used by notebook 3."
    assert [numbers(m.group(1)) for m in CLAIM.finditer(doc)] == [[4, 5, 8], [3]]


def test_every_used_by_notebook_claim_names_a_notebook_whose_code_uses_it() -> None:
    code = notebook_code()
    found = claims()
    assert len(found) > 50  # the claims are there to check
    false = [f"{place} {name} -> notebook {n}" for place, name, n in found
             if n not in code or not re.search(rf"\b{re.escape(name)}\b", code[n])]
    assert false == [], f"{len(false)} false claim(s):\n" + "\n".join(false)
