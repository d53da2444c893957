"""A notebook's section structure, read from its markdown headings (used by slides, guide, site).

A course notebook is a title (``#``), sections (``##``) with optional sub-sections (``###``),
an ``## Exercises`` section whose exercises start with ``### Exercise N`` or a paragraph
``**Exercise N ...**``, a ``## Summary`` checklist and ``## References``. A markdown cell may
hold the end of one section and the start of the next: cells are split at every heading
outside a fenced code block, so each piece belongs to exactly one section.

    outline = read_outline(Path("notebooks/01_training_loop.ipynb"))
    [s.title for s in outline.body]    # the agenda
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from helpers import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
HEADING = re.compile(r"^(#{1,3})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
EXERCISE_START = re.compile(r"^(?:###\s+|\*\*)Exercise\s+(\d+)\b(.*)", re.S)
WORD = re.compile(r"[A-Za-z0-9À-ÿ가-힣_'’-]+")
SPECIAL_TITLES = {
    "parameters": "parameters",
    "exercises": "exercises",
    "summary": "summary",
    "references": "references",
}


def course_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """Every ``NN_name.ipynb`` in ``directory``, in course order (whatever numbers exist)."""
    return sorted(directory.glob("[0-9][0-9]_*.ipynb"))


@dataclass
class Block:
    """One piece of a cell: a markdown fragment, or a whole code cell (with its outputs)."""

    cell_type: str
    source: str
    cell: nbformat.NotebookNode
    index: int

    @property
    def tags(self) -> list[str]:
        return list(self.cell.get("metadata", {}).get("tags", []))

    @property
    def is_solution(self) -> bool:
        """A hidden reference answer: never shown on a slide, never counted as talk time."""
        return "solution" in self.tags or bool(
            self.cell.get("metadata", {}).get("jupyter", {}).get("source_hidden")
        )


@dataclass
class Section:
    """A heading and the blocks under it; ``##`` sections hold their ``###`` sub-sections."""

    title: str
    level: int
    blocks: list[Block] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``title``, ``parameters``, ``exercises``, ``summary``, ``references`` or ``body``."""
        if self.level == 1:
            return "title"
        first = re.split(r"\W+", self.title.strip().lower(), maxsplit=1)[0]
        return SPECIAL_TITLES.get(first, "body") if self.level == 2 else "body"

    def all_blocks(self) -> list[Block]:
        """Own blocks, then every sub-section's, in notebook order."""
        return self.blocks + [b for sub in self.subsections for b in sub.all_blocks()]


@dataclass
class Exercise:
    """One exercise: its number, a one-line title, its task text and whether a Check cell grades it."""

    number: int
    title: str
    blocks: list[Block]

    @property
    def checked(self) -> bool:
        return any("check" in b.tags for b in self.blocks)

    @property
    def text(self) -> str:
        return "\n\n".join(b.source for b in self.blocks if b.cell_type == "markdown").strip()


@dataclass
class Outline:
    """A notebook read as title, objectives, body sections, exercises, checklist and references."""

    name: str
    title: str
    intro: list[Block]
    objectives: list[str]
    sections: list[Section]

    @property
    def plain_title(self) -> str:
        """The title without markdown emphasis or code marks (for window titles, comparisons)."""
        return re.sub(r"[*`]", "", self.title)

    def of_kind(self, kind: str) -> list[Section]:
        return [s for s in self.sections if s.kind == kind]

    @property
    def body(self) -> list[Section]:
        """The taught sections, in notebook order (the agenda), parameters and extras excluded."""
        return self.of_kind("body")

    @property
    def exercises(self) -> list[Exercise]:
        return [ex for s in self.of_kind("exercises") for ex in split_exercises(s)]

    @property
    def checklist(self) -> list[str]:
        items: list[str] = []
        for section in self.of_kind("summary"):
            items += bullet_items(
                "\n".join(b.source for b in section.all_blocks() if b.cell_type == "markdown")
            )
        return items


def split_markdown(source: str) -> list[str]:
    """Split markdown at every heading line (``#``–``###``) that is not inside a code fence."""
    pieces: list[list[str]] = [[]]
    in_fence = False
    for line in source.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and HEADING.match(line) and any(x.strip() for x in pieces[-1]):
            pieces.append([])
        pieces[-1].append(line)
    return ["\n".join(p).strip("\n") for p in pieces if any(x.strip() for x in p)]


