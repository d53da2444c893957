"""Ray Tune on the course's tuning objective: start Ray with its files in the build folder (or, for
a long clone path, a short per-run folder), run a search, and read its results as a table.

Ray is imported inside the functions, so ``import helpers.tuning.raytune`` stays cheap. Telemetry
and the auth token that Ray 2.60 would keep in the home folder are switched off. The same code
runs on a cluster by passing ``address="ray://head:10001"`` (or ``"auto"`` on a cluster node).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from helpers import BUILD_DIR
from helpers.tuning.objective import TensorSplit, train_digits_mlp

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # no token file in the home folder
    "RAY_USAGE_STATS_ENABLED": "0",  # no telemetry (and no network attempts)
    "RAY_AIR_NEW_OUTPUT": "0",  # honour the progress reporter we pass
}
# Ray puts its sockets at <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, up to
# 65 characters below the temp dir, and a Unix socket path may not exceed 107 bytes.
MAX_TEMP_DIR_CHARS = 42
# Short on Linux and macOS; the Makefile's TMPDIR (build/tmp) may not be.
SYSTEM_TEMP_DIR = Path("/tmp")
# Ray waits a fixed 30 s for its raylet and dashboard agent; on an overloaded machine the first
# start can time out, and a retry (the processes' files now cached) usually succeeds.
START_ATTEMPTS = 5
FAILED_START_SETTLE_S = 15.0  # how long a failed start's agents may keep writing


@dataclass
class RaySession:
    """A running Ray: its resources, the folder holding its session files, and whether that folder
    is a short per-run one this session made (and ``stop_ray`` removes)."""

    resources: dict[str, float]
    temp_dir: Path | None  # None when joining an existing cluster
    owns_temp_dir: bool = False
    _cleanup: Callable[[], None] | None = field(default=None, repr=False)


def ray_temp_dir(build_dir: Path = BUILD_DIR) -> tuple[Path, bool]:
    """The folder for Ray's session files: ``build_dir/ray`` when its path is short enough for
    Ray's Unix sockets, else a new ``/tmp/rayXXXXXXXX``; and whether it is such a per-run folder.

    The per-run folder is the one place the course writes outside ``build/``: a clone deeper than
    about 32 characters (``~/projects/github/...``) leaves no room for the sockets below
    ``build/ray``. ``TMPDIR`` is not used, because the Makefile points it into ``build/``.
    """
    preferred = Path(build_dir).resolve() / "ray"
    if len(str(preferred)) <= MAX_TEMP_DIR_CHARS:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred, False
    short = Path(tempfile.mkdtemp(prefix="ray", dir=SYSTEM_TEMP_DIR))
    if len(str(short)) > MAX_TEMP_DIR_CHARS:  # pragma: no cover - /tmp is short
        shutil.rmtree(short, ignore_errors=True)
        raise ValueError(
            f"Even {short} is too long for Ray's socket paths ({MAX_TEMP_DIR_CHARS} characters at most)."
        )
    return short, True


def remove_dir(path: Path, settle_s: float = 2.0) -> None:
    """Remove ``path`` and keep removing it for ``settle_s`` seconds if a process that is still
    shutting down (one of Ray's agents) writes it again."""
    deadline = time.monotonic() + settle_s
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.25)


def start_ray(
    num_cpus: int, num_gpus: int = 0, build_dir: Path = BUILD_DIR, address: str | None = None
) -> RaySession:
    """Start a local Ray (or join ``address``) with capped resources and no dashboard. Its session
    files go to ``ray_temp_dir(build_dir)``; a per-run folder there is removed by ``stop_ray``, if
    start-up fails, and at the latest when the Python process exits. Safe to call twice: a
    running Ray is shut down first."""
    os.environ.update(RAY_ENV)
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if address is not None:
        ray.init(address=address, log_to_driver=False)
        return RaySession(_cluster_resources(), None)
    temp_dir, owned = ray_temp_dir(build_dir)
    cleanup = None
    if owned:
        cleanup = functools.partial(remove_dir, temp_dir)
        # A notebook that fails before stop_ray still leaves nothing behind.
        atexit.register(cleanup)
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                ray.init(
                    num_cpus=num_cpus,
                    num_gpus=num_gpus,
                    include_dashboard=False,
                    _temp_dir=str(temp_dir),
                    log_to_driver=False,
                    configure_logging=True,
                    logging_level=logging.ERROR,
                )
                break
            # Ray raises a bare Exception when its node start-up times out.
            except Exception as error:
                ray.shutdown()
                if attempt == START_ATTEMPTS or "timed out during startup" not in str(error):
                    raise
    except BaseException:
        if cleanup is not None:
            ray.shutdown()
            atexit.unregister(cleanup)
            # A failed start leaves Ray's agents running for a few seconds, still writing there.
            remove_dir(temp_dir, settle_s=FAILED_START_SETTLE_S)
        raise
    return RaySession(_cluster_resources(), temp_dir, owned, cleanup)


