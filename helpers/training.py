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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader

from helpers.checkpoints import BEST_NAME, LAST_NAME, restore_last, save_best, save_last
from helpers.devices import amp_dtype
from helpers.progress import progress

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "weighted_f1": True, "loss": False}
__all__ = [
    "BEST_NAME",
    "LAST_NAME",
    "EarlyStopping",
    "FitResult",
    "evaluate",
    "fit",
    "train_one_epoch",
]


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


Amp = bool | torch.dtype  # False, True (the device's AMP dtype), or torch.float16/bfloat16


def _amp_dtype(device: torch.device, amp: Amp) -> torch.dtype:
    """The autocast dtype ``amp`` asks for: the device's default for ``True``, else the dtype."""
    return amp if isinstance(amp, torch.dtype) else amp_dtype(device)


def _autocast(device: torch.device, amp: Amp) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=_amp_dtype(device, amp), enabled=bool(amp))


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
    amp: Amp = False,
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
    amp: Amp = False,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean training loss and mean gradient norm.

    With ``accumulation_steps = k`` the optimizer steps once every k batches (and once more for
    a shorter last group). Each batch's mean loss is weighted by its share of the group's
    samples, so the accumulated gradient equals that of one batch holding the whole group —
    exactly, even when the last batch is smaller. ``loss_fn`` must average over the batch.
    ``scheduler`` (if given) is stepped after every optimizer step. ``lr`` in the result is the
    first parameter group's learning rate at the epoch's last optimizer step.
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
        lr = optimizer.param_groups[0]["lr"]
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
    return {"train_loss": total_loss / n_seen, "grad_norm": float(np.mean(grad_norms)), "lr": lr}


@dataclass
class EarlyStopping:
    """The best epoch so far by ``monitor``, and whether ``patience`` epochs passed without a
    strictly better score (``patience=None``: never stop)."""

    monitor: str = "macro_f1"
    patience: int | None = None
    best_epoch: int | None = None
    best_score: float | None = None
    epochs_without_improvement: int = 0

    def __post_init__(self) -> None:
        if self.monitor not in HIGHER_IS_BETTER:
            raise ValueError(
                f"Unknown monitor {self.monitor!r}; choose from {sorted(HIGHER_IS_BETTER)}."
            )
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 (or None), got {self.patience}.")

    def update(self, epoch: int, score: float) -> bool:
        """Record one epoch's score; True when it is the best so far."""
        if self.best_score is None or (
            score > self.best_score if HIGHER_IS_BETTER[self.monitor] else score < self.best_score
        ):
            self.best_epoch, self.best_score, self.epochs_without_improvement = epoch, score, 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.epochs_without_improvement >= self.patience


