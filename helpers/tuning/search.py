"""Hyperparameter search, small and readable: search spaces, grid and random search,
coarse-to-fine zooming, successive halving, ASHA, Hyperband and BOHB, the LR range test,
and the course's shared tuning objective (a digits MLP that reports accuracy every epoch).

An *objective* maps ``(config, seed)`` to an iterator of validation scores, one per epoch, so a
search can train a trial for a few epochs, pause it, and continue it later (what successive
halving and ASHA call *promotion*). ``TrialRunner`` counts every epoch any search spends, so
all searches are compared on one budget axis: total training epochs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

Config = dict[str, float | int | str]
Objective = Callable[[Config, int], Iterator[float]]


# ----------------------------------------------------------------------------- search spaces
@dataclass(frozen=True)
class LogUniform:
    """A positive number whose logarithm is uniform on [log low, log high] (learning rate, decay)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise ValueError(f"LogUniform needs 0 < low < high, got low={self.low}, high={self.high}.")

    def from_unit(self, u: float) -> float:
        return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))

    def to_unit(self, value: float) -> float:
        return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))


@dataclass(frozen=True)
class Uniform:
    """A number uniform on [low, high] (momentum, dropout)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Uniform needs low < high, got low={self.low}, high={self.high}.")

    def from_unit(self, u: float) -> float:
        return float(self.low + u * (self.high - self.low))

    def to_unit(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low)


@dataclass(frozen=True)
class Choice:
    """One of a few ordered values (width, depth, batch size)."""

    values: tuple[float | int | str, ...]

    def __post_init__(self) -> None:
        if len(self.values) == 0:
            raise ValueError("Choice needs at least one value.")

    def from_unit(self, u: float) -> float | int | str:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def to_unit(self, value: float | int | str) -> float:
        return (self.values.index(value) + 0.5) / len(self.values)


Dimension = LogUniform | Uniform | Choice
SearchSpace = Mapping[str, Dimension]


def log_uniform(low: float, high: float, rng: np.random.Generator) -> float:
    """One draw whose log is uniform on [log low, log high]: each decade is equally likely."""
    return LogUniform(low, high).from_unit(float(rng.random()))


def sample_config(space: SearchSpace, rng: np.random.Generator) -> Config:
    """One random configuration: every dimension drawn independently."""
    return {name: dim.from_unit(float(rng.random())) for name, dim in space.items()}


def random_configs(space: SearchSpace, n: int, seed: int) -> list[Config]:
    """``n`` random configurations from a generator seeded with ``seed`` (what ``asha`` draws, in order)."""
    rng = np.random.default_rng(seed)
    return [sample_config(space, rng) for _ in range(n)]


def encode(space: SearchSpace, config: Config) -> np.ndarray:
    """A configuration as a point of the unit cube (log scale for ``LogUniform``)."""
    return np.array([dim.to_unit(config[name]) for name, dim in space.items()])


def decode(space: SearchSpace, point: Sequence[float]) -> Config:
    """The configuration at a point of the unit cube (clipped into it)."""
    return {name: dim.from_unit(float(np.clip(u, 0.0, 1.0 - 1e-12))) for (name, dim), u in zip(space.items(), point, strict=True)}


def grid_values(dim: Dimension, points: int) -> list[float | int | str]:
    """``points`` evenly spaced values of a dimension, ends included (all values of a Choice)."""
    if isinstance(dim, Choice):
        return list(dim.values)
    if points < 2:
        raise ValueError(f"A grid needs at least 2 points per dimension, got {points}.")
    return [dim.from_unit(i / (points - 1)) for i in range(points)]


def grid_configs(space: SearchSpace, points: int | Mapping[str, int]) -> list[Config]:
    """Every combination of ``grid_values`` (a Cartesian product; ``points`` may differ per name)."""
    per_name = points if isinstance(points, Mapping) else {name: points for name in space}
    axes = [grid_values(dim, per_name[name]) for name, dim in space.items()]
    return [dict(zip(space, combo, strict=True)) for combo in itertools.product(*axes)]


def zoom(space: SearchSpace, best: Sequence[Config], margin: float = 0.1) -> dict[str, Dimension]:
    """Coarse-to-fine: a smaller space around the best configurations of a coarse search.

    Each numeric range shrinks to the span of ``best`` widened by ``margin`` of the old range on
    each side (on the log scale for ``LogUniform``), clipped to the old range; a ``Choice`` keeps
    the values the best configurations used.
    """
    if not best:
        raise ValueError("zoom needs at least one configuration.")
    narrowed: dict[str, Dimension] = {}
    for name, dim in space.items():
        if isinstance(dim, Choice):
            used = {config[name] for config in best}
            narrowed[name] = Choice(tuple(v for v in dim.values if v in used))
            continue
        units = [dim.to_unit(config[name]) for config in best]
        low, high = max(0.0, min(units) - margin), min(1.0, max(units) + margin)
        if high - low < 1e-9:
            high = min(1.0, low + 1e-3)
        narrowed[name] = type(dim)(dim.from_unit(low), dim.from_unit(high))
    return narrowed


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
        trial = Trial(trial_id, dict(config), self.objective(dict(config), self.seed * 100_003 + trial_id))
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
                raise ValueError(f"The objective stopped after {trial.epochs} epochs; {epochs} were asked.") from None
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
        frame = self.frame().groupby("trial").agg(epochs=("epoch", "max"), last=("score", "last"), best=("score", "max"))
        return pd.DataFrame(self.configs).join(frame)


def best_at_budget(result: SearchResult, budgets: Sequence[int]) -> list[float]:
    """Best score a search had found after spending each budget (NaN before its first epoch)."""
    best = result.frame()["best_so_far"].to_numpy()
    return [float(best[min(b, len(best)) - 1]) if b >= 1 else math.nan for b in budgets]


# ----------------------------------------------------------------------------- searches
def run_trials(configs: Sequence[Config], objective: Objective, epochs: int, seed: int, name: str) -> SearchResult:
    """Grid or random search: train every configuration for the full ``epochs``."""
    runner = TrialRunner(objective, seed)
    for config in configs:
        runner.train_to(runner.start(config), epochs)
    return runner.result(name)


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """Budgets of the rungs: min_epochs·η^k up to max_epochs (each rung η times the one before)."""
    if eta < 2 or min_epochs < 1 or max_epochs < min_epochs:
        raise ValueError(f"Need eta >= 2 and 1 <= min_epochs <= max_epochs; got {eta}, {min_epochs}, {max_epochs}.")
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
    for rung, (budget, keep) in enumerate(zip(budgets, rung_sizes(len(alive), len(budgets), eta)[1:] + [0], strict=True)):
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
        candidates = np.clip(centres + rng.normal(size=centres.shape) * good[1] * bandwidth_factor, 0.0, 1.0)
        ratio = log_density(candidates, good) - log_density(candidates, bad)
        return decode(space, candidates[int(np.argmax(ratio))])

    return propose


# ----------------------------------------------------------------------------- the shared objective
@dataclass(frozen=True)
class TensorSplit:
    """Train and validation tensors held in memory (small data: no DataLoader needed)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def digits_split(val_fraction: float = 0.25, seed: int = 0) -> TensorSplit:
    """The 8x8 digits from ``data/``, split once (stratified) so every search sees the same data."""
    from helpers.data import load_digits, split_indices

    pixels, labels = load_digits()
    train_idx, val_idx = split_indices(len(labels), val_fraction, seed, stratify=labels)
    x, y = torch.from_numpy(pixels), torch.from_numpy(labels)
    return TensorSplit(x[train_idx], y[train_idx], x[val_idx], y[val_idx])


