"""Evolution strategies (OpenAI-ES, Salimans et al. 2017), serial or over a process group.

:func:`antithetic_noise`, :func:`shape_fitness` (``centered_rank``, ``standardize``, ``none``),
:func:`es_gradient` and :func:`run_es`, which can split the fitness evaluations of each step
over the processes of a ``torch.distributed`` job (every process draws the same noise from a
shared seed, evaluates its share and all-gathers the fitness scalars: only ``2n`` numbers
travel per step). :func:`es_worker` is that job's worker, for
``helpers.parallel.launch.launch``.
"""

from __future__ import annotations

import math
import time
from typing import Any, cast

import torch
import torch.distributed as dist

from helpers.evolution.ga import EvolutionResult, StoppingRule
from helpers.evolution.operators import (
    OPTIMIZERS,
    SHAPINGS,
    FitnessFn,
    MonitorFn,
    _ranks,
    check_name,
)


def antithetic_noise(
    n_pairs: int,
    dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``2 * n_pairs`` Gaussian directions in mirrored pairs: rows ``[eps_1..eps_n, -eps_1..-eps_n]``."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}.")
    eps = torch.randn(n_pairs, dim, generator=generator, device=device)
    return torch.cat([eps, -eps])


def centered_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks scaled to [-0.5, 0.5] (worst -0.5, best +0.5), as in Salimans et al. (2017)."""
    n = values.shape[0]
    if n == 1:
        return torch.zeros(1, device=values.device)
    return _ranks(values).float() / (n - 1) - 0.5


def shape_fitness(fitness: torch.Tensor, method: str = "centered_rank") -> torch.Tensor:
    """Fitness shaping: ``centered_rank`` (rank-based, invariant to any increasing transform of
    the fitness), ``standardize`` (zero mean, unit std) or ``none``."""
    check_name(method, SHAPINGS, "fitness shaping")
    fitness = fitness.float()
    if method == "centered_rank":
        return centered_ranks(fitness)
    if method == "standardize":
        std = fitness.std()
        return (fitness - fitness.mean()) / std if std > 0 else torch.zeros_like(fitness)
    return fitness


def es_gradient(noise: torch.Tensor, utilities: torch.Tensor, sigma: float) -> torch.Tensor:
    """The ES search gradient sum_i u_i eps_i / (N sigma) over the N perturbations.

    With raw fitness as utilities it is an unbiased estimate of the gradient of the smoothed
    objective E[f(theta + sigma eps)]; with antithetic rows it equals
    sum_pairs (u_i^+ - u_i^-) eps_i / (2 n sigma), in which any constant offset cancels.
    """
    return noise.T @ utilities / (noise.shape[0] * sigma)


def _evaluate(
    fitness_fn: FitnessFn,
    candidates: torch.Tensor,
    distributed: bool,
    extra: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fitness of all ``candidates`` (and of the ``extra`` rows, in the same batch).

    In a process group each rank evaluates its share of ``candidates`` (plus ``extra``, on
    every rank, in the same call) and the shares are all-gathered.
    """
    n_extra = 0 if extra is None else extra.shape[0]
    parallel = distributed and dist.is_available() and dist.is_initialized()
    world, rank = (dist.get_world_size(), dist.get_rank()) if parallel else (1, 0)
    if candidates.shape[0] % world:
        raise ValueError(
            f"{candidates.shape[0]} candidates cannot be split evenly over {world} ranks."
        )
    mine = candidates.chunk(world)[rank] if parallel else candidates
    batch = mine if extra is None else torch.cat([extra, mine])
    values = fitness_fn(batch).float()
    extra_values, mine_values = (values[:n_extra], values[n_extra:]) if n_extra else (None, values)
    if not parallel:
        return mine_values, extra_values
    parts = [torch.empty_like(mine_values) for _ in range(world)]
    dist.all_gather(parts, mine_values.contiguous())
    return torch.cat(parts), extra_values


