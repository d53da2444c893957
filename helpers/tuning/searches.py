"""The searches: grid and random search, successive halving, ASHA, Hyperband and BOHB's proposer,
all on one small engine.

An *objective* maps ``(config, seed)`` to an iterator of validation scores, one per epoch, so a
search can train a trial for a few epochs, pause it, and continue it later (what successive
halving and ASHA call *promotion*). ``TrialRunner`` counts every epoch any search spends, so
all searches are compared on one budget axis: total training epochs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from helpers.tuning.spaces import Config, SearchSpace, decode, encode, sample_config

Objective = Callable[[Config, int], Iterator[float]]


# ----------------------------------------------------------------------------- bookkeeping
@dataclass
class Trial:
    """One configuration being trained: its scores so far and its paused training run."""

    trial_id: int
    config: Config
    run: Iterator[float]
    scores: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.scores)


class TrialRunner:
    """Starts trials, trains them to a number of epochs, and logs every epoch spent."""

    def __init__(self, objective: Objective, seed: int) -> None:
        self.objective = objective
        self.seed = seed
        self.trials: list[Trial] = []
        self.log: list[tuple[int, int, float]] = []  # (trial_id, epoch, score), in order spent

    def start(self, config: Config) -> Trial:
        trial_id = len(self.trials)
        trial = Trial(
            trial_id, dict(config), self.objective(dict(config), self.seed * 100_003 + trial_id)
        )
        self.trials.append(trial)
        return trial

    @property
    def epochs_used(self) -> int:
        return len(self.log)

    def train_to(self, trial: Trial, epochs: int) -> float:
        """Continue ``trial`` until it has trained ``epochs`` epochs; its latest score."""
        while trial.epochs < epochs:
            try:
                score = float(next(trial.run))
            except StopIteration:
                raise ValueError(
                    f"The objective stopped after {trial.epochs} epochs; {epochs} were asked."
                ) from None
            trial.scores.append(score)
            self.log.append((trial.trial_id, trial.epochs, score))
        return trial.scores[epochs - 1]

    def result(self, name: str) -> SearchResult:
        return SearchResult(name, [dict(t.config) for t in self.trials], list(self.log))


@dataclass(frozen=True)
class SearchResult:
    """What a search tried and what it spent: ``log`` holds (trial, epoch, score) per epoch."""

    name: str
    configs: list[Config]
    log: list[tuple[int, int, float]]

    @property
    def epochs_used(self) -> int:
        return len(self.log)

    @property
    def best_score(self) -> float:
        return max(score for _, _, score in self.log)

    @property
    def best_config(self) -> Config:
        trial_id = max(self.log, key=lambda entry: entry[2])[0]
        return self.configs[trial_id]

    def frame(self) -> pd.DataFrame:
        """One row per epoch spent: trial, epoch, score, cumulative epochs, best score so far."""
        frame = pd.DataFrame(self.log, columns=["trial", "epoch", "score"])
        frame["epochs_used"] = np.arange(1, len(frame) + 1)
        frame["best_so_far"] = frame["score"].cummax()
        frame["search"] = self.name
        return frame

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: its configuration, epochs trained, last and best score."""
        frame = (
            self.frame()
            .groupby("trial")
            .agg(epochs=("epoch", "max"), last=("score", "last"), best=("score", "max"))
        )
        return pd.DataFrame(self.configs).join(frame)


def best_at_budget(result: SearchResult, budgets: Sequence[int]) -> list[float]:
    """Best score a search had found after spending each budget (NaN before its first epoch)."""
    best = result.frame()["best_so_far"].to_numpy()
    return [float(best[min(b, len(best)) - 1]) if b >= 1 else math.nan for b in budgets]


