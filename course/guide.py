"""A facilitator's guide per notebook: agenda with minute budgets, exercises, questions, figures.

The minute budget comes from the notebook itself: prose words, visible code lines and figures
per section at a walkthrough pace (``Pace``), a fixed opening and close, and a few minutes per
exercise. The taught sections are then scaled by one factor so that the session fits the
60–90 minute window; the guide states the factor, so a lead sees when a notebook is dense.

    python -m course.guide                      # every notebook -> build/guides/NN_name.md
    python -m course.guide 01_training_loop     # one notebook
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from course.sections import (
    Outline,
    Section,
    code_lines,
    course_notebooks,
    figures,
    read_outline,
    words,
)
from helpers import BUILD_DIR, REPO_ROOT
from helpers.report import read_results

GUIDE_DIR = BUILD_DIR / "guides"


@dataclass(frozen=True)
class Pace:
    """How fast a study group walks through a notebook (minutes are for a lead and 3–8 people)."""

    words_per_minute: float = 130.0  # prose read aloud or summarised, with short questions
    code_lines_per_minute: float = 20.0  # code explained line by line where it matters
    minutes_per_figure: float = 1.0
    minutes_per_checked_exercise: float = 6.0
    minutes_per_open_exercise: float = 5.0  # discussion / experiment, no Check cell
    exercise_cap: float = 30.0
    opening: float = 5.0  # objectives, who has run the notebook
    closing: float = 5.0  # the checklist
    session: tuple[float, float] = (60.0, 90.0)


@dataclass(frozen=True)
class AgendaItem:
    title: str
    minutes: int
    kind: str  # opening, section, exercises, closing


@dataclass(frozen=True)
class Budget:
    items: list[AgendaItem]
    raw_content_minutes: float
    scale: float

    @property
    def total(self) -> int:
        return sum(item.minutes for item in self.items)


def section_minutes(section: Section, pace: Pace) -> float:
    """Unscaled walkthrough minutes of a section (sub-sections included, solutions excluded)."""
    minutes = 0.0
    for block in section.all_blocks():
        if block.cell_type == "markdown":
            minutes += words(block.source) / pace.words_per_minute
        elif not block.is_solution:
            minutes += code_lines(block.source) / pace.code_lines_per_minute
            minutes += figures(block.cell) * pace.minutes_per_figure
    return minutes


def round_preserving_total(values: list[float], total: int, minimum: int = 1) -> list[int]:
    """Integers ≥ ``minimum`` that sum to ``total``, each as close to its value as possible."""
    if not values:
        return []
    if total < minimum * len(values):
        raise ValueError(
            f"{total} minutes cannot give {len(values)} items {minimum} minute(s) each."
        )
    floors = [max(minimum, math.floor(v)) for v in values]
    while sum(floors) > total:  # minimums pushed us over: take from the largest
        floors[max(range(len(floors)), key=lambda i: floors[i])] -= 1
    order = sorted(
        range(len(values)), key=lambda i: values[i] - math.floor(values[i]), reverse=True
    )
    i = 0
    while sum(floors) < total:
        floors[order[i % len(order)]] += 1
        i += 1
    return floors


def minute_budget(outline: Outline, pace: Pace = Pace()) -> Budget:
    """The session agenda: opening, each taught section (scaled to fit), exercises, closing."""
    low, high = pace.session
    exercise_minutes_raw = min(
        pace.exercise_cap,
        sum(
            pace.minutes_per_checked_exercise if ex.checked else pace.minutes_per_open_exercise
            for ex in outline.exercises
        ),
    )
    exercise_minutes = round(exercise_minutes_raw)
    fixed = pace.opening + pace.closing + exercise_minutes
    raw = [section_minutes(s, pace) for s in outline.body]
    raw_total = sum(raw)
    target = round(min(max(raw_total, low - fixed), high - fixed))
    target = max(target, len(raw))
    scale = target / raw_total if raw_total else 1.0
    scaled = [r * scale for r in raw] if raw_total else [target / max(1, len(raw))] * len(raw)
    minutes = round_preserving_total(scaled, target)
    items = [
        AgendaItem(
            "Opening: objectives and who has run the notebook", round(pace.opening), "opening"
        )
    ]
    items += [AgendaItem(s.title, m, "section") for s, m in zip(outline.body, minutes, strict=True)]
    if outline.exercises:
        items.append(
            AgendaItem(f"Exercises ({len(outline.exercises)})", exercise_minutes, "exercises")
        )
    items.append(AgendaItem("Close: the checklist", round(pace.closing), "closing"))
    return Budget(items, raw_total, scale)


def discussion_questions(outline: Outline, limit: int = 6) -> list[str]:
    """Questions the notebook asks: open exercises, question headings, then the objectives."""
    questions: list[str] = []
    for ex in outline.exercises:
        if not ex.checked:
            text = re.sub(r"^\*\*Exercise\s+\d+[^*]*\*\*\s*", "", ex.text).strip()
            questions.append(f"(Exercise {ex.number}) " + " ".join(text.split()))
    for section in outline.body:
        for sub in [section, *section.subsections]:
            if sub.title.rstrip().endswith("?"):
                questions.append(f"{sub.title} (§ {section.title})")
        for block in section.all_blocks():
            if block.cell_type == "markdown":
                questions += [
                    m for m in re.findall(r"^\*\*([^*\n]{8,120}\?)\*\*", block.source, re.M)
                ]
    for objective in outline.objectives:
        if len(questions) >= limit:
            break
        questions.append(
            "Can everyone now " + objective[0].lower() + objective[1:].rstrip(".") + "?"
        )
    return questions[:limit]


def run_time_line(outline: Outline) -> str:
    """The notebook's own "Run time:" statement, if it has one."""
    text = "\n".join(b.source for b in outline.intro if b.cell_type == "markdown")
    match = re.search(r"\*\*Run time:\*\*\s*(.*?)(?:\n\s*\n|$)", text, re.S)
    if not match:
        return ""
    first = re.split(r"(?<=\.)\s+(?=[A-Z`])", " ".join(match.group(1).split()))[0]
    return first.rstrip(".").replace(" the defaults below", " the default parameters")


