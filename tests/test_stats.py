"""The course's statistics rule against independent references (NumPy, SciPy, hand-worked cases)."""

from itertools import product

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from helpers.source import source_of
from helpers.stats import holm, max_abs_diff, mean_std, paired, verdict


def test_mean_std_uses_the_sample_std():
    values = [0.91, 0.93, 0.98]
    assert mean_std(values) == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (n=3)"
    assert mean_std([0.5]) == "0.500 (n=1)"
    with pytest.raises(ValueError):
        mean_std([])


def test_paired_interval_and_p_value_match_scipy():
    rng = np.random.default_rng(0)
    baseline = rng.normal(0.8, 0.02, size=6)
    treatment = baseline + rng.normal(0.01, 0.01, size=6)
    result = paired(treatment, baseline)
    d = treatment - baseline
    low, high = scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
    assert result.ci_low == pytest.approx(low) and result.ci_high == pytest.approx(high)
    assert result.p_value == pytest.approx(scipy_stats.ttest_rel(treatment, baseline).pvalue)
    assert result.std == pytest.approx(d.std(ddof=1))


def test_paired_is_paired_not_unpaired():
    # A large seed effect shared by both arms: unpaired spreads overlap, paired differences don't.
    seed_effect = np.array([0.70, 0.80, 0.90, 0.75])
    baseline, treatment = seed_effect, seed_effect + np.array([0.010, 0.012, 0.011, 0.009])
    assert paired(treatment, baseline).ci_low > 0
    assert scipy_stats.ttest_ind(treatment, baseline).pvalue > 0.5


def test_identical_differences_get_the_exact_sign_flip_p_value():
    result = paired([0.502, 0.602, 0.702], [0.5, 0.6, 0.7])
    # every sign pattern of 3 differences: the observed one and its mirror are the extremes
    extremes = sum(1 for signs in product((-1, 1), repeat=3) if abs(sum(signs)) == 3)
    assert result.p_value == pytest.approx(extremes / 2**3) == pytest.approx(0.25)
    assert paired([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    with pytest.raises(ValueError):
        paired([1.0], [0.0])


def test_holm_against_a_hand_worked_example():
    # Sorted p 0.010, 0.013, 0.030, 0.5 against 0.05/4, 0.05/3, 0.05/2, 0.05/1: the third fails,
    # so the first two are rejected and the procedure stops (Holm 1979).
    p = {"c": 0.030, "a": 0.010, "d": 0.5, "b": 0.013}
    assert holm(p) == {"a": True, "b": True, "c": False, "d": False}
    # Bonferroni (0.05/4 for all) would reject only "a": Holm is uniformly more powerful.
    assert sum(v <= 0.05 / 4 for v in p.values()) == 1
    # Once a p-value fails, every larger one stays unrejected, even one below alpha itself.
    assert holm({"x": 0.03, "y": 0.04}) == {"x": False, "y": False}
    assert holm({"x": 0.02, "y": 0.04}) == {"x": True, "y": True}


def test_verdict_prints_the_statement_its_truth_and_the_figures(capsys):
    assert verdict("pipelining is faster", 1.52 > 1.0, speedup=1.52, seeds=3) is True
    assert (
        capsys.readouterr().out == "Verdict: pipelining is faster: True (speedup=1.52, seeds=3)\n"
    )
    assert verdict("X beats Y", np.bool_(False)) is False
    assert capsys.readouterr().out == "Verdict: X beats Y: False\n"


def test_max_abs_diff_on_tensors_and_state_dicts():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    b = {"w": torch.tensor([1.0, 2.25]), "b": torch.tensor([0.0])}
    assert max_abs_diff(a, b) == 0.5
    assert max_abs_diff(torch.zeros(3), np.array([0.0, 0.0, -0.1])) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="Keys differ"):
        max_abs_diff(a, {"w": a["w"]})
    with pytest.raises(ValueError, match="Shapes differ"):
        max_abs_diff(torch.zeros(2), torch.zeros(3))


def test_source_of_returns_the_code_itself():
    text = source_of(mean_std)
    assert text.startswith("def mean_std(") and "ddof=1" in text
    both = source_of(mean_std, holm)
    assert both.startswith(text) and "def holm(" in both
    with pytest.raises(ValueError):
        source_of()
