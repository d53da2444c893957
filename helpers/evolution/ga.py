"""The genetic-algorithm loop: stopping rules, the configuration and :func:`run_ga`.

The loop, in the order of the bootcamp notes the course grew from::

    initialise -> evaluate fitness -> [select -> crossover -> mutate -> evaluate] until a stop rule

- stopping: :class:`StoppingRule` (generation cap, target reached, no improvement for
  ``patience`` generations);
- :func:`run_ga` puts the operators of :mod:`helpers.evolution.operators` together, with
  elitism (the best individuals copied unchanged), and records best / mean fitness and diversity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from helpers.evolution.operators import (
    CROSSOVERS,
    MUTATIONS,
    SELECTIONS,
    FitnessFn,
    MonitorFn,
    check_name,
    crossover,
    diversity,
    mutate,
    select,
)


@dataclass(frozen=True)
class StoppingRule:
    """When to stop: the first rule that fires wins.

    - ``target``: the latest score is >= ``target`` ("target reached");
    - ``max_generations``: that many generations after the initial one ("generation cap");
    - ``patience``: the last ``patience`` generations did not beat the best score before them
      by more than ``min_delta`` ("no improvement").
    """

    max_generations: int
    target: float | None = None
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.max_generations < 0:
            raise ValueError(f"max_generations must be >= 0, got {self.max_generations}.")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}.")

    def check(self, scores: Sequence[float]) -> str | None:
        """The reason to stop after the scores so far (index 0 = initial generation), or None."""
        if not scores:
            return None
        if self.target is not None and scores[-1] >= self.target:
            return "target reached"
        if len(scores) - 1 >= self.max_generations:
            return "generation cap"
        if self.patience is not None and len(scores) > self.patience:
            before = max(scores[: -self.patience])
            if max(scores[-self.patience :]) <= before + self.min_delta:
                return "no improvement"
        return None


# --------------------------------------------------------------------------------------------
# The genetic algorithm
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GAConfig:
    """The operators of :func:`run_ga` and their settings.

    ``mutation_rate`` is per gene (bit flip probability, or the probability that a gene gets
    Gaussian noise of std ``sigma``). ``elitism`` individuals are copied unchanged into the next
    generation (their fitness is reused, so the fitness function must be deterministic).
    ``bounds`` clamps real-valued genes after mutation.
    """

    selection: str = "tournament"
    tournament_size: int = 3
    rank_pressure: float = 1.5
    crossover: str = "uniform"
    crossover_rate: float = 0.9
    mutation: str = "bit_flip"
    mutation_rate: float = 0.01
    sigma: float = 0.1
    elitism: int = 1
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_name(self.selection, SELECTIONS, "selection")
        check_name(self.crossover, CROSSOVERS, "crossover")
        check_name(self.mutation, MUTATIONS, "mutation")
        if self.elitism < 0:
            raise ValueError(f"elitism must be >= 0, got {self.elitism}.")


@dataclass
class EvolutionResult:
    """What :func:`run_ga` and :func:`run_es` return.

    ``best``: the best genome found (GA) or the final mean ``theta`` (ES); ``history``: one row
    per generation (``generation``, ``evaluations``, ``best``, ``mean``, ``score``, ``seconds``
    since the start, ...).
    ``score`` is what the stopping rule watched: the monitor when one was given, else the
    population's best fitness (GA) or the fitness of ``theta`` (ES).
    """

    best: torch.Tensor
    best_fitness: float
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = ""
    evaluations: int = 0
    seconds: float = 0.0

    def frame(self) -> pd.DataFrame:
        """The history as a DataFrame (one row per generation)."""
        return pd.DataFrame(self.history)

    @property
    def generations(self) -> int:
        """Generations run after the initial one."""
        return len(self.history) - 1


def run_ga(
    fitness_fn: FitnessFn,
    population: torch.Tensor,
    config: GAConfig,
    stopping: StoppingRule,
    generator: torch.Generator | None = None,
    monitor: MonitorFn | None = None,
) -> EvolutionResult:
    """Evolve ``population`` with ``config``'s operators until ``stopping`` fires.

    Each generation: keep the ``elitism`` best, select ``P - elitism`` parents (in pairs), cross
    each pair over, mutate the children, evaluate only the children. ``monitor`` (optional) is
    called on the best genome each generation (e.g. validation accuracy); it is not counted in
    ``evaluations`` and, when given, is the score the stopping rule watches.
    """
    started = time.perf_counter()
    pop_size = population.shape[0]
    if config.elitism >= pop_size:
        raise ValueError(
            f"elitism ({config.elitism}) must be smaller than the population ({pop_size})."
        )
    population = population.clone()
    fitness = fitness_fn(population).float()
    evaluations = pop_size
    result = EvolutionResult(best=population[0], best_fitness=-math.inf)
    scores: list[float] = []
    n_children = pop_size - config.elitism
    n_pairs = (n_children + 1) // 2
    generation = 0
    while True:
        best_index = int(fitness.argmax())
        if fitness[best_index].item() > result.best_fitness:
            result.best, result.best_fitness = (
                population[best_index].clone(),
                fitness[best_index].item(),
            )
        score = (
            monitor(population[best_index]) if monitor is not None else fitness[best_index].item()
        )
        scores.append(score)
        result.history.append(
            {
                "generation": generation,
                "evaluations": evaluations,
                "best": fitness[best_index].item(),
                "mean": fitness.mean().item(),
                "diversity": diversity(population),
                "best_so_far": result.best_fitness,
                "score": score,
                "seconds": time.perf_counter() - started,
            }
        )
        reason = stopping.check(scores)
        if reason is not None:
            result.stop_reason = reason
            break
        elite = (
            fitness.topk(config.elitism).indices if config.elitism else fitness.new_empty(0).long()
        )
        parents = select(
            config.selection,
            fitness,
            2 * n_pairs,
            generator,
            config.tournament_size,
            config.rank_pressure,
        )
        child_a, child_b = crossover(
            config.crossover,
            population[parents[0::2]],
            population[parents[1::2]],
            config.crossover_rate,
            generator,
        )
        children = torch.cat([child_a, child_b])[:n_children]
        children = mutate(config.mutation, children, config.mutation_rate, config.sigma, generator)
        if config.bounds is not None:
            children = children.clamp(*config.bounds)
        child_fitness = fitness_fn(children).float()
        evaluations += n_children
        population = torch.cat([population[elite], children])
        fitness = torch.cat([fitness[elite], child_fitness])
        generation += 1
    result.evaluations = evaluations
    result.seconds = time.perf_counter() - started
    return result