def heading_of(markdown: str) -> tuple[int, str] | None:
    """``(level, title)`` when ``markdown`` starts with a heading, else ``None``."""
    first = markdown.lstrip("\n").split("\n", 1)[0]
    match = HEADING.match(first)
    return (len(match.group(1)), match.group(2)) if match else None


def blocks_of(notebook: nbformat.NotebookNode) -> list[Block]:
    """The notebook's cells as blocks, markdown cells split at their headings."""
    blocks: list[Block] = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            blocks += [
                Block("markdown", piece, cell, index) for piece in split_markdown(cell.source)
            ]
        elif cell.cell_type == "code":
            blocks.append(Block("code", cell.source, cell, index))
    return blocks


def sections_of(blocks: list[Block]) -> tuple[Section, list[Section]]:
    """The title section (everything before the first ``##``) and the ``##`` sections."""
    title = Section("", 1)
    sections: list[Section] = []
    current = title
    for block in blocks:
        head = heading_of(block.source) if block.cell_type == "markdown" else None
        if head and head[0] == 1 and not sections:
            title.title = head[1]
        elif head and head[0] == 2:
            current = Section(head[1], 2)
            sections.append(current)
        elif head and head[0] == 3 and sections:
            current = Section(head[1], 3)
            sections[-1].subsections.append(current)
        current.blocks.append(block)
    return title, sections


def bullet_items(markdown: str) -> list[str]:
    """The top-level bullet items of ``markdown`` (continuation lines joined, ``[ ]`` removed)."""
    items: list[str] = []
    for line in markdown.splitlines():
        match = re.match(r"^[-*]\s+(?:\[[ xX]\]\s+)?(.*)$", line)
        if match:
            items.append(match.group(1).strip())
        elif items and line.startswith((" ", "\t")) and line.strip():
            items[-1] += " " + line.strip()
        elif items and not line.strip():
            items.append("")
    return [item for item in items if item]


def objectives_of(intro: list[Block]) -> list[str]:
    """The bullets after a "Learning objectives" line in the title section."""
    text = "\n".join(b.source for b in intro if b.cell_type == "markdown")
    match = re.search(r"learning objectives\W*\n(.*?)(?:\n\s*\n|\Z)", text, re.I | re.S)
    return bullet_items(match.group(1)) if match else []


def split_exercises(section: Section) -> list[Exercise]:
    """The exercises of an ``## Exercises`` section; hidden solutions are kept out of them."""
    exercises: list[Exercise] = []
    for block in section.all_blocks():
        if block.cell_type == "markdown":
            for paragraph in re.split(r"\n\s*\n", block.source):
                match = EXERCISE_START.match(paragraph.strip())
                if match:
                    rest = match.group(2)
                    rest = rest.split("**", 1)[0] if paragraph.lstrip().startswith("**") else rest
                    title = rest.split("\n", 1)[0].strip(" .·—:-")
                    exercises.append(Exercise(int(match.group(1)), title, []))
                if (
                    exercises
                    and paragraph.strip()
                    and not heading_of(paragraph) == (2, section.title)
                ):
                    exercises[-1].blocks.append(
                        Block("markdown", paragraph.strip(), block.cell, block.index)
                    )
        elif exercises and not block.is_solution:
            exercises[-1].blocks.append(block)
    return exercises


def read_outline(path: Path) -> Outline:
    """Read ``path`` (a course notebook) into its outline."""
    try:
        notebook = nbformat.read(path, as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError) as exc:
        raise SystemExit(
            f"{path} is not a readable notebook ({type(exc).__name__}: {exc})"
        ) from exc
    title, sections = sections_of(blocks_of(notebook))
    return Outline(
        path.stem, title.title or path.stem, title.blocks, objectives_of(title.blocks), sections
    )


def words(markdown: str) -> int:
    """Words of prose in ``markdown``: fenced code, inline math and URLs not counted."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$|https?://\S+", " ", text, flags=re.S)
    return len(WORD.findall(text))


def code_lines(source: str) -> int:
    """Non-blank lines of a code cell."""
    return sum(1 for line in source.splitlines() if line.strip())


def figures(cell: nbformat.NotebookNode) -> int:
    """Image outputs of a code cell."""
    return sum(
        1
        for out in cell.get("outputs", [])
        if any(k.startswith("image/") for k in out.get("data", {}))
    )