def _cluster_resources() -> dict[str, float]:
    import ray

    return {
        key: float(value) for key, value in ray.cluster_resources().items() if key in ("CPU", "GPU")
    }


def stop_ray(session: RaySession | None = None) -> None:
    """Shut Ray down (its worker processes exit) and remove the session's per-run temp folder."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if session is not None and session._cleanup is not None:
        session._cleanup()
        atexit.unregister(session._cleanup)
        session._cleanup = None


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


def final_table_reporter(
    parameter_columns: list[str], metric: str = "val_accuracy", rows: int = 6
) -> Any:
    """A Ray Tune progress reporter that prints once, when the search is done: the best ``rows``
    trials (parameters, ``metric``, epochs trained) and how many epochs the others got. No
    intermediate snapshots, no host:pid column, nothing that changes from run to run but results."""
    from ray.tune import ProgressReporter

    class FinalTableReporter(ProgressReporter):
        def should_report(self, trials: list, done: bool = False) -> bool:
            return done

        def report(self, trials: list, done: bool, *sys_info: str) -> None:
            table = pd.DataFrame(
                [
                    {
                        **{p: trial.config.get(p) for p in parameter_columns},
                        metric: (trial.last_result or {}).get(metric, float("nan")),
                        "epochs": (trial.last_result or {}).get("training_iteration", 0),
                        "status": trial.status,
                    }
                    for trial in trials
                ]
            ).sort_values(metric, ascending=False, ignore_index=True)
            print(f"{len(table)} trials; the best {min(rows, len(table))}:")
            print(table.head(rows).to_string(float_format=lambda v: f"{v:.3g}"))
            rest = table.iloc[rows:]["epochs"].value_counts().sort_index()
            if len(rest):
                print(
                    "the others: "
                    + ", ".join(f"{n} trained {e} epoch{'s' * (e != 1)}" for e, n in rest.items())
                )

    return FinalTableReporter()


def quiet_reporter() -> Any:
    """A progress reporter that prints nothing (without one, Ray picks its Jupyter reporter, which
    leaves an empty HTML display in the notebook)."""
    from ray.tune import ProgressReporter

    class QuietReporter(ProgressReporter):
        def should_report(self, trials: list, done: bool = False) -> bool:
            return False

    return QuietReporter()


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
    or raised (read them with ``failed_trials``), silent unless a ``reporter`` is given. A request
    no node can meet (a GPU on a CPU-only cluster) raises ``ValueError`` at once instead of
    leaving the trials pending. Returns Ray's ``ResultGrid``. ``log_errors=False`` keeps failed
    trials' tracebacks out of the log (read them with ``failed_trials`` or ``result.error``)."""
    import ray
    from ray import tune

    per_trial = dict(resources or {"cpu": 1})
    available = ray.cluster_resources()
    short = {
        k: v
        for k, v in per_trial.items()
        if v > available.get(k.upper() if k in ("cpu", "gpu") else k, 0.0)
    }
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
            metric=metric,
            mode=mode,
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=max_concurrent or None,
            reuse_actors=True,  # a finished trial's process takes the next one: no new start-up
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage_dir),
            progress_reporter=reporter or quiet_reporter(),
            verbose=1 if reporter else 0,
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


def results_frame(results: Any, metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per trial: its configuration, epochs trained, best and last ``metric``, error."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        scores = (
            history[metric] if history is not None and metric in history else pd.Series(dtype=float)
        )
        rows.append(
            {
                **{key: value for key, value in result.config.items()},
                "epochs": len(scores),
                "best": float(scores.max()) if len(scores) else float("nan"),
                "last": float(scores.iloc[-1]) if len(scores) else float("nan"),
                "error": type(result.error).__name__ if result.error else "",
            }
        )
    return pd.DataFrame(rows)


def failed_trials(results: Any) -> list[str]:
    """A one-line description of each trial that raised (empty when all finished)."""
    failed = []
    for result in results:
        if result.error:
            message = str(result.error).strip().splitlines()
            failed.append(
                f"{dict(result.config)}: {message[-1] if message else type(result.error).__name__}"
            )
    return failed