class RunLogger(Protocol):
    """What ``fit(logger=...)`` calls: e.g. ``helpers.tracking.TensorBoardLogger``."""

    def log_epoch(self, row: dict[str, float]) -> None: ...
    def finish(self, final_metrics: dict[str, float]) -> None: ...


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_epoch_scheduler(scheduler: Any, val_loss: float) -> None:
    """Once per epoch: ``ReduceLROnPlateau`` gets the validation loss, the others nothing."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def _epoch(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    epoch: int,
    device: torch.device,
    loss_fn: LossFn,
    amp: Amp,
    train_kwargs: dict[str, Any],
) -> dict[str, float]:
    """Train one epoch, validate, and return the history row (timings included)."""
    _synchronize(device)
    started = time.perf_counter()
    train_stats = train_one_epoch(
        model, train_loader, device=device, loss_fn=loss_fn, amp=amp, **train_kwargs
    )
    _synchronize(device)
    train_seconds = time.perf_counter() - started
    val_stats = evaluate(model, val_loader, device, loss_fn, amp=amp)
    return {
        "epoch": epoch,
        **train_stats,
        **{f"val_{k}": v for k, v in val_stats.items()},
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
    }


def _validation(row: dict[str, float]) -> dict[str, float]:
    """The validation metrics of a history row, without their ``val_`` prefix."""
    return {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}


def _write_checkpoints(
    checkpoint_dir: str | Path,
    improved: bool,
    objects: dict[str, Any],
    row: dict[str, float],
    config: dict[str, Any] | None,
    result: FitResult,
    stopping: EarlyStopping,
) -> None:
    """``best.pt`` when the epoch improved, ``last.pt`` after every epoch."""
    epoch = int(row["epoch"])
    if improved:
        save_best(checkpoint_dir, objects["model"], epoch, config, _validation(row))
    save_last(
        checkpoint_dir,
        **objects,
        epoch=epoch,
        config=config,
        history=result.history,
        stopping=asdict(stopping),
    )


def _final_metrics(result: FitResult, monitor: str) -> dict[str, float]:
    """What a logger stores beside the hyperparameters: the best score and the last epoch's."""
    last = {f"val_{k}": v for k, v in _validation(result.history[-1]).items()}
    # fit calls this after at least one epoch, so EarlyStopping has recorded a best
    assert result.best_score is not None and result.best_epoch is not None
    return {f"best_val_{monitor}": result.best_score, "best_epoch": result.best_epoch, **last}


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
    amp: Amp = False,
    monitor: str = "macro_f1",
    patience: int | None = None,
    checkpoint_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    keep_best: bool = False,
    logger: RunLogger | None = None,
) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs and validate after each one.

    - ``scheduler_interval``: ``"epoch"`` steps the scheduler once per epoch (ReduceLROnPlateau
      gets the validation loss), ``"step"`` after every optimizer step (OneCycleLR, warmup).
    - ``monitor``/``patience``: the validation metric that picks the best epoch and, with
      ``patience``, stops training after that many epochs without improvement.
    - ``checkpoint_dir``: writes ``best.pt`` (best epoch, with ``config``) and ``last.pt``
      (everything needed to resume); ``resume=True`` continues from ``last.pt``, to the result
      of an uninterrupted run (same seed, ``num_workers=0``).
    - ``keep_best=True`` keeps the best epoch's weights in memory (``best_state``) and loads
      them into ``model`` at the end: model selection without checkpoint I/O.
    - ``logger``: gets every history row, then the best and last validation metrics.
    - ``amp``: ``True`` autocasts to the device's AMP dtype (``helpers.devices.amp_dtype``:
      BF16 where the device supports it, else FP16), or name the dtype (``torch.float16``,
      ``torch.bfloat16``). FP16 on CUDA gets a ``GradScaler``; BF16 needs none.

    A history row holds the training loss, mean gradient norm (before clipping), ``lr`` (the
    first group's learning rate at the epoch's last optimizer step, i.e. before the epoch's
    own scheduler step), the validation metrics, ``train_seconds`` and ``seconds``.
    """
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(
            f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}."
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir.")
    stopping = EarlyStopping(monitor, patience)
    device = torch.device(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.to(device)
    use_scaler = bool(amp) and device.type == "cuda" and _amp_dtype(device, amp) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    generator = getattr(train_loader, "generator", None)
    objects: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "loader_generator": generator,
    }
    result, start_epoch = FitResult(), 1
    if resume:
        assert checkpoint_dir is not None  # checked above
        saved = restore_last(checkpoint_dir, **objects)
        result.history, start_epoch = list(saved["history"]), saved["epoch"] + 1
        stopping = EarlyStopping(**saved["stopping"])
    train_kwargs = {
        "optimizer": optimizer,
        "accumulation_steps": accumulation_steps,
        "max_grad_norm": max_grad_norm,
        "scaler": scaler,
        "scheduler": scheduler if scheduler_interval == "step" else None,
    }

    bar = progress(
        range(start_epoch, epochs + 1), desc="epochs", enabled=show_progress, leave=False
    )
    for epoch in bar:
        row = _epoch(model, train_loader, val_loader, epoch, device, loss_fn, amp, train_kwargs)
        result.history.append(row)
        if scheduler is not None and scheduler_interval == "epoch":
            _step_epoch_scheduler(scheduler, row["val_loss"])
        improved = stopping.update(epoch, row[f"val_{monitor}"])
        bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", best=f"{stopping.best_score:.3f}")
        if improved and keep_best:
            result.best_state = copy.deepcopy(model.state_dict())
        if checkpoint_dir is not None:
            _write_checkpoints(checkpoint_dir, improved, objects, row, config, result, stopping)
        if logger is not None:
            logger.log_epoch(row)
        if stopping.should_stop:
            result.stopped_early = True
            break
    result.best_epoch, result.best_score = stopping.best_epoch, stopping.best_score
    if keep_best and result.best_state is not None:
        model.load_state_dict(result.best_state)
    if logger is not None and result.history:
        logger.finish(_final_metrics(result, monitor))
    return result
