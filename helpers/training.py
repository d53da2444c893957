"""A readable training loop: ``fit`` and ``evaluate``.

``fit`` does what the course teaches, in the order a practitioner writes it: ``model.train()``,
forward under optional autocast, loss / accumulation steps, ``backward``, clip, ``step``,
``zero_grad``; then ``model.eval()`` and ``torch.no_grad()`` for validation metrics (accuracy,
macro and weighted F1); the best epoch checkpointed with its config; early stopping; resume.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader

from helpers.checkpoints import load_checkpoint, save_checkpoint
from helpers.devices import amp_dtype
from helpers.progress import progress

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "weighted_f1": True, "loss": False}
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"


TIMING_COLUMNS = ("train_seconds", "seconds")


@dataclass
class FitResult:
    """What ``fit`` returns: one history row per epoch, and the best epoch by the monitored metric."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    stopped_early: bool = False
    best_state: dict[str, torch.Tensor] | None = None  # with keep_best=True

    def frame(self, timings: bool = True) -> pd.DataFrame:
        """The history as a DataFrame (one row per epoch); ``timings=False`` drops the wall-clock
        columns, which differ between otherwise identical runs."""
        frame = pd.DataFrame(self.history)
        return frame if timings else frame.drop(columns=list(TIMING_COLUMNS), errors="ignore")


def _to_device(batch: Iterable[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device), enabled=enabled)


