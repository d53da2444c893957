"""Checkpoints written atomically and loaded with ``weights_only=True``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint intact, never a truncated file.
    ``state["config"]`` (if any) is also written beside it as ``<name>.config.json``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    if state.get("config") is not None:
        config_path = path.with_suffix(".config.json")
        config_path.write_text(json.dumps(state["config"], indent=2, sort_keys=True) + "\n")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain Python values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    return torch.load(path, map_location=map_location, weights_only=True)


# The layout of the two checkpoints ``fit`` writes, defined once.
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"


def save_best(
    checkpoint_dir: str | Path,
    model: torch.nn.Module,
    epoch: int,
    config: dict[str, Any] | None,
    metrics: dict[str, float],
) -> Path:
    """``best.pt``: the weights of the best epoch, with its number, config and validation metrics."""
    state = {"model": model.state_dict(), "epoch": epoch, "config": config, "metrics": metrics}
    return save_checkpoint(state, Path(checkpoint_dir) / BEST_NAME)


def save_last(
    checkpoint_dir: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    loader_generator: torch.Generator | None,
    epoch: int,
    config: dict[str, Any] | None,
    history: list[dict[str, float]],
    stopping: dict[str, Any],
) -> Path:
    """``last.pt``: everything a resumed run needs — weights, optimizer, scheduler and scaler
    states, every RNG state (Python, NumPy, torch, CUDA, the loader's generator), the history
    and the early-stopping state."""
    from helpers.seed import rng_states

    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states(loader_generator),
        "epoch": epoch,
        "config": config,
        "history": history,
        "stopping": stopping,
    }
    return save_checkpoint(state, Path(checkpoint_dir) / LAST_NAME)


def restore_last(
    checkpoint_dir: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    scaler: Any = None,
    loader_generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Load ``last.pt`` into the given objects and the RNGs; return the whole saved state
    (``epoch``, ``history``, ``stopping``…) for the caller to continue from. It loads to the CPU
    (RNG states must live there); ``load_state_dict`` moves the rest to the model's device."""
    from helpers.seed import restore_rng_states

    state = load_checkpoint(Path(checkpoint_dir) / LAST_NAME)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    restore_rng_states(state["rng"], loader_generator)
    return state
