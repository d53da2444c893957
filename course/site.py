"""The executed course as a static website: Sphinx + myst-nb, outputs as committed, offline.

``build/site-src/`` is laid out from the repository (the notebooks copied unchanged, an index
with the outline, the course report, the facilitator's guides, a slides page); Sphinx builds it
with the configuration in ``docs/`` into ``build/site/``, warnings treated as errors. myst-nb
runs with execution off, so every page shows the outputs stored in the committed notebook.
The site links to the decks in ``build/slides/`` (``make slides``) as ``../slides/NN_name.html``;
serve ``build/`` to browse both: ``python -m http.server -d build -b 127.0.0.1 8000`` and open
http://127.0.0.1:8000/site/.

    python -m course.site            # build/site/index.html
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from course.assets import copy_mathjax
from course.guide import guide_markdown
from course.sections import course_notebooks, read_outline
from helpers import BUILD_DIR, REPO_ROOT

DOCS_DIR = REPO_ROOT / "docs"
SOURCE_DIR = BUILD_DIR / "site-src"
SITE_DIR = BUILD_DIR / "site"
DOCTREE_DIR = BUILD_DIR / "site-doctrees"
ASSETS = "_assets"  # inside SOURCE_DIR: MathJax, copied into the site's _static/

INTRO = """An ordered set of Jupyter notebooks on the craft of *training* neural networks, shown here
with the outputs of their committed run: nothing on these pages was re-executed to build them.
Every notebook also comes as a reveal.js deck and with a facilitator's guide for study groups;
the course report lists what `make run` measured."""


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (keeps Sphinx's incremental build)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def copy_if_changed(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_bytes() != source.read_bytes():
        shutil.copy2(source, target)


def slide_link(name: str, depth: int = 0) -> str:
    """The deck's URL relative to a page ``depth`` folders below the site root."""
    return "../" * (depth + 1) + f"slides/{name}.html"


def index_page(notebooks: list[Path]) -> str:
    rows = ["| # | notebook | slides | guide |", "|---|---|---|---|"]
    for path in notebooks:
        title = read_outline(path).title
        number, _, rest = title.partition(" · ")
        label = rest or title
        rows.append(
            f"| {path.stem[:2]} | [{label}]({path.name}) | "
            f'<a href="{slide_link(path.stem)}">slides</a> | '
            f"[guide](guides/{path.stem}.md) |"
        )
    toc = "\n".join(p.stem for p in notebooks)
    return f"""# Practical deep-learning training

{INTRO}

{chr(10).join(rows)}

The decks are in `build/slides/` (`make slides`); they open offline in any browser. The
[course report](report.md) holds the key figures and run times of the last `make run`.

```{{toctree}}
:caption: Notebooks
:maxdepth: 1
:hidden:

{toc}
```

```{{toctree}}
:caption: For study groups
:maxdepth: 1
:hidden:

slides
guides/index
report
```
"""


def slides_page(notebooks: list[Path]) -> str:
    lines = [
        "# Slides",
        "",
        "One reveal.js deck per notebook, built from its sections (`make slides`). Arrow keys "
        "move between slides (down for a section's sub-sections), `S` opens the speaker "
        "notes, `F` goes full screen. The facilitator's guide is the slide below the title.",
        "",
    ]
    for path in notebooks:
        lines.append(f'- <a href="{slide_link(path.stem)}">{read_outline(path).title}</a>')
    return "\n".join(lines) + "\n"


def report_page(source: Path, build: Path = BUILD_DIR) -> str:
    """The reports ``make run`` wrote (``build/<profile>/report.md``), or how to get one."""
    reports = sorted(
        build.glob("*/report.md"), key=lambda p: (p.parent.name != "cpu", p.parent.name)
    )
    reports = [r for r in reports if r.parent.name not in {"site", "site-src", "slides", "guides"}]
    lines = ["# Course report", ""]
    if not reports:
        return (
            "\n".join(
                lines
                + [
                    "No report yet: `make run` (or `make run PROFILE=gpu` on a GPU machine) executes every "
                    "notebook and writes `build/<profile>/report.md`; `make site` then shows it here."
                ]
            )
            + "\n"
        )
    for report in reports:
        profile = report.parent.name
        text = report.read_text(encoding="utf-8")
        text = re.sub(r"^(#+)", r"#\1", text, flags=re.M)  # one level below the page title
        picture = report.parent / "report.png"
        if picture.is_file():
            copy_if_changed(picture, source / f"report-{profile}.png")
            text = text.replace("(report.png)", f"(report-{profile}.png)")
        else:
            text = re.sub(r"!\[[^\]]*\]\(report\.png\)", "", text)
        lines += [f"From `build/{profile}/report.md`.", "", text, ""]
    return "\n".join(lines) + "\n"


def guides_index(notebooks: list[Path]) -> str:
    toc = "\n".join(p.stem for p in notebooks)
    return f"""# Facilitator's guides

One page per notebook: the agenda with a minute budget per section, the exercises to set, the
questions to discuss, what to run before the session and the figures to expect.

```{{toctree}}
:maxdepth: 1

{toc}
```
"""


def lay_out_sources(source: Path = SOURCE_DIR, notebooks: list[Path] | None = None) -> list[Path]:
    """Write the site's source folder; files no longer part of it are removed."""
    notebooks = course_notebooks() if notebooks is None else notebooks
    if not notebooks:
        raise SystemExit("No notebooks/NN_name.ipynb found: nothing to build.")
    source.mkdir(parents=True, exist_ok=True)
    wanted = {f"{p.name}" for p in notebooks} | {f"guides/{p.stem}.md" for p in notebooks}
    wanted |= {"index.md", "slides.md", "report.md", "guides/index.md"}
    for path in notebooks:
        copy_if_changed(path, source / path.name)
        write_if_changed(source / "guides" / f"{path.stem}.md", guide_markdown(read_outline(path)))
    write_if_changed(source / "index.md", index_page(notebooks))
    write_if_changed(source / "slides.md", slides_page(notebooks))
    write_if_changed(source / "guides" / "index.md", guides_index(notebooks))
    write_if_changed(source / "report.md", report_page(source))
    for stale in [*source.glob("*.ipynb"), *source.glob("*.md"), *source.glob("guides/*.md")]:
        if str(stale.relative_to(source)) not in wanted:
            stale.unlink()
    copy_mathjax(source / ASSETS / "mathjax")
    return notebooks


def build_site(out: Path = SITE_DIR, source: Path = SOURCE_DIR) -> Path:
    """Lay out the sources and run Sphinx (``-W``: any warning fails the build)."""
    from sphinx.cmd.build import build_main

    notebooks = lay_out_sources(source)
    os.environ["COURSE_SITE_SLIDES"] = json.dumps({p.stem: slide_link(p.stem) for p in notebooks})
    os.environ["COURSE_SITE_ASSETS"] = str(source / ASSETS)
    status = build_main(
        [
            "-b",
            "html",
            "-W",
            "--keep-going",
            "-q",
            "-c",
            str(DOCS_DIR),
            "-d",
            str(DOCTREE_DIR),
            str(source),
            str(out),
        ]
    )
    if status:
        raise SystemExit(f"Sphinx failed (status {status}); the warnings above say where.")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=SITE_DIR)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    index = build_site(args.out)
    print(
        f"{index.relative_to(REPO_ROOT) if index.is_relative_to(REPO_ROOT) else index} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
