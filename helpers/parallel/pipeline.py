"""Model parallelism across processes: stages, pipeline schedules, timelines and the bubble.

A model is cut into **stages**, one per rank; activations travel forward and their gradients
backward between neighbouring ranks. This module holds the pieces notebook 03 builds on.

Pure pieces (no process group needed):

- models: :func:`make_mini_alexnet` (an AlexNet-shaped CNN for 3x32x32 images) and
  :func:`make_block_stack` (identical Linear+ReLU blocks: stages balanced by construction);
- splitting: :func:`split_sequential`, :func:`even_cuts`, :func:`balanced_cuts` (split points
  that minimise the slowest stage), :func:`profile_layers` (measured time per layer),
  :func:`activation_shapes`;
- schedules: :class:`Op`, :func:`gpipe_order`, :func:`one_f_one_b_order`, :data:`SCHEDULES`,
  :func:`peak_in_flight`, and :func:`simulate` (the timeline a schedule would have with given
  forward/backward times);
- timelines: :class:`Interval`, :func:`busy_fractions`, :func:`bubble_fraction`,
  :func:`parallel_time`, :func:`theoretical_bubble` = (p-1)/(m+p-1), :func:`plot_timeline`.

Pieces that run inside a process group (one rank per stage):

- :class:`Recorder`: busy intervals and the activation bytes autograd holds;
- :func:`run_schedule`: a hand-written pipeline step with ``send``/``recv`` for any order;
- workers for :func:`helpers.parallel.launch.launch`, signature ``fn(rank, world_size, job)``:
  :func:`pipeline_equivalence` (naive split, hand-written GPipe and 1F1B,
  ``torch.distributed.pipelining`` ScheduleGPipe and Schedule1F1B, each against the unsplit
  model) and :func:`measure_pipeline` (timed steps for several schedules and micro-batch counts,
  with :func:`cpu_wait_seconds`, the time a rank waited for a free core);
- their results joined over ranks: :func:`summarize_steps` (step time, throughput, measured
  bubble), :func:`typical_steps` (one step per schedule and m, speed-up over the naive split)
  and :func:`representative_step` (its intervals, for :func:`plot_timeline`).

Timestamps are ``time.perf_counter()``, a system-wide monotonic clock on Linux, so intervals of
ranks on the same machine share one time axis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from helpers.parallel.launch import current_device

if TYPE_CHECKING:  # imported where used: workers need neither pandas nor matplotlib
    import pandas as pd
    from matplotlib.axes import Axes

# ----------------------------------------------------------------------------------------------
# Models and splitting
# ----------------------------------------------------------------------------------------------

MODELS = ("alexnet", "stack")


def make_mini_alexnet(classes: int = 10, channels: int = 32) -> nn.Sequential:
    """An AlexNet-shaped CNN for 3x32x32 images: five convolutions, then three linear layers.

    A flat ``nn.Sequential`` (so it can be cut at any index). Like AlexNet, the convolutions do
    most of the computing and the linear layers hold most of the parameters. No dropout, so a
    split model and the unsplit one compute exactly the same function.
    """
    c = channels
    return nn.Sequential(
        nn.Conv2d(3, c, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # c x 16 x 16
        nn.Conv2d(c, 2 * c, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 2c x 8 x 8
        nn.Conv2d(2 * c, 3 * c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(3 * c, 3 * c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(3 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2c x 4 x 4
        nn.Flatten(),
        nn.Linear(2 * c * 16, 16 * c), nn.ReLU(),
        nn.Linear(16 * c, 16 * c), nn.ReLU(),
        nn.Linear(16 * c, classes),
    )


def make_block_stack(width: int, n_blocks: int, classes: int = 10) -> nn.Sequential:
    """``n_blocks`` identical ``Linear(width, width) + ReLU`` blocks and a linear head.

    Element ``i < n_blocks`` is block ``i`` (an ``nn.Sequential``), the last element the head,
    so :func:`even_cuts` over ``n_blocks`` gives stages with equal work (the head is small).
    """
    if width < 1 or n_blocks < 1:
        raise ValueError(f"width and n_blocks must be >= 1, got {width}, {n_blocks}.")
    blocks: list[nn.Module] = [nn.Sequential(nn.Linear(width, width), nn.ReLU())
                               for _ in range(n_blocks)]
    return nn.Sequential(*blocks, nn.Linear(width, classes))


def input_shape(model_name: str, width: int = 0) -> tuple[int, ...]:
    """The shape of one input sample of a model built by :func:`build_model`."""
    if model_name == "alexnet":
        return (3, 32, 32)
    if model_name == "stack":
        return (width,)
    raise ValueError(f"unknown model {model_name!r}; known: {', '.join(MODELS)}")


def split_sequential(model: nn.Sequential, cuts: Sequence[int]) -> list[nn.Sequential]:
    """Cut ``model`` before each index in ``cuts``: ``len(cuts) + 1`` stages.

    The stages hold the *same* module objects (no copies), so running them one after the other
    is exactly the model. ``cuts`` must be strictly increasing, inside ``(0, len(model))``.
    """
    cuts = list(cuts)
    bounds = [0, *cuts, len(model)]
    if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(
            f"cuts {cuts} must be strictly increasing and inside (0, {len(model)}): "
            "every stage needs at least one layer.")
    return [nn.Sequential(*[model[i] for i in range(a, b)])
            for a, b in zip(bounds, bounds[1:], strict=False)]


def even_cuts(n_layers: int, n_stages: int) -> list[int]:
    """Cut points giving each of ``n_stages`` stages the same number of layers (±1)."""
    if not 1 <= n_stages <= n_layers:
        raise ValueError(f"cannot cut {n_layers} layers into {n_stages} non-empty stages.")
    return [round(k * n_layers / n_stages) for k in range(1, n_stages)]


def stage_costs(costs: Sequence[float], cuts: Sequence[int]) -> list[float]:
    """The summed cost of each stage for per-layer ``costs`` cut at ``cuts``."""
    bounds = [0, *cuts, len(costs)]
    return [float(sum(costs[a:b])) for a, b in zip(bounds, bounds[1:], strict=False)]


def balanced_cuts(costs: Sequence[float], n_stages: int) -> list[int]:
    """Cut points that minimise the largest stage cost (the pipeline runs at its slowest stage).

    Exhaustive over all ``C(n-1, p-1)`` ways to cut ``n`` layers into ``p`` contiguous stages;
    among equally good cuts the first in lexicographic order wins. Fine for the few dozen
    layers of a course model.
    """
    n = len(costs)
    if not 1 <= n_stages <= n:
        raise ValueError(f"cannot cut {n} layers into {n_stages} non-empty stages.")
    if any(c < 0 for c in costs):
        raise ValueError("layer costs must be >= 0.")
    best: tuple[float, list[int]] | None = None
    for cuts in combinations(range(1, n), n_stages - 1):
        worst = max(stage_costs(costs, cuts))
        if best is None or worst < best[0] - 1e-15:
            best = (worst, list(cuts))
    assert best is not None
    return best[1]


def layer_name(module: nn.Module) -> str:
    """A short readable name: ``Conv2d 3->32 5x5``, ``Linear 1024->512``, ``ReLU``."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size
        return f"Conv2d {module.in_channels}->{module.out_channels} {k[0]}x{k[1]}"
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}->{module.out_features}"
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.Linear):
        return "block " + layer_name(module[0]).split(" ", 1)[1]
    return type(module).__name__


