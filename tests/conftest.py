"""Shared fixtures: generated datasets and the bundled real sample (never ../shared, which a fresh
clone does not have)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Reference material beside the project root; tests that use it skip when it is absent. Real
#: audio every checkout has is the bundled sample (the ``real_sample`` fixture); ../shared only
#: adds formats the sample lacks (8-bit, float, ADPCM) and cross-checks.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'tiny' mini dataset (small for testing), generated once per session; treat as read-only."""
    from us8k_lib.datasets.mini import make_mini

    return make_mini(tmp_path_factory.mktemp("tiny"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def other_tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second 'tiny' dataset (seed 1: other clips and other audio), for tests that a run on one
    dataset is never taken for a run on the other."""
    from us8k_lib.datasets.mini import make_mini

    return make_mini(tmp_path_factory.mktemp("tiny-seed1"), seed=1, size="tiny")


@pytest.fixture(scope="session")
def mini_root() -> Path:
    """The default mini dataset in the project's data folder (what learners and notebooks use); read-only."""
    from us8k_lib.datasets.mini import make_mini
    from us8k_lib.paths import MINI_SEED, project_data_dir

    return make_mini(project_data_dir() / "mini", seed=MINI_SEED)


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """The bundled real sample (20 genuine UrbanSound8K clips, shipped in the package); read-only."""
    from us8k_lib.paths import sample_root

    return sample_root()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint.pt from one quick epoch of a narrow M5 on the tiny dataset (a few seconds).

    Barely better than chance: for tests of what reads checkpoints (predict, the upload widget),
    not of what a model learns.
    """
    from us8k_lib.engine.fit import fit
    from us8k_lib.recipe import TrainConfig
    from us8k_lib.runs.checkpoint import CHECKPOINT_NAME

    out = tmp_path_factory.mktemp("tiny-run")
    config = TrainConfig(epochs=1, batch_size=16, lr=3e-3, width=8, seed=0)  # small for testing
    fit(config, tiny_root, out, cache_dir=tmp_path_factory.mktemp("tiny-cache"), progress=False, verbose=False)
    return out / CHECKPOINT_NAME


@pytest.fixture()
def shared_reference() -> Path:
    """../shared/reference, or skip the test when this checkout has none (as on a fresh clone)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/reference not present (reference material only exists on dev machines)")
    return SHARED


class FakeLibc:
    """Records the mallopt / malloc_trim calls us8k_lib.engine.allocator makes (see the fake_libc fixture)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture()
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    """us8k_lib.engine.allocator talks to this recorder instead of glibc, on any platform."""
    from us8k_lib.engine import allocator

    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    return libc