DEFAULT_MLP_CONFIG: Config = {
    "lr": 1e-3, "weight_decay": 1e-2, "beta1": 0.9, "width": 64, "depth": 1, "batch_size": 64,
}


def mlp(width: int, depth: int, n_inputs: int = 64, n_classes: int = 10) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``width`` units."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_inputs if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width if depth else n_inputs, n_classes))
    return nn.Sequential(*layers)


def train_digits_mlp(
    config: Mapping[str, float | int | str],
    seed: int,
    data: TensorSplit,
    epochs: int = 1000,
    device: str | torch.device = "cpu",
) -> Iterator[float]:
    """The course's tuning objective: an MLP trained with AdamW on the digits; yields the
    validation accuracy after each epoch. Missing keys take ``DEFAULT_MLP_CONFIG``.

    ``config["schedule"] = "one_cycle"`` anneals with OneCycleLR from ``lr / 25`` (or
    ``base_lr``) up to ``lr`` and down again over ``epochs`` epochs; the default is a constant LR.
    """
    c = {**DEFAULT_MLP_CONFIG, **config}
    unknown = set(c) - set(DEFAULT_MLP_CONFIG) - {"schedule", "base_lr"}
    if unknown:
        raise ValueError(f"Unknown hyperparameters {sorted(unknown)}; known: {sorted(DEFAULT_MLP_CONFIG)} + schedule, base_lr.")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = mlp(int(c["width"]), int(c["depth"])).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(c["lr"]), weight_decay=float(c["weight_decay"]), betas=(float(c["beta1"]), 0.999)
    )
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    batch_size = int(c["batch_size"])
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    scheduler = None
    if c.get("schedule", "constant") == "one_cycle":
        div_factor = float(c["lr"]) / float(c.get("base_lr", float(c["lr"]) / 25))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=float(c["lr"]), total_steps=epochs * steps_per_epoch, div_factor=div_factor
        )
    elif c.get("schedule", "constant") != "constant":
        raise ValueError(f"Unknown schedule {c['schedule']!r}; use 'constant' or 'one_cycle'.")
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y_train), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        yield accuracy  # outside no_grad: a paused generator must not leave grad mode off