def run_command(name: str, makefile: Path = REPO_ROOT / "Makefile") -> str:
    """The command that executes one notebook for the report (``make run ONLY=`` when supported)."""
    if makefile.is_file() and "ONLY" in makefile.read_text():
        return f"make run ONLY={name}"
    return f"make install && .venv/bin/python -m course.run --profile cpu --only {name}"


def key_figures(name: str, build: Path = BUILD_DIR) -> tuple[str, dict]:
    """``(where, results)`` from the newest ``build/<profile>/results/<name>.jsonl``, if any."""
    found = sorted(build.glob(f"*/results/{name}.jsonl"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        results = read_results(path)
        if results:
            return str(path.relative_to(build.parent)), results
    return "", {}


def agenda_table(budget: Budget) -> list[str]:
    lines = ["| # | part | min | starts at |", "|---:|---|---:|---:|"]
    start = 0
    number = 0
    for item in budget.items:
        label = ""
        if item.kind == "section":
            number += 1
            label = str(number)
        lines.append(
            f"| {label} | {item.title} | {item.minutes} | {start // 60}:{start % 60:02d} |"
        )
        start += item.minutes
    lines.append(f"| | **total** | **{budget.total}** | |")
    return lines


def guide_markdown(
    outline: Outline, pace: Pace = Pace(), build: Path = BUILD_DIR, heading_level: int = 1
) -> str:
    """The one-page guide for ``outline`` as markdown."""
    h = "#" * heading_level
    budget = minute_budget(outline, pace)
    name = outline.name
    lines = [f"{h} Facilitator's guide — {outline.title}", ""]
    lines += [
        f"**Session:** {budget.total} minutes · {len(outline.body)} sections · "
        f"{len(outline.exercises)} exercises · slides `build/slides/{name}.html` · "
        f"notebook `notebooks/{name}.ipynb`",
        "",
    ]
    lines += [f"{h}# Before the session", ""]
    run_time = run_time_line(outline)
    lines.append(
        f"- `{run_command(name)}` executes this notebook alone and writes its key figures "
        "to `build/cpu/report.md`" + (f" (run time: {run_time})" if run_time else "") + "."
    )
    lines.append(
        "- `make student` writes learner copies with the solutions stubbed "
        "(`build/student/`): hand those out, the Check cells grade the answers."
    )
    lines.append(
        f"- `make slides` writes this deck, `build/slides/{name}.html` (works offline); "
        "`make site` the course website, `build/site/index.html`."
    )
    lines.append("")
    lines += [f"{h}# Agenda", ""] + agenda_table(budget) + [""]
    if abs(budget.scale - 1) < 0.05:
        fit = "which fits the session as they stand."
    elif budget.scale < 1:
        fit = (
            f"compressed ×{budget.scale:.2f} to fit: skim the prose, dwell on the measured results."
        )
    else:
        fit = (
            f"stretched ×{budget.scale:.2f} to fill the session: the spare time is for running "
            "the cells and discussing them."
        )
    lines.append(
        f"Minutes from the notebook's word and code counts ({pace.words_per_minute:.0f} words or "
        f"{pace.code_lines_per_minute:.0f} code lines a minute, {pace.minutes_per_figure:.0f} min a "
        f"figure, {pace.minutes_per_checked_exercise:.0f} min a checked exercise, "
        f"{pace.minutes_per_open_exercise:.0f} an open one; session "
        f"{pace.session[0]:.0f}–{pace.session[1]:.0f} min): the sections read in about "
        f"{budget.raw_content_minutes:.0f} min, {fit}"
    )
    lines.append("")
    lines += [f"{h}# Exercises to set", ""]
    for ex in outline.exercises:
        if ex.checked:
            lines.append(f"{ex.number}. **{ex.title}** — graded by its Check cell.")
        else:
            lines.append(
                f"{ex.number}. **{ex.title.strip('()') or 'open'}** — no Check cell: "
                "discuss the answers (see the questions below)."
            )
    if not outline.exercises:
        lines.append("This notebook has no exercises.")
    lines += ["", f"{h}# Discussion questions", ""]
    lines += [f"- {q}" for q in discussion_questions(outline)] + [""]
    lines += [f"{h}# Key figures to expect", ""]
    where, results = key_figures(name, build)
    if results:
        lines += [
            f"What `make run` recorded (`{where}`); the group's run should print the same "
            "figures (timings differ by machine).",
            "",
            "| result | value |",
            "|---|---|",
        ]
        lines += [f"| `{k}` | {v} |" for k, v in results.items()]
    else:
        lines.append(
            f"No recorded results yet: run `{run_command(name)}` and rebuild "
            "(`make slides`) to list the figures the group should expect here."
        )
    return "\n".join(lines) + "\n"


def write_guides(
    names: list[str] | None = None, out: Path = GUIDE_DIR, pace: Pace = Pace()
) -> list[Path]:
    """Write ``out/NN_name.md`` for the named notebooks (all by default)."""
    notebooks = select(names)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        target = out / f"{path.stem}.md"
        target.write_text(guide_markdown(read_outline(path), pace))
        written.append(target)
    return written


def select(names: list[str] | None) -> list[Path]:
    """The course notebooks named (stems), or all; unknown names are a clear error."""
    notebooks = course_notebooks()
    if not names:
        return notebooks
    known = {p.stem: p for p in notebooks}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"Unknown notebook(s): {', '.join(unknown)}; known: {', '.join(known)}.")
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="notebook names without .ipynb (default: all)")
    parser.add_argument("--out", type=Path, default=GUIDE_DIR)
    args = parser.parse_args(argv)
    for path in write_guides(args.names, args.out):
        print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
