"""The learning-rate range test (Smith, 2017): one short run with a growing LR, its loss curve,
and the base and maximum LR read off it, for a cyclical or one-cycle schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn


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
        lr = (
            lr_min * (lr_max / lr_min) ** frac
            if mode == "exponential"
            else lr_min + frac * (lr_max - lr_min)
        )
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
        rows.append(
            {"step": step, "lr": lr, "loss": value, "smoothed_loss": debiased, "metric": metric}
        )
        best = min(best, debiased)
        if not math.isfinite(value) or debiased > diverge_factor * best:
            break
    return pd.DataFrame(rows)


def suggest_lr_bounds(
    lrs: Sequence[float], losses: Sequence[float], improvement: float = 0.1
) -> tuple[float, float]:
    """(base_lr, max_lr) read off a range test: max_lr where the smoothed loss is lowest,
    base_lr where the loss has first fallen by ``improvement`` of its total drop."""
    lrs_arr, loss_arr = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs_arr) != len(loss_arr) or len(lrs_arr) < 3:
        raise ValueError("Need matching lrs and losses, at least 3 of each.")
    lowest = int(np.argmin(loss_arr))
    drop = loss_arr[0] - loss_arr[lowest]
    if drop <= 0:
        raise ValueError(
            "The loss never fell below its starting value: widen the LR range or train longer."
        )
    base = int(np.argmax(loss_arr[: lowest + 1] <= loss_arr[0] - improvement * drop))
    return float(lrs_arr[base]), float(lrs_arr[lowest])


def endless_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches forever (a fresh permutation each pass)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            yield x[batch], y[batch]
