"""Key results that a notebook records for the course report written by ``make run``.

A notebook calls ``record("name", value)``. Under ``make run`` the runner sets
``COURSE_RESULTS_FILE`` and each record is appended there as one JSON line; in JupyterLab or
under nbval nothing is written. It returns nothing, so it never adds an output to a cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS_ENV = "COURSE_RESULTS_FILE"
Scalar = bool | int | float | str


def record(name: str, value: Scalar) -> None:
    """Record one key result (a bool, number or short string) for the course report."""
    if not isinstance(value, bool | int | float | str):
        raise TypeError(
            f"record({name!r}, ...) takes a bool, int, float or str, got {type(value)}."
        )
    if isinstance(value, float):
        value = round(value, 6)
    target = os.environ.get(RESULTS_ENV)
    if target:
        with Path(target).open("a") as handle:
            handle.write(json.dumps({"name": name, "value": value}) + "\n")


def read_results(path: str | Path) -> dict[str, Scalar]:
    """The results a notebook recorded, last value per name (empty if it recorded none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    results: dict[str, Scalar] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            results[entry["name"]] = entry["value"]
    return results