def digits_objective(data: TensorSplit, device: str | torch.device = "cpu") -> Objective:
    """``train_digits_mlp`` with the data (and device) bound: the form every search takes."""
    return lambda config, seed: train_digits_mlp(config, seed, data, device=device)


# ----------------------------------------------------------------------------- LR range test
def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    lr_min: float,
    lr_max: float,
    steps: int,
    evaluate: Callable[[nn.Module], float] | None = None,
    eval_every: int = 10,
    mode: str = "exponential",
    diverge_factor: float = 4.0,
) -> pd.DataFrame:
    """Smith (2017): train briefly while the LR grows from ``lr_min`` to ``lr_max``.

    ``mode="linear"`` is the paper's schedule; ``"exponential"`` gives every decade equal room.
    Logs the training loss each step (and ``evaluate(model)`` every ``eval_every`` steps) and
    stops early once the loss exceeds ``diverge_factor`` × its best. Returns columns
    step, lr, loss, smoothed_loss, metric (NaN where not evaluated).
    """
    if mode not in ("exponential", "linear"):
        raise ValueError(f"Unknown mode {mode!r}; use 'exponential' or 'linear'.")
    if not 0 < lr_min < lr_max:
        raise ValueError(f"Need 0 < lr_min < lr_max, got {lr_min}, {lr_max}.")
    rows, best, smoothed = [], math.inf, 0.0
    for step in range(steps):
        frac = step / max(1, steps - 1)
        lr = lr_min * (lr_max / lr_min) ** frac if mode == "exponential" else lr_min + frac * (lr_max - lr_min)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        inputs, targets = next(batches)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        smoothed = 0.9 * smoothed + 0.1 * value
        debiased = smoothed / (1 - 0.9 ** (step + 1))
        metric = math.nan
        if evaluate is not None and (step % eval_every == eval_every - 1 or step == steps - 1):
            model.eval()
            with torch.no_grad():
                metric = float(evaluate(model))
        rows.append({"step": step, "lr": lr, "loss": value, "smoothed_loss": debiased, "metric": metric})
        best = min(best, debiased)
        if not math.isfinite(value) or debiased > diverge_factor * best:
            break
    return pd.DataFrame(rows)


