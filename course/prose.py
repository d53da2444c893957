"""Prose bound to measurements: every measured figure and verdict in markdown must be backed.

Two rules, checked for every notebook by ``tests/test_prose.py`` (and by hand with
``python -m course.prose notebooks/NN_name.ipynb``):

1. **Numbers.** A measured-looking number in a markdown cell — one with a decimal point, a
   percentage, a ratio (``1.3×``) or a unit (``ms``, ``s``, ``MiB``, ``GB`` …) — must appear in
   the notebook's outputs or code at the precision the prose gives (``1.5×`` is backed by a
   printed ``1.52``; ``28 %`` by ``0.28`` or ``28.4``), unless it is a cited or defined
   constant listed with its source under the notebook's name in ``notebooks/constants.yaml``.
   Inline code, fenced code, links' targets and HTML tags are not prose.
2. **Verdicts.** A sentence with a comparative verdict ("faster than", "better than", "lower
   than" …, "beats", "outperforms", "wins", "is the fastest/slowest/best/worst/cheapest") must
   either cite its source (a link, "et al.", or a year in parentheses) or sit next to a code cell
   (the two code cells before it and the one after) whose output prints a ``Verdict:`` line,
   which :func:`helpers.stats.verdict` writes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

CONSTANTS_FILE = Path(__file__).resolve().parent.parent / "notebooks" / "constants.yaml"

_UNITS = (
    r"%|×|ns\b|µs\b|us\b|ms\b|s\b|sec\b|min\b|h\b|B\b|KB\b|MB\b|GB\b|TB\b|KiB\b|MiB\b"
    r"|GiB\b|TiB\b|kB\b|GB/s\b|TB/s\b|Gb/s\b|TFLOP/s\b|req/s\b|/s\b|points?\b|pp\b"
)
_NUMBER = re.compile(
    r"(?<![\w.\-−/])(?P<sign>[-−+]?)(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<exp>[eE][-+−]?\d+)?(?:\s?(?P<unit>" + _UNITS + r"))?"
)
_OUTPUT_NUMBER = re.compile(r"[-−+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+−]?\d+)?")
_VERDICT = re.compile(
    r"\b(?:(?:faster|slower|better|worse|cheaper|costlier|smaller|larger|higher|lower) than"
    r"|beats?|outperforms?|wins?|(?:is|was|are|were|comes out) (?:the )?"
    r"(?:fastest|slowest|best|worst|cheapest|winner))\b",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\]\(|https?://|et al\.|\((?:[^()]*?\b)?(?:1[89]|20)\d\d[a-z]?\)|\bcf\. ")
_STRIP = [
    re.compile(r"```.*?```", re.DOTALL),  # fenced code
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"<[^>\n]+>"),  # HTML tags
    re.compile(r"\]\([^)\s]*\)"),  # link targets
    re.compile(r"https?://\S+"),
    re.compile(r"arXiv[: ]\s*\d{4}\.\d{4,5}(?:v\d+)?", re.IGNORECASE),  # arXiv identifiers
    re.compile(r"\b\d+\.\d+\.\d+\b"),  # version numbers
]
_SCALES = (1.0, 100.0, 1000.0, 0.001)


@dataclass(frozen=True)
class Finding:
    """One unbacked claim: the cell it sits in and what it says."""

    cell: int
    kind: str  # "number" or "verdict"
    text: str

    def __str__(self) -> str:
        return f"cell {self.cell}: unbacked {self.kind}: {self.text}"


def _prose(markdown: str, keep_links: bool = False) -> str:
    """Markdown without code, HTML tags, link targets, URLs, arXiv ids and version numbers
    (``keep_links``: without code and HTML only, so a link still counts as a citation)."""
    for pattern in _STRIP[:3] if keep_links else _STRIP:
        markdown = pattern.sub(lambda m: " " * len(m.group(0)), markdown)
    return markdown


def _to_float(text: str) -> float:
    return float(text.replace("−", "-").replace(",", ""))


def measured_numbers(markdown: str) -> Iterator[tuple[str, float, int, bool]]:
    """``(as written, value, decimals, scientific)`` of each measured-looking number in prose."""
    for match in _NUMBER.finditer(_prose(markdown)):
        num, exp, unit = match.group("num"), match.group("exp"), match.group("unit")
        if "." not in num and not exp and not unit:
            continue  # a plain integer: a count, a year, a section number, a parameter
        value = _to_float(match.group("sign") + num + (exp or ""))
        decimals = len(num.split(".")[1]) if "." in num else 0
        yield match.group(0).strip(), value, decimals, bool(exp)


def _matches(value: float, decimals: int, scientific: bool, candidates: Iterable[float]) -> bool:
    for candidate in candidates:
        for scale in _SCALES:
            c = candidate * scale
            if scientific:
                if c != 0 and value != 0 and math.copysign(1, c) == math.copysign(1, value):
                    mantissa_digits = decimals
                    if (
                        abs(c - value)
                        <= 0.5
                        * 10 ** (math.floor(math.log10(abs(value))) - mantissa_digits)
                        * 1.0001
                    ):
                        return True
            elif (
                abs(c - value) <= 0.5 * 10 ** (-decimals) + 1e-12
                or abs(abs(c) - abs(value)) <= 0.5 * 10 ** (-decimals) + 1e-12
            ):
                return True
    return False


def _cell_text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _output_text(cell: dict) -> str:
    parts: list[str] = []
    for output in cell.get("outputs", []):
        if "text" in output:
            parts.append(
                "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
            )
        for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
            data = output.get("data", {}).get(mime)
            if data:
                parts.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(parts)


def load_constants(notebook: Path, constants_file: Path = CONSTANTS_FILE) -> dict[str, str]:
    """The cited constants listed for ``notebook`` (number as written -> source)."""
    if not constants_file.is_file():
        return {}
    table = yaml.safe_load(constants_file.read_text()) or {}
    entry = table.get(notebook.stem) or {}
    if not isinstance(entry, dict):
        raise ValueError(f"{constants_file}: the entry of {notebook.stem} must be a mapping.")
    return {str(k): str(v) for k, v in entry.items()}


def _sentences(text: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", text):
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z*_(\[])|\n[-*|] |\n\d+\. ", paragraph):
            if sentence.strip():
                yield " ".join(sentence.split())


def check_notebook(notebook: dict, constants: dict[str, str] | None = None) -> list[Finding]:
    """Every unbacked number and verdict of a notebook (parsed JSON), in cell order."""
    cells = notebook.get("cells", [])
    backing: list[float] = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            text = _output_text(cell) + "\n" + _cell_text(cell)
            backing.extend(
                _to_float(n) for n in _OUTPUT_NUMBER.findall(text) if n not in {"+", "-", "−"}
            )
    allowed = [
        _to_float(k) for k in (constants or {}) if _OUTPUT_NUMBER.fullmatch(k.replace(",", ""))
    ]
    findings: list[Finding] = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        text = _cell_text(cell)
        for written, value, decimals, scientific in measured_numbers(text):
            if value in allowed or written in (constants or {}):
                continue
            if not _matches(value, decimals, scientific, backing):
                findings.append(Finding(index, "number", written))
        if not _VERDICT.search(_prose(text)):
            continue
        near = [c for c in cells[max(0, index - 3) : index + 3] if c.get("cell_type") == "code"]
        if any("Verdict:" in _output_text(c) for c in near):
            continue
        for sentence in _sentences(_prose(text, keep_links=True)):
            if _VERDICT.search(sentence) and not _CITATION.search(sentence):
                findings.append(Finding(index, "verdict", sentence[:160]))
    return findings


def check_file(path: Path, constants_file: Path = CONSTANTS_FILE) -> list[Finding]:
    """:func:`check_notebook` for a notebook file, with its constants from ``constants_file``."""
    notebook = json.loads(path.read_text())
    return check_notebook(notebook, load_constants(path, constants_file))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    failed = 0
    for path in args.notebooks:
        findings = check_file(path)
        failed += bool(findings)
        print(f"{path}: {len(findings)} unbacked claim(s)")
        for finding in findings:
            print(f"  {finding}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
