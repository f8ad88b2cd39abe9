"""A torchaudio that does not load beside the installed torch gets a clear message and a repair command."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from us8k_lib import _compat
from us8k_lib.errors import TorchaudioLoadError, US8KError

ROOT = Path(__file__).resolve().parents[1]
# What torchaudio 2.11.1 raised beside torch 2.11.0 (the failure this guards against).
BROKEN = (
    "raise OSError('Could not load this library: /venv/lib/torchaudio/lib/libtorchaudio.so\\n"
    "undefined symbol: torch_exception_get_what_without_backtrace')\n"
)


def _pinned() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {d.split("==")[0]: d.split("==")[1] for d in deps if d.split("==")[0] in ("torch", "torchaudio")}


@pytest.fixture()
def broken_torchaudio(tmp_path: Path) -> dict[str, str]:
    """Environment variables under which ``import torchaudio`` fails as a mismatched wheel does."""
    fake = tmp_path / "fake" / "torchaudio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(BROKEN)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"))
    return env


def test_tested_pins_come_from_the_installed_metadata() -> None:
    assert _compat.tested_pins() == _pinned()


def test_message_names_both_versions_the_tested_pair_and_the_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "installed_version", {"torch": "2.11.0", "torchaudio": "2.11.1"}.get)
    msg = _compat.explain_torchaudio_failure(OSError("Could not load this library: x.so\nundefined symbol: y"))
    pins = _pinned()
    assert "torchaudio 2.11.1 cannot be loaded beside torch 2.11.0" in msg
    assert "undefined symbol: y" in msg
    assert f"torch {pins['torch']} + torchaudio {pins['torchaudio']}" in msg
    assert f'pip install "torch=={pins["torch"]}" "torchaudio=={pins["torchaudio"]}"' in msg


def test_import_of_the_audio_module_explains_a_broken_torchaudio(broken_torchaudio: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-c", "import us8k_lib.audio"], env=broken_torchaudio,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()
    assert any("TorchaudioLoadError: torchaudio" in line and "cannot be loaded beside torch" in line for line in last)
    pins = _pinned()
    assert f'pip install "torch=={pins["torch"]}" "torchaudio=={pins["torchaudio"]}"' in proc.stderr


def test_command_needing_audio_prints_the_explanation_without_a_traceback(
        broken_torchaudio: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "us8k_lib", "train", "--root", str(tmp_path)],
                          env=broken_torchaudio, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: torchaudio ")
    assert "cannot be loaded beside torch" in proc.stderr and "pip install" in proc.stderr


def test_error_type_is_both_a_us8k_error_and_an_import_error() -> None:
    assert issubclass(TorchaudioLoadError, US8KError) and issubclass(TorchaudioLoadError, ImportError)
