"""Ray Tune on the course's tuning objective: start Ray inside the build folder, run a search,
and read its results as a table.

Ray is imported inside the functions, so ``import helpers.tuning.raytune`` stays cheap. Everything
Ray writes (session files, logs, trial results) goes under ``build/``; telemetry and the auth
token that Ray 2.60 would keep in the home folder are switched off. The same code runs on a
cluster by passing ``address="ray://head:10001"`` (or ``"auto"`` on a cluster node).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from helpers import BUILD_DIR
from helpers.tuning.search import TensorSplit, train_digits_mlp

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # no token file in the home folder
    "RAY_USAGE_STATS_ENABLED": "0",  # no telemetry (and no network attempts)
    "RAY_AIR_NEW_OUTPUT": "0",  # honour the progress reporter we pass
}
# Ray puts its sockets at <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, up to
# 65 characters below the temp dir, and a Unix socket path may not exceed 107 bytes.
MAX_TEMP_DIR_CHARS = 42
TABLE_LINE_STARTS = ("Number of trials", "+", "|", "...")  # Ray's socket paths (temp dir + ~50 chars) must stay under 108 bytes


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
            f"at most {MAX_TEMP_DIR_CHARS} (Unix socket paths are limited to 107 bytes). Clone the course to "
            "a shorter path (at most 32 characters) or pass a shorter temp_dir."
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
    log_errors: bool = True,
) -> Any:
    """``Tuner(...).fit()`` with the course's choices: results under ``build/``, one CPU (or the
    given ``resources``) per trial, a failed trial recorded in the results rather than retried
    or raised (read them with ``failed_trials``). A request no node can meet (a GPU on a CPU-only
    cluster) raises ``ValueError`` at once instead of leaving the trials pending. Returns Ray's
    ``ResultGrid``. ``log_errors=False`` keeps failed trials' tracebacks out of the log (read
    them with ``failed_trials`` or ``result.error``)."""
    import ray
    from ray import tune

    per_trial = dict(resources or {"cpu": 1})
    available = ray.cluster_resources()
    short = {k: v for k, v in per_trial.items() if v > available.get(k.upper() if k in ("cpu", "gpu") else k, 0.0)}
    if short:
        raise ValueError(
            f"Each trial asks for {per_trial} but the Ray cluster has {dict(available)}: the trials would wait "
            "forever. Lower the request (e.g. gpu=0 on a CPU machine) or start Ray with more resources."
        )
    storage_dir = Path(storage_dir).resolve()
    storage_dir.mkdir(parents=True, exist_ok=True)
    tuner = tune.Tuner(
        tune.with_resources(trainable, per_trial),
        param_space=dict(param_space),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, num_samples=num_samples, search_alg=search_alg,
            scheduler=scheduler, max_concurrent_trials=max_concurrent or None,
            reuse_actors=True,  # a finished trial's process takes the next one: no new start-up
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage_dir), progress_reporter=reporter, verbose=1 if reporter else 0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
    if log_errors:
        return tuner.fit()
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)  # the caller reads errors with failed_trials instead
    try:
        return tuner.fit()
    finally:
        tune_logger.setLevel(level)


def trial_table_reporter(metric_columns: list[str], parameter_columns: list[str], max_report_frequency: int = 60) -> Any:
    """Ray's ``CLIReporter`` printing only the trial table (best first): no session header with
    time stamps and log folders, which change every run and name paths on this machine."""
    from ray.tune import CLIReporter

    class TrialTableReporter(CLIReporter):
        def report(self, trials: list, done: bool, *sys_info: str) -> None:
            lines = self._progress_str(trials, done).splitlines()
            print("\n".join(line for line in lines if line.startswith(TABLE_LINE_STARTS)))

    return TrialTableReporter(
        metric_columns=metric_columns, parameter_columns=parameter_columns, max_report_frequency=max_report_frequency,
        sort_by_metric=True, max_progress_rows=8,
    )


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
