"""Section splitting, decks and minute budgets (course.sections, course.slides, course.guide)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course import guide, site, slides
from course.sections import (
    blocks_of,
    course_notebooks,
    read_outline,
    split_markdown,
    words,
)

FENCE_THEN_HEADING = (
    "Text.\n\n```bash\n# a comment, not a heading\n```\n\n## Exercises\n\n**Exercise 1 — x.** Do."
)


def toy_notebook(tmp_path, prose_words: int = 50, code_lines: int = 3, long_output: int = 0):
    """A small notebook in the course's anatomy, written to tmp_path/05_toy.ipynb."""
    filler = "\n\n".join(" ".join(["word"] * 50) for _ in range(prose_words // 50))
    stream = "".join(f"line {i}\n" for i in range(long_output))
    cells = [
        new_markdown_cell(
            "# 05 · Toy\n\nMotivation paragraph.\n\n**Learning objectives**\n"
            "- Learn one thing,\n  over two lines.\n- Learn another.\n\n"
            "**Prerequisites:** none.\n\n**Run time:** about 5 s on 2 CPU cores."
        ),
        new_markdown_cell("## Parameters"),
        new_code_cell("SEED = 0", metadata={"tags": ["parameters"]}),
        new_markdown_cell(f"## 1 · First\n\n{filler}\n\n### 1.1 Sub\n\nMore text. Why is it so?"),
        new_code_cell(
            "\n".join(f"x{i} = {i}" for i in range(code_lines)),
            outputs=[new_output("stream", name="stdout", text=stream or "ok\n")],
        ),
        new_markdown_cell("Tail of section 1.\n\n## 2 · Second?\n\nShort."),
        new_markdown_cell("## Exercises\n\n**Exercise 1 — add two numbers.** Write `add`."),
        new_code_cell(
            "def add(a, b):\n    return a + b",
            metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}},
        ),
        new_code_cell("# Check\nassert add(1, 2) == 3", metadata={"tags": ["check"]}),
        new_markdown_cell(
            "**Exercise 2 (discussion, no check).** Is it fast?\n\n"
            "## Summary — pin this to the wall\n\n- [ ] one\n- [ ] two\n\n"
            "## References\n\n- A paper."
        ),
    ]
    path = tmp_path / "05_toy.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_markdown_splits_at_headings_but_not_inside_code_fences():
    pieces = split_markdown(FENCE_THEN_HEADING)
    assert len(pieces) == 2
    assert "# a comment, not a heading" in pieces[0]
    assert pieces[1].startswith("## Exercises")


def test_outline_of_a_toy_notebook(tmp_path):
    outline = read_outline(toy_notebook(tmp_path))
    assert outline.title == "05 · Toy"
    assert outline.objectives == ["Learn one thing, over two lines.", "Learn another."]
    assert [s.title for s in outline.body] == ["1 · First", "2 · Second?"]
    assert [s.kind for s in outline.sections] == [
        "parameters",
        "body",
        "body",
        "exercises",
        "summary",
        "references",
    ]
    first = outline.body[0]
    assert [s.title for s in first.subsections] == ["1.1 Sub"]
    assert "Tail of section 1." in first.subsections[0].all_blocks()[-1].source
    exercises = outline.exercises
    assert [(e.number, e.title, e.checked) for e in exercises] == [
        (1, "add two numbers", True),
        (2, "(discussion, no check)", False),
    ]
    assert all("return a + b" not in b.source for e in exercises for b in e.blocks)
    assert outline.checklist == ["one", "two"]


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.stem)
def test_every_notebook_splits_into_an_outline_that_loses_nothing(path):
    outline = read_outline(path)
    notebook = nbformat.read(path, as_version=4)
    kept = outline.intro + [b for s in outline.sections for b in s.all_blocks()]
    assert len(kept) == len(blocks_of(notebook))
    headings = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            fenced = False
            for line in cell.source.splitlines():
                fenced ^= line.lstrip().startswith("```")
                if not fenced and re.match(r"^#{2,3} ", line):
                    headings.append(line.lstrip("# ").strip())
    titles = [t for s in outline.sections for t in [s.title, *[x.title for x in s.subsections]]]
    assert titles == headings
    assert outline.title and outline.objectives and outline.body
    assert all(e.blocks for e in outline.exercises)


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.stem)
def test_every_notebook_budget_fits_a_60_to_90_minute_session(path):
    budget = guide.minute_budget(read_outline(path))
    assert 60 <= budget.total <= 90
    assert budget.total == sum(item.minutes for item in budget.items)
    assert all(item.minutes >= 1 for item in budget.items)
    assert budget.items[0].kind == "opening" and budget.items[-1].kind == "closing"


