"""The three descriptions of the environment (pyproject, environment.yml, binder/) and the lock
(constraints.txt) must agree on every pin, and the README's set-up commands must be the ones CI runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

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
            for entry in dep["pip"]:
                line = entry.split(" #", 1)[0].strip()
                if line.startswith("-"):
                    options.append(line)
                else:
                    pip.update([_split(line)])
        else:
            conda.append(re.split(r"[<>=! ]", dep, maxsplit=1)[0])
    return conda, pip, options


def _load_tool(name: str) -> ModuleType:
    """Import tools/<name>.py (not a package) by path."""
    spec = importlib.util.spec_from_file_location(f"_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _constraints() -> dict[str, str]:
    pins = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_conda_environment_matches_pyproject_and_uses_the_lock() -> None:
    path = ROOT / "environment.yml"
    conda, pip, options = _conda_env(path)
    assert sorted(conda) == ["pip", "python"], "conda provides Python only; pip installs the locked packages"
    assert pip == _pyproject_requirements()
    assert len(options) == 1 and options[0].startswith("-c "), options
    # conda hands the pip list to pip as a requirements file in the environment file's folder
    assert (path.parent / options[0][3:].strip()).resolve() == CONSTRAINTS


def test_binder_installs_cpu_builds_of_the_pinned_torch_and_the_lock_for_the_rest() -> None:
    path = ROOT / "binder" / "environment.yml"
    conda, pip, options = _conda_env(path)
    assert sorted(conda) == ["pip", "python"]
    pins = _constraints()
    for name in ("torch", "torchaudio"):
        # PyTorch's CPU wheels: the pinned release with the +cpu label (a CUDA build would pull GBs)
        assert pip.pop(name) == f"=={pins[name]}+cpu", f"binder must install the CPU build of {name}=={pins[name]}"
        assert Requirement(f"{name}=={pins[name]}").specifier.contains(f"{pins[name]}+cpu"), \
            "constraints.txt's pin must admit the +cpu build"
    expected = {k: v for k, v in _pyproject_requirements().items() if k not in ("torch", "torchaudio")}
    assert pip == expected
    assert sorted(options) == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-c ../constraints.txt"]
    assert (path.parent / "../constraints.txt").resolve() == CONSTRAINTS


def test_binder_pins_agree_with_the_lock() -> None:
    """Every exact pin under binder/ is constraints.txt's version (the +cpu label aside)."""
    _, pip, _ = _conda_env(ROOT / "binder" / "environment.yml")
    pins = _constraints()
    exact = {n: spec[2:] for n, spec in pip.items() if spec.startswith("==")}
    assert set(exact) == {"torch", "torchaudio"}
    for name, version in exact.items():
        assert version.split("+")[0] == pins[re.sub(r"[-_.]+", "-", name)], f"binder pins {name}=={version}"


def test_supported_pythons_agree_everywhere() -> None:
    """pyproject's requires-python, the lock tool's PYTHONS and the build backend's check describe one range."""
    from packaging.specifiers import SpecifierSet

    text = (ROOT / "pyproject.toml").read_text()
    spec = SpecifierSet(tomllib.loads(text)["project"]["requires-python"])
    low, high = _load_tool("build_backend").supported_range(text)
    pythons = _load_tool("constraints").PYTHONS
    assert pythons == tuple(f"{low[0]}.{m}" for m in range(low[1], high[1]))
    for minor in range(8, 20):
        assert (f"3.{minor}" in pythons) == (f"3.{minor}.0" in spec)
    assert "3.14" in pythons and "3.15.0" not in spec and "3.10.0" not in spec
    assert "Python 3.11, the oldest supported" in CONSTRAINTS.read_text()


@pytest.mark.parametrize("version", [(3, 10, 13), (3, 15, 0), (4, 0, 0)])
def test_build_backend_refuses_an_unsupported_python_naming_the_supported_ones(version: tuple[int, ...]) -> None:
    backend = _load_tool("build_backend")
    with pytest.raises(SystemExit) as info:
        backend.check_python(version)
    message = str(info.value)
    assert "supports Python 3.11 to 3.14" in message and f"this is Python {'.'.join(map(str, version))}" in message


@pytest.mark.parametrize("version", [(3, 11, 0), (3, 14, 9)])
def test_build_backend_accepts_a_supported_python(version: tuple[int, ...]) -> None:
    _load_tool("build_backend").check_python(version)


def test_build_backend_is_the_one_pyproject_names() -> None:
    system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    assert (system["build-backend"], system["backend-path"]) == ("build_backend", ["tools"])
    backend = _load_tool("build_backend")
    for hook in ("get_requires_for_build_wheel", "get_requires_for_build_editable", "build_wheel",
                 "build_editable", "build_sdist", "prepare_metadata_for_build_wheel"):
        assert callable(getattr(backend, hook)), hook
    with pytest.raises(ValueError, match="requires-python must read"):
        backend.supported_range('requires-python = ">=3.11"\n')


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
        assert req.specifier.contains(pins[key], prereleases=True), \
            f"{req.name}=={pins[key]} is outside {req.specifier}"


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