# ----------------------------------------------------------------------------- searches
def run_trials(
    configs: Sequence[Config], objective: Objective, epochs: int, seed: int, name: str
) -> SearchResult:
    """Grid or random search: train every configuration for the full ``epochs``."""
    runner = TrialRunner(objective, seed)
    for config in configs:
        runner.train_to(runner.start(config), epochs)
    return runner.result(name)


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """Budgets of the rungs: min_epochs·η^k up to max_epochs (each rung η times the one before)."""
    if eta < 2 or min_epochs < 1 or max_epochs < min_epochs:
        raise ValueError(
            f"Need eta >= 2 and 1 <= min_epochs <= max_epochs; got {eta}, {min_epochs}, {max_epochs}."
        )
    rungs = [min_epochs]
    while rungs[-1] * eta <= max_epochs:
        rungs.append(rungs[-1] * eta)
    return rungs


def rung_sizes(n_configs: int, n_rungs: int, eta: int) -> list[int]:
    """How many configurations reach each rung of successive halving: keep the top 1/η each time."""
    sizes = [n_configs]
    for _ in range(n_rungs - 1):
        sizes.append(max(1, sizes[-1] // eta))
    return sizes


def successive_halving(
    configs: Sequence[Config],
    objective: Objective,
    min_epochs: int,
    max_epochs: int,
    eta: int,
    seed: int,
    name: str = "successive halving",
    runner: TrialRunner | None = None,
) -> SearchResult:
    """Jamieson & Talwalkar (2016): train all for ``min_epochs``, keep the best 1/η, train those
    η times longer, ... until ``max_epochs``. Survivors continue training (no restart)."""
    runner = runner or TrialRunner(objective, seed)
    budgets = rung_epochs(min_epochs, max_epochs, eta)
    alive = [runner.start(config) for config in configs]
    for rung, (budget, keep) in enumerate(
        zip(budgets, rung_sizes(len(alive), len(budgets), eta)[1:] + [0], strict=True)
    ):
        scores = [runner.train_to(trial, budget) for trial in alive]
        if rung < len(budgets) - 1:
            order = np.argsort(scores, kind="stable")[::-1]
            alive = [alive[i] for i in order[:keep]]
    return runner.result(name)


def asha(
    sample: Callable[[np.random.Generator], Config],
    objective: Objective,
    n_trials: int,
    min_epochs: int,
    max_epochs: int,
    eta: int,
    seed: int,
    name: str = "ASHA",
) -> SearchResult:
    """Asynchronous successive halving (Li et al., 2020, Algorithm 2), one worker.

    Whenever a worker is free: promote a trial that is in the top 1/η of its rung and not yet
    promoted (highest rung first); if there is none, start a new trial at the lowest rung.
    Nobody waits for a rung to fill up, so no worker idles; the price is that early promotions
    are decided on few results. Stops when ``n_trials`` trials have started and none can be promoted.
    """
    rng = np.random.default_rng(seed)
    runner = TrialRunner(objective, seed)
    budgets = rung_epochs(min_epochs, max_epochs, eta)
    rungs: list[dict[int, float]] = [{} for _ in budgets]
    promoted: list[set[int]] = [set() for _ in budgets]

    def next_promotion() -> tuple[int, int] | None:
        for k in range(len(budgets) - 2, -1, -1):
            ranked = sorted(rungs[k], key=lambda t: rungs[k][t], reverse=True)
            for trial_id in ranked[: len(ranked) // eta]:
                if trial_id not in promoted[k]:
                    return trial_id, k
        return None

    while True:
        job = next_promotion()
        if job is not None:
            trial_id, k = job
            promoted[k].add(trial_id)
            rungs[k + 1][trial_id] = runner.train_to(runner.trials[trial_id], budgets[k + 1])
        elif len(runner.trials) < n_trials:
            trial = runner.start(sample(rng))
            rungs[0][trial.trial_id] = runner.train_to(trial, budgets[0])
        else:
            return runner.result(name)


def hyperband_brackets(max_epochs: int, eta: int, min_epochs: int = 1) -> list[tuple[int, int]]:
    """(configurations, first-rung epochs) of each Hyperband bracket, most exploratory first
    (Li et al., 2018): bracket s starts n = ceil((s_max+1)/(s+1) · η^s) configs at R·η^-s epochs."""
    s_max = len(rung_epochs(min_epochs, max_epochs, eta)) - 1
    return [
        (math.ceil((s_max + 1) / (s + 1) * eta**s), max_epochs // eta**s)
        for s in range(s_max, -1, -1)
    ]


Proposer = Callable[[np.random.Generator, Sequence[Trial]], Config]


def hyperband(
    propose: Proposer,
    objective: Objective,
    max_epochs: int,
    eta: int,
    seed: int,
    max_total_epochs: int,
    name: str = "Hyperband",
) -> SearchResult:
    """Hyperband: successive halving brackets from aggressive to none, repeated until
    at least ``max_total_epochs`` are spent (checked between brackets). ``propose(rng, trials_so_far)`` makes each new configuration:
    random sampling gives Hyperband, a model of the results so far gives BOHB."""
    rng = np.random.default_rng(seed)
    runner = TrialRunner(objective, seed)
    for n_configs, first_epochs in itertools.cycle(hyperband_brackets(max_epochs, eta)):
        if runner.epochs_used >= max_total_epochs:
            return runner.result(name)
        configs = [propose(rng, runner.trials) for _ in range(n_configs)]
        successive_halving(configs, objective, first_epochs, max_epochs, eta, seed, runner=runner)
    raise AssertionError("unreachable")


def random_proposer(space: SearchSpace) -> Proposer:
    """Hyperband's proposer: ignore the history, sample at random."""
    return lambda rng, trials: sample_config(space, rng)


def bohb_proposer(
    space: SearchSpace,
    top_fraction: float = 0.15,
    random_fraction: float = 1 / 3,
    n_candidates: int = 64,
    bandwidth_factor: float = 3.0,
    min_bandwidth: float = 1e-3,
) -> Proposer:
    """BOHB's proposer (Falkner et al., 2018), on the unit cube.

    Take the results at the largest budget that has at least d + 2 of them; split them into
    the best ``top_fraction`` (at least d + 1) and the rest; fit a Gaussian kernel density
    l(x) to the good and g(x) to the rest; draw ``n_candidates`` from a widened l and return
    the one with the largest l(x)/g(x) — TPE's expected-improvement criterion. A fraction
    ``random_fraction`` of proposals (and all of them before a model exists) are random.
    """
    dims = len(space)

    def kde(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bandwidth = points.std(axis=0, ddof=1) * len(points) ** (-1 / (dims + 4))  # Scott's rule
        return points, np.maximum(bandwidth, min_bandwidth)

    def log_density(x: np.ndarray, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        centres, bandwidth = model
        z = (x[:, None, :] - centres[None, :, :]) / bandwidth
        log_kernels = -0.5 * (z**2).sum(-1) - np.log(bandwidth).sum()
        return np.logaddexp.reduce(log_kernels, axis=1) - math.log(len(centres))

    def propose(rng: np.random.Generator, trials: Sequence[Trial]) -> Config:
        if rng.random() < random_fraction:
            return sample_config(space, rng)
        by_budget: dict[int, list[Trial]] = {}
        for trial in trials:
            for epochs in range(1, trial.epochs + 1):
                by_budget.setdefault(epochs, []).append(trial)
        usable = [b for b, ts in by_budget.items() if len(ts) >= dims + 2]
        if not usable:
            return sample_config(space, rng)
        budget = max(usable)
        observed = by_budget[budget]
        scores = np.array([t.scores[budget - 1] for t in observed])
        points = np.array([encode(space, t.config) for t in observed])
        order = np.argsort(-scores, kind="stable")
        n_good = max(dims + 1, int(top_fraction * len(observed)))
        n_bad = max(dims + 1, len(observed) - n_good)
        good, bad = kde(points[order[:n_good]]), kde(points[order[-n_bad:]])
        centres = good[0][rng.integers(len(good[0]), size=n_candidates)]
        candidates = np.clip(
            centres + rng.normal(size=centres.shape) * good[1] * bandwidth_factor, 0.0, 1.0
        )
        ratio = log_density(candidates, good) - log_density(candidates, bad)
        return decode(space, candidates[int(np.argmax(ratio))])

    return propose