def test_budget_follows_word_and_code_counts(tmp_path):
    pace = guide.Pace()
    (tmp_path / "a").mkdir()
    short = read_outline(toy_notebook(tmp_path / "a"))
    raw = guide.section_minutes(short.body[0], pace)
    filler = "\n\n".join(" ".join(["word"] * 50) for _ in range(1))
    counted = (
        words(f"## 1 · First\n\n{filler}")
        + words("### 1.1 Sub\n\nMore text. Why is it so?")
        + words("Tail of section 1.")
    ) / pace.words_per_minute
    assert raw == pytest.approx(counted + 3 / pace.code_lines_per_minute, rel=0.02)
    (tmp_path / "b").mkdir()
    long = read_outline(toy_notebook(tmp_path / "b", prose_words=9000, code_lines=600))
    assert guide.section_minutes(long.body[0], pace) > 20 * raw
    tiny, big = guide.minute_budget(short, pace), guide.minute_budget(long, pace)
    assert tiny.total == 60 and tiny.scale > 1  # stretched to the session's floor
    assert big.total == 90 and big.scale < 1  # compressed to its ceiling
    minutes = {i.title: i.minutes for i in big.items}
    assert minutes["1 · First"] > minutes["2 · Second?"]


def test_round_preserving_total():
    values = [2.6, 0.2, 7.7, 4.5]
    rounded = guide.round_preserving_total(values, 15)
    assert sum(rounded) == 15 and min(rounded) >= 1
    assert all(abs(r - v) < 1.5 for r, v in zip(rounded, values, strict=True))
    assert guide.round_preserving_total([0.1, 0.1, 0.1], 3) == [1, 1, 1]
    with pytest.raises(ValueError, match="cannot give"):
        guide.round_preserving_total([1.0, 1.0, 1.0], 2)


def test_guide_lists_agenda_exercises_and_recorded_figures(tmp_path):
    outline = read_outline(toy_notebook(tmp_path))
    build = tmp_path / "build"
    text = guide.guide_markdown(outline, build=build)
    budget = guide.minute_budget(outline)
    assert f"| | **total** | **{budget.total}** | |" in text
    assert "| 1 | 1 · First |" in text and "| 2 | 2 · Second? |" in text
    assert "1. **add two numbers** — graded by its Check cell." in text
    assert "(Exercise 2) Is it fast?" in text
    assert "No recorded results yet" in text
    results = build / "cpu" / "results" / "05_toy.jsonl"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"name": "accuracy", "value": 0.91}) + "\n")
    text = guide.guide_markdown(outline, build=build)
    assert "| `accuracy` | 0.91 |" in text and "No recorded results yet" not in text


def test_run_command_uses_make_only_when_the_makefile_supports_it(tmp_path):
    makefile = tmp_path / "Makefile"
    makefile.write_text("run:\n\tpython -m course.run --profile $(PROFILE)\n")
    assert "--only 05_toy" in guide.run_command("05_toy", makefile)
    makefile.write_text("run:\n\tpython -m course.run $(if $(ONLY),--only $(ONLY))\n")
    assert guide.run_command("05_toy", makefile) == "make run ONLY=05_toy"


