"""Tests for helpers.tuning.raytune: a real local Ray in a subprocess with its own HOME and TMPDIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import BUILD_DIR, REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from helpers.tuning.raytune import digits_trainable, failed_trials, results_frame, start_ray, stop_ray, tune_search
    from helpers.tuning.search import digits_split

    build = Path(sys.argv[1])
    start_ray(num_cpus=2)  # the default temp dir, build/ray, as in the notebook
    data = digits_split()
    trainable = tune.with_parameters(digits_trainable, data=data, max_epochs=2, seed=0)
    bad = tune_search(trainable, {"lr": tune.grid_search([1e-2, "boom", 3e-2])}, 1, "bad",
                      storage_dir=build / "results", log_errors=False)
    asha = tune_search(
        tune.with_parameters(digits_trainable, data=data, max_epochs=4, seed=0),
        {"lr": tune.loguniform(1e-5, 1e-1)}, 8, "asha", storage_dir=build / "results",
        scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2),
    )
    try:
        tune_search(trainable, {"lr": 1e-2}, 1, "gpu", resources={"cpu": 1, "gpu": 1}, storage_dir=build / "results")
        too_big = ""
    except ValueError as error:
        too_big = str(error)
    stop_ray()
    print(json.dumps({
        "too_big": too_big,
        "failed": failed_trials(bad),
        "bad": results_frame(bad).astype({"lr": str}).to_dict("records"),
        "asha_epochs": results_frame(asha)["epochs"].tolist(),
        "asha_best": float(results_frame(asha)["best"].max()),
    }))
    """
)


def run_script_isolated(root: Path) -> tuple[dict, set[str]]:
    """Run SCRIPT with its own HOME and TMPDIR under ``root``; its JSON output and the Ray
    sessions it added to build/ray."""
    home, tmp, build = root / "home", root / "tmp", root / "build"
    for folder in (home, tmp, build):
        folder.mkdir()
    sessions_before = set(os.listdir(BUILD_DIR / "ray")) if (BUILD_DIR / "ray").is_dir() else set()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(build)], env=env, cwd=root, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]  # log_errors=False: errors only in results
    new_sessions = {p for p in os.listdir(BUILD_DIR / "ray") if p.startswith("session_2")} - sessions_before
    return json.loads(done.stdout.strip().splitlines()[-1]), new_sessions


def test_ray_tune_searches_failures_and_files(tmp_path: Path) -> None:
    """One Ray start (slow), several properties: checked in one test so it starts once."""
    pytest.importorskip("ray.tune")
    out, new_sessions = run_script_isolated(tmp_path)

    # A failing trial is reported (config and error), the others finish; nothing hangs.
    assert len(out["failed"]) == 1 and "boom" in out["failed"][0]
    by_lr = {row["lr"]: row for row in out["bad"]}
    assert by_lr["boom"]["error"] and by_lr["boom"]["epochs"] == 0
    assert by_lr["0.01"]["epochs"] == 2 and by_lr["0.01"]["best"] > 0.8 and not by_lr["0.01"]["error"]

    # ASHAScheduler stops weak trials before max_t.
    epochs = out["asha_epochs"]
    assert len(epochs) == 8 and max(epochs) == 4 and min(epochs) < 4 and sum(epochs) < 8 * 4
    assert out["asha_best"] > 0.8

    # A resource request the cluster cannot meet fails at once instead of pending forever.
    assert "wait forever" in out["too_big"] and "'gpu': 1" in out["too_big"]

    # Files: nothing in HOME; TMPDIR (which the Makefile points into build/) holds at most torch's
    # compile cache; Ray's session went to build/ray and the results to the given folder.
    assert list((tmp_path / "home").iterdir()) == []
    assert [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor_")] == []
    assert len(new_sessions) == 1
    assert any((tmp_path / "build" / "results").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "home", "tmp"]


def test_start_ray_refuses_a_temp_dir_too_long_for_its_sockets(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from helpers.tuning.raytune import start_ray

    with pytest.raises(ValueError, match="socket paths"):
        start_ray(1, temp_dir=tmp_path / ("x" * 80))
