"""Google Colab and Kaggle: a free GPU for the notebooks, the package installed there, and the data
where those platforms keep it.

Every notebook opens with the same short cell: on Colab or Kaggle it installs this package from its
repository, then calls :func:`setup`, which installs the pinned dependencies with the lock
(``constraints.txt``), reports what it did and how long it took, and stops with a request to
restart only when a module the kernel had already loaded changed version. On any other machine
(your own, Binder, the tests) it installs nothing and prints one line saying so.

:data:`REPOSITORY` is the one place that names the repository: the "Open in Colab" and "Open in
Kaggle" links of the README and the notebooks and every notebook's first cell are made from it
(``python tools/hosted_links.py`` writes them; a test keeps them in agreement), so a fork sets its
own there and runs that command. docs/colab-kaggle.md says more. Nothing here imports torch or
anything :func:`setup` may replace.

Used by every notebook's first cell, the settings cell of notebooks 5-8 (:func:`gpu_advice`) and
:mod:`us8k_lib.paths` (:func:`attached_dataset`).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from us8k_lib.errors import US8KError

#: The repository, as GitHub's ``OWNER/NAME``: a fork writes its own here, then runs
#: ``python tools/hosted_links.py`` to rewrite the links and the notebooks' first cells.
REPOSITORY = "OWNER/us8k"
#: The branch the links and the install follow.
BRANCH = "main"
#: The package's name on an index and in pip's metadata.
DISTRIBUTION = "us8k-lib"
#: Where Kaggle mounts a notebook's attached datasets (read-only).
KAGGLE_INPUT = Path("/kaggle/input")
#: Dependencies a hosted notebook does without: the platform brings its own notebook front end,
#: and replacing its Jupyter server packages would break the session's connection.
NOT_ON_HOSTED = frozenset({"jupyterlab"})
#: Modules whose version, if it changed under a running kernel, needs the kernel restarted.
_RELOADED = ("torch", "torchaudio", "numpy", "pandas", "matplotlib", "soundfile", "ipywidgets", "tqdm")


class RestartNeeded(US8KError):
    """The install replaced a module the kernel had already loaded: restart it, then run again."""


def platform() -> str | None:
    """Return ``"colab"`` or ``"kaggle"`` when the notebook runs there, else None (your own machine)."""
    if "google.colab" in sys.modules:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "kaggle_secrets" in sys.modules:
        return "kaggle"
    return None


# ---------------------------------------------------------------------------------------------
# The links


def notebook_url(notebook: str) -> str:
    """Return the GitHub address of ``notebooks/NOTEBOOK`` (a file name such as ``05-train-and-test.ipynb``)."""
    return f"https://github.com/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"


def colab_url(notebook: str) -> str:
    """Return the address that opens ``notebook`` on Google Colab."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"


def kaggle_url(notebook: str) -> str:
    """Return the address that opens ``notebook`` on Kaggle."""
    return f"https://kaggle.com/kernels/welcome?src={notebook_url(notebook)}"


def binder_url() -> str:
    """Return the address that opens the notebooks on Binder (no GPU; docs/binder.md)."""
    return f"https://mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}?urlpath=lab/tree/notebooks"


def badges(notebook: str) -> str:
    """Return the Markdown of the "Open in Colab" and "Open in Kaggle" badges of ``notebook``."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)}) "
            f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle_url(notebook)})")


def first_cell() -> str:
    """Return the source of every notebook's first code cell: on Colab or Kaggle it installs the
    package from :data:`REPOSITORY` and calls :func:`setup`; elsewhere :func:`setup` only says so."""
    return "\n".join([
        "# On Colab or Kaggle: install this tutorial's package, then its pinned dependencies (a few minutes,",
        "# once per Colab or Kaggle session). On your own machine this cell installs nothing.",
        "import importlib.util, os, sys",
        "on_colab_or_kaggle = \"google.colab\" in sys.modules or \"KAGGLE_KERNEL_RUN_TYPE\" in os.environ",
        "if on_colab_or_kaggle and not importlib.util.find_spec(\"us8k_lib\"):",
        f"    %pip install -q --no-deps \"{DISTRIBUTION} @ git+https://github.com/{REPOSITORY}@{BRANCH}\"",
        "    importlib.invalidate_caches()",
        "from us8k_lib import hosted",
        "hosted.setup()",
    ])


# ---------------------------------------------------------------------------------------------
# The install


def constraints_url() -> str:
    """Return the address of the lock (``constraints.txt``) on :data:`BRANCH` of :data:`REPOSITORY`."""
    return f"https://raw.githubusercontent.com/{REPOSITORY}/{BRANCH}/constraints.txt"


def requirements() -> list[str]:
    """Return the package's own dependencies as installed metadata lists them (the pins of
    ``pyproject.toml``), without its extras and without :data:`NOT_ON_HOSTED`."""
    wanted = []
    for requirement in importlib.metadata.requires(DISTRIBUTION) or []:
        spec, _, marker = requirement.partition(";")
        name = spec.strip().split("[")[0]
        for cut in "=<>!~ ":
            name = name.split(cut)[0]
        if "extra" in marker or name.lower() in NOT_ON_HOSTED:
            continue
        wanted.append(spec.strip())
    return wanted


def install_command() -> list[str]:
    """Return the pip command :func:`setup` runs on Colab or Kaggle: the dependencies, with the lock."""
    return [sys.executable, "-m", "pip", "install", "-q", "-c", constraints_url(), *requirements()]


def _versions(names: Sequence[str]) -> dict[str, str | None]:
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _release(version: str) -> str:
    """``2.14.1+cu130`` -> ``2.14.1``: a module's ``__version__`` may carry the build's local tag
    while pip's metadata does not, and the two name the same release."""
    return str(version).split("+")[0]


