"""Write every link to the repository from its one setting, ``us8k_lib.hosted.REPOSITORY``.

A fork sets ``REPOSITORY = "you/us8k"`` (and ``BRANCH``) in ``us8k_lib/hosted.py``, then runs

    python tools/hosted_links.py

which rewrites the "Open in Colab" / "Open in Kaggle" badges under each notebook's title and in the
README's notebook table, the Binder badge of the README and docs/binder.md, and the install cell
that opens every notebook. Only those lines change (a notebook's outputs are kept). ``--check``
changes nothing and exits 1 naming each file that is out of step (what the tests check too).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from us8k_lib import hosted

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
BADGES = re.compile(r"\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\) \[!\[Open in Kaggle\]\([^)]*\)\]\([^)]*\)")
BINDER = re.compile(r"https://mybinder\.org/v2/gh/[^/\s)]+/[^/\s)]+/[^?\s)]+")


def _notebook(path: Path) -> tuple[str, str]:
    """Return (text now, text with the links written) of one notebook."""
    before = path.read_text(encoding="utf-8")
    nb = json.loads(before)
    title = "".join(nb["cells"][0]["source"])
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    title = BADGES.sub(lambda _: hosted.badges(path.name), title)
    nb["cells"][0]["source"] = title.splitlines(keepends=True)
    first["source"] = hosted.first_cell().splitlines(keepends=True)
    return before, json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _markdown(path: Path) -> tuple[str, str]:
    """Return (text now, text with the links written) of the README or a docs page."""
    before = path.read_text(encoding="utf-8")
    after = BINDER.sub(lambda _: hosted.binder_url().split("?")[0], before)
    for notebook in NOTEBOOKS:
        row = re.compile(rf"(\[{re.escape(notebook.stem)}\]\(notebooks/{re.escape(notebook.name)}\))(<br>)?("
                         + BADGES.pattern + ")?")
        after = row.sub(lambda m, n=notebook: f"{m.group(1)}<br>{hosted.badges(n.name)}", after)
    return before, after


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or, with ``--check``, compare) every link; return 0, or 1 when ``--check`` finds one out of step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of step")
    args = parser.parse_args(argv)
    stale = []
    for path, (before, after) in [*((p, _notebook(p)) for p in NOTEBOOKS),
                                  *((p, _markdown(p)) for p in (ROOT / "README.md", ROOT / "docs" / "binder.md"))]:
        if before != after:
            stale.append(path.relative_to(ROOT).as_posix())
            if not args.check:
                path.write_text(after, encoding="utf-8")
    if args.check and stale:
        print("links out of step with us8k_lib.hosted.REPOSITORY: " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else f"every link follows {hosted.REPOSITORY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
