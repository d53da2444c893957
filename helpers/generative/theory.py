"""Goodfellow et al. (2014), the theory on a grid: Proposition 1 and Theorem 1.

Densities are NumPy arrays sampled on a grid with spacing ``dx`` (``dx=1``: probability vectors):

- ``optimal_discriminator``: Proposition 1, ``D* = p_data / (p_data + p_g)``;
- ``kl_divergence``, ``js_divergence``: the divergences of Theorem 1 (nats);
- ``value_on_grid``: ``V(G, D)`` for any discriminator values on the grid;
- ``virtual_training_criterion``: ``C(G) = V(G, D*)``, computed from D* alone, so that Theorem 1
  (``C(G) = -log 4 + 2 JSD``) can be checked against ``js_divergence`` independently.
"""

from __future__ import annotations

import math

import numpy as np

LOG4: float = math.log(4.0)


def gaussian_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Density of N(mean, std^2) at ``x``."""
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}.")
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _densities(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}.")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("densities must be non-negative.")
    return p, q


def optimal_discriminator(p_data: np.ndarray, p_g: np.ndarray) -> np.ndarray:
    """Proposition 1: ``D*(x) = p_data(x) / (p_data(x) + p_g(x))``.

    Where both densities are 0 every D is optimal; we return 1/2 there.
    """
    p, q = _densities(p_data, p_g)
    total = p + q
    return np.divide(p, total, out=np.full_like(p, 0.5), where=total > 0)


def _expect_log(weights: np.ndarray, values: np.ndarray, dx: float) -> float:
    """``sum weights * log(values) * dx`` with the convention 0 * log(anything) = 0."""
    mask = weights > 0
    return float(np.sum(weights[mask] * np.log(values[mask])) * dx)


def kl_divergence(p: np.ndarray, q: np.ndarray, dx: float = 1.0) -> float:
    """``KL(p || q)`` in nats for densities on a grid with spacing ``dx`` (``dx=1``: pmfs)."""
    p, q = _densities(p, q)
    if ((p > 0) & (q == 0)).any():
        return math.inf
    ratio = np.divide(p, q, out=np.ones_like(p), where=p > 0)
    return _expect_log(p, ratio, dx)


def js_divergence(p: np.ndarray, q: np.ndarray, dx: float = 1.0) -> float:
    """``JSD(p || q) = KL(p || m)/2 + KL(q || m)/2`` with ``m = (p + q)/2``; in [0, log 2].

    Theorem 1's identity ``C(G) = -log 4 + 2 JSD`` assumes ``p`` and ``q`` integrate to 1 on the
    grid (``sum * dx == 1``); normalise densities cut off by a finite grid first.
    """
    p, q = _densities(p, q)
    m = (p + q) / 2
    return 0.5 * kl_divergence(p, m, dx) + 0.5 * kl_divergence(q, m, dx)


def value_on_grid(d: np.ndarray, p_data: np.ndarray, p_g: np.ndarray, dx: float = 1.0) -> float:
    """``V(G, D) = ∫ p_data log D + p_g log(1 - D) dx`` for discriminator values ``d`` on a grid."""
    p, q = _densities(p_data, p_g)
    d = np.asarray(d, dtype=np.float64)
    return _expect_log(p, d, dx) + _expect_log(q, 1.0 - d, dx)


def virtual_training_criterion(p_data: np.ndarray, p_g: np.ndarray, dx: float = 1.0) -> float:
    """``C(G) = max_D V(G, D) = V(G, D*)``, computed from D* directly (no JSD involved).

    ``1 - D*`` is evaluated as ``p_g / (p_data + p_g)`` so it does not round to 0 where
    ``p_data >> p_g``.
    """
    p, q = _densities(p_data, p_g)
    total = p + q
    one_minus = np.divide(q, total, out=np.full_like(q, 0.5), where=total > 0)
    return _expect_log(p, optimal_discriminator(p, q), dx) + _expect_log(q, one_minus, dx)
