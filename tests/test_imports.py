"""The package's modules import each other without a cycle, counting imports inside functions too.

A cycle that only works because one side imports late is still a cycle: the order in which the
modules are first imported decides whether it works. The graph is read from the source (ast), so
every import counts, whichever path a run takes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import us8k_lib

PACKAGE = Path(us8k_lib.__file__).resolve().parent
#: Every module, by its dotted name below ``us8k_lib`` (``audio``, ``runs.folder``; a sub-package by its own name).
MODULES = sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                 for p in PACKAGE.rglob("*.py") if p.parent.name != "__pycache__")
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def project_imports(source: str) -> set[str]:
    """Return the package modules ``source`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "us8k_lib":
                continue
            base = ".".join(parts[1:])
            if base:
                found.add(base)
            for alias in node.names:  # from us8k_lib import audio; from us8k_lib.runs import files
                name = f"{base}.{alias.name}" if base else alias.name
                if name in MODULES:
                    found.add(name)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError("relative imports are not used in this package")
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".", 1)[1] for alias in node.names if alias.name.startswith("us8k_lib."))
    return found


def module_path(name: str) -> Path:
    path = PACKAGE.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def import_graph() -> dict[str, set[str]]:
    """Return {module: package modules it imports} for every module of us8k_lib (a sub-package's
    ``__init__`` left out: importing one of its modules runs it first, and it re-exports only)."""
    return {name: project_imports(module_path(name).read_text(encoding="utf-8")) - {name} - set(SUBPACKAGES)
            for name in MODULES if name not in SUBPACKAGES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a path ``[a, b, ..., a]``, or None if there is none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_late_and_indirect_cycles() -> None:
    late = project_imports("import os\ndef f():\n    from us8k_lib.datasets.mini import make_mini\n")
    assert late == {"datasets.mini"}
    found = project_imports("from us8k_lib import audio, errors\nimport us8k_lib.paths\n")
    assert found == {"audio", "errors", "paths"}
    assert project_imports("from us8k_lib.runs import files\n") == {"runs", "runs.files"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    assert {"paths", "datasets.mini", "datasets.layout", "cli.parser", "model"} <= set(graph)
    assert "datasets.mini" in graph["paths"] and "paths" not in graph["datasets.mini"]  # the cycle this replaced
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_package_docstrings_name_every_module() -> None:
    """``us8k_lib``'s docstring maps the notebooks to the teaching modules and names each machinery
    sub-package; each sub-package's docstring names its modules: a new module must be placed there."""
    import importlib

    top = [m for m in MODULES if "." not in m and m not in ("__init__", "__main__")]
    assert [m for m in top if f"``{m}``" not in (us8k_lib.__doc__ or "")] == []
    for package in SUBPACKAGES:
        doc = importlib.import_module(f"us8k_lib.{package}").__doc__ or ""
        inside = [m.split(".", 1)[1] for m in MODULES if m.startswith(f"{package}.")]
        assert [m for m in inside if f":mod:`.{m}`" not in doc] == [], package


def test_the_teaching_modules_import_no_command_line() -> None:
    """What a learner reads (the top-level modules) never needs the command line."""
    graph = import_graph()
    assert {m: sorted(d for d in deps if d.startswith("cli")) for m, deps in graph.items()
            if "." not in m and m != "__main__" and any(d.startswith("cli") for d in deps)} == {}
