"""Results over seeds, paired comparisons and printed verdicts: the course's one statistics rule.

The convention, used in every notebook:

- a result over seeds is reported as **mean ± sample standard deviation** (``ddof=1``) with the
  number of seeds, e.g. ``0.912 ± 0.004 (n=3)``;
- a gain of B over A is judged on the **paired per-seed differences** ``B_s - A_s`` (same seed,
  same data split, same budget), never by comparing two unpaired spreads: the difference's mean,
  sample std and a Student-t confidence interval;
- when one cell tests several recipes against one baseline, the p-values are adjusted with
  Holm's step-down method (Holm 1979) before anything is called a gain;
- a comparative verdict ("X is faster than Y") is printed by :func:`verdict` from the measured
  figures; the prose around it only interprets what it printed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``"mean ± std (n=k)"`` with the sample standard deviation (``ddof=1``).

    One value has no spread: it prints as ``"x (n=1)"``.
    """
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("mean_std needs at least one value.")
    if array.size == 1:
        return f"{array[0]:.{digits}f} (n=1)"
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f} (n={array.size})"


@dataclass(frozen=True)
class PairedComparison:
    """Per-seed differences ``treatment - baseline`` and what they support."""

    differences: tuple[float, ...]
    mean: float
    std: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float

    @property
    def n(self) -> int:
        return len(self.differences)

    def summary(self, digits: int = 3) -> str:
        """``"Δ = mean ± std (n=k), 95% CI [lo, hi]"``."""
        pct = round(100 * self.confidence)
        return (
            f"Δ = {self.mean:+.{digits}f} ± {self.std:.{digits}f} (n={self.n}), "
            f"{pct}% CI [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}]"
        )


def paired(
    treatment: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> PairedComparison:
    """Paired comparison of two results measured on the same seeds (element ``i`` of each).

    The interval is the Student-t interval of the mean difference with ``n - 1`` degrees of
    freedom; the p-value is the two-sided paired t-test's. When every difference is the same
    the t statistic is undefined; the p-value is then the exact sign-flip test's, ``2 / 2**n``
    (all ``n`` signs agree), never 0: three identical seeds cannot be more convincing than that.
    Needs at least two pairs.
    """
    t = np.asarray(treatment, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if t.shape != b.shape or t.ndim != 1:
        raise ValueError(
            f"paired needs two 1-D sequences of one length, got {t.shape} and {b.shape}."
        )
    if t.size < 2:
        raise ValueError("paired needs at least two seeds (pairs) to estimate a spread.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    diff = t - b
    mean, std = float(diff.mean()), float(diff.std(ddof=1))
    half = (
        float(scipy_stats.t.ppf(0.5 + confidence / 2, diff.size - 1)) * std / math.sqrt(diff.size)
    )
    if std == 0.0:
        p_value = 1.0 if mean == 0.0 else min(1.0, 2.0 / 2**diff.size)
    else:
        p_value = float(scipy_stats.ttest_rel(t, b).pvalue)
    return PairedComparison(
        tuple(float(d) for d in diff), mean, std, mean - half, mean + half, p_value, confidence
    )


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level ``alpha``.

    Sort the p-values, compare the ``i``-th smallest (0-based) with ``alpha / (m - i)`` and stop
    at the first that fails; every hypothesis before it is rejected.
    """
    order = sorted(p_values, key=p_values.__getitem__)
    m = len(order)
    rejected = dict.fromkeys(p_values, False)
    for i, name in enumerate(order):
        if p_values[name] > alpha / (m - i):
            break
        rejected[name] = True
    return rejected


def _figure(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def verdict(statement: str, held: bool, **figures: object) -> bool:
    """Print ``Verdict: <statement>: True|False (name=value, ...)`` and return ``held``.

    ``held`` is computed by the caller from measured values; the figures it rests on are printed
    beside it so the reader can check it. Prose may only interpret a verdict printed this way.
    """
    held = bool(held)
    shown = ", ".join(f"{name}={_figure(value)}" for name, value in figures.items())
    print(f"Verdict: {statement}: {held}" + (f" ({shown})" if shown else ""))
    return held


def max_abs_diff(a: object, b: object) -> float:
    """Largest absolute elementwise difference of two tensors, arrays or equal-keyed dicts of them
    (e.g. two ``state_dict``\\s), as a Python float."""
    import torch

    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if a.keys() != b.keys():
            raise ValueError(f"Keys differ: {sorted(set(a) ^ set(b))}.")
        return max((max_abs_diff(a[k], b[k]) for k in a), default=0.0)
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"Shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}.")
    if ta.numel() == 0:
        return 0.0
    return float((ta.double() - tb.double()).abs().max())
