"""Genetic-algorithm operators in small, vectorised, tested pieces.

A **population** is a tensor of shape ``(P, L)``: ``P`` individuals, each a genome of ``L``
genes — bits stored as ``0.0``/``1.0`` floats, or real numbers (network weights, log learning
rates). A **fitness function** maps a population to a tensor of ``P`` scalars, higher is better;
write it vectorised (one batched computation for the whole population) wherever you can.

- initialisation: :func:`init_population` (``binary``, ``gaussian``, ``uniform``); a classic
  problem, :func:`onemax`; :func:`diversity` of a population;
- selection (who becomes a parent): :func:`select` with ``tournament``, ``roulette`` or
  ``rank`` (linear ranking); :func:`selection_probabilities` gives each one's exact
  probabilities;
- crossover: :func:`crossover` with ``one_point``, ``uniform`` or ``none``;
- mutation: :func:`mutate` with ``bit_flip`` (per-gene flip probability) or ``gaussian``.

The loop that uses them is :mod:`helpers.evolution.ga`; evolution strategies are in
:mod:`helpers.evolution.es`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

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


def _rand(
    shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
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
        raise ValueError(
            f"pop_size and genome_length must be >= 1, got {pop_size}, {genome_length}."
        )
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
    return torch.multinomial(
        selection_probabilities("roulette", fitness), n, replacement=True, generator=generator
    )


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
            raise ValueError(
                "roulette selection needs non-negative fitness; shift it or use 'rank'."
            )
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
    probs = torch.tensor(
        [math.comb(int(r), k - 1) / math.comb(pop, k) for r in ranks.tolist()],
        dtype=torch.float64,
        device=fitness.device,
    )
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
    a: torch.Tensor,
    b: torch.Tensor,
    generator: torch.Generator | None = None,
    swap_prob: float = 0.5,
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
        raise ValueError(
            f"parents must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if name == "none" or rate <= 0:
        return a.clone(), b.clone()
    child_a, child_b = (
        one_point_crossover(a, b, generator)
        if name == "one_point"
        else uniform_crossover(a, b, generator)
    )
    crossed = _rand((a.shape[0], 1), a, generator) < rate
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
