"""helpers.evolution (operators, ga, es) against closed forms, brute force, invariants and statistical tests."""

import itertools
import math

import pytest
import torch
from scipy import stats

from helpers.evolution.cartpole import CartPoleFitness
from helpers.evolution.es import (
    antithetic_noise,
    centered_ranks,
    es_gradient,
    es_worker,
    run_es,
    shape_fitness,
)
from helpers.evolution.ga import GAConfig, StoppingRule, run_ga
from helpers.evolution.operators import (
    CROSSOVERS,
    MUTATIONS,
    SELECTIONS,
    SHAPINGS,
    bit_flip_mutation,
    crossover,
    diversity,
    gaussian_mutation,
    init_population,
    mutate,
    onemax,
    select,
    selection_probabilities,
    tournament_selection,
)
from helpers.parallel.launch import launch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def shuffled_fitness(pop: int, seed: int = 0) -> torch.Tensor:
    """Distinct fitness values 1..pop in a random order (so position carries no information)."""
    return (torch.randperm(pop, generator=gen(seed)) + 1).float()


# ---- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "known"),
    [
        (lambda: select("best", torch.ones(4), 2), SELECTIONS),
        (lambda: crossover("two_point", torch.ones(2, 4), torch.ones(2, 4)), CROSSOVERS),
        (lambda: mutate("swap", torch.ones(2, 4), 0.1), MUTATIONS),
        (lambda: shape_fitness(torch.ones(4), "softmax"), SHAPINGS),
        (lambda: GAConfig(selection="best"), SELECTIONS),
        (lambda: GAConfig(crossover="two_point"), CROSSOVERS),
        (lambda: GAConfig(mutation="swap"), MUTATIONS),
        (lambda: selection_probabilities("best", torch.ones(4)), SELECTIONS),
        (lambda: init_population(2, 3, "sobol"), ("binary", "gaussian", "uniform")),
        (
            lambda: run_es(lambda p: p.sum(1), torch.zeros(2), StoppingRule(1), optimizer="lbfgs"),
            ("sgd", "adam"),
        ),
    ],
)
def test_unknown_names_raise_a_value_error_listing_the_known_ones(call, known):
    with pytest.raises(ValueError, match="Unknown") as info:
        call()
    assert all(name in str(info.value) for name in known)


# ---- initialisation, OneMax, diversity -----------------------------------------------------


def test_init_population_kinds_and_statistics():
    bits = init_population(400, 100, "binary", generator=gen())
    assert bits.shape == (400, 100) and set(bits.unique().tolist()) == {0.0, 1.0}
    assert abs(bits.mean().item() - 0.5) < 0.01
    normal = init_population(400, 100, "gaussian", scale=2.0, generator=gen())
    assert abs(normal.std().item() - 2.0) < 0.05
    uniform = init_population(400, 100, "uniform", scale=3.0, generator=gen())
    assert uniform.abs().max() <= 3.0 and abs(uniform.var().item() - 3.0) < 0.1  # var = s^2/3
    assert torch.equal(
        init_population(5, 7, generator=gen(3)), init_population(5, 7, generator=gen(3))
    )


def test_onemax_counts_ones():
    population = torch.tensor([[0, 0, 0], [1, 0, 1], [1, 1, 1.0]])
    assert onemax(population).tolist() == [0, 2, 3]


def test_diversity_equals_brute_force_mean_pairwise_squared_distance():
    for population in (
        init_population(30, 16, generator=gen()),
        init_population(25, 9, "gaussian", generator=gen(1)),
    ):
        pairs = list(itertools.combinations(range(len(population)), 2))
        brute = sum(((population[i] - population[j]) ** 2).sum().item() for i, j in pairs)
        brute /= len(pairs) * population.shape[1]
        assert diversity(population) == pytest.approx(brute, rel=1e-5)
    assert diversity(torch.ones(10, 8)) == 0.0
    assert diversity(init_population(2000, 64, generator=gen())) == pytest.approx(0.5, abs=0.01)


# ---- selection -----------------------------------------------------------------------------


def test_tournament_as_big_as_the_population_always_picks_the_best():
    fitness = shuffled_fitness(20)
    picks = tournament_selection(fitness, 500, size=20, generator=gen())
    assert (picks == fitness.argmax()).all()


