"""Ray Tune on the course's tuning objective: start Ray inside the build folder, run a search,
and read its results as a table.

Ray is imported inside the functions, so ``import helpers.raytune`` stays cheap. Everything
Ray writes (session files, logs, trial results) goes under ``build/``; telemetry and the auth
token that Ray 2.60 would keep in the home folder are switched off. The same code runs on a
cluster by passing ``address="ray://head:10001"`` (or ``"auto"`` on a cluster node).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from helpers import BUILD_DIR
from helpers.tuning import TensorSplit, train_digits_mlp

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # no token file in the home folder
    "RAY_USAGE_STATS_ENABLED": "0",  # no telemetry (and no network attempts)
    "RAY_AIR_NEW_OUTPUT": "0",  # honour the progress reporter we pass
}
MAX_TEMP_DIR_CHARS = 60  # Ray's socket paths (temp dir + ~50 chars) must stay under 108 bytes


def start_ray(
    num_cpus: int, num_gpus: int = 0, temp_dir: Path = BUILD_DIR / "ray", address: str | None = None
) -> dict[str, float]:
    """Start a local Ray (or join ``address``) with capped resources and no dashboard; returns
    the cluster's resources. Safe to call twice: a running Ray is shut down first."""
    os.environ.update(RAY_ENV)
    import ray

    temp_dir = Path(temp_dir).resolve()
    if len(str(temp_dir)) > MAX_TEMP_DIR_CHARS:
        raise ValueError(
            f"Ray's temp dir {temp_dir} is {len(str(temp_dir))} characters; Ray's socket paths need it "
            f"under {MAX_TEMP_DIR_CHARS}. Clone the course to a shorter path or pass a shorter temp_dir."
        )
    if ray.is_initialized():
        ray.shutdown()
    if address is not None:
        ray.init(address=address, log_to_driver=False)
    else:
        temp_dir.mkdir(parents=True, exist_ok=True)
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _temp_dir=str(temp_dir),
            log_to_driver=False,
            configure_logging=True,
            logging_level="ERROR",
        )
    return {key: float(value) for key, value in ray.cluster_resources().items() if key in ("CPU", "GPU")}


def stop_ray() -> None:
    """Shut Ray down (its worker processes exit)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def digits_trainable(config: dict[str, Any], data: TensorSplit, max_epochs: int, seed: int) -> None:
    """A Ray Tune function trainable: train the digits MLP, report accuracy after every epoch.

    Ray restricts ``CUDA_VISIBLE_DEVICES`` to the trial's GPUs, so "cuda" is the right one.
    """
    import torch
    from ray import tune

    device = "cuda" if torch.cuda.is_available() else "cpu"
    scores = train_digits_mlp(config, seed, data, epochs=max_epochs, device=device)
    for epoch, score in enumerate(scores, start=1):
        tune.report({"val_accuracy": score, "epoch": epoch})


def tune_search(
    trainable: Any,
    param_space: Mapping[str, Any],
    num_samples: int,
    name: str,
    search_alg: Any = None,
    scheduler: Any = None,
    resources: Mapping[str, float] | None = None,
    metric: str = "val_accuracy",
    mode: str = "max",
    storage_dir: Path = BUILD_DIR / "ray_results",
    reporter: Any = None,
    max_concurrent: int = 0,
) -> Any:
    """``Tuner(...).fit()`` with the course's choices: results under ``build/``, one CPU (or the
    given ``resources``) per trial, a failed trial recorded in the results rather than retried
    or raised (read them with ``failed_trials``). Returns Ray's ``ResultGrid``."""
    from ray import tune

    storage_dir = Path(storage_dir).resolve()
    storage_dir.mkdir(parents=True, exist_ok=True)
    tuner = tune.Tuner(
        tune.with_resources(trainable, dict(resources or {"cpu": 1})),
        param_space=dict(param_space),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, num_samples=num_samples, search_alg=search_alg,
            scheduler=scheduler, max_concurrent_trials=max_concurrent or None,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage_dir), progress_reporter=reporter, verbose=1 if reporter else 0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
    return tuner.fit()


def results_frame(results: Any, metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per trial: its configuration, epochs trained, best and last ``metric``, error."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        scores = history[metric] if history is not None and metric in history else pd.Series(dtype=float)
        rows.append({
            **{key: value for key, value in result.config.items()},
            "epochs": len(scores),
            "best": float(scores.max()) if len(scores) else float("nan"),
            "last": float(scores.iloc[-1]) if len(scores) else float("nan"),
            "error": type(result.error).__name__ if result.error else "",
        })
    return pd.DataFrame(rows)


def failed_trials(results: Any) -> list[str]:
    """A one-line description of each trial that raised (empty when all finished)."""
    failed = []
    for result in results:
        if result.error:
            message = str(result.error).strip().splitlines()
            failed.append(f"{dict(result.config)}: {message[-1] if message else type(result.error).__name__}")
    return failed