def gpu_unreachable() -> str | None:
    """Return why the installed torch cannot use this machine's NVIDIA GPU, or None (no GPU, or
    torch uses it).

    The pinned torch is PyPI's build for one CUDA release; a platform image whose driver is older
    than that release shows its GPU to ``nvidia-smi`` but not to torch, and the notebooks would
    then train on the CPU while the runtime has a GPU switched on. Asked in a fresh process, so
    that the kernel never imports torch before :func:`setup` has installed it.
    """
    if shutil.which("nvidia-smi") is None:
        return None
    probe = "import torch; print(torch.cuda.is_available(), torch.version.cuda)"
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split()
    if answer[:1] == ["True"]:
        return None
    cuda = answer[1] if len(answer) > 1 else "unknown"
    return (f"this runtime has an NVIDIA GPU, but the installed torch (built for CUDA {cuda}) cannot use it: "
            "the platform's driver is older than that build needs, so the notebooks would train on the CPU. "
            "docs/colab-kaggle.md says what to do")


def setup(*, run: Callable[[list[str]], object] = subprocess.check_call,
          check_gpu: Callable[[], str | None] = gpu_unreachable) -> None:
    """Make this kernel ready for the notebooks, and print what was done.

    On your own machine: nothing (one line says so; pip is never run). On Colab or Kaggle: run
    :func:`install_command` (through ``run``), then report the time it took and the versions now
    installed, and a line saying so when the installed torch cannot use the runtime's GPU
    (``check_gpu``, :func:`gpu_unreachable`).

    Raises:
        RestartNeeded: on Colab or Kaggle, when a module the kernel had already loaded was
            replaced by another version; the message says how to restart.
    """
    where = platform()
    if where is None:
        line = ("Not on Colab or Kaggle: nothing to install here (the README's install command set this machine up; "
                "docs/colab-kaggle.md is for those platforms).")
        print(line)
        return
    loaded = {name: getattr(sys.modules[name], "__version__", None) for name in _RELOADED if name in sys.modules}
    began = time.perf_counter()
    run(install_command())
    took = time.perf_counter() - began
    now = _versions(_RELOADED)
    shown = ", ".join(f"{name} {version}" for name, version in now.items() if version)
    line = f"On {where.title()}: installed the pinned dependencies in {took:.0f} s ({shown})."
    print(line)
    problem = check_gpu()
    if problem is not None:
        print(f"Warning: {problem}.")
    changed = [name for name, version in loaded.items()
               if version is not None and now.get(name) is not None and _release(now[name]) != _release(version)]
    if changed:
        menu = ("Colab's Runtime > Restart session" if where == "colab"
                else "Kaggle's Run > Restart & clear cell outputs")
        raise RestartNeeded(f"the install replaced {', '.join(changed)}, already loaded by this kernel: restart it "
                            f"({menu}), then run the notebook again from the top (this cell then finds everything "
                            "installed)")


# ---------------------------------------------------------------------------------------------
# The GPU and the data


def gpu_advice(gpu: bool | None) -> str | None:
    """Return how to switch a GPU on, on Colab or Kaggle without one (None elsewhere, or with a GPU).

    Used by the settings cell of notebooks 5-8 (:meth:`us8k_lib.settings.Settings.report`).
    """
    where = platform()
    if gpu is not False or where is None:
        return None
    how = ("Runtime > Change runtime type > a GPU (T4 on the free tier) > Save" if where == "colab" else
           "the notebook editor's Settings > Accelerator > GPU (T4 x2 or P100; needs a phone-verified account)")
    name = where.title()  # Colab or Kaggle
    return (f"No GPU in this {name} runtime: the small settings run on its CPU instead. To train on a GPU: {how}, "
            f"then run the notebook again from the top ({name} starts a new machine: files written so far are lost; "
            "docs/colab-kaggle.md says how to keep them).")


def attached_dataset(input_dir: Path | None = None) -> Path | None:
    """Return an UrbanSound8K attached to a Kaggle notebook (under :data:`KAGGLE_INPUT`), else None.

    Either layout counts (:mod:`us8k_lib.datasets.layout`); the first found, in name order, up to
    three folders deep. Used by :func:`us8k_lib.paths.choose_root`.
    """
    base = KAGGLE_INPUT if input_dir is None else input_dir
    if not base.is_dir():
        return None
    for pattern in ("*/UrbanSound8K.csv", "*/*/UrbanSound8K.csv", "*/*/*/UrbanSound8K.csv"):
        for csv in sorted(base.glob(pattern)):
            root = csv.parent.parent if csv.parent.name == "metadata" else csv.parent
            if csv.parent.name == "metadata" or (root / "fold1").is_dir():
                return root
    return None
