"""Show the library's own code on a notebook's page: what a notebook runs, where the learner reads it.

The notebooks teach PyTorch with code from this package (M5, the ``Dataset``, the training step and
epoch, evaluation). Rather than a copy that could drift from what runs, a notebook displays the
source of the very function or class it is about to call: :func:`show`. nbval compares the shown
text with the committed notebook, so the page can never show other code than the package runs.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

#: Marks a displayed source in a notebook's saved output (the notebook tests read code there, not results).
OUTPUT_MARK = "us8k_lib.source"


class Source:
    """Python source shown in a notebook: highlighted where the front end renders Markdown (JupyterLab,
    GitHub), plain text elsewhere and for nbval, which compares the text itself."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, str], dict[str, Any]]:
        return ({"text/plain": self.text, "text/markdown": f"```python\n{self.text}\n```"},
                {OUTPUT_MARK: {"source": True}})


def show(*objects: Any) -> Source:
    """Return the source of ``objects`` (classes, functions, methods), one after the other, each as
    written in the package (a method without its class's indent). Used by notebooks 3, 4 and 5."""
    return Source("\n\n\n".join(textwrap.dedent(inspect.getsource(o)).rstrip() for o in objects))
