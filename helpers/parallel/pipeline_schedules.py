"""Pipeline schedules and the bubble: pure maths, no process group.

- orders: :class:`Op`, :func:`gpipe_order`, :func:`one_f_one_b_order`, :data:`SCHEDULES`,
  :func:`schedule_order`, :func:`peak_in_flight` (micro-batches whose activations are held);
- timelines: :class:`Interval`, :func:`simulate_orders` and :func:`simulate` (the timeline a
  schedule would have with given forward/backward times), :func:`busy_fractions`,
  :func:`bubble_fraction`, :func:`parallel_time`, :func:`timeline_frame`, :func:`plot_timeline`;
- the bubble: :func:`theoretical_bubble` = (p-1)/(m+p-1), and :func:`gpipe_overhead_model`,
  which adds a measured step's own per-op overhead and hop latency to that ideal.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: workers need neither pandas nor matplotlib
    import pandas as pd
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class Op:
    """One unit of work of a stage: ``kind`` "F" (forward) or "B" (backward) of a micro-batch."""

    kind: str
    microbatch: int

    def __str__(self) -> str:
        return f"{self.kind}{self.microbatch}"


def _check_pm(stage: int, n_stages: int, n_micro: int) -> None:
    if n_stages < 1 or n_micro < 1:
        raise ValueError(f"need n_stages >= 1 and n_micro >= 1, got {n_stages}, {n_micro}.")
    if not 0 <= stage < n_stages:
        raise ValueError(f"stage {stage} is outside 0..{n_stages - 1}.")


def gpipe_order(stage: int, n_stages: int, n_micro: int) -> list[Op]:
    """GPipe (fill-drain): every forward, then every backward, micro-batches in order.

    The order of ``torch.distributed.pipelining.ScheduleGPipe``. With ``n_micro = 1`` it is
    the naive split: one forward and one backward of the whole batch.
    """
    _check_pm(stage, n_stages, n_micro)
    return [Op("F", i) for i in range(n_micro)] + [Op("B", i) for i in range(n_micro)]


def one_f_one_b_order(stage: int, n_stages: int, n_micro: int) -> list[Op]:
    """1F1B (PipeDream-Flush): ``min(m, p - stage)`` warm-up forwards, then alternate B and F.

    Stage ``s`` never holds more than ``p - s`` micro-batches' activations (GPipe holds all
    ``m``); the order of ``torch.distributed.pipelining.Schedule1F1B``.
    """
    _check_pm(stage, n_stages, n_micro)
    warmup = min(n_micro, n_stages - stage)
    order = [Op("F", i) for i in range(warmup)]
    forward, backward = warmup, 0
    while backward < n_micro:
        order.append(Op("B", backward))
        backward += 1
        if forward < n_micro:
            order.append(Op("F", forward))
            forward += 1
    return order


SCHEDULES: dict[str, Callable[[int, int, int], list[Op]]] = {
    "gpipe": gpipe_order,
    "1f1b": one_f_one_b_order,
}


def schedule_order(name: str, stage: int, n_stages: int, n_micro: int) -> list[Op]:
    """The order of schedule ``name`` (a key of :data:`SCHEDULES`) for one stage."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](stage, n_stages, n_micro)


def peak_in_flight(order: Sequence[Op]) -> int:
    """The most micro-batches whose forward is done and backward is not (activations held)."""
    held, peak = set(), 0
    for op in order:
        if op.kind == "F":
            held.add(op.microbatch)
            peak = max(peak, len(held))
        else:
            held.discard(op.microbatch)
    return peak


@dataclass(frozen=True)
class Interval:
    """A rank was busy computing ``kind`` ("F"/"B") of ``microbatch`` from ``start`` to ``end``."""

    rank: int
    kind: str
    microbatch: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def _per_stage(value: float | Sequence[float], n_stages: int, name: str) -> list[float]:
    values = (
        [float(value)] * n_stages if isinstance(value, int | float) else [float(v) for v in value]
    )
    if len(values) != n_stages or any(v < 0 for v in values):
        raise ValueError(f"{name} must be one number >= 0 or {n_stages} of them, got {value!r}.")
    return values


