"""Losses for imbalanced classification: class weights n/(k·n_c), focal loss, logit adjustment.

- ``class_weights``: the "balanced" weights :math:`w_c = n / (k\\,n_c)` (scikit-learn's
  ``class_weight="balanced"``), optionally softened by a power.
- ``focal_loss`` / ``FocalLoss``: multi-class focal loss (Lin et al., 2017),
  :math:`-w_{y}\\,(1-p_{y})^{\\gamma}\\log p_{y}`; with ``gamma = 0`` it *is* cross-entropy.
- ``logit_adjusted_cross_entropy`` / ``LogitAdjustedLoss``: cross-entropy on
  :math:`z + \\tau \\log \\pi` (Menon et al., 2021), which trains for the balanced error.
- ``one_vs_rest_bce``: the sum of k binary cross-entropies "class c vs the rest", the loss of
  k one-vs-rest binary models trained side by side.
- ``make_loss``: one of the above by name, for comparison loops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

REDUCTIONS = ("mean", "sum", "none")
LOSS_NAMES = ("ce", "weighted_ce", "focal", "label_smoothing", "logit_adjusted", "one_vs_rest")


def class_counts(
    labels: Sequence[int] | np.ndarray | torch.Tensor, n_classes: int | None = None
) -> np.ndarray:
    """Number of samples per class, ``n_c`` for ``c = 0 … n_classes-1`` (int64 array).

    ``n_classes`` defaults to ``max(labels) + 1``; labels must be non-negative integers.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}.")
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    if labels.max() >= n_classes:
        raise ValueError(f"label {labels.max()} is out of range for n_classes={n_classes}.")
    return np.bincount(labels, minlength=n_classes).astype(np.int64)


def class_weights(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    n_classes: int | None = None,
    power: float = 1.0,
) -> torch.Tensor:
    """Per-class loss weights :math:`w_c = (n / (k\\,n_c))^{power}` as a float32 tensor.

    With ``power = 1`` every class contributes the same total weight :math:`n/k` to the loss
    (:math:`n_c w_c = n/k`), so the weighted loss is the average of the per-class mean losses.
    ``power = 0.5`` is a softer, often better, choice; ``power = 0`` gives all ones.
    Raises ``ValueError`` if a class has no samples (its weight would be infinite).
    """
    counts = class_counts(labels, n_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(
            f"classes {empty.tolist()} have no samples: their weight n/(k*n_c) is infinite."
        )
    n, k = counts.sum(), len(counts)
    return torch.tensor((n / (k * counts)) ** power, dtype=torch.float32)


def _reduce(
    losses: torch.Tensor, sample_weights: torch.Tensor | None, reduction: str
) -> torch.Tensor:
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    # "mean": like nn.CrossEntropyLoss, a weighted loss is divided by the sum of the weights used.
    return losses.sum() / (sample_weights.sum() if sample_weights is not None else losses.numel())


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class focal loss :math:`-w_{y}(1 - p_{y})^{\\gamma}\\log p_{y}` with softmax probabilities.

    ``gamma = 0`` gives exactly ``F.cross_entropy(logits, targets, weight=weight)`` (same
    ``"mean"`` normalisation: divided by the sum of the weights of the targets). Larger
    ``gamma`` shrinks the loss of well-classified examples (``p_y`` near 1) the most.
    ``weight`` is the per-class :math:`\\alpha` of the paper, e.g. ``class_weights(labels)``.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; choose from {REDUCTIONS}.")
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}."
        )
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    losses = -log_p
    if gamma > 0:
        losses = (1.0 - log_p.exp()).clamp(min=0.0).pow(gamma) * losses
    sample_weights = None
    if weight is not None:
        sample_weights = weight.to(losses.device, losses.dtype)[targets]
        losses = sample_weights * losses
    return _reduce(losses, sample_weights, reduction)


class FocalLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`focal_loss` (the per-class ``weight`` is a buffer)."""

    weight: torch.Tensor | None  # buffer

    def __init__(
        self, gamma: float = 2.0, weight: torch.Tensor | None = None, reduction: str = "mean"
    ):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        if reduction not in REDUCTIONS:
            raise ValueError(f"Unknown reduction {reduction!r}; choose from {REDUCTIONS}.")
        self.gamma, self.reduction = gamma, reduction
        self.register_buffer("weight", weight.clone().float() if weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.gamma, self.weight, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}"


def log_priors(counts: Sequence[int] | np.ndarray) -> torch.Tensor:
    """:math:`\\log \\pi_c` with :math:`\\pi_c = n_c / n` from per-class counts (float32 tensor)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts <= 0).any():
        raise ValueError("counts must be a 1-D array of positive class sizes.")
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def logit_adjusted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of :math:`z + \\tau\\log\\pi` (the logit-adjusted loss of Menon et al., 2021).

    The model's raw logits ``z`` then estimate :math:`\\log p(x\\mid y)` up to a constant, so
    ``argmax z`` is the prediction that minimises the *balanced* error.
    """
    return F.cross_entropy(logits + tau * log_prior.to(logits.device, logits.dtype), targets)


class LogitAdjustedLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`logit_adjusted_cross_entropy`."""

    log_prior: torch.Tensor  # buffer

    def __init__(self, counts: Sequence[int] | np.ndarray, tau: float = 1.0):
        super().__init__()
        self.tau = tau
        self.register_buffer("log_prior", log_priors(counts))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return logit_adjusted_cross_entropy(logits, targets, self.log_prior, self.tau)


def one_vs_rest_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over classes of the binary cross-entropy "is it class c?", averaged over the batch.

    Logit ``c`` is the score of a binary model for class ``c`` against the rest; each binary
    loss only involves its own logit, so k independent binary models trained with this loss get
    exactly the gradients they would get if trained one at a time.
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}."
        )
    one_hot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, one_hot, reduction="sum") / len(targets)


class OneVsRestLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`one_vs_rest_bce`."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return one_vs_rest_bce(logits, targets)


def make_loss(
    name: str,
    train_labels: Sequence[int] | np.ndarray | torch.Tensor,
    n_classes: int | None = None,
    *,
    gamma: float = 2.0,
    smoothing: float = 0.1,
    weight_power: float = 1.0,
    tau: float = 1.0,
) -> nn.Module:
    """A training loss by name, built from the training labels.

    ``"ce"`` plain cross-entropy; ``"weighted_ce"`` cross-entropy with ``class_weights``
    (``weight_power``); ``"focal"`` focal loss with ``gamma``; ``"label_smoothing"`` PyTorch's
    built-in ``CrossEntropyLoss(label_smoothing=smoothing)``; ``"logit_adjusted"`` the
    logit-adjusted loss with ``tau``; ``"one_vs_rest"`` the one-vs-rest binary losses.
    """
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name == "weighted_ce":
        return nn.CrossEntropyLoss(weight=class_weights(train_labels, n_classes, weight_power))
    if name == "focal":
        return FocalLoss(gamma=gamma)
    if name == "label_smoothing":
        return nn.CrossEntropyLoss(label_smoothing=smoothing)
    if name == "logit_adjusted":
        return LogitAdjustedLoss(class_counts(train_labels, n_classes), tau=tau)
    if name == "one_vs_rest":
        return OneVsRestLoss()
    raise ValueError(f"Unknown loss {name!r}; choose from {LOSS_NAMES}.")
