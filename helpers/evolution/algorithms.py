"""Genetic algorithms and evolution strategies in small, vectorised, tested pieces.

A **population** is a tensor of shape ``(P, L)``: ``P`` individuals, each a genome of ``L``
genes — bits stored as ``0.0``/``1.0`` floats, or real numbers (network weights, log learning
rates). A **fitness function** maps a population to a tensor of ``P`` scalars, higher is better;
write it vectorised (one batched computation for the whole population) wherever you can.

The genetic-algorithm loop, in the order of the course's notes::

    initialise -> evaluate fitness -> [select -> crossover -> mutate -> evaluate] until a stop rule

- initialisation: :func:`init_population` (``binary``, ``gaussian``, ``uniform``);
- selection (who becomes a parent): :func:`select` with ``tournament``, ``roulette`` or
  ``rank`` (linear ranking); :func:`selection_probabilities` gives each one's exact
  probabilities; elitism (the best individuals copied unchanged) lives in :func:`run_ga`;
- crossover: :func:`crossover` with ``one_point``, ``uniform`` or ``none``;
- mutation: :func:`mutate` with ``bit_flip`` (per-gene flip probability) or ``gaussian``;
- stopping: :class:`StoppingRule` (generation cap, target reached, no improvement for
  ``patience`` generations);
- :func:`run_ga` puts them together and records best / mean fitness and :func:`diversity`.

Evolution strategies (OpenAI-ES, Salimans et al. 2017): :func:`antithetic_noise`,
:func:`shape_fitness` (``centered_rank``, ``standardize``, ``none``), :func:`es_gradient` and
:func:`run_es`, which can split the fitness evaluations of each step over the processes of a
``torch.distributed`` job (every process draws the same noise from a shared seed, evaluates its
share and all-gathers the fitness scalars: only ``2n`` numbers travel per step).
:func:`es_worker` is that job's worker, for ``helpers.parallel.launch.launch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist

FitnessFn = Callable[[torch.Tensor], torch.Tensor]
MonitorFn = Callable[[torch.Tensor], float]

INITIALISATIONS: tuple[str, ...] = ("binary", "gaussian", "uniform")
SELECTIONS: tuple[str, ...] = ("tournament", "roulette", "rank")
CROSSOVERS: tuple[str, ...] = ("one_point", "uniform", "none")
MUTATIONS: tuple[str, ...] = ("bit_flip", "gaussian")
SHAPINGS: tuple[str, ...] = ("centered_rank", "standardize", "none")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def check_name(name: str, known: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` naming the known choices when ``name`` is not one of them."""
    if name not in known:
        raise ValueError(f"Unknown {what} {name!r}; known: {', '.join(known)}.")


