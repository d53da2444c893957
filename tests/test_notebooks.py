"""Every committed notebook is executed, clean, parameterised, and its exercises really check."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from course.notebooks import check_exercises, has_tag, stub_source, student_copy
from helpers import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MACHINE_PATH = re.compile(r"/(?:work|tmp|root|home|Users|opt)/[\w./-]+")


def code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]


def test_there_are_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.kernel
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_and_clean(path: Path):
    notebook = nbformat.read(path, as_version=4)
    cells = code_cells(notebook)
    assert all(c.execution_count is not None for c in cells), "every code cell must be executed"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error outputs committed: {errors[:1]}"
    outputs = json.dumps([c.outputs for c in cells])
    assert not MACHINE_PATH.findall(outputs), (
        f"machine paths in outputs: {MACHINE_PATH.findall(outputs)[:3]}"
    )
    assert sum(has_tag(c, "parameters") for c in cells) == 1, "exactly one parameters cell"
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in cells), "a stable claim for nbval"
    assert "papermill" not in notebook.metadata, "run `make execute` to strip run metadata"


@pytest.mark.kernel
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_sees_every_parameter(path: Path):
    import ast

    import papermill

    notebook = nbformat.read(path, as_version=4)
    cell = next(c for c in notebook.cells if has_tag(c, "parameters"))
    assigned = {
        target.id
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    declared = set(papermill.inspect_notebook(str(path)))
    assert assigned <= declared, (
        f"papermill cannot read {sorted(assigned - declared)} (a comment with '=' or quotes on "
        "the line?): a profile could not override them"
    )


@pytest.mark.kernel
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_fail_on_the_stub_and_pass_on_the_solution(path: Path):
    notebook = nbformat.read(path, as_version=4)
    solutions = [c for c in notebook.cells if has_tag(c, "solution")]
    assert len([c for c in notebook.cells if has_tag(c, "check")]) >= 2, "at least two exercises"
    assert all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions), (
        "solution cells are collapsed"
    )
    outcomes = check_exercises(path)
    for outcome in outcomes:
        assert outcome.passes_on_solution, (
            f"check cell {outcome.check_index}: {outcome.solution_error}"
        )
        assert outcome.fails_on_stub, (
            f"check cell {outcome.check_index} does not fail on the stub with an assertion "
            f"(vacuous, or broken: {outcome.stub_error or 'no error'})"
        )


def test_stub_keeps_signatures_and_imports_and_blanks_answers():
    solution = '''import math
from torch import nn

def area(radius: float) -> float:
    """Area of a circle."""
    return math.pi * radius**2

answer, other = 42, 7
total: int = 3
print(answer)
'''
    stub = stub_source(solution)
    namespace: dict = {}
    exec(stub, namespace)
    assert namespace["answer"] is None and namespace["other"] is None and namespace["total"] is None
    assert namespace["area"].__doc__ == "Area of a circle."
    with pytest.raises(NotImplementedError):
        namespace["area"](1.0)
    assert "import math" in stub and "print" not in stub and "math.pi" not in stub


@pytest.mark.kernel
def test_student_copy_replaces_solutions_and_clears_outputs():
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "x = 1", metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}}
            ),
            nbformat.v4.new_code_cell("assert x == 1", metadata={"tags": ["check"]}),
        ]
    )
    notebook.cells[0].outputs = [nbformat.v4.new_output("stream", text="1")]
    student = student_copy(notebook)
    assert student.cells[0].source.endswith("x = None  # your answer\n")
    assert student.cells[0].metadata["tags"] == ["exercise"]
    assert student.cells[0].outputs == []
    assert notebook.cells[0].source == "x = 1", "the original is untouched"


@pytest.mark.kernel
def test_a_vacuous_check_is_detected(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import math", metadata={"tags": ["setup"]}),
            nbformat.v4.new_code_cell("x = math.sqrt(4)", metadata={"tags": ["solution"]}),
            nbformat.v4.new_code_cell("assert x == 2", metadata={"tags": ["check"]}),
            nbformat.v4.new_code_cell("y = 1", metadata={"tags": ["solution"]}),
            nbformat.v4.new_code_cell("assert True", metadata={"tags": ["check"]}),
        ]
    )
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    good, vacuous = check_exercises(path)
    assert good.fails_on_stub and good.passes_on_solution
    assert vacuous.passes_on_solution and not vacuous.fails_on_stub


@pytest.mark.kernel
def test_a_check_that_crashes_on_the_stub_does_not_count_as_failing(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x = 2.0", metadata={"tags": ["solution"]}),
            nbformat.v4.new_code_cell("assert abs(x - 2) < 1e-9", metadata={"tags": ["check"]}),
            nbformat.v4.new_code_cell("def f():\n    return 3", metadata={"tags": ["solution"]}),
            nbformat.v4.new_code_cell("assert f() == 3", metadata={"tags": ["check"]}),
        ]
    )
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    crashing, raising = check_exercises(path)
    assert crashing.passes_on_solution and not crashing.fails_on_stub
    assert crashing.stub_error.startswith("TypeError")  # None - 2: the Check is broken
    assert raising.fails_on_stub and raising.stub_error.startswith("NotImplementedError")
