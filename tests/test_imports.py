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
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def project_imports(source: str) -> set[str]:
    """Return the package modules ``source`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "us8k_lib":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from us8k_lib import audio, flags
                found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError("relative imports are not used in this package")
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("us8k_lib.") and len(alias.name.split(".")) > 1)
    return found


def import_graph() -> dict[str, set[str]]:
    """Return {module: package modules it imports} for every module of us8k_lib."""
    return {name: project_imports((PACKAGE / f"{name}.py").read_text(encoding="utf-8")) - {name}
            for name in MODULES}


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
    late = project_imports("import os\ndef f():\n    from us8k_lib.mini import make_mini\n")
    assert late == {"mini"}
    assert project_imports("from us8k_lib import audio, errors\nimport us8k_lib.paths\n") == {"audio", "errors", "paths"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    assert {"paths", "mini", "layout", "cli", "model"} <= set(graph)
    assert "mini" in graph["paths"] and "paths" not in graph["mini"]  # the cycle this replaced
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_package_docstring_names_every_module() -> None:
    """``us8k_lib``'s docstring lists the modules by notebook: a new module must be placed there."""
    unnamed = [m for m in MODULES if m not in ("__init__", "__main__") and f"``{m}``" not in (us8k_lib.__doc__ or "")]
    assert unnamed == []
