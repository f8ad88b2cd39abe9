"""Shared fixtures: generated datasets (never ../shared, which a fresh clone does not have)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Reference material beside the project root; tests that use it skip when it is absent.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'tiny' mini dataset (small for testing), generated once per session; treat as read-only."""
    from us8k_lib.mini import make_mini

    return make_mini(tmp_path_factory.mktemp("tiny"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def mini_root() -> Path:
    """The default mini dataset in the project's data folder (what learners and notebooks use); read-only."""
    from us8k_lib.mini import make_mini
    from us8k_lib.paths import MINI_SEED, project_data_dir

    return make_mini(project_data_dir() / "mini", seed=MINI_SEED)


@pytest.fixture()
def shared_reference() -> Path:
    """../shared/reference, or skip the test when this checkout has none (as on a fresh clone)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/reference not present (reference material only exists on dev machines)")
    return SHARED
