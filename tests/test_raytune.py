"""Tests for helpers.raytune: a real local Ray in a subprocess with its own HOME and TMPDIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from helpers.raytune import digits_trainable, failed_trials, results_frame, start_ray, stop_ray, tune_search
    from helpers.tuning import digits_split

    build = Path(sys.argv[1])
    start_ray(num_cpus=2, temp_dir=build / "ray")
    data = digits_split()
    trainable = tune.with_parameters(digits_trainable, data=data, max_epochs=2, seed=0)
    bad = tune_search(trainable, {"lr": tune.grid_search([1e-2, "boom", 3e-2])}, 1, "bad",
                      storage_dir=build / "results")
    asha = tune_search(
        tune.with_parameters(digits_trainable, data=data, max_epochs=4, seed=0),
        {"lr": tune.loguniform(1e-5, 1e-1)}, 8, "asha", storage_dir=build / "results",
        scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2),
    )
    stop_ray()
    print(json.dumps({
        "failed": failed_trials(bad),
        "bad": results_frame(bad).astype({"lr": str}).to_dict("records"),
        "asha_epochs": results_frame(asha)["epochs"].tolist(),
        "asha_best": float(results_frame(asha)["best"].max()),
    }))
    """
)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    pytest.importorskip("ray.tune")
    root = tmp_path_factory.mktemp("ray")
    home, tmp, build = root / "home", root / "tmp", root / "build"
    for folder in (home, tmp, build):
        folder.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(build)], env=env, cwd=root, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), root


def test_a_failing_trial_is_reported_not_hung(ray_run) -> None:
    out, _ = ray_run
    assert len(out["failed"]) == 1 and "boom" in out["failed"][0]
    by_lr = {row["lr"]: row for row in out["bad"]}
    assert by_lr["boom"]["error"] and by_lr["boom"]["epochs"] == 0
    assert by_lr["0.01"]["epochs"] == 2 and by_lr["0.01"]["best"] > 0.8 and not by_lr["0.01"]["error"]


def test_asha_scheduler_stops_weak_trials_early(ray_run) -> None:
    out, _ = ray_run
    epochs = out["asha_epochs"]
    assert len(epochs) == 8 and max(epochs) == 4 and min(epochs) < 4
    assert sum(epochs) < 8 * 4
    assert out["asha_best"] > 0.8


def test_ray_writes_only_inside_the_given_build_folder(ray_run) -> None:
    _, root = ray_run
    assert list((root / "home").iterdir()) == []
    # TMPDIR (which the Makefile points into build/) holds at most torch's compile cache; Ray's
    # sessions, sockets and logs went to the temp dir we gave it.
    assert [p.name for p in (root / "tmp").iterdir() if not p.name.startswith("torchinductor_")] == []
    assert any((root / "build" / "ray").iterdir()) and any((root / "build" / "results").iterdir())
    stray = [p.name for p in root.iterdir() if p.name not in ("home", "tmp", "build")]
    assert stray == []


def test_start_ray_refuses_a_temp_dir_too_long_for_its_sockets(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from helpers.raytune import start_ray

    with pytest.raises(ValueError, match="socket paths"):
        start_ray(1, temp_dir=tmp_path / ("x" * 80))
