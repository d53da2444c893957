"""Evaluating a GAN: a 2-D ring of Gaussians with mode coverage, Parzen windows, classifiers.

- ``ring_centres``, ``sample_ring``: the 2-D mixture of Metz et al. (2017), and ``mode_coverage``
  (modes covered, high-quality sample rate, samples per mode);
- ``parzen_log_likelihood``, ``choose_parzen_sigma``: the paper's Gaussian Parzen-window estimate
  of the test log-likelihood (Section 5, Table 1), with the bandwidth chosen on validation data;
- ``classifier_diversity``: class coverage and an Inception-score-like figure from a classifier's
  probabilities; ``within_class_spread``: how varied the samples *of one class* are (mean
  pairwise distance, per class), the measurement that mode collapse within a class needs;
- ``tile_images`` lays out flat 8x8 images for plotting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def ring_centres(n_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """The ``(n_modes, 2)`` centres spaced evenly on a circle of ``radius``."""
    if n_modes < 1 or radius <= 0:
        raise ValueError(f"need n_modes >= 1 and radius > 0, got {n_modes}, {radius}.")
    angles = 2 * np.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def sample_ring(
    n: int,
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` points from an equal-weight mixture of ``n_modes`` Gaussians (``std``) on a ring."""
    centres = torch.as_tensor(ring_centres(n_modes, radius), dtype=torch.float32)
    modes = torch.randint(n_modes, (n,), generator=generator)
    return centres[modes] + std * torch.randn(n, 2, generator=generator)


@dataclass
class ModeCoverage:
    """Mode coverage of 2-D samples on a mixture with known centres."""

    modes_covered: int
    high_quality_rate: float  # share of samples within ``n_std`` stds of their nearest centre
    counts: np.ndarray  # high-quality samples per mode


def mode_coverage(
    samples: np.ndarray | torch.Tensor,
    centres: np.ndarray,
    std: float,
    n_std: float = 3.0,
    min_share: float = 0.1,
) -> ModeCoverage:
    """Metz et al. (2017)-style coverage: high-quality = within ``n_std * std`` of a centre.

    A mode counts as covered when it holds at least ``min_share`` of its fair share of the
    samples (``min_share * n / n_modes`` high-quality samples, and at least one), so a few
    stray points do not count as covering it.
    """
    x = np.asarray(
        samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float64
    )
    if x.ndim != 2 or x.shape[1] != centres.shape[1] or len(x) == 0:
        raise ValueError(f"samples must be (n, {centres.shape[1]}) with n >= 1, got {x.shape}.")
    distances = np.linalg.norm(x[:, None, :] - centres[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    good = distances[np.arange(len(x)), nearest] <= n_std * std
    counts = np.bincount(nearest[good], minlength=len(centres))
    threshold = max(1.0, min_share * len(x) / len(centres))
    return ModeCoverage(int((counts >= threshold).sum()), float(good.mean()), counts)


# --------------------------------------------------------------------------------------------
# Evaluation: Parzen windows and a classifier-based diversity check
# --------------------------------------------------------------------------------------------


def parzen_log_likelihood(
    samples: torch.Tensor, points: torch.Tensor, sigma: float, chunk: int = 512
) -> torch.Tensor:
    """Per-point log-likelihood under a Gaussian Parzen window fitted to ``samples``.

    ``log p(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log n - (d/2) log(2 pi sigma^2)``,
    the estimate the paper reports (Section 5, Table 1), in nats.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    samples, points = samples.double(), points.double()
    n, d = samples.shape
    const = math.log(n) + 0.5 * d * math.log(2 * math.pi * sigma**2)
    out = [
        torch.logsumexp(-torch.cdist(block, samples).pow(2) / (2 * sigma**2), dim=1) - const
        for block in points.split(chunk)
    ]
    return torch.cat(out)


def choose_parzen_sigma(
    samples: torch.Tensor, validation: torch.Tensor, sigmas: Sequence[float]
) -> tuple[float, list[float]]:
    """The ``sigma`` with the best mean validation log-likelihood (the paper's cross-validation)."""
    if len(sigmas) == 0:
        raise ValueError("sigmas must not be empty.")
    scores = [float(parzen_log_likelihood(samples, validation, s).mean()) for s in sigmas]
    return float(sigmas[int(np.argmax(scores))]), scores


def classifier_diversity(probs: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Diversity of generated samples seen through a classifier's ``(n, C)`` class probabilities.

    ``classes_seen``: classes predicted (argmax) for at least 1% of the samples;
    ``class_entropy``: entropy (nats) of the predicted-class histogram, log C when balanced;
    ``largest_class_share``: share of the most predicted class (1/C when balanced);
    ``classifier_score``: ``exp(E_x KL(p(y|x) || p(y)))`` — the Inception Score's formula with
    this classifier; between 1 (one class, or unsure) and C (confident and balanced).
    """
    p = np.asarray(
        probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64
    )
    if p.ndim != 2 or len(p) == 0 or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs must be an (n, C) array whose rows sum to 1.")
    n, c = p.shape
    share = np.bincount(p.argmax(1), minlength=c) / n
    nz = share[share > 0]
    marginal = p.mean(0)
    eps = 1e-12
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    return {
        "classes_seen": int((share >= 0.01).sum()),
        "class_entropy": float(abs((nz * np.log(nz)).sum())),
        "largest_class_share": float(share.max()),
        "classifier_score": float(np.exp(kl.mean())),
    }


def tile_images(
    images: np.ndarray | torch.Tensor, ncols: int, side: int = 8, pad: int = 1
) -> np.ndarray:
    """Arrange flat ``(n, side*side)`` images into one 2-D array, ``ncols`` per row, for imshow."""
    x = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images)
    if x.ndim != 2 or x.shape[1] != side * side or ncols < 1:
        raise ValueError(
            f"images must be (n, {side * side}) and ncols >= 1, got {x.shape}, {ncols}."
        )
    nrows = -(-len(x) // ncols)
    step = side + pad
    canvas = np.full((nrows * step - pad, ncols * step - pad), np.nan)
    for i, image in enumerate(x):
        r, c = divmod(i, ncols)
        canvas[r * step : r * step + side, c * step : c * step + side] = image.reshape(side, side)
    return canvas


def within_class_spread(
    samples: np.ndarray | torch.Tensor, classes: np.ndarray | torch.Tensor, n_classes: int
) -> np.ndarray:
    """Mean pairwise Euclidean distance between the samples of each class, shape ``(n_classes,)``.

    ``classes[i]`` is the class of ``samples[i]`` (a label, or a classifier's prediction). A class
    with fewer than two samples has no spread: NaN. Compare a generator's spread per class with
    the real data's: a ratio well below 1 is mode collapse *within* the class (G ignores part of z).
    """
    x = np.asarray(
        samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float64
    )
    c = np.asarray(classes.detach().cpu() if isinstance(classes, torch.Tensor) else classes)
    if x.ndim != 2 or c.shape != (len(x),) or n_classes < 1:
        raise ValueError(
            f"samples must be (n, d) with one class each, got {x.shape} and {c.shape}."
        )
    if len(c) and (c.min() < 0 or c.max() >= n_classes):
        raise ValueError(f"classes must lie in [0, {n_classes}), got {c.min()}..{c.max()}.")
    spread = np.full(n_classes, np.nan)
    for k in range(n_classes):
        members = x[c == k]
        m = len(members)
        if m >= 2:
            squared = (members**2).sum(1)
            d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * members @ members.T, 0.0)
            spread[k] = np.sqrt(d2)[np.triu_indices(m, 1)].mean()
    return spread
