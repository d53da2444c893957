"""Pipeline experiments run by :func:`helpers.parallel.launch.launch` and their summaries.

Workers, signature ``fn(rank, world_size, job)``, one rank per stage:

- :func:`pipeline_equivalence`: the naive split, hand-written GPipe and 1F1B
  (:func:`helpers.parallel.sendrecv.run_schedule`) and ``torch.distributed.pipelining``'s
  ScheduleGPipe and Schedule1F1B, each against the unsplit model;
- :func:`measure_pipeline`: timed steps for several schedules and micro-batch counts.

:mod:`helpers.parallel.pipeline_results` joins their results over ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch import nn

from helpers.parallel.pipeline_schedules import (
    Op,
    schedule_order,
)
from helpers.parallel.ranks import current_device
from helpers.parallel.sendrecv import Recorder, cpu_wait_seconds, run_schedule
from helpers.parallel.stages import (
    MODELS,
    activation_shapes,
    even_cuts,
    input_shape,
    layer_name,
    make_block_stack,
    make_mini_alexnet,
    split_sequential,
)
from helpers.stats import max_abs_diff

if TYPE_CHECKING:  # imported where used: workers do not need pandas
    pass


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
    grads = {n: p.grad for n, p in zip(names, stage.parameters(), strict=True)}
    return max_abs_diff(grads, {n: reference[n] for n in names}) if names else 0.0


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
    reference = {
        n: cast(torch.Tensor, p.grad).detach().clone() for n, p in model.named_parameters()
    }
    stages = split_sequential(model, cuts)
    shapes = activation_shapes(stages, input_shape(job.model, job.width))
    stage = stages[rank]
    names = _stage_param_names(model, cuts, rank)
    last = rank == world_size - 1
    in_shape = shapes[rank - 1] if rank > 0 else ()
    result: dict[str, Any] = {
        "rank": rank,
        "reference_loss": ref_loss.item(),
        "cuts": cuts,
        "stage_layers": [layer_name(m) for m in stage],
        "stage_param_bytes": sum(p.numel() * p.element_size() for p in stage.parameters()),
        "model_param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "methods": {},
    }

    def hand(name: str, schedule: str, n_micro: int) -> None:
        stage.zero_grad(set_to_none=True)
        xs, ys = list(x.chunk(n_micro)), list(y.chunk(n_micro))
        order = schedule_order(schedule, rank, world_size, n_micro)
        loss = run_schedule(
            stage,
            order,
            rank=rank,
            n_stages=world_size,
            sizes=[len(c) for c in xs],
            in_shape=in_shape,
            out_shape=shapes[rank],
            inputs=xs,
            targets=ys,
            loss_fn=loss_fn,
        )
        result["methods"][name] = {
            "loss": loss,
            "grad_diff": _max_grad_diff(stage, reference, names),
            "n_micro": n_micro,
        }

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
        result["methods"][name] = {
            "loss": loss,
            "grad_diff": _max_grad_diff(stage, reference, names),
            "n_micro": job.n_micro,
            "order": [str(op) for op in calls],
        }
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
        raise ValueError(
            f"unknown schedules {sorted(unknown)}; known: {', '.join(TIMED_SCHEDULES)}"
        )
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
            run_schedule(
                stage,
                order,
                rank=rank,
                n_stages=world_size,
                sizes=[len(c) for c in xs],
                in_shape=shapes[rank - 1] if rank > 0 else (),
                out_shape=shapes[rank],
                inputs=xs,
                targets=ys,
                loss_fn=loss_fn,
                recorder=recorder,
            )

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
                configs.append(
                    (schedule, m, torch_step(cls(pipe_stage, n_microbatches=m, loss_fn=loss_fn)))
                )
            else:
                configs.append(
                    (schedule, m, hand_step(schedule_order(schedule, rank, world_size, m), m))
                )

    rows: list[dict[str, Any]] = []
    for repeat in range(-job.warmup, job.repeats):
        for schedule, m, step in configs:
            stage.zero_grad(set_to_none=True)
            recorder.reset()
            dist.barrier()
            wait0, t0 = cpu_wait_seconds(), time.perf_counter()
            step()
            if repeat >= 0:
                rows.append(
                    {
                        "schedule": schedule,
                        "m": m,
                        "repeat": repeat,
                        "rank": rank,
                        "t0": t0,
                        "intervals": list(recorder.intervals),
                        "peak_bytes": recorder.peak_bytes,
                        "peak_in_flight": recorder.peak_in_flight,
                        "cpu_wait_s": cpu_wait_seconds() - wait0,
                    }
                )
    dist.barrier()
    return rows
