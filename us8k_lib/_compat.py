"""Load torchaudio, or say clearly why it cannot be loaded and how to repair the environment.

torchaudio ships a native library built against one torch release, but its wheels do not always
declare which: torchaudio 2.11.1 declares ``torch>=2.11`` and still fails beside torch 2.11.0
(``OSError: Could not load this library: .../libtorchaudio.so`` ... ``undefined symbol``). That
surfaces as a deep traceback in the first notebook cell that touches audio, so every module that
needs torchaudio gets it through :func:`require_torchaudio`, which turns the failure into one
message: both installed versions, the pair this release was tested with, and the command that
repairs it. Used by :mod:`us8k_lib.audio` and :mod:`us8k_lib.augment` (notebooks 2-7).
"""

from __future__ import annotations

import re
from importlib import metadata
from types import ModuleType

from us8k_lib.errors import TorchaudioLoadError

#: The package's distribution name (pyproject.toml), whose metadata holds the tested pins.
DISTRIBUTION = "us8k-lib"


def installed_version(name: str) -> str:
    """Return the installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def tested_pins() -> dict[str, str]:
    """Return the exact torch and torchaudio versions this release pins (from its installed metadata)."""
    pins = {}
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        requires = []
    for req in requires:
        m = re.match(r"^(torch|torchaudio)\s*==\s*([\w.+]+)\s*$", req.split(";")[0].strip())
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def explain_torchaudio_failure(exc: BaseException) -> str:
    """Return the message for a torchaudio that does not load: versions, tested pair, repair command."""
    pins = tested_pins()
    torch_v, audio_v = installed_version("torch"), installed_version("torchaudio")
    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if pins:
        tested = f"torch {pins.get('torch', '?')} + torchaudio {pins.get('torchaudio', '?')}"
        repair = f'pip install "torch=={pins.get("torch", "?")}" "torchaudio=={pins.get("torchaudio", "?")}"'
    else:  # running from a source tree that was never installed
        tested, repair = "the pair pinned in pyproject.toml", 'pip install -c constraints.txt -e ".[dev]"'
    return (
        f"torchaudio {audio_v} cannot be loaded beside torch {torch_v} ({type(exc).__name__}: {detail}).\n"
        f"us8k-lib was tested with {tested}; a torchaudio wheel does not load beside every torch "
        "its metadata accepts.\n"
        f"Repair this environment with:\n    {repair}\n"
        f"(or, in a clone of the project, rerun the README's install command, which installs with -c constraints.txt)"
    )


def require_torchaudio() -> ModuleType:
    """Import and return torchaudio.

    Raises:
        TorchaudioLoadError: torchaudio is missing or its native library does not load beside the
            installed torch; the message says what to run.
    """
    try:
        import torchaudio
        import torchaudio.functional  # noqa: F401  (loads the native library where it is needed)
    except (OSError, ImportError, RuntimeError) as exc:
        raise TorchaudioLoadError(explain_torchaudio_failure(exc)) from exc
    return torchaudio