def test_tournament_closed_form_matches_brute_force_enumeration():
    fitness = shuffled_fitness(7, seed=1)
    for k in range(1, 8):
        counts = torch.zeros(7)
        subsets = list(itertools.combinations(range(7), k))
        for subset in subsets:
            counts[max(subset, key=lambda i: fitness[i])] += 1
        exact = selection_probabilities("tournament", fitness, tournament_size=k)
        assert torch.allclose(exact, counts / len(subsets), atol=1e-7)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("tournament", {"tournament_size": 1}),
        ("tournament", {"tournament_size": 3}),
        ("roulette", {}),
        ("rank", {"pressure": 1.5}),
        ("rank", {"pressure": 2.0}),
    ],
)
def test_selection_frequencies_match_exact_probabilities_and_favour_the_fit(name, kwargs):
    pop, draws = 12, 60_000
    fitness = shuffled_fitness(pop, seed=2)
    picks = select(name, fitness, draws, generator=gen(5), **kwargs)
    observed = torch.bincount(picks, minlength=pop).double()
    expected = selection_probabilities(name, fitness, **kwargs).double()
    assert expected.sum().item() == pytest.approx(1.0, abs=1e-6)
    possible = expected > 0  # e.g. the k - 1 worst never win a tournament of size k
    assert observed[~possible].sum() == 0
    # chi-square goodness of fit: the sampler draws from the stated distribution
    expected_counts = expected[possible] / expected[possible].sum() * draws
    _, p_value = stats.chisquare(observed[possible].numpy(), expected_counts.numpy())
    assert p_value > 1e-3, f"{name}: frequencies do not match the exact probabilities"
    # fitter individuals are never less likely, and (pressure > uniform) the selected mean is
    # above the population mean by many standard errors
    order = fitness.argsort()
    assert (expected[order].diff() >= -1e-9).all()
    if kwargs.get("tournament_size", 2) > 1:
        selected = fitness[picks]
        z = (selected.mean() - fitness.mean()) / (fitness.std() / math.sqrt(draws))
        assert z > 10


@pytest.mark.parametrize(
    ("name", "kwargs"), [("tournament", {"tournament_size": 3}), ("rank", {"pressure": 2.0})]
)
def test_tied_individuals_share_their_probability_and_the_sampler_agrees(name, kwargs):
    fitness = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 5.0, 2.0])
    exact = selection_probabilities(name, fitness, **kwargs)
    for value in (1.0, 2.0, 3.0):
        group = exact[fitness == value]
        assert torch.allclose(group, group[0].expand_as(group)), "equal fitness, equal chance"
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-6)
    draws = 80_000
    observed = torch.bincount(select(name, fitness, draws, generator=gen(9), **kwargs), minlength=8)
    possible = exact > 0
    assert observed[~possible].sum() == 0
    expected = exact[possible].double() / exact[possible].double().sum() * draws
    _, p_value = stats.chisquare(observed[possible].double().numpy(), expected.numpy())
    assert p_value > 1e-3


def test_rank_selection_pressure_is_best_over_average():
    fitness = shuffled_fitness(10)
    for pressure in (1.0, 1.3, 2.0):
        probs = selection_probabilities("rank", fitness, pressure=pressure)
        assert probs.max().item() * 10 == pytest.approx(pressure, rel=1e-5)
    assert torch.allclose(
        selection_probabilities("rank", fitness, pressure=1.0), torch.full((10,), 0.1)
    )
    with pytest.raises(ValueError):
        selection_probabilities("rank", fitness, pressure=2.5)


def test_roulette_is_fitness_proportional_and_rejects_negative_fitness():
    assert torch.allclose(
        selection_probabilities("roulette", torch.tensor([1.0, 3.0])), torch.tensor([0.25, 0.75])
    )
    assert torch.allclose(
        selection_probabilities("roulette", torch.zeros(4)), torch.full((4,), 0.25)
    )
    with pytest.raises(ValueError, match="non-negative"):
        select("roulette", torch.tensor([1.0, -1.0]), 3)


def test_tournament_size_out_of_range_raises():
    with pytest.raises(ValueError, match="tournament size"):
        tournament_selection(torch.ones(5), 3, size=6)


# ---- crossover and mutation ----------------------------------------------------------------


def test_one_point_crossover_children_are_a_prefix_of_one_parent_and_a_suffix_of_the_other():
    a, b = torch.zeros(200, 10), torch.ones(200, 10)
    child_a, child_b = crossover("one_point", a, b, rate=1.0, generator=gen())
    cuts = (child_a == 0).sum(dim=1)
    assert ((cuts >= 1) & (cuts <= 9)).all(), "the cut is strictly inside the genome"
    head = (torch.arange(10) < cuts[:, None]).float()  # a's genes (zeros) first, then b's (ones)
    assert torch.equal(child_a, 1 - head) and torch.equal(child_b, head)
    assert torch.equal(child_a + child_b, a + b), "genes are exchanged, never lost"
    assert len(cuts.unique()) == 9, "every cut point occurs"


