"""Prose bound to measurements: every notebook's markdown against its own outputs."""

from pathlib import Path

import pytest

from course.prose import check_file, check_notebook, measured_numbers

NOTEBOOKS = sorted(Path(__file__).resolve().parent.parent.glob("notebooks/[0-9][0-9]_*.ipynb"))


def _notebook(*cells: tuple[str, str, str]) -> dict:
    """A notebook from (kind, source, printed output) triples."""
    built = []
    for kind, source, printed in cells:
        cell = {"cell_type": kind, "source": source, "metadata": {}}
        if kind == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": printed}]
        built.append(cell)
    return {"cells": built}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_figure_and_verdict_in_prose_is_backed(path):
    findings = check_file(path)
    assert not findings, "\n".join(map(str, findings))


def test_a_stale_number_is_caught():
    fresh = _notebook(
        ("code", "run()", "speed-up: 1.52\n"), ("markdown", "Pipelining is 1.5× faster here.", "")
    )
    stale = _notebook(
        ("code", "run()", "speed-up: 1.52\n"), ("markdown", "Pipelining is 1.6× faster here.", "")
    )
    assert [f.kind for f in check_notebook(fresh)] == []
    assert [(f.kind, f.text) for f in check_notebook(stale)] == [("number", "1.6×")]


def test_percent_and_units_match_their_printed_values():
    nb = _notebook(
        ("code", "run()", "fraction kept 0.284, step 13.24 ms\n"),
        ("markdown", "It keeps 28 % of the epochs; a step takes 13.2 ms.", ""),
    )
    assert check_notebook(nb) == []
    nb_bad = _notebook(
        ("code", "run()", "fraction kept 0.284, step 13.24 ms\n"),
        ("markdown", "It keeps 31 % of the epochs.", ""),
    )
    assert [f.text for f in check_notebook(nb_bad)] == ["31 %"]


def test_an_uncomputed_verdict_is_caught_and_a_printed_one_accepted():
    text = "Random search is better than grid search on this budget."
    bare = _notebook(("code", "run()", "random 0.979, grid 0.973\n"), ("markdown", text, ""))
    backed = _notebook(
        ("code", "verdict(...)", "Verdict: random beats grid: True (d=0.006)\n"),
        ("markdown", text, ""),
    )
    cited = _notebook(
        ("markdown", "Random search is better than a grid (Bergstra & Bengio, 2012).", "")
    )
    linked = _notebook(
        (
            "markdown",
            "Random search is better than a grid "
            "([Bergstra and Bengio](https://jmlr.org/papers/v13/bergstra12a.html)).",
            "",
        )
    )
    assert check_notebook(linked) == []
    assert [f.kind for f in check_notebook(bare)] == ["verdict"]
    assert check_notebook(backed) == []
    assert check_notebook(cited) == []


def test_constants_code_and_integers_are_not_claims():
    assert (
        list(measured_numbers("8 blocks, 3 seeds, `lr=0.123`, arXiv:1811.06965, torch 2.13.0"))
        == []
    )
    nb = _notebook(
        ("markdown", "The mixed-precision paper's loss scale of 8.0 (Micikevicius).", "")
    )
    assert [f.text for f in check_notebook(nb)] == ["8.0"]
    assert check_notebook(nb, constants={"8.0": "Micikevicius et al. (2018), §3.2"}) == []
