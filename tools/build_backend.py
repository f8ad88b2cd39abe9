"""us8k-lib's build backend: setuptools', refusing a Python outside ``requires-python`` first.

pip reads a package's ``Requires-Python`` only after it has started resolving its dependencies.
For the README's ``pip install -c constraints.txt -e ".[dev]"`` on an unsupported Python that
means a misleading conflict (``numpy==2.4.6`` on 3.10), or a source build of a pin that has no
wheel for that Python (numpy on 3.15) that fails without compilers. pip asks this backend for the
build requirements before anything else, so checking there turns every such install into one
message naming the supported versions. Everything else is setuptools' own backend.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the hooks this module does not wrap)

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def supported_range(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return (oldest, first unsupported) minor versions from pyproject's ``requires-python``.

    Only the ``>=X.Y,<X.Z`` form is accepted (tomllib is not available on every Python this must
    refuse, so the line is read with a regular expression).
    """
    m = re.search(r'^requires-python\s*=\s*"([^"]*)"', text, re.M)
    spec = m.group(1).replace(" ", "") if m else ""
    parts = dict(re.findall(r"(>=|<)(\d+\.\d+)", spec))
    if not m or set(parts) != {">=", "<"} or len(spec.split(",")) != 2:
        raise ValueError(f"{_PYPROJECT}: requires-python must read \">=X.Y,<X.Z\", found {spec!r}")
    low, high = (tuple(int(x) for x in parts[k].split(".")) for k in (">=", "<"))
    return low, high  # type: ignore[return-value]


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> None:
    """Raise SystemExit with the supported versions if ``version`` is outside ``requires-python``."""
    low, high = supported_range(_PYPROJECT.read_text())
    if not low <= tuple(version[:2]) < high:
        last = (high[0], high[1] - 1)
        raise SystemExit(
            f"us8k-lib supports Python {low[0]}.{low[1]} to {last[0]}.{last[1]}; this is Python "
            f"{'.'.join(map(str, version))}. Its pinned packages (torch 2.14.1 among them) have no wheels "
            f"for other versions. Create the environment with a supported Python, e.g. "
            f"python{last[0]}.{last[1]} -m venv .venv (see docs/installing.md).")


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    check_python()
    return _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    check_python()
    return _setuptools.get_requires_for_build_editable(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    check_python()
    return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: dict[str, Any] | None = None) -> str:
    check_python()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)
