"""Write and check constraints.txt, the lock of the tutorial's environment.

pyproject.toml keeps version *ranges* (for people who add us8k-lib to their own environment) and
pins torch/torchaudio exactly. The README's commands, CI and Binder install with
``-c constraints.txt``, which pins every package the tutorial imports or its committed notebook
outputs depend on, so that a new release of any of them cannot break a fresh install, nbval or
the widgets the way torchaudio 2.11.1 broke ``torchaudio==2.11.*``.

    python tools/constraints.py lock    # resolve pyproject's dependencies for the oldest supported
                                        # Python and write constraints.txt (uses pip's resolver,
                                        # downloads only metadata); pins already in constraints.txt
                                        # are kept unless named with --upgrade NAME (or --upgrade-all),
                                        # because every changed pin can change committed notebook outputs
    python tools/constraints.py check   # every pin has a wheel for Python 3.11-3.14
                                        # on Linux x86_64, macOS arm64 and Windows x86_64
    python tools/constraints.py installed   # this environment has exactly the pinned versions and
                                            # torchaudio's native library loads (CI runs this)

The supported Pythons (``PYTHONS``) must agree with pyproject's ``requires-python``
(tests/test_packaging.py checks it): a Python outside them is refused by pip at install time with
a message naming the range, rather than a source build of a pin without wheels for it.

Needs Python 3.11+ (tomllib) and a recent pip (``--dry-run --report``, PEP 658 metadata).
Platform-only packages (torch's CUDA libraries on Linux, for example) are left to torch's own
pins and are not listed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
#: The Pythons learners use; the lock is resolved for the oldest, so one pin set serves all. 3.10
#: is past its end of life and numpy/contourpy releases with 3.14 wheels need 3.11; torch 2.14.1
#: has no 3.15 wheels. Keep pyproject's requires-python in step (tests/test_packaging.py).
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
#: pip platform tags per operating system (pip matches older macOS/manylinux tags only when listed).
PLATFORMS = {
    "linux-x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                     "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
                     "manylinux1_x86_64", "linux_x86_64"],
    "macos-arm64": ["macosx_15_0_arm64"],  # pip expands this to every older macOS arm64 tag
    "windows-x86_64": ["win_amd64"],
}
#: What the tutorial imports, what runs its notebooks and tests, and what its committed outputs
#: (pandas/numpy reprs, widget views, figures) depend on. Everything else follows from these.
LOCKED = (
    "torch", "torchaudio", "numpy", "pandas", "matplotlib", "ipywidgets", "jupyterlab", "tqdm", "soundfile",
    "pytest", "pytest-xdist", "execnet", "nbval", "ruff", "playwright",
    "ipykernel", "ipython", "jupyterlab_widgets", "widgetsnbextension", "comm", "traitlets", "matplotlib-inline",
    "pillow", "contourpy", "kiwisolver", "fonttools", "pyparsing", "cycler", "python-dateutil", "pytz", "tzdata",
    "cffi", "nbformat", "nbclient", "jupyter_client", "jupyter_core", "jupyter_server", "jupyterlab_server",
    "pyzmq", "tornado",
)


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> list[str]:
    """Return pyproject's dependencies plus every optional group's (what the README installs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        reqs += group
    return reqs


def _resolve(reqs: list[str], python: str, platforms: list[str], no_deps: bool,
             keep: dict[str, str] | None = None) -> dict[str, str]:
    """Resolve ``reqs`` with pip for another Python/platform without installing; return name -> version.

    ``keep`` (name -> version) constrains those packages to their exact versions.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
               "--report", str(report), "--python-version", python, "--target", str(Path(tmp) / "t"),
               "--only-binary=:all:"]
        for p in platforms:
            cmd += ["--platform", p]
        if no_deps:
            cmd.append("--no-deps")
        if keep:
            kept = Path(tmp) / "keep.txt"
            kept.write_text("".join(f"{n}=={v}\n" for n, v in keep.items()))
            cmd += ["-c", str(kept)]
        proc = subprocess.run(cmd + reqs, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "pip failed")
        data = json.loads(report.read_text())
    return {_key(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """Return the pins of a constraints file (normalised name -> exact version)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_key(name)] = version.strip()
    return pins


