"""Pipeline results joined over ranks: step times, the measured bubble, the overhead model.

What :func:`helpers.parallel.pipeline.measure_pipeline` returns (one list of rows per rank)
becomes: :func:`summarize_steps` (one row per timed step: step time, throughput, measured
bubble), :func:`typical_steps` (one step per schedule and m, speed-up over the naive split),
:func:`representative_step` (that step's intervals, for
:func:`helpers.parallel.pipeline_schedules.plot_timeline`) and :func:`overhead_table` (the
measured bubble beside the ideal and
:func:`helpers.parallel.pipeline_schedules.gpipe_overhead_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from helpers.parallel.pipeline_schedules import (
    Interval,
    bubble_fraction,
    gpipe_overhead_model,
    theoretical_bubble,
)

if TYPE_CHECKING:  # imported where used
    import pandas as pd


def summarize_steps(rows_by_rank: Sequence[Sequence[dict[str, Any]]], batch: int) -> pd.DataFrame:
    """One row per timed step (all ranks joined): step time, throughput, measured bubble.

    The step runs from the earliest rank leaving the barrier to the last interval's end; the
    bubble is 1 - (busy time summed over ranks) / (ranks x step time).
    """
    import pandas as pd

    steps: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for rank_rows in rows_by_rank:
        for row in rank_rows:
            steps.setdefault((row["schedule"], row["m"], row["repeat"]), []).append(row)
    n_ranks = len(rows_by_rank)
    table = []
    for (schedule, m, repeat), parts in steps.items():
        intervals = [i for part in parts for i in part["intervals"]]
        span = (min(part["t0"] for part in parts), max(i.end for i in intervals))
        table.append(
            {
                "schedule": schedule,
                "m": m,
                "repeat": repeat,
                "step_s": span[1] - span[0],
                "samples_per_s": batch / (span[1] - span[0]),
                "busy_s": sum(i.duration for i in intervals) / n_ranks,
                "cpu_wait_s": sum(part.get("cpu_wait_s", 0.0) for part in parts) / n_ranks,
                "bubble": bubble_fraction(intervals, n_ranks, span),
                "theory": theoretical_bubble(n_ranks, m),
                "peak_in_flight": max(part["peak_in_flight"] for part in parts),
                "peak_activation_mb_stage0": next(p["peak_bytes"] for p in parts if p["rank"] == 0)
                / 2**20,
            }
        )
    return pd.DataFrame(table)


def typical_steps(steps: pd.DataFrame, which: str = "median") -> pd.DataFrame:
    """One step per (schedule, m): the one of median duration (or the ``"fastest"``).

    Keeping one whole step (rather than medians of each column) keeps its throughput and its
    bubble consistent. Adds the speed-up over the naive split (the hand-written GPipe with
    m = 1, when measured) and the distance |measured - theoretical bubble|.
    """
    import pandas as pd

    if which not in ("median", "fastest"):
        raise ValueError(f"which must be 'median' or 'fastest', got {which!r}")

    def pick(group: pd.DataFrame) -> pd.Series:
        ordered = group.sort_values("step_s")
        return ordered.iloc[(len(ordered) - 1) // 2 if which == "median" else 0]

    table = pd.DataFrame([pick(g) for _, g in steps.groupby(["schedule", "m"], sort=False)])
    table = table.reset_index(drop=True)
    naive = table[(table["schedule"] == "gpipe") & (table["m"] == 1)]
    base = float(naive["samples_per_s"].iloc[0]) if len(naive) else float("nan")
    table["speedup_vs_naive"] = table["samples_per_s"] / base
    table["bubble_error"] = (table["bubble"] - table["theory"]).abs()
    return table


def representative_step(
    rows_by_rank: Sequence[Sequence[dict[str, Any]]], schedule: str, m: int, which: str = "median"
) -> tuple[list[Interval], float]:
    """The intervals and start time of the step :func:`typical_steps` keeps for (schedule, m)."""
    steps: dict[int, list[dict[str, Any]]] = {}
    for rank_rows in rows_by_rank:
        for row in rank_rows:
            if row["schedule"] == schedule and row["m"] == m:
                steps.setdefault(row["repeat"], []).append(row)
    if not steps:
        raise ValueError(f"no timed steps for schedule {schedule!r} with m={m}")
    spans = []
    for parts in steps.values():
        intervals = [i for part in parts for i in part["intervals"]]
        t0 = min(part["t0"] for part in parts)
        spans.append((max(i.end for i in intervals) - t0, intervals, t0))
    spans.sort(key=lambda s: s[0])
    _, intervals, t0 = spans[(len(spans) - 1) // 2 if which == "median" else 0]
    return intervals, t0


def overhead_table(
    rows_by_rank: Sequence[Sequence[dict[str, Any]]], schedules: Sequence[str], n_stages: int
) -> pd.DataFrame:
    """For each GPipe-ordered schedule and m: the measured bubble, the ideal and the overhead model.

    Uses the step :func:`representative_step` keeps and
    :func:`helpers.parallel.pipeline_schedules.gpipe_overhead_model` on its intervals.
    """
    import pandas as pd

    table = []
    for schedule in schedules:
        ms = sorted(
            {
                row["m"]
                for rank_rows in rows_by_rank
                for row in rank_rows
                if row["schedule"] == schedule
            }
        )
        for m in ms:
            intervals, t0 = representative_step(rows_by_rank, schedule, m)
            table.append(
                {
                    "schedule": schedule,
                    "m": m,
                    **gpipe_overhead_model(intervals, n_stages, m, t0=t0),
                }
            )
    return pd.DataFrame(table)