def test_uniform_crossover_swaps_each_gene_with_probability_half():
    a = init_population(500, 40, "gaussian", generator=gen(1))
    b = init_population(500, 40, "gaussian", generator=gen(2))
    child_a, child_b = crossover("uniform", a, b, rate=1.0, generator=gen(3))
    assert torch.equal(child_a + child_b, a + b)
    assert ((child_a == a) | (child_a == b)).all()
    swapped = (child_a == b).float().mean().item()
    assert abs(swapped - 0.5) < 4 * math.sqrt(0.25 / a.numel())


@pytest.mark.parametrize("name", ["one_point", "uniform"])
def test_crossover_rate_is_the_fraction_of_pairs_crossed(name):
    a, b = torch.zeros(4000, 8), torch.ones(4000, 8)
    child_a, _ = crossover(name, a, b, rate=0.3, generator=gen())
    crossed = (child_a != a).any(dim=1).float().mean().item()
    p_change = 0.3 * (1 - 0.5**8) if name == "uniform" else 0.3  # uniform may swap nothing
    assert abs(crossed - p_change) < 4 * math.sqrt(p_change * (1 - p_change) / 4000)
    assert torch.equal(crossover(name, a, b, rate=0.0)[0], a)
    assert torch.equal(crossover("none", a, b)[1], b)


