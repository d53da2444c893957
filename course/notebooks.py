"""Notebook tooling: learner copies with stubbed solutions, exercise checks, metadata stripping.

Conventions (see README, "How to add a notebook"):

- the reference answer of an exercise sits in a code cell tagged ``solution`` (collapsed in
  JupyterLab) and is followed by a code cell tagged ``check`` that asserts it;
- cells an exercise needs besides its solution (imports, parameters, a small dataset) are
  tagged ``setup`` or ``parameters``, so the exercise can be checked without the whole notebook.

Command line (what ``make student`` and ``make execute`` call)::

    python -m course.notebooks student notebooks/*.ipynb --out build/student
    python -m course.notebooks strip notebooks/*.ipynb
"""

from __future__ import annotations

import argparse
import ast
import copy
from dataclasses import dataclass
from pathlib import Path

import nbformat

STUB_HEADER = "# Exercise: replace the stub(s) below with your answer, then run the Check cell."
PAPERMILL_KEYS = ("papermill",)


def has_tag(cell: nbformat.NotebookNode, tag: str) -> bool:
    """Whether ``cell`` carries ``tag`` in its metadata."""
    return tag in cell.get("metadata", {}).get("tags", [])


def stub_source(solution: str) -> str:
    """The learner's version of a solution cell: imports kept, functions raise, answers are None.

    Top-level functions keep their signature and docstring and raise ``NotImplementedError``;
    top-level assignments become ``name = None``; anything else (loops, prints) is dropped.
    """
    lines = [STUB_HEADER]
    for node in ast.parse(solution).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            lines.append(ast.unparse(node))
        elif isinstance(node, ast.FunctionDef):
            stub = copy.deepcopy(node)
            docstring = ast.get_docstring(node)
            raise_stmt = ast.parse(
                'raise NotImplementedError("Exercise: write this function.")'
            ).body
            stub.body = ([ast.Expr(ast.Constant(docstring))] if docstring else []) + raise_stmt
            lines.append(ast.unparse(ast.fix_missing_locations(stub)))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        lines.append(f"{name.id} = None  # your answer")
    return "\n".join(lines) + "\n"


def student_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with every ``solution`` cell replaced by its stub and outputs cleared."""
    student = copy.deepcopy(notebook)
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if has_tag(cell, "solution"):
            cell.source = stub_source(cell.source)
            tags = [t for t in cell.metadata.get("tags", []) if t != "solution"]
            cell.metadata["tags"] = [*tags, "exercise"]
            cell.metadata.pop("jupyter", None)
    return student


@dataclass
class ExerciseOutcome:
    """Whether one Check cell fails on the stub and passes on the reference solution."""

    check_index: int
    fails_on_stub: bool
    passes_on_solution: bool
    stub_error: str = ""
    solution_error: str = ""


# What a Check may fail with on the learner's stub: its own assertion, or the stub's
# NotImplementedError reaching it. Any other error (NameError, TypeError on a None answer, an
# import that fails) means the Check itself is broken, not that it caught a wrong answer.
STUB_FAILURES = ("AssertionError", "NotImplementedError")


def _error_of(cell: nbformat.NotebookNode) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output['ename']}: {output['evalue']}"
    return ""


def check_exercises(path: Path, timeout_s: int = 300) -> list[ExerciseOutcome]:
    """Run each exercise of ``path`` twice in one kernel: stub then Check, solution then Check.

    Only the ``setup``/``parameters`` cells and the exercise cells are executed, so this takes
    seconds, not the whole notebook's run time.
    """
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    setup = [
        c
        for c in notebook.cells
        if c.cell_type == "code" and (has_tag(c, "setup") or has_tag(c, "parameters"))
    ]
    fresh = nbformat.v4.new_code_cell  # a new cell id each time: repeated cells stay valid
    plan: list[nbformat.NotebookNode] = [fresh(c.source) for c in setup]
    roles: list[tuple[str, int]] = [("setup", -1)] * len(plan)
    solutions: list[nbformat.NotebookNode] = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if has_tag(cell, "solution"):
            solutions.append(cell)
        elif has_tag(cell, "check"):
            if not solutions:
                raise ValueError(f"{path.name}: check cell {index} has no solution cell before it.")
            for solution in solutions:
                plan.append(fresh(stub_source(solution.source)))
                roles.append(("stub", index))
            plan.append(fresh(cell.source))
            roles.append(("check-stub", index))
            for solution in solutions:
                plan.append(fresh(solution.source))
                roles.append(("solution", index))
            plan.append(fresh(cell.source))
            roles.append(("check-solution", index))
            solutions = []
    trial = nbformat.v4.new_notebook(cells=plan, metadata=notebook.metadata)
    client = NotebookClient(
        trial,
        timeout=timeout_s,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    outcomes: dict[int, ExerciseOutcome] = {}
    for cell, (role, index) in zip(trial.cells, roles, strict=True):
        error = _error_of(cell)
        if role == "setup" and error:
            raise RuntimeError(f"{path.name}: a setup cell failed: {error}")
        outcome = outcomes.setdefault(index, ExerciseOutcome(index, False, False))
        if role == "check-stub":
            outcome.fails_on_stub = error.startswith(tuple(f"{e}:" for e in STUB_FAILURES))
            outcome.stub_error = error
        elif role == "check-solution":
            outcome.passes_on_solution, outcome.solution_error = not error, error
    outcomes.pop(-1, None)
    return list(outcomes.values())


def strip_run_metadata(path: Path) -> None:
    """Remove papermill's run metadata (timings, parameters) so committed diffs stay reviewable."""
    notebook = nbformat.read(path, as_version=4)
    for key in PAPERMILL_KEYS:
        notebook.metadata.pop(key, None)
    for cell in notebook.cells:
        for key in PAPERMILL_KEYS + ("execution",):
            cell.metadata.pop(key, None)
        tags = [t for t in cell.metadata.get("tags", []) if t != "injected-parameters"]
        if "tags" in cell.metadata:
            cell.metadata["tags"] = tags
    nbformat.write(notebook, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Course notebook tooling.")
    sub = parser.add_subparsers(dest="command", required=True)
    student = sub.add_parser("student", help="write learner copies with stubbed solutions")
    student.add_argument("notebooks", nargs="+", type=Path)
    student.add_argument("--out", type=Path, required=True)
    strip = sub.add_parser("strip", help="remove papermill run metadata in place")
    strip.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "student":
        args.out.mkdir(parents=True, exist_ok=True)
        for path in args.notebooks:
            nbformat.write(student_copy(nbformat.read(path, as_version=4)), args.out / path.name)
            print(f"wrote {args.out / path.name}")
    else:
        for path in args.notebooks:
            strip_run_metadata(path)


if __name__ == "__main__":
    main()