def profile_layers(model: nn.Sequential, x: torch.Tensor, repeats: int = 5) -> list[dict[str, Any]]:
    """Measured forward+backward seconds and parameter count of each layer.

    Each layer is timed alone on the activation it sees in the full model: forward, then
    backward of a gradient of ones, so the backward includes its weight gradients. The layers
    are timed in ``repeats`` rounds (one pass over all layers per round, after a warm-up
    round) and each keeps its fastest time: other programs on a shared machine can only add
    time, and rounds spread a burst of their load over all layers alike.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    with torch.no_grad():
        acts = [x]
        for layer in model:
            acts.append(layer(acts[-1]))
    inputs = [a.detach().requires_grad_(True) for a in acts[:-1]]
    best = [float("inf")] * len(model)
    for round_ in range(repeats + 1):  # round 0 warms up
        for index, layer in enumerate(model):
            inputs[index].grad = None
            start = time.perf_counter()
            out = layer(inputs[index])
            out.backward(torch.ones_like(out))
            if round_ > 0:
                best[index] = min(best[index], time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return [{"index": index, "layer": layer_name(layer),
             "params": sum(p.numel() for p in layer.parameters()), "seconds": best[index]}
            for index, layer in enumerate(model)]


def activation_shapes(stages: Sequence[nn.Module], sample_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Per-sample shape of each stage's output (stage ``s`` receives ``shapes[s-1]``)."""
    shapes = []
    device = next((p.device for s in stages for p in s.parameters()), torch.device("cpu"))
    with torch.no_grad():
        h = torch.zeros(1, *sample_shape, device=device)
        for stage in stages:
            h = stage(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------

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
    values = [float(value)] * n_stages if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != n_stages or any(v < 0 for v in values):
        raise ValueError(f"{name} must be one number >= 0 or {n_stages} of them, got {value!r}.")
    return values


def simulate(schedule: str, n_stages: int, n_micro: int, t_forward: float | Sequence[float] = 1.0,
             t_backward: float | Sequence[float] = 2.0, t_comm: float = 0.0) -> list[Interval]:
    """The timeline of ``schedule`` if every op took exactly the given time (per stage or one).

    Each stage runs its ops in the schedule's order, an op starting as soon as the stage is
    free and its input exists: F(s, i) needs F(s-1, i); B(s, i) needs B(s+1, i), or F(s, i) on
    the last stage; ``t_comm`` is added for every hop between stages.
    """
    tf = _per_stage(t_forward, n_stages, "t_forward")
    tb = _per_stage(t_backward, n_stages, "t_backward")
    orders = [schedule_order(schedule, s, n_stages, n_micro) for s in range(n_stages)]
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
            start = max(free[s], done[dep] + hop if dep is not None else 0.0)
            end = start + (tf[s] if op.kind == "F" else tb[s])
            intervals.append(Interval(s, op.kind, op.microbatch, start, end))
            done[(s, op.kind, op.microbatch)] = free[s] = end
            position[s] += 1
            progressed = True
        if not progressed:
            raise ValueError(f"schedule {schedule!r} deadlocks (an op waits for one never run).")
    return intervals


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


def busy_fractions(intervals: Sequence[Interval], n_ranks: int | None = None,
                   span: tuple[float, float] | None = None) -> list[float]:
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


def bubble_fraction(intervals: Sequence[Interval], n_ranks: int | None = None,
                    span: tuple[float, float] | None = None) -> float:
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
    return pd.DataFrame([{"rank": i.rank, "op": f"{i.kind}{i.microbatch}", "kind": i.kind,
                          "microbatch": i.microbatch, "start_ms": 1e3 * (i.start - t0),
                          "end_ms": 1e3 * (i.end - t0), "ms": 1e3 * i.duration}
                         for i in intervals])


def plot_timeline(intervals: Sequence[Interval], ax: Axes, title: str = "",
                  t0: float | None = None, unit: float = 1e3, label_ops: bool = True) -> Axes:
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
        ax.barh(interval.rank, width, left=left, height=0.7, color=colours[interval.kind],
                edgecolor="white", linewidth=0.5)
        if label_ops and width > unit * (end - t0) / 45:
            ax.text(left + width / 2, interval.rank, f"{interval.kind}{interval.microbatch}",
                    ha="center", va="center", fontsize=6, color="white")
    ax.set_yticks(range(n_ranks), [f"stage {r}" for r in range(n_ranks)])
    ax.set_ylim(n_ranks - 0.5, -0.5)
    ax.set_xlim(0, unit * (end - t0))
    ax.set_xlabel("ms" if unit == 1e3 else "time")
    ax.set_title(title, fontsize="small")
    ax.grid(axis="y", visible=False)
    return ax


# ----------------------------------------------------------------------------------------------
# Inside a process group: recording and the hand-written schedule
# ----------------------------------------------------------------------------------------------

@dataclass
class Recorder:
    """Busy intervals of one rank, and the activation bytes autograd holds for backward.

    ``busy(kind, i)`` times a block of work; ``saving(i, parameters)`` counts the bytes of the
    non-parameter tensors that autograd saves during micro-batch ``i``'s forward;
    ``release(i)`` forgets them once its backward has run. ``peak_bytes`` and
    ``peak_in_flight`` are the largest totals seen. On CUDA the device is synchronised around
    each busy block so that the interval covers the kernels, not just their launch.
    """

    rank: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    intervals: list[Interval] = field(default_factory=list)
    held: dict[int, int] = field(default_factory=dict)
    peak_bytes: int = 0
    peak_in_flight: int = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def busy(self, kind: str, microbatch: int) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.intervals.append(Interval(self.rank, kind, microbatch, start, time.perf_counter()))

    @contextmanager
    def saving(self, microbatch: int, parameters: Sequence[torch.Tensor]) -> Iterator[None]:
        param_ptrs = {p.data_ptr() for p in parameters}
        seen: dict[int, int] = {}  # tensors saved twice (a ReLU's output, the next input) count once

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.data_ptr()
            if ptr not in param_ptrs:
                seen[ptr] = max(seen.get(ptr, 0), t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        self.held[microbatch] = sum(seen.values())
        self.peak_bytes = max(self.peak_bytes, sum(self.held.values()))
        self.peak_in_flight = max(self.peak_in_flight, len(self.held))

    def release(self, microbatch: int) -> None:
        self.held.pop(microbatch, None)

    def reset(self) -> None:
        self.intervals, self.held, self.peak_bytes, self.peak_in_flight = [], {}, 0, 0


def cpu_wait_seconds() -> float:
    """Seconds this thread has spent ready to run but waiting for a CPU core (Linux; else NaN).

    The ``run_delay`` of ``/proc/thread-self/schedstat``: time another program (or another
    thread) held the core. The difference over a step says how much of that step's idle time
    was the machine's, not the schedule's.
    """
    try:
        with open("/proc/thread-self/schedstat") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def run_schedule(stage: nn.Module, order: Sequence[Op], *, rank: int, n_stages: int,
                 sizes: Sequence[int], in_shape: Sequence[int], out_shape: Sequence[int],
                 inputs: Sequence[torch.Tensor] | None, targets: Sequence[torch.Tensor] | None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 recorder: Recorder | None = None) -> float | None:
    """One training step of this rank's ``stage`` in the given ``order``, by send/recv.

    ``sizes`` holds the samples of each micro-batch (every rank knows them). Rank 0 takes its
    micro-batches from ``inputs``; rank ``r > 0`` receives activations of per-sample shape
    ``in_shape`` from rank ``r - 1``. The last rank computes
    ``loss_fn(output, target) / n_micro`` per micro-batch (so the summed gradients equal the
    whole batch's mean-loss gradient) and returns the summed loss; the others return None.
    Backward sends each input's gradient to the previous rank and receives the output's
    gradient (per-sample ``out_shape``) from the next. Gradients accumulate into ``stage``'s
    parameters (zero them before).

    Sends never make a rank wait for its neighbour, and receives are posted early:

    - on gloo (CPU) each receive is posted as soon as the previous one has completed, before the
      computing starts. Gloo moves a message only once its receive is posted; posted early, the
      sender writes the data at once from its own thread, instead of a helper thread having to
      find a free core later while both cores compute (on a 2-core machine this shrank the
      measured bubble noticeably). Sends start at once (``isend``).
    - on NCCL a send is started together with the rank's next receive when one follows
      (``batch_isend_irecv``), as ``torch.distributed.pipelining`` does: in 1F1B two neighbours
      send to each other at the same time, and a send queued before a receive on each side
      would wait for the other forever.
    """
    device = current_device()
    last = rank == n_stages - 1
    n_micro = len(sizes)
    if rank == 0 and (inputs is None or len(inputs) != n_micro):
        raise ValueError(f"rank 0 needs {n_micro} input micro-batches")
    if last and (targets is None or len(targets) != n_micro):
        raise ValueError(f"the last rank needs {n_micro} target micro-batches")
    params = list(stage.parameters())
    rec = recorder or Recorder(rank, device)
    saved_inputs: dict[int, torch.Tensor] = {}
    saved_outputs: dict[int, torch.Tensor] = {}
    early = dist.is_initialized() and dist.get_backend() == "gloo"
    pending: list[dist.P2POp] = []  # NCCL: a send waiting to go out with the next receive
    in_flight: list[tuple[Any, list[dist.P2POp]]] = []  # started sends, kept alive until done

    def receives(op: Op) -> bool:
        return (op.kind == "F" and rank > 0) or (op.kind == "B" and not last)

    planned = [op for op in order if receives(op)]
    posted: list[tuple[torch.Tensor, Any]] = []  # receives started, in order

    def post() -> None:
        nonlocal pending
        op = planned[len(posted)]
        shape, peer = (in_shape, rank - 1) if op.kind == "F" else (out_shape, rank + 1)
        buffer = torch.empty(sizes[op.microbatch], *shape, device=device)
        ops = [*pending, dist.P2POp(dist.irecv, buffer, peer)]
        pending = []
        posted.append((buffer, dist.batch_isend_irecv(ops)))

    def receive(index: int) -> torch.Tensor:
        if index == len(posted):
            post()
        buffer, works = posted[index]
        for work in works:
            work.wait()
        if early and len(posted) < len(planned):
            post()  # the next receive, before this rank starts computing
        return buffer

    def send(tensor: torch.Tensor, peer: int, position: int) -> None:
        op = dist.P2POp(dist.isend, tensor.contiguous(), peer)
        if not early and position + 1 < len(order) and receives(order[position + 1]):
            pending.append(op)
        else:
            in_flight.append((dist.batch_isend_irecv([op]), [op]))

    if early and planned:
        post()
    received = 0
    loss_total = 0.0
    for position, op in enumerate(order):
        i = op.microbatch
        if op.kind == "F":
            if rank == 0:
                inp = inputs[i]  # type: ignore[index]
            else:
                inp = receive(received).requires_grad_(True)
                received += 1
            with rec.busy("F", i), rec.saving(i, params):
                out = stage(inp)
                if last:
                    out = loss_fn(out, targets[i]) / n_micro  # type: ignore[index]
            if last:
                loss_total += out.item()
            else:
                send(out.detach(), rank + 1, position)
            saved_inputs[i], saved_outputs[i] = inp, out
        elif op.kind == "B":
            out = saved_outputs.pop(i)
            grad = None
            if not last:
                grad = receive(received)
                received += 1
            with rec.busy("B", i):
                out.backward(grad)
            rec.release(i)
            inp = saved_inputs.pop(i)
            if rank > 0:
                send(inp.grad, rank - 1, position)
        else:
            raise ValueError(f"unknown op kind {op.kind!r}")
    if pending:  # cannot happen for a valid order (the last op never precedes a receive)
        in_flight.append((dist.batch_isend_irecv(pending), pending))
    for works, _ in in_flight:
        for work in works:
            work.wait()
    return loss_total if last else None


# ----------------------------------------------------------------------------------------------
# Workers for helpers.parallel.launch.launch
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PipelineJob:
    """What a pipeline worker builds: the model, the data and how the model is cut.

    ``model``: "alexnet" (:func:`make_mini_alexnet` with ``width`` channels) or "stack"
    (:func:`make_block_stack` of ``width`` with ``blocks_per_stage`` blocks per stage).
    ``cuts``: split points, default :func:`even_cuts` over the layers (over the blocks for
    "stack"). ``n_micro``: micro-batches of the equivalence checks. ``schedules`` and
    ``micro_batches``: what :func:`measure_pipeline` times, ``warmup`` + ``repeats`` steps each.
    """

    model: str = "alexnet"
    width: int = 32
    blocks_per_stage: int = 4
    batch: int = 32
    n_micro: int = 4
    classes: int = 10
    cuts: tuple[int, ...] | None = None
    seed: int = 0
    schedules: tuple[str, ...] = ("gpipe",)
    micro_batches: tuple[int, ...] = (1, 2, 4, 8)
    warmup: int = 1
    repeats: int = 5


def build_model(job: PipelineJob, n_stages: int) -> nn.Sequential:
    """The job's model, seeded (every rank builds the same weights)."""
    torch.manual_seed(job.seed)
    if job.model == "alexnet":
        return make_mini_alexnet(job.classes, job.width)
    if job.model == "stack":
        return make_block_stack(job.width, job.blocks_per_stage * n_stages, job.classes)
    raise ValueError(f"unknown model {job.model!r}; known: {', '.join(MODELS)}")


def job_cuts(job: PipelineJob, model: nn.Sequential, n_stages: int) -> list[int]:
    """The job's split points (default: equal numbers of layers, or of blocks for "stack")."""
    if job.cuts is not None:
        if len(job.cuts) != n_stages - 1:
            raise ValueError(f"{len(job.cuts)} cuts given for {n_stages} stages.")
        return list(job.cuts)
    n_layers = len(model) - 1 if job.model == "stack" else len(model)  # the head joins the last
    return even_cuts(n_layers, n_stages)


def check_divisible(batch: int, micro_batches: Sequence[int]) -> None:
    """Refuse micro-batch counts that do not split the batch evenly.

    Unequal micro-batches would make the mean of the micro-batch losses differ from the
    batch's mean loss (and ``torch.chunk`` and torch's pipelining split them differently).
    """
    uneven = [m for m in micro_batches if m < 1 or batch % m]
    if uneven:
        raise ValueError(f"batch {batch} does not split into {uneven} equal micro-batches.")


def make_batch(job: PipelineJob) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch of inputs and class labels, the same on every rank."""
    g = torch.Generator().manual_seed(job.seed + 1)
    x = torch.randn(job.batch, *input_shape(job.model, job.width), generator=g)
    y = torch.randint(0, job.classes, (job.batch,), generator=g)
    return x, y


def _no_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _max_grad_diff(stage: nn.Module, reference: dict[str, torch.Tensor], names: list[str]) -> float:
    diffs = [(p.grad - reference[n]).abs().max().item()
             for n, p in zip(names, stage.parameters(), strict=True)]
    return max(diffs) if diffs else 0.0


def _stage_param_names(model: nn.Sequential, cuts: list[int], rank: int) -> list[str]:
    bounds = [0, *cuts, len(model)]
    names = []
    for index in range(bounds[rank], bounds[rank + 1]):
        names += [f"{index}.{n}" for n, _ in model[index].named_parameters()]
    return names


def pipeline_equivalence(rank: int, world_size: int, job: PipelineJob) -> dict[str, Any]:
    """Loss and gradients of five ways to run a split model, each against the unsplit model.

    Every rank builds the full model from the seed and computes the single-process reference
    (loss and gradients of the whole batch), then keeps only its own stage. Returned per rank:
    the reference loss, and for each method its loss (last rank only) and the largest
    |gradient difference| over this stage's parameters; for the torch schedules also the order
    in which the library ran forwards and backwards on this stage.
    """
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    check_divisible(job.batch, [job.n_micro])
    if job.n_micro < world_size:
        raise ValueError(f"1F1B needs n_micro >= stages: {job.n_micro} < {world_size}.")
    _no_tf32()
    device = current_device()
    model = build_model(job, world_size).to(device)
    cuts = job_cuts(job, model, world_size)
    x, y = (t.to(device) for t in make_batch(job))
    loss_fn = nn.functional.cross_entropy
    ref_loss = loss_fn(model(x), y)
    ref_loss.backward()
    reference = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    stages = split_sequential(model, cuts)
    shapes = activation_shapes(stages, input_shape(job.model, job.width))
    stage = stages[rank]
    names = _stage_param_names(model, cuts, rank)
    last = rank == world_size - 1
    in_shape = shapes[rank - 1] if rank > 0 else ()
    result: dict[str, Any] = {"rank": rank, "reference_loss": ref_loss.item(), "cuts": cuts,
                              "stage_layers": [layer_name(m) for m in stage],
                              "stage_param_bytes": sum(p.numel() * p.element_size()
                                                       for p in stage.parameters()),
                              "model_param_bytes": sum(p.numel() * p.element_size()
                                                       for p in model.parameters()),
                              "methods": {}}

    def hand(name: str, schedule: str, n_micro: int) -> None:
        stage.zero_grad(set_to_none=True)
        xs, ys = list(x.chunk(n_micro)), list(y.chunk(n_micro))
        order = schedule_order(schedule, rank, world_size, n_micro)
        loss = run_schedule(stage, order, rank=rank, n_stages=world_size, sizes=[len(c) for c in xs],
                            in_shape=in_shape, out_shape=shapes[rank], inputs=xs,
                            targets=ys, loss_fn=loss_fn)
        result["methods"][name] = {"loss": loss, "grad_diff": _max_grad_diff(stage, reference, names),
                                   "n_micro": n_micro}

    hand("naive split (send/recv)", "gpipe", 1)
    hand("hand-written GPipe", "gpipe", job.n_micro)
    hand("hand-written 1F1B", "1f1b", job.n_micro)

    for name, cls in (("torch ScheduleGPipe", ScheduleGPipe), ("torch Schedule1F1B", Schedule1F1B)):
        stage.zero_grad(set_to_none=True)
        pipe_stage = PipelineStage(stage, rank, world_size, device)
        calls = _instrument(pipe_stage, Recorder(rank, device))
        schedule = cls(pipe_stage, n_microbatches=job.n_micro, loss_fn=loss_fn)
        losses: list[torch.Tensor] = []
        if rank == 0:
            schedule.step(x)
        elif last:
            schedule.step(target=y, losses=losses)
        else:
            schedule.step()
        loss = torch.stack(losses).mean().item() if last else None
        result["methods"][name] = {"loss": loss, "grad_diff": _max_grad_diff(stage, reference, names),
                                   "n_micro": job.n_micro, "order": [str(op) for op in calls]}
    dist.barrier()
    return result


def _instrument(pipe_stage: Any, recorder: Recorder) -> list[Op]:
    """Time a ``PipelineStage``'s forward/backward chunks and log their order (no behaviour change).

    Wraps the stage object's ``forward_one_chunk`` and ``backward_one_chunk``, the two methods
    every ``torch.distributed.pipelining`` schedule calls to compute.
    """
    calls: list[Op] = []
    forward, backward = pipe_stage.forward_one_chunk, pipe_stage.backward_one_chunk
    params = list(pipe_stage.submod.parameters())

    def timed_forward(i: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(Op("F", i))
        with recorder.busy("F", i), recorder.saving(i, params):
            return forward(i, *args, **kwargs)

    def timed_backward(i: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(Op("B", i))
        with recorder.busy("B", i):
            out = backward(i, *args, **kwargs)
        recorder.release(i)
        return out

    pipe_stage.forward_one_chunk, pipe_stage.backward_one_chunk = timed_forward, timed_backward
    return calls


TIMED_SCHEDULES = ("gpipe", "1f1b", "torch-gpipe", "torch-1f1b")


def measure_pipeline(rank: int, world_size: int, job: PipelineJob) -> list[dict[str, Any]]:
    """Timed training steps (forward + backward, no optimizer) for each schedule and m.

    ``job.schedules`` may hold "gpipe" and "1f1b" (hand-written, :func:`run_schedule`) and
    "torch-gpipe" and "torch-1f1b" (``torch.distributed.pipelining``; its 1F1B needs m >= p,
    smaller m are skipped). Every (schedule, m) first runs ``warmup`` untimed steps; then the
    ``repeats`` timed rounds each run every configuration once, so that a burst of load from
    other programs hits all of them alike. A barrier starts every step. One row per timed step
    on this rank: its busy intervals, the time it left the barrier (``t0``), its peak
    activation bytes and micro-batches held, and how long its compute thread waited for a CPU
    core during the step (:func:`cpu_wait_seconds`).
    """
    unknown = set(job.schedules) - set(TIMED_SCHEDULES)
    if unknown:
        raise ValueError(f"unknown schedules {sorted(unknown)}; known: {', '.join(TIMED_SCHEDULES)}")
    check_divisible(job.batch, job.micro_batches)
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    _no_tf32()
    device = current_device()
    model = build_model(job, world_size).to(device)
    cuts = job_cuts(job, model, world_size)
    stages = split_sequential(model, cuts)
    shapes = activation_shapes(stages, input_shape(job.model, job.width))
    stage = stages[rank]
    last = rank == world_size - 1
    x, y = (t.to(device) for t in make_batch(job))
    loss_fn = nn.functional.cross_entropy
    recorder = Recorder(rank, device)

    def torch_step(pipe: Any) -> Callable[[], None]:
        def step() -> None:
            if rank == 0:
                pipe.step(x)
            elif last:
                pipe.step(target=y)
            else:
                pipe.step()
        return step

    def hand_step(order: list[Op], m: int) -> Callable[[], None]:
        xs, ys = list(x.chunk(m)), list(y.chunk(m))

        def step() -> None:
            run_schedule(stage, order, rank=rank, n_stages=world_size, sizes=[len(c) for c in xs],
                         in_shape=shapes[rank - 1] if rank > 0 else (), out_shape=shapes[rank],
                         inputs=xs, targets=ys, loss_fn=loss_fn, recorder=recorder)
        return step

    configs: list[tuple[str, int, Callable[[], None]]] = []
    for schedule in job.schedules:
        for m in job.micro_batches:
            if schedule == "torch-1f1b" and m < world_size:
                continue
            if schedule.startswith("torch"):
                pipe_stage = PipelineStage(stage, rank, world_size, device)
                _instrument(pipe_stage, recorder)
                cls = ScheduleGPipe if schedule == "torch-gpipe" else Schedule1F1B
                configs.append((schedule, m, torch_step(cls(pipe_stage, n_microbatches=m,
                                                             loss_fn=loss_fn))))
            else:
                configs.append((schedule, m, hand_step(schedule_order(schedule, rank, world_size, m), m)))

    rows: list[dict[str, Any]] = []
    for repeat in range(-job.warmup, job.repeats):
        for schedule, m, step in configs:
            stage.zero_grad(set_to_none=True)
            recorder.reset()
            dist.barrier()
            wait0, t0 = cpu_wait_seconds(), time.perf_counter()
            step()
            if repeat >= 0:
                rows.append({"schedule": schedule, "m": m, "repeat": repeat, "rank": rank, "t0": t0,
                             "intervals": list(recorder.intervals), "peak_bytes": recorder.peak_bytes,
                             "peak_in_flight": recorder.peak_in_flight,
                             "cpu_wait_s": cpu_wait_seconds() - wait0})
    dist.barrier()
    return rows


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
        table.append({"schedule": schedule, "m": m, "repeat": repeat,
                      "step_s": span[1] - span[0], "samples_per_s": batch / (span[1] - span[0]),
                      "busy_s": sum(i.duration for i in intervals) / n_ranks,
                      "cpu_wait_s": sum(part.get("cpu_wait_s", 0.0) for part in parts) / n_ranks,
                      "bubble": bubble_fraction(intervals, n_ranks, span),
                      "theory": theoretical_bubble(n_ranks, m),
                      "peak_in_flight": max(part["peak_in_flight"] for part in parts),
                      "peak_activation_mb_stage0": next(p["peak_bytes"] for p in parts
                                                        if p["rank"] == 0) / 2**20})
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


def representative_step(rows_by_rank: Sequence[Sequence[dict[str, Any]]], schedule: str,
                        m: int, which: str = "median") -> tuple[list[Interval], float]:
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
