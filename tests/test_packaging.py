"""The three descriptions of the environment (pyproject, environment.yml, binder/) and the lock
(constraints.txt) must agree on every pin, and the README's set-up commands must be the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), spec.replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def _conda_env(path: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """Return (conda packages, pip requirements, pip option lines such as ``-c FILE``) of an environment.yml."""
    conda, pip, options = [], {}, []
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                line = line.split(" #", 1)[0].strip()
                if line.startswith("-"):
                    options.append(line)
                else:
                    pip.update([_split(line)])
        else:
            conda.append(dep.split("=")[0])
    return conda, pip, options


def _constraints() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_environment_files_match_pyproject_and_use_the_lock(env_file: str) -> None:
    path = ROOT / env_file
    conda, pip, options = _conda_env(path)
    assert sorted(conda) == ["pip", "python"], "conda provides Python only; pip installs the locked packages"
    assert pip == _pyproject_requirements()
    assert len(options) == 1 and options[0].startswith("-c "), options
    # conda hands the pip list to pip as a requirements file in the environment file's folder
    assert (path.parent / options[0][3:].strip()).resolve() == CONSTRAINTS


def test_torch_and_torchaudio_pinned_exactly_everywhere() -> None:
    reqs = _pyproject_requirements()
    pins = _constraints()
    for name in ("torch", "torchaudio"):
        assert re.fullmatch(r"==\d+\.\d+\.\d+", reqs[name]), f"{name} must be pinned to one exact release"
        assert pins[name] == reqs[name][2:], f"constraints.txt and pyproject.toml disagree on {name}"


def test_constraints_pin_every_dependency_within_pyproject_ranges() -> None:
    """Every requirement of pyproject (all extras) has an exact pin, and the pin satisfies its range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    pins = _constraints()
    for text in reqs:
        req = Requirement(text)
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        assert key in pins, f"constraints.txt has no pin for {req.name}"
        assert req.specifier.contains(pins[key], prereleases=True), f"{req.name}=={pins[key]} is outside {req.specifier}"


def test_every_install_path_uses_the_lock() -> None:
    """README commands, the browser-test installer and Binder all install with -c constraints.txt."""
    readme = (ROOT / "README.md").read_text()
    assert readme.count('pip install -c constraints.txt -e ".[dev]"') >= 2
    assert '-c constraints.txt -e ".[browser]"' in (ROOT / ".ci" / "install-browser").read_text()
    assert "python tools/constraints.py installed" in (ROOT / ".ci" / "run").read_text()


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
    assert install.endswith("python -m us8k_lib train") and 'pip install -c constraints.txt -e ".[dev]"' in install
    assert test.endswith("pytest --nbval") and 'pip install -c constraints.txt -e ".[dev]"' in test
    assert "\n" not in install and "\n" not in test
