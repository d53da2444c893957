"""Search spaces: the dimensions a search samples (log-uniform, uniform, choice), the unit-cube
encoding model-based proposers work on, grids, and coarse-to-fine zooming.

A *configuration* is a plain ``dict`` of hyperparameter values; a *search space* maps each name to
a dimension. Every dimension maps the unit interval onto its values (``from_unit``) and back
(``to_unit``), so random sampling, grids and BOHB's kernel densities share one code path.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Config = dict[str, float | int | str]


@dataclass(frozen=True)
class LogUniform:
    """A positive number whose logarithm is uniform on [log low, log high] (learning rate, decay)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise ValueError(
                f"LogUniform needs 0 < low < high, got low={self.low}, high={self.high}."
            )

    def from_unit(self, u: float) -> float:
        return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))

    def to_unit(self, value: float | int | str) -> float:
        if isinstance(value, str):
            raise TypeError(f"LogUniform takes a number, got {value!r}.")
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

    def to_unit(self, value: float | int | str) -> float:
        if isinstance(value, str):
            raise TypeError(f"Uniform takes a number, got {value!r}.")
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
    return {
        name: dim.from_unit(float(np.clip(u, 0.0, 1.0 - 1e-12)))
        for (name, dim), u in zip(space.items(), point, strict=True)
    }


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


def shuffled_grid(space: SearchSpace, n_trials: int, seed: int) -> list[Config]:
    """A grid of about ``n_trials`` points (all values of each Choice), in a seeded random order
    (the order a pool of parallel workers would finish them in)."""
    numeric = [name for name, dim in space.items() if not isinstance(dim, Choice)]
    choices = math.prod(len(dim.values) for dim in space.values() if isinstance(dim, Choice))
    points = max(2, round((n_trials / choices) ** (1 / max(1, len(numeric)))))
    configs = grid_configs(space, points)
    order = np.random.default_rng(seed).permutation(len(configs))
    return [configs[i] for i in order]


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