@pytest.mark.parametrize("rate", [0.001, 1 / 64, 0.1, 0.5])
def test_bit_flip_rate_is_the_observed_flip_frequency(rate):
    population = init_population(500, 256, generator=gen())
    mutated = bit_flip_mutation(population, rate, generator=gen(1))
    flips = (mutated != population).float()
    n = flips.numel()
    assert abs(flips.mean().item() - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    assert set(mutated.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(bit_flip_mutation(population, 0.0), population)
    assert torch.equal(bit_flip_mutation(population, 1.0), 1 - population)


def test_gaussian_mutation_has_the_stated_std_and_rate():
    population = torch.zeros(1000, 100)
    full = gaussian_mutation(population, sigma=0.3, generator=gen())
    assert full.std().item() == pytest.approx(0.3, rel=0.02)
    partial = mutate("gaussian", population, rate=0.2, sigma=0.3, generator=gen(1))
    changed = (partial != 0).float().mean().item()
    assert abs(changed - 0.2) < 5 * math.sqrt(0.16 / population.numel())
    assert partial[partial != 0].std().item() == pytest.approx(0.3, rel=0.03)


# ---- stopping rules ------------------------------------------------------------------------


def test_stopping_rules():
    cap = StoppingRule(max_generations=3)
    assert [cap.check([0.0] * n) for n in (1, 3, 4)] == [None, None, "generation cap"]
    assert StoppingRule(100, target=5).check([1, 2, 5]) == "target reached"
    assert StoppingRule(100, target=5).check([1, 2, 4.9]) is None
    patient = StoppingRule(100, patience=3)
    assert patient.check([1, 2, 2, 2]) is None  # only 2 generations without improvement
    assert patient.check([1, 2, 2, 2, 2]) == "no improvement"
    assert patient.check([1, 2, 2, 2, 2.5]) is None
    assert StoppingRule(100, patience=2, min_delta=0.5).check([1, 1.2, 1.4]) == "no improvement"
    assert StoppingRule(0).check([0.0]) == "generation cap"
    with pytest.raises(ValueError):
        StoppingRule(10, patience=0)


# ---- the genetic algorithm -----------------------------------------------------------------

ONEMAX_BUDGET = 60  # generations; a population of 100, length 64


def test_ga_solves_onemax_64_within_the_stated_budget():
    """With seed 0 (and four more) the default GA finds the all-ones string in <= 60 generations."""
    config = GAConfig(
        selection="tournament",
        tournament_size=3,
        crossover="uniform",
        mutation="bit_flip",
        mutation_rate=1 / 64,
        elitism=2,
    )
    for seed in range(5):
        generator = gen(seed)
        population = init_population(100, 64, generator=generator)
        result = run_ga(
            onemax, population, config, StoppingRule(ONEMAX_BUDGET, target=64), generator
        )
        assert result.stop_reason == "target reached", f"seed {seed}"
        assert result.best_fitness == 64 and torch.equal(result.best, torch.ones(64))
        assert result.evaluations == 100 + 98 * result.generations
        frame = result.frame()
        assert frame["best_so_far"].is_monotonic_increasing
        assert frame["diversity"].iloc[-1] < frame["diversity"].iloc[0]


def test_random_search_alone_does_not_solve_onemax_in_that_budget():
    """The test above is not vacuous: selection is what solves it (mutation only, no selection
    pressure = tournament of one, no elitism, stays near 32 + a few)."""
    config = GAConfig(
        selection="tournament", tournament_size=1, crossover="none", mutation_rate=1 / 64, elitism=0
    )
    generator = gen(0)
    result = run_ga(
        onemax,
        init_population(100, 64, generator=generator),
        config,
        StoppingRule(ONEMAX_BUDGET, target=64),
        generator,
    )
    assert result.stop_reason == "generation cap" and result.best_fitness < 50


def rugged(population: torch.Tensor) -> torch.Tensor:
    """A rugged, non-negative deterministic fitness: strong mutation mostly makes children worse."""
    bumps = torch.sin(7 * population).sum(dim=1) + population.shape[1]
    return bumps * torch.exp(-0.01 * (population**2).sum(dim=1))


@pytest.mark.parametrize("selection", SELECTIONS)
def test_elitism_never_lowers_the_best_fitness(selection):
    config = GAConfig(
        selection=selection,
        crossover="uniform",
        mutation="gaussian",
        mutation_rate=1.0,
        sigma=1.0,
        elitism=1,
    )
    for seed in range(3):
        generator = gen(seed)
        population = init_population(20, 10, "gaussian", generator=generator)
        result = run_ga(
            rugged,
            population,
            config,
            StoppingRule(40),
            generator,
            monitor=lambda genome: rugged(genome[None]).item(),
        )  # recomputed, not cached
        frame = result.frame()
        assert (frame["score"].diff().dropna() >= 0).all(), f"{selection}, seed {seed}"
        assert torch.allclose(
            torch.tensor(frame["score"].values), torch.tensor(frame["best"].values)
        )


def test_without_elitism_the_best_can_drop_so_the_elitism_test_has_teeth():
    config = GAConfig(
        selection="tournament",
        crossover="uniform",
        mutation="gaussian",
        mutation_rate=1.0,
        sigma=1.0,
        elitism=0,
    )
    generator = gen(0)
    population = init_population(20, 10, "gaussian", generator=generator)
    result = run_ga(rugged, population, config, StoppingRule(40), generator)
    assert (result.frame()["best"].diff().dropna() < 0).any()


def test_run_ga_stops_on_no_improvement_and_uses_the_monitor():
    generator = gen(0)
    population = init_population(10, 8, generator=generator)
    calls = []

    def monitor(best: torch.Tensor) -> float:
        calls.append(best)
        return 1.0  # never improves

    result = run_ga(
        onemax, population, GAConfig(), StoppingRule(50, patience=4), generator, monitor=monitor
    )
    assert result.stop_reason == "no improvement" and result.generations == 4
    assert len(calls) == 5 and result.frame()["score"].eq(1.0).all()


def test_run_ga_is_reproducible_with_a_seed():
    def run(seed: int) -> torch.Tensor:
        generator = gen(seed)
        population = init_population(30, 20, generator=generator)
        return run_ga(onemax, population, GAConfig(), StoppingRule(10), generator).frame()["mean"]

    assert run(1).equals(run(1)) and not run(1).equals(run(2))


def test_elitism_as_big_as_the_population_raises():
    with pytest.raises(ValueError, match="elitism"):
        run_ga(onemax, torch.zeros(4, 3), GAConfig(elitism=4), StoppingRule(1))


# ---- evolution strategies ------------------------------------------------------------------


def test_antithetic_pairs_cancel():
    noise = antithetic_noise(5, 7, generator=gen())
    assert noise.shape == (10, 7)
    assert torch.equal(noise[:5], -noise[5:])
    # a constant fitness gives zero gradient, and a constant offset changes nothing
    assert es_gradient(noise, torch.full((10,), 3.0), sigma=0.1).abs().max() < 1e-5
    fitness = torch.randn(10, generator=gen(1))
    assert torch.allclose(
        es_gradient(noise, fitness + 100.0, 0.1), es_gradient(noise, fitness, 0.1), atol=1e-4
    )
    # ...whereas independent (non-mirrored) noise does not cancel a constant
    independent = torch.randn(10, 7, generator=gen(2))
    assert es_gradient(independent, torch.full((10,), 3.0), 0.1).abs().max() > 0.1


def test_antithetic_estimate_on_a_quadratic_is_exactly_the_directional_term():
    """For quadratic f, f(x + s e) - f(x - s e) = 2 s grad.e: the curvature cancels per pair."""
    dim, sigma = 6, 0.5
    a = torch.randn(dim, dim, generator=gen(0), dtype=torch.float64)
    hessian, point = a @ a.T, torch.randn(dim, generator=gen(1), dtype=torch.float64)
    b = torch.randn(dim, generator=gen(2), dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x @ hessian) * x).sum(-1) + x @ b

    grad = -hessian @ point + b
    noise = antithetic_noise(4, dim, generator=gen(3)).double()
    estimate = es_gradient(noise, f(point + sigma * noise), sigma)
    eps = noise[:4]
    assert torch.allclose(estimate, (eps @ grad) @ eps / 4, atol=1e-9)


def test_es_gradient_is_unbiased_for_a_linear_function():
    direction = torch.tensor([1.0, -2.0, 0.5])
    estimates = []
    for seed in range(400):
        noise = antithetic_noise(8, 3, generator=gen(seed))
        estimates.append(es_gradient(noise, (0.2 * noise) @ direction + 7.0, sigma=0.2))
    mean = torch.stack(estimates).mean(dim=0)
    assert torch.allclose(mean, direction, atol=0.08)


def test_centered_ranks_are_invariant_to_increasing_transforms():
    values = torch.randn(50, generator=gen())
    ranks = centered_ranks(values)
    for transform in (torch.exp, lambda v: v**3, lambda v: 5 * v - 3, torch.sigmoid):
        assert torch.equal(centered_ranks(transform(values)), ranks)
        assert torch.equal(shape_fitness(transform(values), "centered_rank"), ranks)
    assert ranks.min() == -0.5 and ranks.max() == 0.5 and abs(ranks.sum().item()) < 1e-5
    assert torch.allclose(centered_ranks(-values), -ranks, atol=1e-7)
    # standardisation is invariant to affine maps only, not to every increasing transform
    standard = shape_fitness(values, "standardize")
    assert torch.allclose(shape_fitness(5 * values - 3, "standardize"), standard, atol=1e-5)
    assert not torch.allclose(shape_fitness(torch.exp(values), "standardize"), standard, atol=1e-2)


@pytest.mark.parametrize(
    ("shaping", "optimizer"), [("centered_rank", "adam"), ("none", "sgd"), ("standardize", "adam")]
)
@pytest.mark.slow
def test_es_improves_a_quadratic(shaping, optimizer):
    optimum = torch.linspace(-1, 1, 10)

    def fitness(population: torch.Tensor) -> torch.Tensor:
        return -((population - optimum) ** 2).sum(dim=1)

    start = torch.zeros(10)
    lr = 0.1 if optimizer == "adam" else 0.02
    result = run_es(
        fitness,
        start,
        StoppingRule(150),
        n_pairs=10,
        sigma=0.1,
        lr=lr,
        shaping=shaping,
        optimizer=optimizer,
        generator=gen(),
    )
    initial, final = fitness(start[None]).item(), fitness(result.best[None]).item()
    assert final > 0.05 * initial, f"{shaping}/{optimizer}: {initial:.2f} -> {final:.3f}"
    assert result.evaluations == 151 * 21
    assert result.frame()["score"].iloc[-1] == pytest.approx(final, rel=1e-5)


def test_es_stops_at_target_and_counts_evaluations_without_monitor():
    result = run_es(
        lambda p: -(p - 1).pow(2).sum(1),
        torch.zeros(3),
        StoppingRule(500, target=-0.01),
        n_pairs=4,
        sigma=0.1,
        lr=0.05,
        generator=gen(),
    )
    assert result.stop_reason == "target reached" and result.best_fitness >= -0.01
    assert result.evaluations == 9 * (result.generations + 1)


@pytest.mark.multiprocess
def test_parallel_es_matches_the_serial_run():
    """Two processes, each evaluating half of every step's perturbations, make the same updates."""
    fitness = CartPoleFitness(hidden=2, episodes=3, horizon=60)
    theta = torch.randn(fitness.dim, generator=gen(0))
    es_kwargs = {"stopping": StoppingRule(3), "n_pairs": 4, "sigma": 0.3, "lr": 0.3}
    serial = run_es(fitness, theta, generator=gen(7), **es_kwargs)
    ranks = launch(es_worker, 2, fitness, theta, 7, es_kwargs, device="cpu", echo=False)
    for result in ranks:
        assert torch.allclose(result["theta"], serial.best, atol=1e-6)
        assert result["threads"] == 1
    assert [row["score"] for row in ranks[0]["history"]] == serial.frame()["score"].tolist()