def lock(upgrade: Sequence[str] = (), upgrade_all: bool = False) -> int:
    """Write constraints.txt from a resolution for the oldest supported Python on Linux; return 0 or 1.

    Existing pins are kept except those named in ``upgrade`` (or all with ``upgrade_all``): every
    changed pin can change committed notebook outputs, so the lock moves only what has to move.
    """
    reqs = project_requirements()
    exact = {_key(r.split("==")[0]): r.split("==")[1] for r in reqs if "==" in r}
    upgrade_keys = {_key(n) for n in upgrade}
    current = read_constraints() if CONSTRAINTS.exists() and not upgrade_all else {}
    unknown = sorted(upgrade_keys - set(current)) if current else []
    if unknown:
        print(f"--upgrade names packages constraints.txt does not pin: {unknown}", file=sys.stderr)
        return 1
    keep = {n: v for n, v in current.items() if n not in upgrade_keys and n not in exact}
    # torch's own CUDA dependencies are Linux-only: resolve the rest without them, pin torch from pyproject.
    others = [r for r in reqs if _key(re.split(r"[<>=!~ ;\[]", r)[0]) not in exact]
    try:
        resolved = _resolve(others, PYTHONS[0], PLATFORMS["linux-x86_64"], no_deps=False, keep=keep) | exact
    except RuntimeError as exc:
        print(f"cannot resolve with the kept pins ({exc}); name the ones to move with --upgrade NAME",
              file=sys.stderr)
        return 1
    missing = [n for n in LOCKED if _key(n) not in resolved]
    if missing:
        print(f"not in the resolution (drop them from LOCKED?): {missing}", file=sys.stderr)
        return 1
    lines = [
        "# Exact versions the README's commands, CI and Binder install with (pip install -c constraints.txt).",
        "# Generated by: python tools/constraints.py lock   (checked by: python tools/constraints.py check)",
        f"# Resolved for Python {PYTHONS[0]}, the oldest supported, so the same pins serve {', '.join(PYTHONS)}.",
    ]
    lines += [f"{name}=={resolved[_key(name)]}" for name in sorted(LOCKED, key=_key)]
    CONSTRAINTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {CONSTRAINTS.name}: {len(LOCKED)} pins")
    return 0


def check() -> int:
    """Check that every pin has a wheel for every supported Python and OS (pure-Python ones: py3-none-any)."""
    pins = read_constraints()
    reqs = [f"{n}=={v}" for n, v in pins.items()]
    failures = 0
    for os_name, platforms in PLATFORMS.items():
        for python in PYTHONS:
            try:
                _resolve(reqs, python, platforms, no_deps=True)
                print(f"ok    Python {python} {os_name}: all {len(reqs)} pins have wheels")
                continue
            except RuntimeError:
                pass
            bad = []
            for req in reqs:  # find the offenders one by one
                try:
                    _resolve([req], python, platforms, no_deps=True)
                except RuntimeError as exc:
                    bad.append(f"{req} ({exc})")
            failures += bool(bad)
            print(f"FAIL  Python {python} {os_name}: no wheel for " + "; ".join(bad))
    return 1 if failures else 0


def installed() -> int:
    """Check this environment against the lock, and that torchaudio loads and resamples beside torch."""
    from importlib import metadata

    problems = []
    for name, version in read_constraints().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. playwright, which only the browser test installs
        # a local build label (torch 2.14.1+cpu) is the same release as the pin
        if have.split("+")[0] != version:
            problems.append(f"{name} {have} installed, constraints.txt pins {version}")
    for name in ("torch", "torchaudio"):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed")
    if not problems:
        try:
            from us8k_lib._compat import require_torchaudio

            functional = require_torchaudio().functional
            import torch

            functional.resample(torch.zeros(1, 441), 44100, 8000)
        except Exception as exc:  # any failure to load or run is what this check exists to catch
            problems.append(str(exc))
    for p in problems:
        print(f"environment check: {p}", file=sys.stderr)
    if not problems:
        print(f"environment check: torch {metadata.version('torch')} + torchaudio {metadata.version('torchaudio')} "
              f"as pinned, torchaudio loads and resamples; every installed locked package matches constraints.txt")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["lock", "check", "installed"])
    parser.add_argument("--upgrade", action="append", default=[], metavar="NAME",
                        help="lock: re-resolve this package instead of keeping its pin (repeatable)")
    parser.add_argument("--upgrade-all", action="store_true", help="lock: re-resolve every package")
    args = parser.parse_args()
    if args.action == "lock":
        return lock(args.upgrade, args.upgrade_all)
    if args.upgrade or args.upgrade_all:
        parser.error("--upgrade and --upgrade-all apply to lock only")
    return {"check": check, "installed": installed}[args.action]()


if __name__ == "__main__":
    sys.exit(main())
