"""Learning-rate schedules: warmup factories on ``LambdaLR``, a registry by name, and LR tracing.

The three warmup schedules are multipliers of the optimizer's base LR, built on
``torch.optim.lr_scheduler.LambdaLR`` so they save, restore and compose like PyTorch's own:

- ``linear_warmup_linear_decay``: 0 → 1 linearly over ``warmup_steps``, then linearly to 0 at
  ``total_steps`` (Hugging Face's ``get_linear_schedule_with_warmup``).
- ``linear_warmup_cosine``: the same warmup, then half a cosine down to ``min_ratio``.
- ``noam``: ``d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)`` (Vaswani et al., 2017),
  with step counted from 1; use base LR 1.0 (or a "factor") so the LR equals the formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

Scheduler = LRScheduler | ReduceLROnPlateau


def linear_warmup_linear_decay_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier at ``step``: ``step / warmup`` during warmup, then linear decay to 0 at the end."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def linear_warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> float:
    """Multiplier at ``step``: linear warmup, then a half cosine from 1 down to ``min_ratio``."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def noam_factor(step: int, d_model: int, warmup_steps: int) -> float:
    """``d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)``, step counted from 1."""
    step = max(step, 1)
    return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def _check_steps(warmup_steps: int, total_steps: int | None = None) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if total_steps is not None and total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}).")


def linear_warmup_linear_decay(
    optimizer: Optimizer, warmup_steps: int, total_steps: int
) -> LambdaLR:
    """LambdaLR: linear warmup over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    _check_steps(warmup_steps, total_steps)
    return LambdaLR(
        optimizer, lambda step: linear_warmup_linear_decay_factor(step, warmup_steps, total_steps)
    )


def linear_warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    """LambdaLR: linear warmup, then cosine decay to ``min_ratio`` × base LR at ``total_steps``."""
    _check_steps(warmup_steps, total_steps)
    return LambdaLR(
        optimizer,
        lambda step: linear_warmup_cosine_factor(step, warmup_steps, total_steps, min_ratio),
    )


def noam(optimizer: Optimizer, d_model: int, warmup_steps: int) -> LambdaLR:
    """LambdaLR for the Transformer paper's schedule (peak ``(d_model * warmup)**-0.5`` × base LR)."""
    if warmup_steps < 1:
        raise ValueError(f"noam needs warmup_steps >= 1, got {warmup_steps}.")
    return LambdaLR(optimizer, lambda step: noam_factor(step, d_model, warmup_steps))


def build_scheduler(name: str, optimizer: Optimizer, total_steps: int) -> Scheduler:
    """One of the course's reference schedules by name, sized for ``total_steps`` steps.

    The settings are the ones the LR-schedule notebook draws; unknown names raise a ValueError
    listing the known ones.
    """
    base_lr = optimizer.param_groups[0]["lr"]
    warmup = max(1, total_steps // 10)
    lr_scheduler = torch.optim.lr_scheduler
    factories: dict[str, Callable[[], Scheduler]] = {
        "StepLR": lambda: lr_scheduler.StepLR(
            optimizer, step_size=max(1, total_steps // 4), gamma=0.5
        ),
        "MultiStepLR": lambda: lr_scheduler.MultiStepLR(
            optimizer, milestones=[total_steps // 2, 3 * total_steps // 4], gamma=0.1
        ),
        "ExponentialLR": lambda: lr_scheduler.ExponentialLR(
            optimizer, gamma=0.01 ** (1 / total_steps)
        ),
        "CosineAnnealingLR": lambda: lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps),
        "CosineAnnealingWarmRestarts": lambda: lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(1, total_steps // 7), T_mult=2
        ),
        "linear warmup + decay": lambda: linear_warmup_linear_decay(optimizer, warmup, total_steps),
        "warmup + cosine": lambda: linear_warmup_cosine(optimizer, warmup, total_steps),
        "Noam": lambda: noam(optimizer, d_model=64, warmup_steps=warmup),
        "OneCycleLR": lambda: lr_scheduler.OneCycleLR(
            optimizer, max_lr=base_lr, total_steps=total_steps
        ),
        "CyclicLR triangular": lambda: lr_scheduler.CyclicLR(
            optimizer, base_lr=base_lr / 10, max_lr=base_lr, step_size_up=max(1, total_steps // 8)
        ),
        "CyclicLR exp_range": lambda: lr_scheduler.CyclicLR(
            optimizer,
            base_lr=base_lr / 10,
            max_lr=base_lr,
            step_size_up=max(1, total_steps // 8),
            mode="exp_range",
            gamma=0.5 ** (1 / max(1, total_steps // 4)),
        ),
        "ReduceLROnPlateau": lambda: lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(1, total_steps // 20)
        ),
    }
    if name not in factories:
        raise ValueError(f"Unknown scheduler {name!r}; known: {', '.join(factories)}.")
    return factories[name]()


SCHEDULER_NAMES: tuple[str, ...] = (
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "linear warmup + decay",
    "warmup + cosine",
    "Noam",
    "OneCycleLR",
    "CyclicLR triangular",
    "CyclicLR exp_range",
    "ReduceLROnPlateau",
)


def plateauing_loss(step: int) -> float:
    """A synthetic validation loss that falls, then plateaus with small wiggles (for ReduceLROnPlateau)."""
    return 1.0 / (1.0 + 0.05 * min(step, 60)) + 0.002 * math.sin(step)


def trace_lr(
    make_scheduler: Callable[[Optimizer], Scheduler],
    steps: int,
    base_lr: float = 1.0,
    metric: Callable[[int], float] = plateauing_loss,
) -> list[float]:
    """The LR a scheduler gives at each of ``steps`` steps, without training anything.

    A dummy parameter and SGD (momentum 0.9, so momentum-cycling schedulers work) are stepped;
    ``ReduceLROnPlateau`` is fed ``metric(step)``. Entry ``t`` is the LR used by optimizer step ``t``.
    """
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=base_lr, momentum=0.9)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for step in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(metric(step))
        else:
            scheduler.step()
    return lrs
