"""The course's shared tuning objective: an MLP (``helpers.models.mlp``) trained with AdamW on the
8x8 digits, yielding the validation accuracy after every epoch, and the data splits it uses.

Notebooks 04 (hyperparameter tuning) and 08 (a genetic algorithm as a hyperparameter search) tune
this one objective. A search chooses on the *validation* split; ``held_out`` swaps in the test
split so the chosen configuration is reported on images no choice has seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from helpers.models import mlp
from helpers.tuning.searches import Objective
from helpers.tuning.spaces import Choice, Dimension, LogUniform

DIGITS_PIXELS, DIGITS_CLASSES = 64, 10


@dataclass(frozen=True)
class TensorSplit:
    """Train and validation tensors held in memory (small data: no DataLoader needed), and an
    optional test split kept apart for one final report."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None


def digits_split(
    val_fraction: float = 0.25, seed: int = 0, test_fraction: float = 0.0
) -> TensorSplit:
    """The 8x8 digits from ``data/``, split once (stratified) so every search sees the same data.

    With ``test_fraction > 0`` a stratified test split is set aside first and the rest is split
    into train and validation (``val_fraction`` of the whole data set goes to validation).
    """
    import numpy as np

    from helpers.data import load_digits, split_indices

    pixels, labels = load_digits()
    x, y = torch.from_numpy(pixels), torch.from_numpy(labels)
    if test_fraction == 0.0:
        train_idx, val_idx = split_indices(len(labels), val_fraction, seed, stratify=labels)
        return TensorSplit(x[train_idx], y[train_idx], x[val_idx], y[val_idx])
    if not 0.0 < test_fraction < 1.0 - val_fraction:
        raise ValueError(
            f"Need 0 <= test_fraction < 1 - val_fraction, got {test_fraction} and {val_fraction}."
        )
    rest_idx, test_idx = split_indices(len(labels), test_fraction, seed, stratify=labels)
    train_pos, val_pos = split_indices(
        len(rest_idx), val_fraction / (1 - test_fraction), seed, stratify=labels[rest_idx]
    )
    train_idx, val_idx = rest_idx[train_pos], rest_idx[val_pos]
    assert not set(np.concatenate([train_idx, val_idx])) & set(test_idx)
    return TensorSplit(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x[test_idx], y[test_idx])


def held_out(data: TensorSplit) -> TensorSplit:
    """The same training data with the *test* split in the validation slot: train a chosen
    configuration on it once and the objective reports test accuracy."""
    if data.x_test is None or data.y_test is None:
        raise ValueError(
            "This split has no test set: make it with digits_split(test_fraction=...)."
        )
    return TensorSplit(data.x_train, data.y_train, data.x_test, data.y_test)


DEFAULT_MLP_CONFIG: dict[str, float | int | str] = {
    "lr": 1e-3,
    "weight_decay": 1e-2,
    "beta1": 0.9,
    "width": 64,
    "depth": 1,
    "batch_size": 64,
}


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
        raise ValueError(
            f"Unknown hyperparameters {sorted(unknown)}; known: {sorted(DEFAULT_MLP_CONFIG)} + schedule, base_lr."
        )
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = mlp(DIGITS_PIXELS, DIGITS_CLASSES, hidden=int(c["width"]), depth=int(c["depth"])).to(
        device
    )
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(c["lr"]),
        weight_decay=float(c["weight_decay"]),
        betas=(float(c["beta1"]), 0.999),
    )
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    batch_size = int(c["batch_size"])
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    scheduler = None
    if c.get("schedule", "constant") == "one_cycle":
        div_factor = float(c["lr"]) / float(c.get("base_lr", float(c["lr"]) / 25))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=float(c["lr"]),
            total_steps=epochs * steps_per_epoch,
            div_factor=div_factor,
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


def digits_search_space() -> dict[str, Dimension]:
    """The space every search of notebook 04 explores: learning rate and weight decay on a log
    scale, and the hidden width (three values, so a 3 x 3 x 3 grid covers it)."""
    return {
        "lr": LogUniform(1e-5, 1.0),
        "weight_decay": LogUniform(1e-6, 1e-1),
        "width": Choice((16, 64, 256)),
    }