def _rand(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, device=like.device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# Initialisation, a classic problem, diversity
# --------------------------------------------------------------------------------------------


def init_population(
    pop_size: int,
    genome_length: int,
    kind: str = "binary",
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A random population ``(pop_size, genome_length)`` of float32 genomes.

    ``binary``: fair coin flips stored as 0.0/1.0; ``gaussian``: N(0, scale^2);
    ``uniform``: U(-scale, scale).
    """
    check_name(kind, INITIALISATIONS, "initialisation")
    if pop_size < 1 or genome_length < 1:
        raise ValueError(f"pop_size and genome_length must be >= 1, got {pop_size}, {genome_length}.")
    shape = (pop_size, genome_length)
    if kind == "binary":
        return (torch.rand(*shape, generator=generator, device=device) < 0.5).float()
    if kind == "gaussian":
        return scale * torch.randn(*shape, generator=generator, device=device)
    return scale * (2 * torch.rand(*shape, generator=generator, device=device) - 1)


def onemax(population: torch.Tensor) -> torch.Tensor:
    """OneMax: the number of ones in each bit string (maximum = genome length)."""
    return population.sum(dim=1)


def diversity(population: torch.Tensor) -> float:
    """Mean pairwise squared distance between individuals, divided by the genome length.

    For bit strings this is the mean pairwise **Hamming distance as a fraction of the genome**
    (0: all identical, 0.5: a random population). It is computed in O(P L) from per-gene
    variances: mean over pairs of ||x_i - x_j||^2 = 2 * sum over genes of the unbiased variance.
    """
    if population.shape[0] < 2:
        return 0.0
    return float(2 * population.float().var(dim=0, unbiased=True).mean())


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def _ranks(fitness: torch.Tensor) -> torch.Tensor:
    """0 for the worst individual ... P-1 for the best (ties broken by position)."""
    return torch.argsort(torch.argsort(fitness, stable=True), stable=True)


def tournament_selection(
    fitness: torch.Tensor, n: int, size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``n`` parents, each the fittest of ``size`` contestants drawn without replacement.

    Drawing contestants without replacement makes ``size = P`` always return the best, and
    ``size = 1`` a uniform random pick; bigger tournaments mean stronger selection pressure.
    """
    pop = fitness.shape[0]
    if not 1 <= size <= pop:
        raise ValueError(f"tournament size must be in [1, {pop}] (the population), got {size}.")
    contestants = _rand((n, pop), fitness, generator).topk(size, dim=1).indices  # random subsets
    winners = fitness[contestants].argmax(dim=1, keepdim=True)
    return contestants.gather(1, winners).squeeze(1)


def roulette_selection(
    fitness: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fitness-proportionate selection: P(i) = f_i / sum f (needs non-negative fitness)."""
    return torch.multinomial(selection_probabilities("roulette", fitness), n, replacement=True,
                             generator=generator)


def rank_selection(
    fitness: torch.Tensor, n: int, pressure: float = 1.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Linear ranking (Baker 1985): probabilities depend on rank only, best/average = ``pressure``."""
    probs = selection_probabilities("rank", fitness, pressure=pressure)
    return torch.multinomial(probs, n, replacement=True, generator=generator)


def selection_probabilities(
    name: str, fitness: torch.Tensor, tournament_size: int = 3, pressure: float = 1.5
) -> torch.Tensor:
    """The exact probability that one draw of selection ``name`` picks each individual.

    - ``roulette``: f_i / sum f; all-zero fitness gives the uniform distribution.
    - ``rank``: (2 - s + 2 (s - 1) r_i / (P - 1)) / P with r_i = 0 for the worst, s = pressure.
    - ``tournament``: C(r_i, k - 1) / C(P, k): individual i wins when it is in the subset of
      size k and all other k - 1 contestants are among the r_i worse ones.

    ``r_i`` are ranks of distinct values; individuals with equal fitness share their group's
    total probability equally (as the samplers do).
    """
    check_name(name, SELECTIONS, "selection")
    fitness = fitness.double()
    pop = fitness.shape[0]
    if name == "roulette":
        if (fitness < 0).any():
            raise ValueError("roulette selection needs non-negative fitness; shift it or use 'rank'.")
        total = fitness.sum()
        return (fitness / total if total > 0 else torch.full_like(fitness, 1 / pop)).float()
    ranks = _ranks(fitness).double()
    if name == "rank":
        if not 1.0 <= pressure <= 2.0:
            raise ValueError(f"rank selection pressure must be in [1, 2], got {pressure}.")
        if pop == 1:
            return torch.ones(1, device=fitness.device)
        probs = (2 - pressure + 2 * (pressure - 1) * ranks / (pop - 1)) / pop
        return _share_among_ties(probs, fitness).float()
    if not 1 <= tournament_size <= pop:
        raise ValueError(f"tournament size must be in [1, {pop}], got {tournament_size}.")
    k = tournament_size
    probs = torch.tensor([math.comb(int(r), k - 1) / math.comb(pop, k) for r in ranks.tolist()],
                         dtype=torch.float64, device=fitness.device)
    return _share_among_ties(probs, fitness).float()


def _share_among_ties(probs: torch.Tensor, fitness: torch.Tensor) -> torch.Tensor:
    """Equal fitness, equal chance: each individual gets the mean probability of its tie group.

    (A tie group's total is the same however ties are ranked; a tournament breaks ties at
    random, so each member gets an equal share of it.)
    """
    _, group = torch.unique(fitness, return_inverse=True)
    totals = torch.zeros(int(group.max()) + 1, dtype=probs.dtype, device=probs.device)
    totals.scatter_add_(0, group, probs)
    return (totals / torch.bincount(group).to(probs.dtype))[group]


def select(
    name: str,
    fitness: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    tournament_size: int = 3,
    pressure: float = 1.5,
) -> torch.Tensor:
    """Indices of ``n`` parents chosen by selection ``name`` (one of :data:`SELECTIONS`)."""
    check_name(name, SELECTIONS, "selection")
    if name == "tournament":
        return tournament_selection(fitness, n, tournament_size, generator)
    if name == "roulette":
        return roulette_selection(fitness, n, generator)
    return rank_selection(fitness, n, pressure, generator)


# --------------------------------------------------------------------------------------------
# Crossover and mutation
# --------------------------------------------------------------------------------------------


def one_point_crossover(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each pair at one random point in 1..L-1: children a[:c] + b[c:] and b[:c] + a[c:]."""
    length = a.shape[1]
    if length < 2:
        return a.clone(), b.clone()
    cut = torch.randint(1, length, (a.shape[0], 1), generator=generator, device=a.device)
    head = torch.arange(length, device=a.device) < cut
    return torch.where(head, a, b), torch.where(head, b, a)


def uniform_crossover(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator | None = None, swap_prob: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap each gene between the two parents independently with probability ``swap_prob``."""
    swap = _rand(a.shape, a, generator) < swap_prob
    return torch.where(swap, b, a), torch.where(swap, a, b)


def crossover(
    name: str,
    a: torch.Tensor,
    b: torch.Tensor,
    rate: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two children per parent pair; each pair is crossed with probability ``rate``, else copied."""
    check_name(name, CROSSOVERS, "crossover")
    if a.shape != b.shape:
        raise ValueError(f"parents must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if name == "none" or rate <= 0:
        return a.clone(), b.clone()
    child_a, child_b = (one_point_crossover(a, b, generator) if name == "one_point"
                        else uniform_crossover(a, b, generator))
    crossed = (_rand((a.shape[0], 1), a, generator) < rate)
    return torch.where(crossed, child_a, a), torch.where(crossed, child_b, b)


def bit_flip_mutation(
    population: torch.Tensor, rate: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each bit (0.0 <-> 1.0) independently with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mutation rate must be in [0, 1], got {rate}.")
    flip = _rand(population.shape, population, generator) < rate
    return torch.where(flip, 1.0 - population, population)


def gaussian_mutation(
    population: torch.Tensor,
    sigma: float,
    rate: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add N(0, sigma^2) noise to each gene with probability ``rate`` (1.0: every gene)."""
    if sigma < 0 or not 0.0 <= rate <= 1.0:
        raise ValueError(f"need sigma >= 0 and rate in [0, 1], got sigma={sigma}, rate={rate}.")
    noise = sigma * torch.randn(population.shape, generator=generator, device=population.device)
    if rate < 1.0:
        noise = noise * (_rand(population.shape, population, generator) < rate)
    return population + noise


def mutate(
    name: str,
    population: torch.Tensor,
    rate: float,
    sigma: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mutation ``name`` (one of :data:`MUTATIONS`): ``bit_flip`` uses ``rate`` per bit,
    ``gaussian`` adds N(0, sigma^2) to each gene with probability ``rate``."""
    check_name(name, MUTATIONS, "mutation")
    if name == "bit_flip":
        return bit_flip_mutation(population, rate, generator)
    return gaussian_mutation(population, sigma, rate, generator)


# --------------------------------------------------------------------------------------------
# Stopping rules
# --------------------------------------------------------------------------------------------


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
            if max(scores[-self.patience:]) <= before + self.min_delta:
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
        raise ValueError(f"elitism ({config.elitism}) must be smaller than the population ({pop_size}).")
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
            result.best, result.best_fitness = population[best_index].clone(), fitness[best_index].item()
        score = monitor(population[best_index]) if monitor is not None else fitness[best_index].item()
        scores.append(score)
        result.history.append({
            "generation": generation, "evaluations": evaluations,
            "best": fitness[best_index].item(), "mean": fitness.mean().item(),
            "diversity": diversity(population), "best_so_far": result.best_fitness, "score": score,
            "seconds": time.perf_counter() - started,
        })
        reason = stopping.check(scores)
        if reason is not None:
            result.stop_reason = reason
            break
        elite = fitness.topk(config.elitism).indices if config.elitism else fitness.new_empty(0).long()
        parents = select(config.selection, fitness, 2 * n_pairs, generator,
                         config.tournament_size, config.rank_pressure)
        child_a, child_b = crossover(config.crossover, population[parents[0::2]],
                                     population[parents[1::2]], config.crossover_rate, generator)
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


# --------------------------------------------------------------------------------------------
# Evolution strategies (OpenAI-ES)
# --------------------------------------------------------------------------------------------


def antithetic_noise(
    n_pairs: int, dim: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
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
    fitness_fn: FitnessFn, candidates: torch.Tensor, distributed: bool,
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
        raise ValueError(f"{candidates.shape[0]} candidates cannot be split evenly over {world} ranks.")
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
    opt = (torch.optim.Adam([theta], lr=lr, weight_decay=weight_decay) if optimizer == "adam"
           else torch.optim.SGD([theta], lr=lr, weight_decay=weight_decay))
    result = EvolutionResult(best=theta.detach().clone(), best_fitness=-math.inf)
    scores: list[float] = []
    evaluations = 0
    for step in range(stopping.max_generations + 1):
        current = theta.detach()
        noise = antithetic_noise(n_pairs, current.numel(), generator, current.device)
        fitness, centre = _evaluate(fitness_fn, current + sigma * noise, distributed,
                                    extra=None if monitor is not None else current[None])
        evaluations += noise.shape[0] + (centre is not None)
        score = float(monitor(current)) if monitor is not None else centre.item()
        scores.append(score)
        result.history.append({
            "generation": step, "evaluations": evaluations, "score": score,
            "best": fitness.max().item(), "mean": fitness.mean().item(),
            "seconds": time.perf_counter() - started,
        })
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
    rank: int, world_size: int, fitness_fn: FitnessFn, theta: torch.Tensor, seed: int,
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
    return {"rank": rank, "theta": result.best, "history": result.history,
            "evaluations": result.evaluations, "seconds": result.seconds,
            "threads": torch.get_num_threads()}