def simulate_orders(
    orders: Sequence[Sequence[Op]],
    t_forward: float | Sequence[float] = 1.0,
    t_backward: float | Sequence[float] = 2.0,
    t_comm: float = 0.0,
    overhead_forward: float = 0.0,
    overhead_backward: float = 0.0,
) -> list[Interval]:
    """The timeline of one order per stage if every op took exactly the given time.

    An op starts as soon as its stage is free and its input exists: F(s, i) needs F(s-1, i);
    B(s, i) needs B(s+1, i), or F(s, i) on the last stage; ``t_comm`` is added for every hop
    between stages. Each op first spends its ``overhead_*`` (not computing: Python, posting
    sends and receives), then computes for ``t_forward``/``t_backward`` (per stage or one
    number); the intervals returned are the computing only, as :class:`Recorder` measures them.
    """
    n_stages = len(orders)
    tf = _per_stage(t_forward, n_stages, "t_forward")
    tb = _per_stage(t_backward, n_stages, "t_backward")
    if min(t_comm, overhead_forward, overhead_backward) < 0:
        raise ValueError("t_comm and the overheads must be >= 0.")
    done: dict[tuple[int, str, int], float] = {}
    free = [0.0] * n_stages
    position = [0] * n_stages
    intervals: list[Interval] = []
    while any(position[s] < len(orders[s]) for s in range(n_stages)):
        progressed = False
        for s in range(n_stages):
            if position[s] == len(orders[s]):
                continue
            op = orders[s][position[s]]
            if op.kind == "F":
                dep = (s - 1, "F", op.microbatch) if s > 0 else None
                hop = t_comm if s > 0 else 0.0
            else:
                last = s == n_stages - 1
                dep = (s, "F", op.microbatch) if last else (s + 1, "B", op.microbatch)
                hop = 0.0 if last else t_comm
            if dep is not None and dep not in done:
                continue
            ready = max(free[s], done[dep] + hop if dep is not None else 0.0)
            start = ready + (overhead_forward if op.kind == "F" else overhead_backward)
            end = start + (tf[s] if op.kind == "F" else tb[s])
            intervals.append(Interval(s, op.kind, op.microbatch, start, end))
            done[(s, op.kind, op.microbatch)] = free[s] = end
            position[s] += 1
            progressed = True
        if not progressed:
            raise ValueError("the orders deadlock (an op waits for one that never runs).")
    return intervals


def simulate(
    schedule: str,
    n_stages: int,
    n_micro: int,
    t_forward: float | Sequence[float] = 1.0,
    t_backward: float | Sequence[float] = 2.0,
    t_comm: float = 0.0,
    overhead_forward: float = 0.0,
    overhead_backward: float = 0.0,
) -> list[Interval]:
    """:func:`simulate_orders` for schedule ``name`` (a key of :data:`SCHEDULES`)."""
    orders = [schedule_order(schedule, s, n_stages, n_micro) for s in range(n_stages)]
    return simulate_orders(
        orders, t_forward, t_backward, t_comm, overhead_forward, overhead_backward
    )


# ----------------------------------------------------------------------------------------------
# Timelines and the bubble
# ----------------------------------------------------------------------------------------------


