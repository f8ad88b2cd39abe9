"""How the suite shares the cores (the root conftest.py): worker count, and the longest files first."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root_conftest() -> ModuleType:
    # Loaded from its file: `import conftest` would find tests/conftest.py instead.
    spec = importlib.util.spec_from_file_location("_root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_file_queued_first_exists(root_conftest: ModuleType) -> None:
    # a renamed notebook would otherwise silently fall back to the end of the queue
    for name in root_conftest.LONGEST_FIRST:
        assert (ROOT / name).is_file(), name


def test_longest_files_move_to_the_front_and_every_file_keeps_its_order(root_conftest: ModuleType) -> None:
    first, second = root_conftest.LONGEST_FIRST[:2]
    names = ["tests/test_a.py::x", f"{second}::1", "tests/test_a.py::y", f"{first}::1", f"{second}::2",
             "tests/test_b.py::z", f"{first}::2"]
    items = [SimpleNamespace(path=ROOT / n.split("::")[0], nodeid=n) for n in names]
    items.append(SimpleNamespace(path=Path("/elsewhere/test_c.py"), nodeid="/elsewhere/test_c.py::w"))
    root_conftest.pytest_collection_modifyitems(SimpleNamespace(rootpath=ROOT), items)
    assert [i.nodeid for i in items] == [f"{first}::1", f"{first}::2", f"{second}::1", f"{second}::2",
                                         "tests/test_a.py::x", "tests/test_a.py::y", "tests/test_b.py::z",
                                         "/elsewhere/test_c.py::w"]


def test_one_worker_per_core_and_none_for_a_single_file(root_conftest: ModuleType,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(root_conftest, "_cores", lambda: 2)
    assert root_conftest.pytest_xdist_auto_num_workers(SimpleNamespace(args=[])) == 2
    assert root_conftest.pytest_xdist_auto_num_workers(SimpleNamespace(args=["tests", "notebooks"])) == 2
    one_file = str(ROOT / "tests" / "test_conftest.py")
    assert root_conftest.pytest_xdist_auto_num_workers(SimpleNamespace(args=[one_file])) == 0
    assert root_conftest.pytest_xdist_auto_num_workers(SimpleNamespace(args=[one_file + "::test_x"])) == 0
    monkeypatch.setattr(root_conftest, "_cores", lambda: 64)
    assert root_conftest.pytest_xdist_auto_num_workers(SimpleNamespace(args=[])) == root_conftest.MAX_WORKERS