def run_es(
    fitness_fn: FitnessFn,
    theta: torch.Tensor,
    stopping: StoppingRule,
    n_pairs: int = 16,
    sigma: float = 0.1,
    lr: float = 0.05,
    shaping: str = "centered_rank",
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
    monitor: MonitorFn | None = None,
    distributed: bool = False,
) -> EvolutionResult:
    """OpenAI-ES: ascend the Gaussian-smoothed fitness of the mean vector ``theta``.

    Each step draws ``n_pairs`` antithetic pairs, evaluates ``theta + sigma * eps`` for all
    ``2 n_pairs`` rows, shapes the fitness, forms :func:`es_gradient` and hands its negative to a
    torch optimizer (``adam`` or ``sgd``; ``weight_decay`` is its L2 term).

    The score the stopping rule watches is ``monitor(theta)`` when given (not counted in
    ``evaluations``), else the fitness of ``theta`` itself, evaluated in the same batch as the
    perturbations (one more evaluation per step, counted). ``evaluations`` counts every
    evaluation made, those of the last step included. ``distributed=True`` inside a process
    group splits each step's evaluations over the ranks; all ranks must pass generators seeded
    alike, so that they draw the same noise and make the same update.
    """
    check_name(shaping, SHAPINGS, "fitness shaping")
    check_name(optimizer, OPTIMIZERS, "optimizer")
    started = time.perf_counter()
    theta = theta.detach().clone().float().requires_grad_(True)
    opt = (
        torch.optim.Adam([theta], lr=lr, weight_decay=weight_decay)
        if optimizer == "adam"
        else torch.optim.SGD([theta], lr=lr, weight_decay=weight_decay)
    )
    result = EvolutionResult(best=theta.detach().clone(), best_fitness=-math.inf)
    scores: list[float] = []
    evaluations = 0
    for step in range(stopping.max_generations + 1):
        current = theta.detach()
        noise = antithetic_noise(n_pairs, current.numel(), generator, current.device)
        fitness, centre = _evaluate(
            fitness_fn,
            current + sigma * noise,
            distributed,
            extra=None if monitor is not None else current[None],
        )
        evaluations += noise.shape[0] + (centre is not None)
        # without a monitor the centre is evaluated too (extra=current[None])
        score = (
            float(monitor(current)) if monitor is not None else cast(torch.Tensor, centre).item()
        )
        scores.append(score)
        result.history.append(
            {
                "generation": step,
                "evaluations": evaluations,
                "score": score,
                "best": fitness.max().item(),
                "mean": fitness.mean().item(),
                "seconds": time.perf_counter() - started,
            }
        )
        reason = stopping.check(scores)
        if reason is not None:
            result.stop_reason = reason
            break
        gradient = es_gradient(noise, shape_fitness(fitness, shaping), sigma)
        opt.zero_grad(set_to_none=True)
        theta.grad = -gradient  # optimizers minimise; ES ascends the fitness
        opt.step()
    result.best = theta.detach().clone()
    result.best_fitness = scores[-1]
    result.evaluations = evaluations
    result.seconds = time.perf_counter() - started
    return result


def es_worker(
    rank: int,
    world_size: int,
    fitness_fn: FitnessFn,
    theta: torch.Tensor,
    seed: int,
    es_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """One rank of a parallel ES job (``helpers.parallel.launch.launch(es_worker, W, ...)``).

    Every rank seeds its noise generator with ``seed`` and runs :func:`run_es` with
    ``distributed=True``; returns the final ``theta``, the history and the seconds spent in
    ``run_es`` (process start-up and first imports excluded), plus the threads this process used.
    """
    generator = torch.Generator().manual_seed(seed)
    # Constructing the first optimizer imports torch's compiler stack (about a second in a fresh
    # process): a start-up cost, paid here so that ``seconds`` measures the ES run itself.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    result = run_es(fitness_fn, theta, generator=generator, distributed=True, **es_kwargs)
    return {
        "rank": rank,
        "theta": result.best,
        "history": result.history,
        "evaluations": result.evaluations,
        "seconds": result.seconds,
        "threads": torch.get_num_threads(),
    }
