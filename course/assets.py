"""The decks' and the site's JavaScript, copied from pip packages: nothing comes from a CDN.

- MathJax 3 (SVG output, no web fonts to fetch) from ``django-static-mathjax`` — a plain copy
  of MathJax's ``es5`` build; the package does not need Django;
- reveal.js 5 from ``sphinx-revealjs``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MATHJAX_PARTS = ("tex-svg.js", "input", "ui", "a11y", "sre")  # what tex-svg.js loads on demand
MATHJAX_SCRIPT = "tex-svg.js"


def mathjax_source() -> Path:
    import mathjax  # the django-static-mathjax distribution

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def revealjs_source() -> Path:
    import sphinx_revealjs

    return Path(sphinx_revealjs.__file__).parent / "_static" / "revealjs"


def copy_mathjax(target: Path) -> Path:
    """MathJax's SVG build under ``target`` (skipped when already there); returns ``target``."""
    source = mathjax_source()
    if not (target / MATHJAX_SCRIPT).is_file():
        target.mkdir(parents=True, exist_ok=True)
        for part in MATHJAX_PARTS:
            if (source / part).is_dir():
                shutil.copytree(source / part, target / part, dirs_exist_ok=True)
            else:
                shutil.copy2(source / part, target / part)
    return target


def copy_revealjs(target: Path) -> Path:
    """reveal.js (dist/ and plugin/) under ``target`` (skipped when already there)."""
    if not (target / "dist" / "reveal.js").is_file():
        source = revealjs_source()
        for part in ("dist", "plugin"):
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
    return target