def suggest_lr_bounds(lrs: Sequence[float], losses: Sequence[float], improvement: float = 0.1) -> tuple[float, float]:
    """(base_lr, max_lr) read off a range test: max_lr where the smoothed loss is lowest,
    base_lr where the loss has first fallen by ``improvement`` of its total drop."""
    lrs_arr, loss_arr = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs_arr) != len(loss_arr) or len(lrs_arr) < 3:
        raise ValueError("Need matching lrs and losses, at least 3 of each.")
    lowest = int(np.argmin(loss_arr))
    drop = loss_arr[0] - loss_arr[lowest]
    if drop <= 0:
        raise ValueError("The loss never fell below its starting value: widen the LR range or train longer.")
    base = int(np.argmax(loss_arr[: lowest + 1] <= loss_arr[0] - improvement * drop))
    return float(lrs_arr[base]), float(lrs_arr[lowest])


def endless_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches forever (a fresh permutation each pass)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            yield x[batch], y[batch]


# ----------------------------------------------------------------------------- the budget comparison
def digits_search_space() -> dict[str, Dimension]:
    """The space every search of notebook 04 explores: learning rate and weight decay on a log
    scale, and the hidden width (three values, so a 3 x 3 x 3 grid covers it)."""
    return {"lr": LogUniform(1e-5, 1.0), "weight_decay": LogUniform(1e-6, 1e-1), "width": Choice((16, 64, 256))}


SEARCHES = ("grid", "random", "ASHA", "Hyperband", "BOHB")


def compare_searches(
    space: SearchSpace,
    objective: Objective,
    seed: int,
    n_trials: int = 27,
    max_epochs: int = 9,
    eta: int = 3,
    searches: Sequence[str] = SEARCHES,
) -> list[SearchResult]:
    """Run each search once with the same seed. Grid uses ``round(n_trials ** (1/d))`` points per
    numeric dimension, in a shuffled order; random and ASHA draw the same ``n_trials``
    configurations (same generator seed), so ASHA's loss is due to pruning alone; Hyperband and
    BOHB spend at least random search's budget (n_trials x max_epochs)."""
    unknown = set(searches) - set(SEARCHES)
    if unknown:
        raise ValueError(f"Unknown searches {sorted(unknown)}; known: {', '.join(SEARCHES)}.")
    sample = lambda rng: sample_config(space, rng)  # noqa: E731
    runs: dict[str, Callable[[], SearchResult]] = {
        "grid": lambda: run_trials(shuffled_grid(space, n_trials, seed), objective, max_epochs, seed, "grid"),
        "random": lambda: run_trials(random_configs(space, n_trials, seed), objective, max_epochs, seed, "random"),
        "ASHA": lambda: asha(sample, objective, n_trials, 1, max_epochs, eta, seed),
        "Hyperband": lambda: hyperband(random_proposer(space), objective, max_epochs, eta, seed, n_trials * max_epochs),
        "BOHB": lambda: hyperband(bohb_proposer(space), objective, max_epochs, eta, seed, n_trials * max_epochs, name="BOHB"),
    }
    return [runs[name]() for name in searches]


def shuffled_grid(space: SearchSpace, n_trials: int, seed: int) -> list[Config]:
    """A grid of about ``n_trials`` points (all values of each Choice), in a seeded random order
    (the order a pool of parallel workers would finish them in)."""
    numeric = [name for name, dim in space.items() if not isinstance(dim, Choice)]
    choices = math.prod(len(dim.values) for dim in space.values() if isinstance(dim, Choice))
    points = max(2, round((n_trials / choices) ** (1 / max(1, len(numeric)))))
    configs = grid_configs(space, points)
    order = np.random.default_rng(seed).permutation(len(configs))
    return [configs[i] for i in order]
