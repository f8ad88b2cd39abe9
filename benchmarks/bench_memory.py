"""Peak memory of each notebook's kernel: what a learner's Jupyter (or Binder) session must hold.

    python benchmarks/bench_memory.py                    # every notebook, on the mini dataset
    python benchmarks/bench_memory.py 05 --per-cell      # one notebook, the peak after each cell
    python benchmarks/bench_memory.py --limit-mb 1000    # exit 1 if a kernel peaks above 1000 MB
    python benchmarks/bench_memory.py 05 --mode fast     # the memory mode of a machine with RAM to spare
    python benchmarks/bench_memory.py 05 06 07 08 --full-size /scratch/us8k-full --mode fast \
        --set EPOCHS=1 --set FOLDS=[1]                   # the full settings over 8 732 clips, one epoch, one fold

Executes each notebook in ``notebooks/`` with nbclient (as ``jupyter nbconvert --execute`` and
``pytest --nbval`` do: a fresh ipykernel per notebook; run from an empty temporary folder, so no
finished run is reused), then asks the
kernel for its own peak resident set size, ``VmHWM`` in ``/proc/self/status``. That is the figure
GNU time's "Maximum resident set size" reports for the kernel, the largest process of a notebook
run; ``tracemalloc`` would miss it, since PyTorch allocates outside Python's allocator.
``--per-cell`` reads it after every code cell too, so a jump points at the cell that caused it.

The dataset is whatever the notebooks resolve (``US8K_ROOT``, else the mini dataset): set
``US8K_DATA_DIR`` to a scratch folder to measure a cold cache. ``--full-size DIR`` measures the full
settings (``US8K_NOTEBOOK_SETTINGS=full``) over a dataset of the real one's size instead: the real
metadata's 8 732 rows, each a 4 s clip of noise in a WAV file (8 kHz mono, written into ``DIR``
once), formatted into a full-size cache (1.1 GB) as the real data is. ``--set NAME=VALUE`` replaces
a size of the settings cell (a cell after it assigns it), to bound the run: memory depends on the
batch and the models' width, not on how many epochs or folds run. The kernels run in the ``lean``
memory mode (``US8K_MEMORY=lean``, what a Binder session gets; see ``us8k_lib.engine.allocator``) unless
``--mode`` says otherwise. Linux only (``/proc``).
The last line sums up: ``peak <MB> MB (<notebook>)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from us8k_lib.engine.allocator import MODE_VARIABLE, memory_mode

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: Kernel-side probe: one JSON line with the peak and current resident set size, in MB.
_PROBE = (
    "import json as _j\n"
    "_s = dict(l.split(':', 1) for l in open('/proc/self/status') if l.startswith(('VmHWM', 'VmRSS')))\n"
    "print('__mem__' + _j.dumps({k: int(v.split()[0]) / 1024 for k, v in _s.items()}))\n"
    "del _j, _s"
)


def _reading(cell: nbformat.NotebookNode) -> dict[str, float]:
    for out in cell.get("outputs", []):
        if out.get("name") == "stdout" and "__mem__" in out.get("text", ""):
            line = next(ln for ln in out["text"].splitlines() if ln.startswith("__mem__"))
            return json.loads(line[len("__mem__"):])
    raise RuntimeError(f"the memory probe printed nothing: {cell.get('outputs')}")


def make_full_size_dataset(folder: Path) -> Path:
    """Write (once) a dataset of the real one's size into ``folder``: the real metadata and, for
    each of its 8 732 rows, 4 s of quiet noise as an 8 kHz mono 16-bit WAV file. Return its folder."""
    import numpy as np
    import soundfile as sf

    from us8k_lib.metadata import load_metadata

    root = folder / "UrbanSound8K"
    done = root / "metadata" / "UrbanSound8K.csv"
    if done.is_file():
        return root
    meta = load_metadata()
    rng = np.random.default_rng(0)
    for row in meta.itertuples():
        path = root / "audio" / f"fold{row.fold}" / row.slice_file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(32000)).astype(np.float32), 8000, subtype="PCM_16")
    done.parent.mkdir(parents=True, exist_ok=True)
    meta.to_csv(done.with_suffix(".tmp"), index=False)
    done.with_suffix(".tmp").replace(done)  # last: a folder with metadata is complete
    return root


def measure(path: Path, per_cell: bool, timeout: int,
            sets: list[str] | None = None) -> tuple[float, list[tuple[int, str, float, float]]]:
    """Execute the notebook at ``path``; return (kernel peak MB, [(cell, first line, peak MB, RSS MB)]).
    ``sets``: ``NAME=VALUE`` assignments run right after the settings cell, those it assigns only."""
    nb = nbformat.read(path, as_version=4)
    probes = []  # (index in the executed notebook, index of the measured cell in the original)
    cells = []
    for i, cell in enumerate(nb.cells):
        cells.append(cell)
        if sets and "US8K_NOTEBOOK_SETTINGS" in cell.source and "use = settings.choose(" in cell.source:
            assigned = [s for s in sets if f"\n{s.split('=')[0]} = " in "\n" + cell.source]
            cells.append(nbformat.v4.new_code_cell("\n".join(assigned + ["print(" + repr(f"set: {assigned}") + ")"])))
        if per_cell and cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(_PROBE))
            probes.append((len(cells) - 1, i))
    cells.append(nbformat.v4.new_code_cell(_PROBE))
    probes.append((len(cells) - 1, None))
    nb.cells = cells
    # From a fresh folder: notebooks 6-8 keep their runs under runs/ where they run, and finished
    # runs found there would be reported instead of trained, hiding the training's peak.
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as where:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": where}}).execute()
    steps = []
    for at, original in probes[:-1]:
        r = _reading(nb.cells[at])
        first = next((ln for ln in nb.cells[at - 1].source.splitlines() if not ln.startswith("#")), "")
        steps.append((original, first[:60], r["VmHWM"], r["VmRSS"]))
    return _reading(nb.cells[probes[-1][0]])["VmHWM"], steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="notebook name prefixes (e.g. 05); default: all")
    parser.add_argument("--per-cell", action="store_true", help="also print the peak after every code cell")
    parser.add_argument("--limit-mb", type=float, help="exit with 1 if any kernel peaks above this")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--full-size", type=Path, metavar="DIR",
                        help="the full settings over an 8 732-clip dataset written into DIR (once)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="replace a size of the settings cell, e.g. EPOCHS=1 (repeatable)")
    parser.add_argument("--mode", choices=["lean", "fast", "auto"], default="lean",
                        help="the kernels' memory mode (US8K_MEMORY); auto: the rule this machine gets "
                             "(default: lean, as on Binder)")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        parser.error("needs Linux (/proc/self/status)")
    paths = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not args.only or p.name.startswith(tuple(args.only)))
    if not paths:
        parser.error(f"no notebook in {NOTEBOOKS} starts with {args.only}")

    if args.full_size:
        os.environ["US8K_ROOT"] = str(make_full_size_dataset(args.full_size.resolve()))
        os.environ["US8K_NOTEBOOK_SETTINGS"] = "full"
        os.environ.setdefault("US8K_DATA_DIR", str(args.full_size.resolve() / "data"))  # its cache beside it
    if args.mode == "auto":
        os.environ.pop(MODE_VARIABLE, None)
    else:
        os.environ[MODE_VARIABLE] = args.mode  # the kernels inherit this process's environment
    print(f"{platform.processor() or platform.machine()}, {platform.python_version()}, torch "
          f"{metadata.version('torch')}, "
          f"glibc {platform.libc_ver()[1]}, {time.strftime('%Y-%m-%d')}, memory mode {memory_mode()}"
          + (f", full settings over 8 732 clips, set {args.set}" if args.full_size else ""))
    results = []
    for path in paths:
        start = time.perf_counter()
        peak, steps = measure(path, args.per_cell, args.timeout, args.set)
        for cell, first, hwm, rss in steps:
            print(f"    cell {cell:>2}  peak {hwm:7.0f} MB  now {rss:7.0f} MB  {first}")
        print(f"{path.name:<36} kernel peak {peak:7.0f} MB  ({time.perf_counter() - start:.0f} s)", flush=True)
        results.append((peak, path.name))
    worst = max(results)
    print(f"peak {worst[0]:.0f} MB ({worst[1]})")
    if args.limit_mb is not None and worst[0] > args.limit_mb:
        over = [n for p, n in results if p > args.limit_mb]
        print(f"over the limit of {args.limit_mb:.0f} MB: {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
