"""Show the source of the code a notebook teaches, with syntax highlighting.

Worker processes must import their functions from a module, so some of the taught code lives in
``helpers/``; ``show_source`` puts it on the page anyway. In Jupyter it renders highlighted
Markdown; elsewhere (nbval, papermill logs) the plain source is printed.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any


def source_of(*objects: Callable[..., Any] | type) -> str:
    """The source code of functions or classes, dedented and joined by a blank line."""
    if not objects:
        raise ValueError("source_of needs at least one function or class.")
    return "\n\n".join(textwrap.dedent(inspect.getsource(obj)).rstrip() for obj in objects)


def show_source(*objects: Callable[..., Any] | type) -> None:
    """Display the source of ``objects`` as a highlighted Python block.

    The output carries the code twice: as Markdown (highlighted in JupyterLab and on code-hosting
    sites) and as plain text (what nbval, papermill logs and terminals show).
    """
    code = source_of(*objects)
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is installed with the course
        print(code)
        return
    display({"text/markdown": f"```python\n{code}\n```", "text/plain": code}, raw=True)
