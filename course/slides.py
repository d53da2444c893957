"""One reveal.js deck per notebook, built from its section structure; works offline.

The deck: the title and learning objectives first (the motivation as speaker notes, the
facilitator's guide one slide down), then a slide per section with its sub-sections as
vertical slides, the exercises as their own slides, the references, and the checklist last.
Code longer than ``MAX_CODE_LINES`` and outputs longer than ``MAX_OUTPUT_LINES`` are trimmed,
every code cell's output appears as a fragment (predict, then reveal), solutions are left out,
and a slide that would overflow continues on a vertical slide. Rendering is nbconvert's slides
exporter with ``docs/slides_template/`` (reveal.js and MathJax copied from pip packages next
to the decks, see ``course.assets``): no network needed.

    python -m course.slides                     # every notebook -> build/slides/NN_name.html
    python -m course.slides 01_training_loop    # one deck
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook

from course.assets import copy_mathjax, copy_revealjs
from course.guide import guide_markdown, select
from course.sections import Block, Outline, Section, read_outline
from helpers import BUILD_DIR, REPO_ROOT

SLIDES_DIR = BUILD_DIR / "slides"
TEMPLATE_DIR = REPO_ROOT / "docs" / "slides_template"
MAX_CODE_LINES = 14
MAX_OUTPUT_LINES = 12
SLIDE_CAPACITY = 25.0  # estimated text lines that fit on one 1280×800 slide
IMAGE_LINES = 11.0
CHARS_PER_LINE = 95


@dataclass
class Slide:
    """One slide: its cells; ``vertical`` slides sit below the previous horizontal one."""

    title: str
    cells: list[nbformat.NotebookNode] = field(default_factory=list)
    vertical: bool = False
    height: float = 0.0


def trim_lines(text: str, limit: int, marker: str) -> str:
    """``text`` cut to ``limit`` lines: the head, a marker saying how much went, the last line."""
    lines = text.rstrip("\n").split("\n")
    if len(lines) <= limit:
        return text
    head = lines[: limit - 2]
    cut = len(lines) - len(head) - 1
    return "\n".join(head + [marker.format(n=cut), lines[-1]]) + "\n"


def trim_code(source: str) -> str:
    """Long code keeps its first lines and says how many more the notebook holds."""
    lines = source.rstrip("\n").split("\n")
    if len(lines) <= MAX_CODE_LINES:
        return source
    return "\n".join(
        lines[: MAX_CODE_LINES - 1]
        + [f"# … {len(lines) - MAX_CODE_LINES + 1} more lines: see the notebook"]
    )


def trim_outputs(outputs: list) -> list:
    """Streams and text results cut to ``MAX_OUTPUT_LINES``; figures and tables kept whole."""
    trimmed = []
    for output in copy.deepcopy(outputs):
        if output.get("output_type") == "stream":
            output["text"] = trim_lines(output["text"], MAX_OUTPUT_LINES, "… ({n} lines trimmed) …")
        elif "text/plain" in output.get("data", {}) and len(output["data"]) == 1:
            output["data"]["text/plain"] = trim_lines(
                output["data"]["text/plain"], MAX_OUTPUT_LINES, "… ({n} lines trimmed) …"
            )
        trimmed.append(output)
    return trimmed


def text_height(text: str) -> float:
    """Estimated rendered lines of markdown or plain text."""
    height = 0.0
    for line in text.split("\n"):
        if not line.strip():
            height += 0.4
        elif line.lstrip().startswith("#"):
            height += 1.6
        else:
            height += max(1, math.ceil(len(line) / CHARS_PER_LINE))
    return height


def output_height(outputs: list) -> float:
    height = 0.0
    for output in outputs:
        data = output.get("data", {})
        if any(k.startswith("image/") for k in data):
            height += IMAGE_LINES
        elif "text/html" in data:
            height += min(12.0, data["text/html"].count("<tr") + 1.0)
        elif output.get("output_type") == "stream":
            height += text_height(output["text"]) * 0.85
        elif "text/plain" in data:
            height += text_height(data["text/plain"]) * 0.85
    return height


def slide_type(cell: nbformat.NotebookNode, kind: str) -> nbformat.NotebookNode:
    cell.metadata["slideshow"] = {"slide_type": kind}
    return cell


def paragraphs(markdown: str) -> list[str]:
    """Markdown split at blank lines, keeping fenced code and display math in one piece."""
    pieces: list[str] = []
    current: list[str] = []
    fenced = False
    for line in markdown.split("\n"):
        if line.strip().startswith(("```", "~~~")):
            fenced = not fenced
        if line.strip().count("$$") % 2:
            fenced = not fenced
        if not line.strip() and not fenced:
            if current:
                pieces.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        pieces.append("\n".join(current))
    return pieces


def block_items(block: Block) -> list[tuple[list[nbformat.NotebookNode], float]]:
    """A block as packable items ``(cells, height)``: markdown by paragraph, code with its output."""
    if block.cell_type == "markdown":
        return [([new_markdown_cell(p)], text_height(p)) for p in paragraphs(block.source)]
    if block.is_solution or not block.source.strip():
        return []
    source = trim_code(block.source)
    code = nbformat.v4.new_code_cell(source)
    code.metadata["tags"] = block.tags
    cells = [code]
    height = min(len(source.split("\n")), MAX_CODE_LINES) * 0.9 + 0.6
    outputs = [
        o for o in trim_outputs(block.cell.get("outputs", [])) if o["output_type"] != "error"
    ]
    if outputs:
        shown = nbformat.v4.new_code_cell("", outputs=outputs)
        shown.metadata["tags"] = ["slide-output"]
        slide_type(shown, "fragment")
        cells.append(shown)
        height += output_height(outputs)
    return [(cells, height)]


def pack(
    title: str, blocks: list[Block], vertical: bool, heading: str | None = None
) -> list[Slide]:
    """Blocks laid onto one slide, continued on vertical slides when they would overflow."""
    slides = [Slide(title, vertical=vertical)]
    if heading:
        slides[0].cells.append(new_markdown_cell(heading))
        slides[0].height = text_height(heading)
    for block in blocks:
        for cells, height in block_items(block):
            current = slides[-1]
            if current.cells and current.height + height > SLIDE_CAPACITY:
                current = Slide(title, [new_markdown_cell(f"#### {title} (continued)")], True, 1.6)
                slides.append(current)
            current.cells += cells
            current.height += height
    return slides


def title_slide(outline: Outline) -> Slide:
    """Title and objectives (with prerequisites and run time); the motivation as speaker notes."""
    lines = [f"# {outline.title}", "", "**Learning objectives**", ""]
    lines += [f"- {objective}" for objective in outline.objectives]
    notes = []
    intro = "\n\n".join(b.source for b in outline.intro if b.cell_type == "markdown")
    for paragraph in paragraphs(intro)[1:]:
        if paragraph.startswith(("**Prerequisites", "**Run time")):
            lines += ["", paragraph]
        elif not paragraph.lower().startswith(
            ("**learning objectives", "- ")
        ) and not paragraph.startswith("  "):
            notes.append(paragraph)
    cells = [new_markdown_cell("\n".join(lines))]
    if notes:
        cells.append(slide_type(new_markdown_cell("\n\n".join(notes)), "notes"))
    return Slide(outline.title, cells)


def section_slides(section: Section) -> list[Slide]:
    """A section on one horizontal slide, each sub-section on a vertical slide below it."""
    slides = pack(section.title, section.blocks, vertical=False)
    for sub in section.subsections:
        slides += pack(sub.title, sub.blocks, vertical=True)
    return slides


def exercise_slides(outline: Outline) -> list[Slide]:
    """An overview slide listing the exercises, then one vertical slide per exercise."""
    exercises = outline.exercises
    if not exercises:
        return []
    listing = ["## Exercises", ""] + [
        f"{ex.number}. {ex.title.strip('()') or 'exercise'}" + ("" if ex.checked else " *(open)*")
        for ex in exercises
    ]
    listing += [
        "",
        "Each checked exercise ends in a **Check** cell: it passes when the answer is "
        "right. `make student` writes copies with the answers removed.",
    ]
    slides = [Slide("Exercises", [new_markdown_cell("\n".join(listing))])]
    for ex in exercises:
        slides += pack(f"Exercise {ex.number}", ex.blocks, vertical=True)
    return slides


def outline_slides(outline: Outline, guide: str | None = None) -> list[Slide]:
    """Every slide of the deck, in presentation order (checklist last)."""
    slides = [title_slide(outline)]
    if guide:
        cell = new_markdown_cell(guide)
        cell.metadata["tags"] = ["slide-guide"]
        slides.append(Slide("Facilitator's guide", [cell], vertical=True))
    for section in outline.of_kind("parameters") + outline.body:
        slides += section_slides(section)
    slides += exercise_slides(outline)
    for section in outline.of_kind("references"):
        refs = pack(section.title, section.all_blocks(), vertical=False)
        for slide in refs:
            for cell in slide.cells:
                cell.metadata["tags"] = ["slide-small"]
        slides += refs
    for section in outline.of_kind("summary"):
        slides += pack(section.title, section.all_blocks(), vertical=False)
    return slides


def deck_notebook(outline: Outline, guide: str | None = None) -> nbformat.NotebookNode:
    """The deck as a notebook whose cells carry reveal slide metadata (what nbconvert renders)."""
    cells = []
    for slide in outline_slides(outline, guide):
        for position, cell in enumerate(slide.cells):
            if position == 0:
                slide_type(cell, "subslide" if slide.vertical else "slide")
            elif "slideshow" not in cell.metadata:
                slide_type(cell, "-")
            cells.append(cell)
    notebook = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "title": outline.title,
        },
    )
    return notebook


def copy_assets(out: Path) -> Path:
    """reveal.js, MathJax and the course CSS under ``out/_static`` (see ``course.assets``)."""
    static = out / "_static"
    copy_revealjs(static / "revealjs")
    copy_mathjax(static / "mathjax")
    shutil.copy2(TEMPLATE_DIR / "course-slides.css", static / "course-slides.css")
    shutil.copy2(REPO_ROOT / "docs" / "_static" / "favicon.svg", static / "favicon.svg")
    return static


def exporter():
    from nbconvert import SlidesExporter

    return SlidesExporter(
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        template_name="course_reveal",
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def write_decks(names: list[str] | None = None, out: Path = SLIDES_DIR) -> list[Path]:
    """Write ``out/NN_name.html`` for the named notebooks (all by default), and their assets."""
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    export = exporter()
    written = []
    for path in select(names):
        outline = read_outline(path)
        body, _ = export.from_notebook_node(
            deck_notebook(outline, guide_markdown(outline, heading_level=2)),
            resources={
                "course_assets": "_static",
                "course_title": outline.plain_title,
                "metadata": {"name": path.stem},
            },
        )
        target = out / f"{path.stem}.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
    return written


def horizontal_titles(outline: Outline) -> list[str]:
    """Titles of the deck's horizontal slides, in order (what the arrow keys step through)."""
    return [s.title for s in outline_slides(outline) if not s.vertical]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="notebook names without .ipynb (default: all)")
    parser.add_argument("--out", type=Path, default=SLIDES_DIR)
    args = parser.parse_args(argv)
    from course.guide import write_guides

    write_guides(args.names)
    for path in write_decks(args.names, args.out):
        print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
