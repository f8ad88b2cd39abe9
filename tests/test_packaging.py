"""The three descriptions of the environment (pyproject, environment.yml, binder/) must agree,
and the README's set-up commands must be the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names of the packages whose PyPI names differ
CONDA_NAMES = {"soundfile": "pysoundfile"}


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), spec.replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def _conda_requirements(path: Path) -> dict[str, str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    out: dict[str, str] = {}
    for dep in deps:
        if isinstance(dep, dict):
            out.update(_split(r) for r in dep["pip"])
        else:
            name, spec = _split(dep.replace("=", "==", 1) if re.match(r"^[\w.\-]+=[^=]", dep) else dep)
            out[name] = spec
    for tool in ("python", "pip"):
        out.pop(tool, None)
    return out


def test_environment_yml_matches_pyproject() -> None:
    expected = {CONDA_NAMES.get(k, k): v for k, v in _pyproject_requirements().items()}
    assert _conda_requirements(ROOT / "environment.yml") == expected


def test_binder_environment_matches_pyproject() -> None:
    expected = {CONDA_NAMES.get(k, k): v for k, v in _pyproject_requirements().items()}
    assert _conda_requirements(ROOT / "binder" / "environment.yml") == expected


def test_torch_and_torchaudio_pinned_to_the_same_release() -> None:
    reqs = _pyproject_requirements()
    assert reqs["torch"] == reqs["torchaudio"] == "==2.11.*"


def test_binder_post_build_is_strict_and_installs_the_package() -> None:
    text = (ROOT / "binder" / "postBuild").read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "set -e", "repo2docker needs postBuild to stop at the first failing command"
    assert any(re.search(r"pip install .*-e \.", ln) for ln in lines)
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"


def test_ci_runs_the_readme_commands() -> None:
    """.ci/run extracts exactly the two marked README commands; both install the dev extra."""
    script = (
        'cd "$1"; source <(sed -n "/^readme_command()/,/^}/p" .ci/run); '
        "readme_command install; echo ---; readme_command test"
    )
    out = subprocess.run(["bash", "-c", script, "_", str(ROOT)], capture_output=True, text=True, check=True).stdout
    install, test = (part.strip() for part in out.split("---"))
    assert install.endswith("python -m us8k_lib train") and 'pip install -e ".[dev]"' in install
    assert test.endswith("pytest --nbval") and 'pip install -e ".[dev]"' in test
    assert "\n" not in install and "\n" not in test