def test_deck_order_objectives_first_checklist_last(tmp_path):
    outline = read_outline(toy_notebook(tmp_path))
    deck = slides.outline_slides(outline, guide="## Guide")
    assert deck[0].title == "05 · Toy" and "Learn another." in deck[0].cells[0].source
    assert deck[1].vertical and deck[1].title == "Facilitator's guide"
    horizontal = [s.title for s in deck if not s.vertical]
    assert horizontal == [
        "05 · Toy",
        "Parameters",
        "1 · First",
        "2 · Second?",
        "Exercises",
        "References",
        "Summary — pin this to the wall",
    ]
    assert [s.title for s in deck if s.vertical and s.title.startswith("Exercise ")] == [
        "Exercise 1",
        "Exercise 2",
    ]
    notebook = slides.deck_notebook(outline)
    assert notebook.cells[0].metadata.slideshow.slide_type == "slide"
    sources = "\n".join(c.source for c in notebook.cells)
    assert "return a + b" not in sources  # solutions never reach the slides
    assert (
        "Motivation paragraph."
        in [c.source for c in notebook.cells if c.metadata.slideshow.slide_type == "notes"][0]
    )


def test_long_code_and_outputs_are_trimmed_and_outputs_are_fragments(tmp_path):
    outline = read_outline(toy_notebook(tmp_path, code_lines=40, long_output=100))
    cells = slides.deck_notebook(outline).cells
    code = next(c for c in cells if c.cell_type == "code" and c.source.startswith("x0"))
    assert len(code.source.split("\n")) == slides.MAX_CODE_LINES
    assert code.source.endswith(
        f"# … {40 - slides.MAX_CODE_LINES + 1} more lines: see the notebook"
    )
    shown = next(c for c in cells if c.cell_type == "code" and "slide-output" in c.metadata.tags)
    assert shown.metadata.slideshow.slide_type == "fragment"
    text = shown.outputs[0]["text"].rstrip("\n").split("\n")
    assert len(text) == slides.MAX_OUTPUT_LINES
    assert (
        text[-1] == "line 99"
        and text[-2] == f"… ({100 - slides.MAX_OUTPUT_LINES + 1} lines trimmed) …"
    )


def test_an_overfull_section_continues_on_vertical_slides(tmp_path):
    outline = read_outline(toy_notebook(tmp_path, prose_words=2500))
    deck = slides.section_slides(outline.body[0])
    continued = [s for s in deck if s.title == "1 · First"]
    assert (
        len(continued) > 2 and not continued[0].vertical and all(s.vertical for s in continued[1:])
    )
    assert all(s.height <= slides.SLIDE_CAPACITY for s in continued)


def test_site_sources_are_the_notebooks_unchanged_with_an_index_of_all(tmp_path):
    (tmp_path / "nb").mkdir()
    notebooks = [Path(shutil.copy2(p, tmp_path / "nb" / p.name)) for p in course_notebooks()]
    site.lay_out_sources(tmp_path / "src", notebooks)
    for path in notebooks:
        assert (tmp_path / "src" / path.name).read_bytes() == path.read_bytes()
        assert (tmp_path / "src" / "guides" / f"{path.stem}.md").is_file()
    index = (tmp_path / "src" / "index.md").read_text()
    assert all(f"]({p.name})" in index and f"\n{p.stem}\n" in index for p in notebooks)
    assert "../slides/00_" in index
    (tmp_path / "src" / "99_gone.ipynb").write_text("{}")
    site.lay_out_sources(tmp_path / "src", notebooks)
    assert not (tmp_path / "src" / "99_gone.ipynb").exists()  # a removed notebook leaves the site


def test_report_page_without_and_with_a_report(tmp_path):
    build = tmp_path / "build"
    assert "No report yet" in site.report_page(tmp_path, build)
    (build / "cpu").mkdir(parents=True)
    (build / "cpu" / "report.md").write_text(
        "# Course report — profile `cpu`\n\n| a |\n|---|\n\n![wall time per notebook](report.png)\n"
    )
    (build / "cpu" / "report.png").write_bytes(b"\x89PNG")
    page = site.report_page(tmp_path, build)
    assert "## Course report — profile `cpu`" in page and "(report-cpu.png)" in page
    assert (tmp_path / "report-cpu.png").read_bytes() == b"\x89PNG"
