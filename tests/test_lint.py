"""The linter's verdict, and the three checks ruff does not make.

``ruff check`` (configured in pyproject.toml) covers unused and redefined names, import order and
shadowed builtins, over the whole project but the notebooks. It has no stable rule for a statement
that can never run, for a local name that hides a module imported at the top, or for a function
importing again what the module already imports; those are checked here on the syntax tree, over
the same Python files.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ("us8k_lib", "tests", "benchmarks", "tools")
_ENDS_BLOCK = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def _sources() -> list[Path]:
    return sorted([ROOT / "conftest.py", *(p for tree in TREES for p in (ROOT / tree).rglob("*.py"))])


def _blocks(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block
        for handler in getattr(node, "handlers", []):
            yield handler.body
        for case in getattr(node, "cases", []):
            yield case.body


def find_unreachable(source: str) -> list[int]:
    """Line numbers of statements that follow a return, raise, continue or break in the same block."""
    return sorted(block[i + 1].lineno for block in _blocks(ast.parse(source))
                  for i, stmt in enumerate(block[:-1]) if isinstance(stmt, _ENDS_BLOCK))


def _top_imports(tree: ast.Module) -> dict[str, str]:
    """Name -> what it imports, for the imports at the top level of a module (not in functions)."""
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                names[alias.asname or alias.name] = f"{'.' * node.level}{node.module or ''}.{alias.name}"
    return names


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _bound_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[tuple[str, int]]:
    """Names the function binds itself: parameters, assignments, loop and with targets, except-as."""
    args = function.args
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if arg is not None:
            yield arg.arg, function.lineno
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            yield node.id, node.lineno
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name, node.lineno


def find_shadowed_imports(source: str) -> list[tuple[int, str]]:
    """(line, name) of local names in functions that hide a module-level import of the same name."""
    tree = ast.parse(source)
    imported = _top_imports(tree)
    return sorted({(line, name) for f in _functions(tree) for name, line in _bound_names(f) if name in imported})


def find_repeated_imports(source: str) -> list[tuple[int, str]]:
    """(line, name) of imports inside functions of something the module already imports at the top."""
    tree = ast.parse(source)
    imported = _top_imports(tree)
    found = set()
    for function in _functions(tree):
        for node in ast.walk(function):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name, target in _top_imports(ast.Module(body=[node], type_ignores=[])).items():
                    if imported.get(name) == target:
                        found.add((node.lineno, name))
    return sorted(found)


def test_the_checks_find_what_they_look_for() -> None:
    snippet = (
        "import os\nfrom us8k_lib.cli import flags\n"
        "def f(x):\n    return x\n    print(x)\n"
        "def g():\n    for i in range(3):\n        continue\n        i += 1\n"
        "def h():\n    flags = []\n    return flags\n"
        "def k(os):\n    return os\n"
        "def m():\n    import os\n    from us8k_lib.cli import flags\n    import sys\n    return os, flags, sys\n"
    )
    assert find_unreachable(snippet) == [5, 9]
    assert find_shadowed_imports(snippet) == [(11, "flags"), (13, "os")]
    assert find_repeated_imports(snippet) == [(16, "os"), (17, "flags")]
    assert find_unreachable("def f():\n    if x:\n        return 1\n    return 2\n") == []


@pytest.mark.parametrize("check", [find_unreachable, find_shadowed_imports, find_repeated_imports],
                         ids=lambda c: c.__name__)
def test_no_source_file_has_what_the_check_finds(check) -> None:
    found = {str(p.relative_to(ROOT)): hits for p in _sources() if (hits := check(p.read_text(encoding="utf-8")))}
    assert found == {}


def test_ruff_check_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: it comes with the dev extra (pip install -e '.[dev]')"
    result = subprocess.run([ruff, "check"], cwd=ROOT, capture_output=True, text=True)  # as .ci/run does
    assert result.returncode == 0, result.stdout + result.stderr