def theoretical_bubble(n_stages: int, n_micro: int) -> float:
    """GPipe's idle fraction (p-1)/(m+p-1) for p balanced stages and m micro-batches."""
    for name, value in (("n_stages", n_stages), ("n_micro", n_micro)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    return (n_stages - 1) / (n_micro + n_stages - 1)


def _span(intervals: Sequence[Interval], span: tuple[float, float] | None) -> tuple[float, float]:
    if not intervals:
        raise ValueError("no intervals")
    if span is not None:
        return span
    return min(i.start for i in intervals), max(i.end for i in intervals)


def busy_fractions(
    intervals: Sequence[Interval],
    n_ranks: int | None = None,
    span: tuple[float, float] | None = None,
) -> list[float]:
    """Per rank: the fraction of the step (``span``, default first start to last end) spent busy.

    Overlapping intervals of one rank are not expected (a rank computes one thing at a time).
    """
    start, end = _span(intervals, span)
    if end <= start:
        raise ValueError("the step has no duration")
    n_ranks = n_ranks if n_ranks is not None else 1 + max(i.rank for i in intervals)
    busy = [0.0] * n_ranks
    for interval in intervals:
        busy[interval.rank] += interval.duration
    return [b / (end - start) for b in busy]


def bubble_fraction(
    intervals: Sequence[Interval],
    n_ranks: int | None = None,
    span: tuple[float, float] | None = None,
) -> float:
    """The pipeline's idle fraction: 1 - (busy time summed over ranks) / (ranks x step time)."""
    fractions = busy_fractions(intervals, n_ranks, span)
    return 1.0 - sum(fractions) / len(fractions)


def parallel_time(intervals: Sequence[Interval]) -> float:
    """Time during which at least two ranks compute at once (0 for the naive split)."""
    events = sorted([(i.start, 1) for i in intervals] + [(i.end, -1) for i in intervals])
    active, previous, total = 0, 0.0, 0.0
    for moment, delta in events:  # at equal times an end (-1) sorts before a start (+1)
        if active >= 2:
            total += moment - previous
        active += delta
        previous = moment
    return total


def timeline_frame(intervals: Sequence[Interval], t0: float | None = None) -> pd.DataFrame:
    """The intervals as a table (times in ms from ``t0``, default the first start)."""
    import pandas as pd

    t0 = min(i.start for i in intervals) if t0 is None else t0
    return pd.DataFrame(
        [
            {
                "rank": i.rank,
                "op": f"{i.kind}{i.microbatch}",
                "kind": i.kind,
                "microbatch": i.microbatch,
                "start_ms": 1e3 * (i.start - t0),
                "end_ms": 1e3 * (i.end - t0),
                "ms": 1e3 * i.duration,
            }
            for i in intervals
        ]
    )


def plot_timeline(
    intervals: Sequence[Interval],
    ax: Axes,
    title: str = "",
    t0: float | None = None,
    unit: float = 1e3,
    label_ops: bool = True,
) -> Axes:
    """A Gantt chart: one row per stage, forwards in blue, backwards in orange, idle white.

    Times are shown from ``t0`` (default the first start) multiplied by ``unit`` (1e3: ms;
    use 1 for simulated time units).
    """
    import seaborn as sns

    colours = {"F": sns.color_palette("colorblind")[0], "B": sns.color_palette("colorblind")[1]}
    t0 = min(i.start for i in intervals) if t0 is None else t0
    n_ranks = 1 + max(i.rank for i in intervals)
    end = max(i.end for i in intervals)
    for interval in intervals:
        left, width = unit * (interval.start - t0), unit * interval.duration
        ax.barh(
            interval.rank,
            width,
            left=left,
            height=0.7,
            color=colours[interval.kind],
            edgecolor="white",
            linewidth=0.5,
        )
        if label_ops and width > unit * (end - t0) / 45:
            ax.text(
                left + width / 2,
                interval.rank,
                f"{interval.kind}{interval.microbatch}",
                ha="center",
                va="center",
                fontsize=6,
                color="white",
            )
    ax.set_yticks(range(n_ranks), [f"stage {r}" for r in range(n_ranks)])
    ax.set_ylim(n_ranks - 0.5, -0.5)
    ax.set_xlim(0, unit * (end - t0))
    ax.set_xlabel("ms" if unit == 1e3 else "time")
    ax.set_title(title, fontsize="small")
    ax.grid(axis="y", visible=False)
    return ax


def gpipe_overhead_model(
    intervals: Sequence[Interval], n_stages: int, n_micro: int, t0: float | None = None
) -> dict[str, float]:
    """The ideal GPipe step plus the overheads measured in this step's own timeline.

    From one measured GPipe step (compute intervals of every stage) it reads: each stage's mean
    forward and backward compute time; the **per-op overhead**, the mean gap between two
    forwards on stage 0 (which wait for nothing) and between two backwards on the last stage
    (which wait only for its own forwards); and the **hop**, the mean delay between an op's
    end on one stage and the same micro-batch's op on the next, less that overhead (means, not
    medians: every gap is time the step spent, a core taken by another program included). It
    then plays the schedule with these times (:func:`simulate` with ``overhead_*`` and
    ``t_comm``) and returns them with the predicted step time and bubble, to set beside the
    measured ones (``t0``: the step's start, default the first interval's).
    """
    by_stage: dict[int, list[Interval]] = {s: [] for s in range(n_stages)}
    for interval in sorted(intervals, key=lambda i: i.start):
        by_stage[interval.rank].append(interval)
    expected = [str(op) for op in gpipe_order(0, n_stages, n_micro)]
    for s, stage_intervals in by_stage.items():
        if [f"{i.kind}{i.microbatch}" for i in stage_intervals] != expected:
            raise ValueError(f"stage {s} did not run the GPipe order for m={n_micro}.")
    last = by_stage[n_stages - 1]

    def mean_time(s: int, kind: str) -> float:
        return statistics.fmean(i.duration for i in by_stage[s] if i.kind == kind)

    def gaps(ops: list[Interval]) -> list[float]:
        return [b.start - a.end for a, b in zip(ops, ops[1:], strict=False)]

    forward_gaps = gaps(by_stage[0][:n_micro])
    backward_gaps = gaps(last[n_micro:])
    o_f = statistics.fmean(forward_gaps) if forward_gaps else 0.0
    o_b = statistics.fmean(backward_gaps) if backward_gaps else 0.0
    hops = [by_stage[s][0].start - by_stage[s - 1][0].end - o_f for s in range(1, n_stages)]
    hops += [
        by_stage[s][n_micro].start - by_stage[s + 1][n_micro].end - o_b for s in range(n_stages - 1)
    ]
    hop = max(0.0, statistics.fmean(hops)) if hops else 0.0
    tf = [mean_time(s, "F") for s in range(n_stages)]
    tb = [mean_time(s, "B") for s in range(n_stages)]
    predicted = simulate("gpipe", n_stages, n_micro, tf, tb, hop, max(0.0, o_f), max(0.0, o_b))
    step = max(i.end for i in predicted)
    start = min(i.start for i in intervals) if t0 is None else t0
    return {
        "forward_overhead_s": o_f,
        "backward_overhead_s": o_b,
        "hop_s": hop,
        "measured_step_s": max(i.end for i in intervals) - start,
        "measured_bubble": bubble_fraction(
            intervals, n_stages, (start, max(i.end for i in intervals))
        ),
        "ideal_bubble": theoretical_bubble(n_stages, n_micro),
        "predicted_step_s": step,
        "predicted_bubble": bubble_fraction(predicted, n_stages, (0.0, step)),
    }