def _groups(batches: Iterable, size: int) -> Iterator[list]:
    """Consecutive groups of ``size`` batches (the last group may be shorter)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    loss_fn: LossFn | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """Mean loss, accuracy, macro F1 and weighted F1 of ``model`` over ``loader`` (no gradients)."""
    device = torch.device(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.eval()
    total_loss, n_seen = 0.0, 0
    predictions, targets = [], []
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = _to_device((inputs, labels), device)
            with _autocast(device, amp):
                logits = model(inputs)
            total_loss += loss_fn(logits.float(), labels).item() * len(labels)
            n_seen += len(labels)
            predictions.append(logits.argmax(dim=1).cpu().numpy())
            targets.append(labels.cpu().numpy())
    if n_seen == 0:
        raise ValueError("evaluate() got a loader that yields no batches.")
    y_pred, y_true = np.concatenate(predictions), np.concatenate(targets)
    return {
        "loss": total_loss / n_seen,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    loss_fn: LossFn,
    accumulation_steps: int = 1,
    max_grad_norm: float | None = None,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean training loss and mean gradient norm.

    With ``accumulation_steps = k`` the optimizer steps once every k batches (and once more for
    a shorter last group). Each batch's mean loss is weighted by its share of the group's
    samples, so the accumulated gradient equals that of one batch holding the whole group —
    exactly, even when the last batch is smaller. ``loss_fn`` must average over the batch.
    ``scheduler`` (if given) is stepped after every optimizer step.
    """
    if accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}.")
    if len(loader) == 0:
        raise ValueError(
            "The training loader yields no batches: is the dataset empty, or is drop_last=True "
            "with fewer samples than one batch?"
        )
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total_loss, n_seen, grad_norms = 0.0, 0, []
    for group in _groups(loader, accumulation_steps):
        group_samples = sum(len(labels) for _, labels in group)
        for inputs, labels in group:
            inputs, labels = _to_device((inputs, labels), device)
            with _autocast(device, amp):
                loss = loss_fn(model(inputs), labels)
            scaled = loss * (len(labels) / group_samples)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total_loss += loss.item() * len(labels)
            n_seen += len(labels)
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(
            model.parameters(), max_grad_norm if max_grad_norm is not None else math.inf
        )
        grad_norms.append(norm.item())
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
    return {"train_loss": total_loss / n_seen, "grad_norm": float(np.mean(grad_norms))}


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    device: torch.device | str = "cpu",
    loss_fn: LossFn | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scheduler_interval: str = "epoch",
    accumulation_steps: int = 1,
    max_grad_norm: float | None = None,
    amp: bool = False,
    monitor: str = "macro_f1",
    patience: int | None = None,
    checkpoint_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    keep_best: bool = False,
) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs and validate after each one.

    - ``scheduler_interval``: ``"epoch"`` steps the scheduler once per epoch (ReduceLROnPlateau
      gets the validation loss), ``"step"`` after every optimizer step (OneCycleLR, warmup).
    - ``monitor``/``patience``: the validation metric that picks the best epoch and, with
      ``patience``, stops training after that many epochs without improvement.
    - ``checkpoint_dir``: writes ``best.pt`` (best epoch, with ``config``) and ``last.pt``
      (everything needed to resume: optimizer, scheduler, RNG states, history).
    - ``resume=True`` continues from ``checkpoint_dir/last.pt``; the result is identical to
      an uninterrupted run (same seed, ``num_workers=0``).
    - ``keep_best=True`` keeps a copy of the best epoch's weights in memory (``best_state``)
      and loads it into ``model`` at the end: model selection without checkpoint I/O, for
      ablations of many short runs.

    Each history row holds ``seconds`` (the whole epoch) and ``train_seconds`` (the training
    pass alone, CUDA synchronised), so timings can leave validation and checkpoints out.

    The history's ``lr`` column is the first parameter group's LR at the end of the epoch (after
    the epoch's scheduler steps); use ``helpers.schedules.lr.trace_lr`` for the LR at every step.
    """
    if monitor not in HIGHER_IS_BETTER:
        raise ValueError(f"Unknown monitor {monitor!r}; choose from {sorted(HIGHER_IS_BETTER)}.")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}.")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir.")
    device = torch.device(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.to(device)
    use_scaler = amp and device.type == "cuda" and amp_dtype(device) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    higher_is_better = HIGHER_IS_BETTER[monitor]
    result = FitResult()
    start_epoch, epochs_without_improvement = 1, 0

    if resume:
        state = load_checkpoint(checkpoint_dir / LAST_NAME, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        loader_generator = getattr(train_loader, "generator", None)
        if loader_generator is not None and state["rng"]["loader"] is not None:
            loader_generator.set_state(state["rng"]["loader"])
        result.history = list(state["history"])
        result.best_epoch, result.best_score = state["best_epoch"], state["best_score"]
        epochs_without_improvement = state["epochs_without_improvement"]
        start_epoch = state["epoch"] + 1

    step_scheduler = scheduler if scheduler_interval == "step" else None
    epoch_bar = progress(
        range(start_epoch, epochs + 1), desc="epochs", enabled=show_progress, leave=False
    )
    for epoch in epoch_bar:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        train_stats = train_one_epoch(
            model, train_loader, optimizer, device, loss_fn,
            accumulation_steps=accumulation_steps, max_grad_norm=max_grad_norm,
            amp=amp, scaler=scaler, scheduler=step_scheduler,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - started
        val_stats = evaluate(model, val_loader, device, loss_fn, amp=amp)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None and scheduler_interval == "epoch":
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_stats["loss"])
            else:
                scheduler.step()
        row = {"epoch": epoch, **train_stats, **{f"val_{k}": v for k, v in val_stats.items()},
               "lr": lr, "train_seconds": train_seconds, "seconds": time.perf_counter() - started}
        result.history.append(row)
        epoch_bar.set_postfix(train_loss=f"{row['train_loss']:.3f}",
                              **{f"val_{monitor}": f"{val_stats[monitor]:.3f}"})

        score = val_stats[monitor]
        improved = result.best_score is None or (
            score > result.best_score if higher_is_better else score < result.best_score
        )
        if improved:
            result.best_epoch, result.best_score = epoch, score
            epochs_without_improvement = 0
            if keep_best:
                result.best_state = copy.deepcopy(model.state_dict())
        else:
            epochs_without_improvement += 1
        stop = patience is not None and epochs_without_improvement >= patience

        if checkpoint_dir is not None:
            if improved:
                save_checkpoint(
                    {"model": model.state_dict(), "epoch": epoch, "config": config,
                     "metrics": val_stats},
                    checkpoint_dir / BEST_NAME,
                )
            loader_generator = getattr(train_loader, "generator", None)
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "loader": loader_generator.get_state() if loader_generator else None,
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                    },
                    "epoch": epoch,
                    "config": config,
                    "history": result.history,
                    "best_epoch": result.best_epoch,
                    "best_score": result.best_score,
                    "epochs_without_improvement": epochs_without_improvement,
                },
                checkpoint_dir / LAST_NAME,
            )
        if stop:
            result.stopped_early = True
            break
    if keep_best and result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result
