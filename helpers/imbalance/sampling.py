"""Resampling and decision-rule fixes for class imbalance.

- ``long_tail_indices``: subsample a (roughly) balanced set into a long tail with a chosen
  largest:smallest ratio — the controlled imbalance that a sweep needs.
- ``oversampling_weights`` / ``balanced_sampler``: per-sample weights :math:`1/n_{y_i}` for
  ``torch.utils.data.WeightedRandomSampler``, so every class is drawn equally often.
- ``undersample_indices``: keep at most ``per_class`` samples of each class (default: the
  smallest class's size).
- ``tensor_loader``: a DataLoader that fetches whole batches from in-memory tensors (fast),
  with any index sampler (shuffle or ``WeightedRandomSampler``).
- ``adjust_logits`` / ``tune_tau``: post-hoc logit adjustment :math:`z - \\tau\\log\\pi`
  (threshold moving for many classes), with :math:`\\tau` chosen on validation data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    Sampler,
    TensorDataset,
    WeightedRandomSampler,
)

from helpers.imbalance.losses import class_counts, log_priors

Labels = Sequence[int] | np.ndarray | torch.Tensor


def long_tail_indices(
    labels: Labels, imbalance_ratio: float, seed: int, max_per_class: int | None = None
) -> np.ndarray:
    """Indices of a long-tailed subset: class ``c`` keeps :math:`n_{max}\\,r^{-c/(k-1)}` samples.

    Class 0 is the head (``max_per_class`` samples, default the smallest class size so every
    class can supply it), class ``k-1`` the tail with ``n_max / imbalance_ratio`` samples (at
    least 1). ``imbalance_ratio = 1`` gives a balanced subset. Which samples are kept depends on
    ``seed`` only. Returns sorted indices into ``labels``.
    """
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}.")
    labels = np.asarray(labels)
    counts = class_counts(labels)
    k = len(counts)
    if k < 2:
        raise ValueError("need at least two classes for a long tail.")
    n_max = int(counts.min()) if max_per_class is None else max_per_class
    if n_max > counts.min():
        raise ValueError(f"max_per_class={n_max} exceeds the smallest class size {counts.min()}.")
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(k):
        n_c = max(1, int(round(n_max * imbalance_ratio ** (-c / (k - 1)))))
        keep.append(rng.choice(np.flatnonzero(labels == c), size=n_c, replace=False))
    return np.sort(np.concatenate(keep))


def oversampling_weights(labels: Labels, power: float = 1.0) -> torch.Tensor:
    """Per-sample weights :math:`n_{y_i}^{-power}` (float64) for ``WeightedRandomSampler``.

    With ``power = 1`` each class has the same total weight, so a sampler drawing with these
    weights draws every class with probability :math:`1/k`.
    """
    counts = class_counts(labels)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    return torch.tensor(counts[labels].astype(np.float64) ** -power, dtype=torch.float64)


def balanced_sampler(
    labels: Labels,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    power: float = 1.0,
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` (with replacement) that draws classes uniformly (``power=1``).

    ``num_samples`` defaults to ``len(labels)``: an "epoch" has as many draws as the data has
    samples, so the head classes are undersampled and the tail classes repeated.
    """
    weights = oversampling_weights(labels, power)
    return WeightedRandomSampler(
        weights,  # type: ignore[arg-type]  # torch annotates Sequence[float]; it takes a Tensor
        num_samples=len(weights) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )


def undersample_indices(labels: Labels, seed: int, per_class: int | None = None) -> np.ndarray:
    """Sorted indices keeping ``min(n_c, per_class)`` random samples of each class.

    ``per_class`` defaults to the smallest class's size, which balances the classes exactly
    (and throws most of the head classes' data away).
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    counts = class_counts(labels)
    per_class = int(counts[counts > 0].min()) if per_class is None else per_class
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}.")
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(np.flatnonzero(labels == c), size=min(per_class, n), replace=False)
        for c, n in enumerate(counts)
        if n > 0
    ]
    return np.sort(np.concatenate(keep))


def tensor_loader(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    sampler: Sampler[int] | None = None,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
) -> DataLoader:
    """A DataLoader over in-memory tensors that indexes whole batches at once.

    ``sampler`` (e.g. ``balanced_sampler``) chooses the sample indices; without one the order
    is shuffled with ``generator`` (or sequential with ``shuffle=False``). Batches are built by
    one tensor indexing per batch instead of per-sample ``__getitem__`` + collate, which is
    10-50x faster for small models.
    """
    if len(inputs) != len(labels):
        raise ValueError(f"inputs and labels differ in length: {len(inputs)} vs {len(labels)}.")
    order: Sampler[int] | Iterable[int]
    if sampler is None:
        order = (
            RandomSampler(range(len(labels)), generator=generator)
            if shuffle
            else range(len(labels))
        )
    else:
        order = sampler
    batches = BatchSampler(order, batch_size=batch_size, drop_last=False)
    return DataLoader(TensorDataset(inputs, labels), sampler=batches, batch_size=None)


def adjust_logits(
    logits: torch.Tensor, counts: Sequence[int] | np.ndarray, tau: float = 1.0
) -> torch.Tensor:
    """Post-hoc logit adjustment :math:`z_c - \\tau \\log \\pi_c` with :math:`\\pi_c = n_c/n`.

    ``argmax`` of the result moves decisions towards rare classes: with ``tau = 1`` and a
    calibrated model it is the Bayes rule for the balanced error (Menon et al., 2021).
    """
    prior = log_priors(counts).to(logits.device, logits.dtype)
    if logits.shape[-1] != len(prior):
        raise ValueError(f"logits have {logits.shape[-1]} classes but counts has {len(prior)}.")
    return logits - tau * prior


def tune_tau(
    logits: torch.Tensor,
    labels: Labels,
    counts: Sequence[int] | np.ndarray,
    taus: Sequence[float] = tuple(np.round(np.arange(0.0, 2.01, 0.25), 2)),
) -> tuple[float, dict[float, float]]:
    """The ``tau`` in ``taus`` whose adjusted logits give the best macro-F1 on (validation) data.

    Returns ``(best_tau, {tau: macro_f1})``; ties go to the smallest ``tau``. Tune on a
    validation split, never on the test split you report.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    scores = {}
    for tau in taus:
        predictions = adjust_logits(logits, counts, float(tau)).argmax(dim=1).cpu().numpy()
        scores[float(tau)] = float(f1_score(labels, predictions, average="macro", zero_division=0))
    best = max(scores, key=lambda t: (scores[t], -t))
    return best, scores
